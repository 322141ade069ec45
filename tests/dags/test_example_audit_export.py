"""The example DAG, run for real: the file holds exactly the emulator's records, and a rerun is identical."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path

from airflow_provider_aos.emulator import AosEmulator
from tests.dags.support import ROOT, connection_env

DAG_ID = "example_aos_audit_export"


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
