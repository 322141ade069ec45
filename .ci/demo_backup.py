"""
Backup monitoring, end to end on this machine: the example backup-monitoring DAG against the emulator.

Starts the AOS emulator (its seeded jobs cover October and November 2026), adds a running Microsoft 365
backup job through the emulator's admin endpoint and puts its id in the Variable
``aos_m365_backup_job_id``, runs ``airflow dags test example_aos_backup_monitoring 2026-11-04`` (the
health check of 2026-11-03) on a fresh SQLite metadata DB, then prints each service's health, checked
against the emulator, and the job the sensor waited for. Run through ``bash .ci/demo-backup``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo" / "backup"  # .demo/ is git-ignored
DAG_ID = "example_aos_backup_monitoring"
LOGICAL_DATE = os.environ.get("AOS_DEMO_DATE", "2026-11-04")  # checks the day before: 2026-11-03
SERVICES = ("m365", "iaas_paas", "dynamics365", "google_workspace", "salesforce", "aos_scan")
WAITED_JOB_SECONDS = 45  # still running when the sensor first looks (Airflow starts in ~15 s)


def start_emulator() -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_aos.emulator", "--port", "0", "--records", "1000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the emulator prints one JSON line when it is ready
    if not line:
        proc.kill()
        sys.exit("demo-backup: the AOS emulator did not start")
    return proc, json.loads(line)


def admin(info: dict[str, Any], path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 - the emulator on loopback
        f"{info['admin_url']}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request) as resp:  # noqa: S310 - loopback
        return json.load(resp)


def xcom(home: Path, task_id: str, map_index: int = -1) -> Any:
    with sqlite3.connect(home / "airflow.db") as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND map_index = ? "
            "AND key = 'return_value' ORDER BY timestamp DESC LIMIT 1",
            (DAG_ID, task_id, map_index),
        ).fetchone()
    if row is None:
        return None
    value = json.loads(row[0])
    return json.loads(value) if isinstance(value, str) else value  # Airflow 2.11 stores JSON text


def task_states(home: Path) -> dict[tuple[str, int], str]:
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ?", (DAG_ID,)
        ).fetchall()
    return {(task, index): state for task, index, state in rows}


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    home = WORK / "airflow"
    home.mkdir(parents=True)
    emulator, info = start_emulator()
    try:
        job_id = admin(info, "/jobs", {"service": "m365", "run_seconds": WAITED_JOB_SECONDS})["jobId"]
        print(f"AOS emulator: {info['graph_url']}; running Microsoft 365 job {job_id} added", flush=True)
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_VAR_AOS_M365_BACKUP_JOB_ID": job_id,
            "AOS_EXAMPLE_POLL_INTERVAL": "5",
            "AIRFLOW_CONN_AOS_DEFAULT": json.dumps(
                {
                    "conn_type": "aos",
                    "host": info["graph_url"],
                    "login": info["client_id"],
                    "password": info["client_secret"],
                    "extra": {"identity_url": info["identity_url"]},
                }
            ),
        }
        airflow = [sys.executable, "-m", "airflow"]
        log = WORK / "airflow.log"
        started = time.monotonic()
        with log.open("w") as out:
            print("Migrating a fresh SQLite metadata DB...", flush=True)
            subprocess.run(
                [*airflow, "db", "migrate"], env=env, stdout=out, stderr=subprocess.STDOUT, check=True
            )
            print(f"airflow dags test {DAG_ID} {LOGICAL_DATE} (log: {log})", flush=True)
            result = subprocess.run(
                [*airflow, "dags", "test", DAG_ID, LOGICAL_DATE],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        states = task_states(home)
        bad = {key: state for key, state in states.items() if state != "success"}
        if result.returncode != 0 or bad or not states:
            print(log.read_text()[-6000:])
            print(f"demo-backup: the DAG run failed (exit {result.returncode}; tasks not successful: {bad})")
            print(f"full log: {log}")
            return 1

        day = datetime.fromisoformat(LOGICAL_DATE).replace(tzinfo=UTC) - timedelta(days=1)
        report = xcom(home, "backup_report")
        ok = True
        print(f"\nBackup health of {day:%Y-%m-%d} (UTC), per service:")
        for service in SERVICES:
            entry = report[service]
            # What the emulator holds for that day, to check the report against.
            expected: dict[str, int] = {}
            for job in admin(info, f"/jobs?service={service}")["jobs"]:
                if job["startTime"].startswith(f"{day:%Y-%m-%d}"):
                    name = {"SUCCESS": "SUCCEEDED"}.get(job["stateClass"], job["stateClass"])
                    expected[name] = expected.get(name, 0) + 1
            match = entry["states"] == expected
            ok &= match
            states_text = ", ".join(f"{n} {s}" for s, n in sorted(entry["states"].items())) or "no jobs"
            print(
                f"  {service:<17} {states_text:<36} {'match' if match else f'MISMATCH: emulator {expected}'}"
            )
            for job in entry["attention"]:
                print(f"    {job['id']} {job['state']}: {job['error'] or '-'}")
        waited = xcom(home, "wait_for_m365_backup")
        deferred = "running trigger in line" in log.read_text()
        print(
            f"\nWaited for Microsoft 365 job {waited['id']} ({'in the triggerer' if deferred else 'not deferred'}):"
            f" {waited['state']} (raw state {waited['raw_state']!r}), started {waited['start_time']},"
            f" finished {waited['finish_time']}, counts {waited['counts']}"
        )
        ok &= waited["id"] == job_id and waited["state"] == "SUCCEEDED"
        print(f"Took {time.monotonic() - started:.0f}s")
        return 0 if ok else 1
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
