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
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from demo_common import ROOT, admin, airflow_env, dags_test, failed_run, start_emulator, task_states, xcom

WORK = ROOT / ".demo" / "opus"  # .demo/ is git-ignored
DAG_ID = "example_aos_opus_records"
LOGICAL_DATE = os.environ.get("AOS_DEMO_DATE", "2026-11-02")
DOCUMENTS = ROOT / "example_dags" / "data" / "opus_documents.csv"
CONNECTION = "6a1f3c52-8d4e-4b7a-9c2e-5f0d1b7e9a31"  # the demo Opus connector connection (any GUID)
SITE = "https://contoso.sharepoint.com/sites/ArchivedProjects"  # one of the emulator's demo archives
RETENTION_DAYS = "2555"  # seven years


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
    emulator, info = start_emulator(
        "demo-opus",
        "--records",
        "1000",
        "--opus-retention-days",
        RETENTION_DAYS,
        "--opus-restore-seconds",
        "8",
    )
    try:
        earlier = earlier_records()
        admin(info, "/opus/records", {"id": CONNECTION, "records": earlier})
        print(
            f"AOS emulator: {info['graph_url']}; Opus connection {CONNECTION} holds {len(earlier)} records "
            f"of earlier runs; retention {RETENTION_DAYS} days after timeModified",
            flush=True,
        )
        env = airflow_env(
            home,
            info,
            AIRFLOW_VAR_AOS_OPUS_CONNECTION_ID=CONNECTION,
            AIRFLOW_VAR_AOS_OPUS_BASE=str(output),
            AIRFLOW_VAR_AOS_OPUS_RESTORE_SITE=SITE,
            AOS_EXAMPLE_POLL_INTERVAL="2",
        )
        log = WORK / "airflow.log"
        started = time.monotonic()
        returncode = dags_test(env, DAG_ID, LOGICAL_DATE, log)
        if failed_run("demo-opus", returncode, task_states(home, DAG_ID), log):
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
    submit = xcom(home, DAG_ID, "submit_records")
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

    due = xcom(home, DAG_ID, "due_records")
    destroyed = xcom(home, DAG_ID, "destroy_records")
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

    restored = xcom(home, DAG_ID, "restore_site")
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
