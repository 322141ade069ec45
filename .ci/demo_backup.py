"""
Backup monitoring, end to end on this machine: the example backup-monitoring DAG against the emulator.

Starts the AOS emulator (its seeded jobs cover October and November 2026), adds a running Microsoft 365
backup job through the emulator's admin endpoint and puts its id in the Variable
``aos_m365_backup_job_id``, runs ``airflow dags test example_aos_backup_monitoring 2026-11-04`` (the
health check of 2026-11-03) on a fresh SQLite metadata DB, then prints each service's health, checked
against the emulator, and the job the sensor waited for. Run through ``bash .ci/demo-backup``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta

from demo_common import ROOT, admin, airflow_env, dags_test, failed_run, start_emulator, task_states, xcom

WORK = ROOT / ".demo" / "backup"  # .demo/ is git-ignored
DAG_ID = "example_aos_backup_monitoring"
LOGICAL_DATE = os.environ.get("AOS_DEMO_DATE", "2026-11-04")  # checks the day before: 2026-11-03
SERVICES = ("m365", "iaas_paas", "dynamics365", "google_workspace", "salesforce", "aos_scan")
WAITED_JOB_SECONDS = 45  # still running when the sensor first looks (Airflow starts in ~15 s)


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    home = WORK / "airflow"
    home.mkdir(parents=True)
    emulator, info = start_emulator("demo-backup", "--records", "1000")
    try:
        job_id = admin(info, "/jobs", {"service": "m365", "run_seconds": WAITED_JOB_SECONDS})["jobId"]
        print(f"AOS emulator: {info['graph_url']}; running Microsoft 365 job {job_id} added", flush=True)
        env = airflow_env(
            home, info, AIRFLOW_VAR_AOS_M365_BACKUP_JOB_ID=job_id, AOS_EXAMPLE_POLL_INTERVAL="5"
        )
        log = WORK / "airflow.log"
        started = time.monotonic()
        returncode = dags_test(env, DAG_ID, LOGICAL_DATE, log)
        if failed_run("demo-backup", returncode, task_states(home, DAG_ID), log):
            return 1

        day = datetime.fromisoformat(LOGICAL_DATE).replace(tzinfo=UTC) - timedelta(days=1)
        report = xcom(home, DAG_ID, "backup_report")
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
        waited = xcom(home, DAG_ID, "wait_for_m365_backup")
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
