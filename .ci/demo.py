"""
The main job, end to end, on this machine: the example audit-export DAG against the bundled emulator.

Starts the AOS emulator, points ``aos_default`` at it, runs ``airflow dags test`` on a fresh SQLite
metadata DB, then prints where the exported file is and how many records it holds (and whether that
is exactly what the emulator holds for the run's interval). Run through ``bash .ci/demo``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import time
import urllib.request
from datetime import date, timedelta

from demo_common import ROOT, airflow_env, dags_test, start_emulator

WORK = ROOT / ".demo"
DAG_ID = "example_aos_audit_export"
LOGICAL_DATE = os.environ.get("AOS_DEMO_DATE", "2026-11-02")
RECORDS = os.environ.get("AOS_DEMO_RECORDS", "200000")


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    home, output = WORK / "airflow", WORK / "output"
    home.mkdir(parents=True)
    output.mkdir(parents=True)
    emulator, info = start_emulator("demo", "--records", RECORDS)
    try:
        print(f"AOS emulator: {info['graph_url']} ({info['records']} audit records)", flush=True)
        env = airflow_env(home, info, AIRFLOW_VAR_AOS_AUDIT_EXPORT_BASE=str(output))
        log = WORK / "airflow.log"
        started = time.monotonic()
        returncode = dags_test(env, DAG_ID, LOGICAL_DATE, log)
        if returncode != 0:
            print(log.read_text()[-6000:])
            print(f"demo: airflow dags test failed (exit {returncode}); full log: {log}")
            return 1
        files = sorted(output.glob("*.jsonl.gz"))
        if len(files) != 1:
            print(f"demo: expected one exported file in {output}, found {[f.name for f in files]}")
            return 1
        exported = files[0]
        day = date.fromisoformat(exported.name.removeprefix("audit-").removesuffix(".jsonl.gz"))
        records = 0
        with gzip.open(exported, "rt") as fh:
            for line in fh:
                records += 1
                if not json.loads(line)["actionTime"].startswith(day.isoformat()):
                    print(f"demo: a record of {exported.name} is not from {day}: {line[:120]}")
                    return 1
        query = f"startTime={day}T00:00:00Z&endTime={day + timedelta(days=1)}T00:00:00Z"
        with urllib.request.urlopen(f"{info['admin_url']}/audit/count?{query}") as resp:  # noqa: S310 - loopback
            expected = json.load(resp)["count"]
        print()
        print(f"Exported file: {exported}")
        print(
            f"Records:       {records} (emulator holds {expected} for {day}; {'match' if records == expected else 'MISMATCH'})"
        )
        print(f"Took {time.monotonic() - started:.0f}s")
        return 0 if records == expected else 1
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
