"""
A real DAG run of the audit export with an outlet (an ``Asset`` on Airflow 3, a ``Dataset`` on 2.11,
both through the common.compat import): the asset event Airflow records carries the manifest as its
``extra``, so a DAG scheduled on the asset reads which file and window arrived.
"""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow import __version__ as AIRFLOW_VERSION

from airflow_provider_aos.emulator import AosEmulator
from tests.dags.support import connection_env

AIRFLOW_V_2 = AIRFLOW_VERSION.startswith("2.")
DAG_ID = "aos_audit_assets"
URI = "aos-audit://test/audit"
DAG_FILE = """
from datetime import datetime, timezone

from airflow.providers.common.compat.assets import Asset

from airflow_provider_aos.operators.audit import AosAuditExportOperator

try:
    from airflow.sdk import DAG
except ImportError:
    from airflow.models.dag import DAG

with DAG("{dag_id}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
         catchup=False, default_args={{"retries": 0}}):
    AosAuditExportOperator(
        task_id="export",
        aos_conn_id="aos_assets",
        destination="{out}/audit.jsonl.gz",
        start_time="2026-11-03T00:00:00Z",
        end_time="2026-11-05T00:00:00Z",
        max_concurrency=8,
        outlets=[Asset("{uri}")],
    )
"""


def _asset_events(home: Path, uri: str) -> list[dict[str, Any]]:
    """The events recorded for ``uri`` (Airflow 3: asset_event; 2.11: dataset_event), oldest first."""
    with sqlite3.connect(home / "airflow.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        kind = "asset" if "asset_event" in tables else "dataset"
        rows = db.execute(
            f"SELECT e.extra, e.source_dag_id, e.source_task_id, e.source_run_id "  # noqa: S608 - fixed names
            f"FROM {kind}_event e JOIN {kind} a ON a.id = e.{kind}_id WHERE a.uri = ? ORDER BY e.id",
            (uri,),
        ).fetchall()
    return [
        {
            "extra": json.loads(extra) if isinstance(extra, str) else extra,
            "dag_id": dag,
            "task_id": task,
            "run_id": run,
        }
        for extra, dag, task, run in rows
    ]


def test_the_asset_event_of_a_real_run_carries_the_manifest(
    emulator: AosEmulator, run_dag, airflow_home: Path, tmp_path: Path
):
    out, dags = tmp_path / "out", tmp_path / "dags"
    out.mkdir()
    dags.mkdir()
    (dags / "audit_assets_dag.py").write_text(DAG_FILE.format(dag_id=DAG_ID, out=out, uri=URI))
    emulator.configure(page_size=50)
    env = connection_env(
        "aos_assets",
        host=emulator.graph_url,
        login=emulator.config.client_id,
        password=emulator.config.client_secret,
        extra={"identity_url": emulator.identity_url},
    )
    assert _asset_events(airflow_home, URI) == []
    if AIRFLOW_V_2:
        # Airflow 2's `dags test` registers no dataset (3's does), and an event for a dataset the DB
        # does not know is dropped ("DatasetModel ... not found"). In a deployment the DAG processor
        # has registered it before any run; `dags reserialize` does what it does.
        done = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "reserialize"],
            env={**os.environ, "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags), **env},
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    result = run_dag(DAG_ID, "2026-11-05", dags, env)
    assert result.returncode == 0, result.output[-5000:]
    assert result.task_states(DAG_ID) == {"export": "success"}

    manifest = result.xcom(DAG_ID, "export")
    start, end = (
        datetime.fromisoformat("2026-11-03T00:00:00+00:00"),
        datetime.fromisoformat("2026-11-05T00:00:00+00:00"),
    )
    expected = emulator.count_audit(start, end)
    assert expected > 0
    assert manifest["path"] == str(out / "audit.jsonl.gz")
    assert manifest["records"] == expected
    assert (manifest["start_time"], manifest["end_time"]) == (
        "2026-11-03T00:00:00.000Z",
        "2026-11-05T00:00:00.000Z",
    )
    assert manifest["slices"] == 48  # 2 days in 1-hour slices
    assert manifest["max_concurrency"] == 8
    with gzip.open(out / "audit.jsonl.gz", "rt") as fh:
        assert sum(1 for _ in fh) == expected

    events = _asset_events(airflow_home, URI)
    assert len(events) == 1, events  # one event, from this run's export task
    event = events[0]
    assert (event["dag_id"], event["task_id"]) == (DAG_ID, "export")
    assert event["extra"] == manifest  # the whole manifest, exactly as the task returned it
