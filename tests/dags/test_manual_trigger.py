"""
The example DAG triggered by hand, as a new user does, in a real deployment.

Airflow 3: scheduler (LocalExecutor), DAG processor and API server on a fresh SQLite DB; runs are
triggered through ``POST /api/v2/dags/{dag_id}/dagRuns`` with ``"logical_date": null``, so they have no
data interval. Airflow 2.11 has no such runs (every run has a data interval); there the params are
checked to override the window through ``airflow dags test -c``.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from airflow import __version__ as airflow_version

from airflow_provider_aos.emulator import AosEmulator
from tests.dags.deployment import Deployment
from tests.dags.support import ROOT, connection_env

DAG_ID = "example_aos_audit_export"
AIRFLOW_3 = int(airflow_version.split(".")[0]) >= 3
DAY = timedelta(days=1)


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def read_records(path: Path) -> list[dict[str, object]]:
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if not AIRFLOW_3:
        pytest.skip("Airflow 2 has no runs without a logical date")
    home = tmp_path_factory.mktemp("deployment")
    today = datetime.now(UTC).date()
    # Data around today, so that "the previous full day" of a run triggered now has records.
    emulator_args = ["--records", "20000", "--page-size", "500"]
    emulator_args += ["--data-start", str(today - 8 * DAY), "--data-end", str(today + 2 * DAY)]
    env = {"AIRFLOW_VAR_AOS_AUDIT_EXPORT_BASE": str(home / "output")}
    with Deployment(home, ROOT / "example_dags", emulator_args, env) as deployed:
        deployed.wait_for_dag(DAG_ID)
        deployed.api("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
        yield deployed


def test_manual_run_without_logical_date_exports_the_previous_day(deployment: Deployment):
    run = deployment.api("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None})
    assert run["logical_date"] is None
    assert run["data_interval_start"] is None
    deployment.wait_for_run(DAG_ID, run["dag_run_id"])

    day = datetime.fromisoformat(run["run_after"]).astimezone(UTC).date() - DAY
    start, end = midnight(day), midnight(day + DAY)
    manifest = deployment.xcom(DAG_ID, run["dag_run_id"], "export_audit")
    exported = deployment.home / "output" / f"audit-{day}.jsonl.gz"
    assert manifest["path"] == str(exported)  # the file name says the day the operator exported
    assert (manifest["start_time"], manifest["end_time"]) == (
        f"{day}T00:00:00.000Z",
        f"{day + DAY}T00:00:00.000Z",
    )
    records = read_records(exported)
    expected = deployment.emulator_count(start, end)
    assert expected > 0
    assert len(records) == manifest["records"] == expected
    assert all(str(r["actionTime"]).startswith(str(day)) for r in records)


def test_manual_run_params_choose_the_window(deployment: Deployment):
    """What the trigger form sends when start_time/end_time are filled in: conf with both params."""
    day = datetime.now(UTC).date() - 3 * DAY
    start, end = midnight(day) + timedelta(hours=6), midnight(day) + timedelta(hours=12)
    conf = {"start_time": f"{day}T06:00:00.000Z", "end_time": f"{day}T12:00:00.000Z"}
    run = deployment.api("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
    deployment.wait_for_run(DAG_ID, run["dag_run_id"])

    manifest = deployment.xcom(DAG_ID, run["dag_run_id"], "export_audit")
    stamp = day.strftime("%Y%m%d")
    # Not a whole day: named after the window, so it cannot replace that day's file.
    exported = deployment.home / "output" / f"audit-{stamp}T060000Z_{stamp}T120000Z.jsonl.gz"
    assert manifest["path"] == str(exported)
    assert (manifest["start_time"], manifest["end_time"]) == (conf["start_time"], conf["end_time"])
    expected = deployment.emulator_count(start, end)
    assert expected > 0
    assert len(read_records(exported)) == manifest["records"] == expected


@pytest.mark.skipif(AIRFLOW_3, reason="covered on Airflow 3 by the REST-triggered runs above")
def test_conf_overrides_the_window_on_airflow_2(emulator: AosEmulator, airflow_home: Path, tmp_path: Path):
    """``airflow dags test -c`` (like ``airflow dags trigger -c``): start_time alone exports that day."""
    out = tmp_path / "out"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
        "AIRFLOW_VAR_AOS_AUDIT_EXPORT_BASE": str(out),
        **connection_env(
            "aos_default",
            host=emulator.graph_url,
            login=emulator.config.client_id,
            password=emulator.config.client_secret,
            extra={"identity_url": emulator.identity_url},
        ),
    }
    conf = json.dumps({"start_time": "2026-11-20T00:00:00Z"})
    # The run's own interval is 2026-11-02; the params must win.
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", DAG_ID, "2026-11-03", "-c", conf],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    exported = out / "audit-2026-11-20.jsonl.gz"
    assert sorted(p.name for p in out.iterdir()) == [exported.name]
    records = read_records(exported)
    start = datetime(2026, 11, 20, tzinfo=UTC)
    expected = emulator.count_audit(start, start + DAY)
    assert expected > 0
    assert records == list(emulator.iter_audit(start, start + DAY))
