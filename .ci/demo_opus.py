"""
AvePoint Opus records, end to end on this machine: the example Opus DAG against the bundled emulator.

Starts the AOS emulator with a seven-year retention (records are due for disposal seven years after
they were last modified), stores 36 records "submitted by earlier runs" (modified 2018 to 2020) in the
demo Opus connection through the emulator's admin endpoint, then runs ``airflow dags test
example_aos_opus_records 2026-11-02`` on a fresh SQLite metadata DB: the 41 documents of
``example_dags/data/opus_documents.csv`` are submitted, the records due by the run's cut-off are
retrieved and destroyed, and the emulator's demo archive of
https://contoso.sharepoint.com/sites/ArchivedProjects is restored (the task waits in the triggerer).
Prints what each branch did, checked against the emulator's store. Run through ``bash .ci/demo-opus``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo" / "opus"  # .demo/ is git-ignored
DAG_ID = "example_aos_opus_records"
LOGICAL_DATE = os.environ.get("AOS_DEMO_DATE", "2026-11-02")
DOCUMENTS = ROOT / "example_dags" / "data" / "opus_documents.csv"
CONNECTION = "6a1f3c52-8d4e-4b7a-9c2e-5f0d1b7e9a31"  # the demo Opus connector connection (any GUID)
SITE = "https://contoso.sharepoint.com/sites/ArchivedProjects"  # one of the emulator's demo archives
RETENTION_DAYS = "2555"  # seven years


def start_emulator() -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "airflow_provider_aos.emulator", "--port", "0", "--records", "1000",
            "--opus-retention-days", RETENTION_DAYS, "--opus-restore-seconds", "8",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the emulator prints one JSON line when it is ready
    if not line:
        proc.kill()
        sys.exit("demo-opus: the AOS emulator did not start")
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


def xcom(home: Path, task_id: str) -> Any:
    with sqlite3.connect(home / "airflow.db") as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value' "
            "ORDER BY timestamp DESC LIMIT 1",
            (DAG_ID, task_id),
        ).fetchone()
    if row is None:
        return None
    value = json.loads(row[0])
    return json.loads(value) if isinstance(value, str) else value  # Airflow 2.11 stores JSON text


def task_states(home: Path) -> dict[str, str]:
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (DAG_ID,)).fetchall()
    return dict(rows)


def earlier_records() -> list[dict[str, str]]:
    """36 purchase orders submitted by earlier runs, last modified on the 15th of each month of 2018-2020."""
    records = []
    for n in range(36):
        year, month = 2018 + n // 12, n % 12 + 1
        modified = f"{year}-{month:02d}-15T10:30:00Z"
        records.append({
            "rowKey": f"CONTOSO-DMS-{500 + n:06d}", "leafName": f"Purchase Order PO-{year}{month:02d}.pdf",
            "termFullPath": "Records/Finance/Purchase Orders", "timeCreated": f"{year}-{month:02d}-02T08:00:00Z",
            "timeModified": modified, "createdBy": "nestor.wilke@contoso.com", "modifiedBy": "nestor.wilke@contoso.com",
        })  # fmt: skip
    return records


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    home, output = WORK / "airflow", WORK / "output"
    home.mkdir(parents=True)
    output.mkdir(parents=True)
    emulator, info = start_emulator()
    try:
        earlier = earlier_records()
        admin(info, "/opus/records", {"id": CONNECTION, "records": earlier})
        print(
            f"AOS emulator: {info['graph_url']}; Opus connection {CONNECTION} holds {len(earlier)} records "
            f"of earlier runs; retention {RETENTION_DAYS} days after timeModified",
            flush=True,
        )
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_VAR_AOS_OPUS_CONNECTION_ID": CONNECTION,
            "AIRFLOW_VAR_AOS_OPUS_BASE": str(output),
            "AIRFLOW_VAR_AOS_OPUS_RESTORE_SITE": SITE,
            "AOS_EXAMPLE_POLL_INTERVAL": "2",
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
        bad = {task: state for task, state in states.items() if state != "success"}
        if result.returncode != 0 or bad or not states:
            print(log.read_text()[-6000:])
            print(f"demo-opus: the DAG run failed (exit {result.returncode}; tasks not successful: {bad})")
            print(f"full log: {log}")
            return 1
        code = report(info, home, log)
        print(f"Took {time.monotonic() - started:.0f}s")
        return code
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


def report(info: dict[str, Any], home: Path, log: Path) -> int:
    ok = True
    with DOCUMENTS.open(newline="") as fh:
        documents = [row["rowKey"] for row in csv.DictReader(fh)]
    query = urllib.parse.urlencode({"id": CONNECTION, "include_destroyed": "true"})
    store = admin(info, f"/opus/records?{query}")
    submit = xcom(home, "submit_records")
    stored = [key for key in documents if key in store["records"]]
    match = stored == documents and submit["succeeded"] == len(documents)
    ok &= match
    print(
        f"\nSubmitted:  {submit['records']} documents of {DOCUMENTS.relative_to(ROOT)} in {submit['batches']} batches:"
    )
    print(
        f"            {submit['succeeded']} stored, {submit['failed']} failed, {submit['invalid']} invalid"
        f" (emulator holds {len(stored)} of the {len(documents)}; {'match' if match else 'MISMATCH'})"
    )
    print(
        f"            records that did not succeed: {submit['failed_records_path']} ({submit['failed_records']})"
    )

    due = xcom(home, "due_records")
    destroyed = xcom(home, "destroy_records")
    with open(due["path"]) as fh:
        due_keys = sorted(json.loads(line)["rowKey"] for line in fh if line.strip())
    match = due_keys == store["destroyed"] and destroyed["succeeded"] == due["records"] > 0
    left = admin(
        info, f"/opus/due?{urllib.parse.urlencode({'id': CONNECTION, 'before': due['disposal_due_date']})}"
    )
    match &= left["count"] == 0
    ok &= match
    print(f"Due:        {due['records']} records due before {due['disposal_due_date']}Z -> {due['path']}")
    print(
        f"Destroyed:  {destroyed['succeeded']} ({destroyed['failed']} failed; emulator: {len(store['destroyed'])} "
        f"destroyed, {left['count']} still due; {'match' if match else 'MISMATCH'})"
    )

    restored = xcom(home, "restore_site")
    job = admin(info, f"/opus/restore_jobs/{restored['id']}")
    deferred = "running trigger in line" in log.read_text()
    match = restored["state"] == "SUCCEEDED" and job["statusLabel"] == "Finished" and job["scope"] == SITE
    ok &= match
    print(
        f"Restored:   {job['scope']}: job {restored['id']} {job['statusLabel']} (state {restored['state']}), "
        f"waited {'in the triggerer' if deferred else 'in the worker'}; {'match' if match else 'MISMATCH'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
