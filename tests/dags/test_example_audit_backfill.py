"""
The example backfill DAG, run for real: one mapped export per day, each file holding exactly the
emulator's records of its day, and no record in two files, including one stamped exactly at midnight.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_aos.emulator import AosEmulator, EmulatorConfig
from airflow_provider_aos.exceptions import AosConfigError
from tests.dags.support import ROOT, connection_env

DAG_ID = "example_aos_audit_backfill"
EXAMPLE_DAG_FILE = ROOT / "example_dags" / "example_aos_audit_backfill.py"
DAY = timedelta(days=1)
NOV1, NOV2, NOV5 = (datetime(2026, 11, d, tzinfo=UTC) for d in (1, 2, 5))  # the DAG's default range


@pytest.fixture
def midnight_emulator() -> Iterator[AosEmulator]:
    """
    An emulator whose seeded records are shifted so that one is stamped exactly 2026-11-02T00:00:00.000Z,
    the boundary between the first two mapped windows. (A record's offset from the data's start does not
    depend on the start, so moving the start moves every record by the same amount.)
    """
    config = EmulatorConfig(records=20_000, page_size=5)  # ~330 records a day, pages of 5: many pages
    first_after = next(AosEmulator(config).iter_audit(NOV2, NOV2 + DAY))  # not started: data only
    shift = datetime.fromisoformat(str(first_after["actionTime"])) - NOV2
    shifted = dataclasses.replace(
        config, data_start=config.data_start - shift, data_end=config.data_end - shift
    )
    with AosEmulator(shifted) as emulator:
        yield emulator


def _read(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh]


def test_each_day_is_one_mapped_export_and_each_record_lands_in_exactly_one_file(
    midnight_emulator: AosEmulator, run_dag, tmp_path: Path
):
    emulator = midnight_emulator
    boundary_record = next(emulator.iter_audit(NOV2, NOV2 + DAY))
    assert boundary_record["actionTime"] == "2026-11-02T00:00:00.000Z"
    out = tmp_path / "out"
    env = {
        **connection_env(
            "aos_default",
            host=emulator.graph_url,
            login=emulator.config.client_id,
            password=emulator.config.client_secret,
            extra={"identity_url": emulator.identity_url},
        ),
        "AIRFLOW_VAR_AOS_AUDIT_EXPORT_BASE": str(out),
    }

    done = run_dag(DAG_ID, "2026-12-01", ROOT / "example_dags", env)  # default params: Nov 1 to Nov 4
    assert done.returncode == 0, done.output[-5000:]

    with sqlite3.connect(done.home / "airflow.db") as db:
        run_id = db.execute(
            "SELECT run_id FROM task_instance WHERE dag_id = ? AND task_id = 'summarise' "
            "ORDER BY start_date DESC LIMIT 1",
            (DAG_ID,),
        ).fetchone()[0]
        mapped = db.execute(
            "SELECT map_index, state, rendered_map_index FROM task_instance "
            "WHERE dag_id = ? AND run_id = ? AND task_id = 'export_day' ORDER BY map_index",
            (DAG_ID, run_id),
        ).fetchall()
    days = [f"2026-11-0{d}" for d in (1, 2, 3, 4)]
    assert mapped == [(i, "success", day) for i, day in enumerate(days)]  # one task per day, labelled

    files = [out / f"audit-{day}.jsonl.gz" for day in days]
    assert sorted(out.iterdir()) == files  # one file per day, no temporary file left behind
    exported = []
    for day, path in zip(days, files, strict=True):
        start = datetime.fromisoformat(f"{day}T00:00:00+00:00")
        records = _read(path)
        assert len(records) == emulator.count_audit(start, start + DAY) > 0
        assert records == list(emulator.iter_audit(start, start + DAY))  # the same records, in order
        exported += records

    # Together: every record of the range exactly once, in order. The record at midnight (which the
    # API, inclusive at both ends, also returns to the day before) is in the second day's file only.
    assert exported == list(emulator.iter_audit(NOV1, NOV5))
    assert boundary_record not in _read(files[0])
    assert _read(files[1])[0] == boundary_record
    lines = [json.dumps(r, sort_keys=True) for r in exported]
    assert len(set(lines)) == len(lines)

    summary = done.xcom(DAG_ID, "summarise")
    assert summary["files"] == 4
    assert summary["records"] == len(exported) == emulator.count_audit(NOV1, NOV5)
    assert summary["bytes"] == sum(p.stat().st_size for p in files)
    assert (summary["start_time"], summary["end_time"]) == (
        "2026-11-01T00:00:00.000Z",
        "2026-11-05T00:00:00.000Z",
    )
    assert [d["path"] for d in summary["days"]] == [str(p) for p in files]


# -- The windows a run plans, from the task's own callable (fast: no Airflow run) ------------------


def _plan_windows() -> Any:
    spec = importlib.util.spec_from_file_location(DAG_ID, EXAMPLE_DAG_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag.get_task("plan_windows").python_callable


def test_the_days_are_planned_with_the_daily_dags_file_names():
    windows = _plan_windows()("2026-11-30", "2026-12-01", "s3://bucket/aos/")
    assert windows == [
        {
            "start_time": "2026-11-30T00:00:00.000Z",
            "end_time": "2026-12-01T00:00:00.000Z",
            "destination": "s3://bucket/aos/audit-2026-11-30.jsonl.gz",
        },
        {
            "start_time": "2026-12-01T00:00:00.000Z",
            "end_time": "2026-12-02T00:00:00.000Z",
            "destination": "s3://bucket/aos/audit-2026-12-01.jsonl.gz",
        },
    ]
    # One day; a folder whose name has braces is taken literally.
    assert _plan_windows()("2026-11-30", "2026-11-30", "/data/{x}")[0]["destination"] == (
        "/data/{x}/audit-2026-11-30.jsonl.gz"
    )


@pytest.mark.parametrize(
    ("start_date", "end_date", "message"),
    [
        ("2026-11-04", "2026-11-01", r"^end_date: 2026-11-01 is before start_date 2026-11-04"),
        ("2026-11-01T00:00:00Z", "2026-11-04", r"^start_date: .* is not a day; give YYYY-MM-DD"),
        ("2026-11-01", "", r"^end_date: '' is not a day"),
        ("2024-01-01", "2026-12-31", r"^every: .* makes 1096 windows, .*max_map_length"),
    ],
)
def test_a_bad_range_fails_the_plan_naming_the_param(start_date: str, end_date: str, message: str):
    with pytest.raises(AosConfigError, match=message):
        _plan_windows()(start_date, end_date, "/data/aos")
