"""
A range of days exported as mapped tasks, end to end on this machine: the example backfill DAG.

Starts the AOS emulator, points ``aos_default`` at it, runs ``airflow dags test
example_aos_audit_backfill`` on a fresh SQLite metadata DB (its default params: 2026-11-01 to
2026-11-04, one mapped export task per day), then checks every day's file against the emulator: its
record count equals ``GET {admin}/audit/count`` for that day, and every record in it is from that day
(so, the counts matching, no record is in two files). Run through ``bash .ci/demo-backfill``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

from demo_common import ROOT, admin, airflow_env, dags_test, failed_run, start_emulator, task_states, xcom

from airflow_provider_aos.windows import iso_z, parse_time

WORK = ROOT / ".demo" / "backfill"  # .demo/ is git-ignored
DAG_ID = "example_aos_audit_backfill"
LOGICAL_DATE = "2026-12-01"  # any date: the range comes from the DAG's params
RECORDS = os.environ.get("AOS_DEMO_RECORDS", "200000")


def check_file(path: Path, start: str, end: str) -> tuple[int, str | None]:
    """Records in an exported file, and the first one outside ``[start, end)`` if any."""
    lower, upper = parse_time(start, "start_time"), parse_time(end, "end_time")
    records = 0
    with gzip.open(path, "rt") as fh:
        for line in fh:
            records += 1
            if not lower <= parse_time(json.loads(line)["actionTime"], "actionTime") < upper:
                return records, line[:120]
    return records, None


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    home, output = WORK / "airflow", WORK / "output"
    home.mkdir(parents=True)
    output.mkdir(parents=True)
    emulator, info = start_emulator("demo-backfill", "--records", RECORDS)
    try:
        print(f"AOS emulator: {info['graph_url']} ({info['records']} audit records)", flush=True)
        env = airflow_env(home, info, AIRFLOW_VAR_AOS_AUDIT_EXPORT_BASE=str(output))
        log = WORK / "airflow.log"
        started = time.monotonic()
        returncode = dags_test(env, DAG_ID, LOGICAL_DATE, log)
        took = time.monotonic() - started
        if failed_run("demo-backfill", returncode, task_states(home, DAG_ID), log):
            return 1

        summary = xcom(home, DAG_ID, "summarise")
        exported = sorted(output.glob("*.jsonl.gz"))
        days = summary["days"]
        print(
            f"\nExported {days[0]['day']} to {days[-1]['day']} into {output}, "
            "one mapped export_day task per day:"
        )
        ok = [Path(day["path"]) for day in days] == exported  # one file per day, nothing else
        total = 0
        for day in days:
            start = f"{day['day']}T00:00:00Z"
            end = iso_z(parse_time(start, "day") + timedelta(days=1))
            records, stray = check_file(Path(day["path"]), start, end)
            expected = admin(info, "/audit/count?" + urlencode({"startTime": start, "endTime": end}))["count"]
            match = records == expected == day["records"] and stray is None
            ok &= match
            total += records
            verdict = "match" if match else "MISMATCH"
            print(
                f"  {day['day']}  {Path(day['path']).name}  {records:>6} records "
                f"(emulator holds {expected}; {verdict})"
            )
            if stray is not None:
                print(f"    a record outside {start} to {end}: {stray}")
        expected_total = admin(
            info,
            "/audit/count?" + urlencode({"startTime": summary["start_time"], "endTime": summary["end_time"]}),
        )["count"]
        ok &= total == expected_total == summary["records"]
        print(
            f"Total: {total} records in {len(exported)} files (emulator holds {expected_total} for the range; "
            f"{'match, each record exactly once' if ok else 'MISMATCH'})"
        )
        print(f"Took {took:.0f}s")
        return 0 if ok else 1
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
