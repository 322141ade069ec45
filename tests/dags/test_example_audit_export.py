"""The example DAG, run for real: the file holds exactly the emulator's records, and a rerun is identical."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest

from airflow_provider_aos.emulator import AosEmulator
from tests.dags.support import ROOT, connection_env

DAG_ID = "example_aos_audit_export"
EXAMPLE_DAG_FILE = ROOT / "example_dags" / "example_aos_audit_export.py"


def test_example_dag_exports_the_interval_and_reruns_identically(
    emulator: AosEmulator, run_dag, tmp_path: Path
):
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

    first = run_dag(DAG_ID, "2026-11-02", ROOT / "example_dags", env)
    assert first.returncode == 0, first.output[-5000:]
    manifest = first.xcom(DAG_ID, "export_audit")
    start = datetime.fromisoformat(manifest["start_time"])
    end = datetime.fromisoformat(manifest["end_time"])
    assert end - start == timedelta(days=1)  # one daily data interval

    exported = Path(manifest["path"])
    assert exported == out / f"audit-{start.date()}.jsonl.gz"  # named after the day it covers
    with gzip.open(exported, "rt") as fh:
        records = [json.loads(line) for line in fh]
    expected = emulator.count_audit(start, end)
    assert expected > 0
    assert len(records) == manifest["records"] == expected
    assert records == list(emulator.iter_audit(start, end))  # the same records, in order, nothing extra
    assert manifest["pages"] > 1  # the test really crossed page boundaries
    assert emulator.stats()["token"] == 1  # one token for the whole export

    digest = hashlib.sha256(exported.read_bytes()).hexdigest()
    second = run_dag(DAG_ID, "2026-11-02", ROOT / "example_dags", env)
    assert second.returncode == 0, second.output[-5000:]
    assert hashlib.sha256(exported.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in out.iterdir()) == [exported.name]  # no temporary file left behind


# -- The window a run exports, rendered from the task's own templates (fast: no Airflow run) --------


def _example_dag() -> Any:
    spec = importlib.util.spec_from_file_location("example_aos_audit_export", EXAMPLE_DAG_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


class _Variables:
    def get(self, key: str, default: str) -> str:
        return {"aos_audit_export_base": "/data/aos"}.get(key, default)


def _rendered(**context: Any) -> tuple[str, str, str]:
    """(destination, start_time, end_time) as the export task renders them for this context."""
    task = _example_dag().get_task("export_audit")
    context = {"params": {"start_time": None, "end_time": None}, "var": {"value": _Variables()}, **context}
    return tuple(
        task.render_template(getattr(task, f), context) for f in ("destination", "start_time", "end_time")
    )  # type: ignore[return-value]


def test_params_show_the_window_in_the_trigger_form():
    params = _example_dag().params
    for name in ("start_time", "end_time"):
        param = params.get_param(name)
        assert param.value is None  # empty in the form: the run's own day
        assert param.schema["type"] == ["null", "string"]
        assert param.schema["format"] == "date-time"
        assert "previous full UTC day" in param.description


def test_a_run_without_data_interval_exports_the_previous_full_utc_day():
    # Airflow 3, triggered with "logical_date": null: no data_interval_* in the context, only run_after.
    run = SimpleNamespace(run_after=datetime(2026, 12, 3, 7, 53, 12, tzinfo=UTC))
    assert _rendered(dag_run=run) == (
        "/data/aos/audit-2026-12-02.jsonl.gz",
        "2026-12-02T00:00:00Z",
        "2026-12-03T00:00:00Z",
    )
    # Triggered exactly at midnight: the day that just ended.
    run = SimpleNamespace(run_after=datetime(2026, 12, 3, tzinfo=UTC))
    assert _rendered(dag_run=run)[0] == "/data/aos/audit-2026-12-02.jsonl.gz"
    # No run_after at all: the day before now.
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    assert _rendered(dag_run=None)[1] == f"{yesterday}T00:00:00Z"


def test_a_scheduled_run_exports_its_data_interval():
    interval = {
        "data_interval_start": pendulum.datetime(2026, 11, 1, tz="UTC"),
        "data_interval_end": pendulum.datetime(2026, 11, 2, tz="UTC"),
        "dag_run": SimpleNamespace(run_after=pendulum.datetime(2026, 11, 2, tz="UTC")),
    }
    assert _rendered(**interval) == (
        "/data/aos/audit-2026-11-01.jsonl.gz",
        "2026-11-01T00:00:00Z",
        "2026-11-02T00:00:00Z",
    )


@pytest.mark.parametrize(
    ("start_time", "end_time", "expected"),
    [
        # One whole UTC day, in any offset: named after the day.
        ("2026-11-20T00:00:00Z", None, ("2026-11-20", "2026-11-20T00:00:00Z", "2026-11-21T00:00:00Z")),
        (None, "2026-11-21T01:00:00+01:00", ("2026-11-20", "2026-11-20T00:00:00Z", "2026-11-21T00:00:00Z")),
        # What the trigger form sends (toISOString): milliseconds and Z.
        ("2026-11-20T06:00:00.000Z", "2026-11-20T12:00:00.000Z",
         ("20261120T060000Z_20261120T120000Z", "2026-11-20T06:00:00Z", "2026-11-20T12:00:00Z")),
        ("2026-11-20T00:00:00Z", "2026-11-27T00:00:00Z",
         ("20261120T000000Z_20261127T000000Z", "2026-11-20T00:00:00Z", "2026-11-27T00:00:00Z")),
    ],
)  # fmt: skip
def test_params_choose_the_window_and_the_file_name(start_time, end_time, expected):
    interval = {
        "data_interval_start": pendulum.datetime(2026, 11, 1, tz="UTC"),
        "data_interval_end": pendulum.datetime(2026, 11, 2, tz="UTC"),
    }
    params = {"start_time": start_time, "end_time": end_time}
    destination, start, end = _rendered(params=params, **interval)
    assert (destination, start, end) == (f"/data/aos/audit-{expected[0]}.jsonl.gz", *expected[1:])


@pytest.mark.parametrize("value", ["2026-11-20", "2026-11-20T00:00:00", "yesterday"])
def test_a_window_param_without_offset_is_refused_by_name(value):
    with pytest.raises(ValueError, match=r"start_time: .*(no timezone|not an ISO 8601)"):
        _rendered(params={"start_time": value, "end_time": None})
