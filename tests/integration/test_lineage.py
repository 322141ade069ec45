"""
OpenLineage: the dataset names of an audit export, and the events a real DAG run emits.

The naming helpers are plain functions (no OpenLineage import), tested on every Airflow. Building the
``OperatorLineage`` needs the openlineage provider; the real run (``airflow dags test`` in a subprocess,
the emulator in this process, events captured by OpenLineage's file transport) needs it on Airflow 3.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_aos.emulator import AosEmulator
from airflow_provider_aos.lineage import api_dataset_name, storage_dataset_name
from tests.dags import conftest as dag_fixtures
from tests.dags.support import connection_env

# The real-DAG-run fixtures of tests/dags (a migrated metadata DB, ``airflow dags test``), used here too.
airflow_home = dag_fixtures.airflow_home
run_dag = dag_fixtures.run_dag


def _has_provider() -> bool:
    try:
        import airflow.providers.openlineage  # noqa: F401
    except ImportError:
        return False
    return True


def _airflow_major() -> int:
    from airflow import __version__

    return int(__version__.split(".")[0])


# -- Names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_url", "expected"),
    [
        ("https://graph-us.avepointonlineservices.com", ("https://graph-us.avepointonlineservices.com", "/aos/audit")),
        ("https://graph-us.avepointonlineservices.com/", ("https://graph-us.avepointonlineservices.com", "/aos/audit")),
        # The emulator: a port and a base path; the path is part of the name.
        ("http://127.0.0.1:38211/graph", ("http://127.0.0.1:38211", "/graph/aos/audit")),
        ("http://127.0.0.1:38211/graph/", ("http://127.0.0.1:38211", "/graph/aos/audit")),
        # The default port is left out, the host lower-cased; IPv6 keeps its brackets.
        ("https://Graph-EU.AvePointOnlineServices.com:443", ("https://graph-eu.avepointonlineservices.com", "/aos/audit")),
        ("https://graph.example.com:8443/api", ("https://graph.example.com:8443", "/api/aos/audit")),
        ("http://[::1]:8080/graph", ("http://[::1]:8080", "/graph/aos/audit")),
        # Never user info, a query or a fragment.
        ("https://user:s3cret@graph.example.com/v1?code=s3cret#s3cret", ("https://graph.example.com", "/v1/aos/audit")),
    ],
)  # fmt: skip
def test_the_api_is_named_by_its_host_and_endpoint_path(api_url: str, expected: tuple[str, str]):
    assert api_dataset_name(api_url) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # A local file: the "file" namespace and the absolute path, from a path or a file: URL.
        ("/tmp/x/audit-2026-11-01.jsonl.gz", ("file", "/tmp/x/audit-2026-11-01.jsonl.gz")),
        ("file:///tmp/x/audit-2026-11-01.jsonl.gz", ("file", "/tmp/x/audit-2026-11-01.jsonl.gz")),
        ("file://localhost/tmp/x/a.jsonl", ("file", "/tmp/x/a.jsonl")),
        ("file:///tmp/with%20space/a.jsonl", ("file", "/tmp/with space/a.jsonl")),
        ("file://nas01/share/a.jsonl", ("file://nas01", "/share/a.jsonl")),  # a remote file system
        # Object stores: the bucket, and the object key without leading slash.
        ("s3://my-bucket/aos/2026-11-01.jsonl", ("s3://my-bucket", "aos/2026-11-01.jsonl")),
        ("s3://aws_conn@my-bucket/aos/a.jsonl", ("s3://my-bucket", "aos/a.jsonl")),  # Airflow's conn id
        ("s3a://my-bucket/a.jsonl", ("s3://my-bucket", "a.jsonl")),
        ("gs://my-bucket/aos/a.jsonl.gz", ("gs://my-bucket", "aos/a.jsonl.gz")),
        ("gcs://my-bucket/aos/a.jsonl.gz", ("gs://my-bucket", "aos/a.jsonl.gz")),
        ("abfs://container/aos/a.jsonl", ("abfss://container", "aos/a.jsonl")),
        ("abfs://azure_conn@container/aos/a.jsonl", ("abfss://container", "aos/a.jsonl")),
        ("abfss://container@acct.dfs.core.windows.net/aos/a.jsonl", ("abfss://container@acct.dfs.core.windows.net", "aos/a.jsonl")),
        ("wasbs://container@acct.blob.core.windows.net/a.jsonl", ("wasbs://container@acct.blob.core.windows.net", "a.jsonl")),
        # Anything else: scheme://host[:port] and the path, never user info or a query string.
        ("sftp://user:pw@files.example.com:2222/data/a.jsonl", ("sftp://files.example.com:2222", "/data/a.jsonl")),
        ("s3://my-bucket/a.jsonl?X-Amz-Signature=s3cret", ("s3://my-bucket", "a.jsonl")),
    ],
)  # fmt: skip
def test_the_file_is_named_per_the_openlineage_spec(path: str, expected: tuple[str, str]):
    assert storage_dataset_name(path) == expected


def test_a_relative_local_path_is_named_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert storage_dataset_name("out/a.jsonl") == ("file", str(tmp_path / "out" / "a.jsonl"))


def test_the_module_imports_nothing_from_openlineage():
    code = "import sys, airflow_provider_aos.lineage; print([m for m in sys.modules if 'openlineage' in m])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_operator_lineage_has_both_datasets_and_the_row_count():
    pytest.importorskip("airflow.providers.openlineage", reason="the openlineage provider is not installed")
    from airflow_provider_aos.lineage import audit_export_lineage

    manifest = {"path": "s3://aws_conn@bucket/aos/audit-2026-11-01.jsonl.gz", "records": 3279, "bytes": 12345}
    lineage = audit_export_lineage(api_url="https://graph-us.avepointonlineservices.com", manifest=manifest)
    [source] = lineage.inputs
    [target] = lineage.outputs
    assert (source.namespace, source.name) == ("https://graph-us.avepointonlineservices.com", "/aos/audit")
    assert (target.namespace, target.name) == ("s3://bucket", "aos/audit-2026-11-01.jsonl.gz")
    stats = target.outputFacets["outputStatistics"]
    assert (stats.rowCount, stats.size) == (3279, 12345)

    unknown_size = audit_export_lineage(api_url="https://h", manifest={**manifest, "bytes": None})
    assert unknown_size.outputs[0].outputFacets["outputStatistics"].size is None


# -- A real DAG run on Airflow 3: the events the provider emits ------------------------------------

DAG_ID = "aos_audit_lineage"
DAG_FILE = """
from datetime import datetime, timezone

from airflow.sdk import DAG

from airflow_provider_aos.operators.audit import AosAuditExportOperator

with DAG("{dag_id}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
         catchup=False, default_args={{"retries": 0}}):
    AosAuditExportOperator(
        task_id="export",
        aos_conn_id="aos_lineage",
        destination="{out}/audit-2026-11-01.jsonl.gz",
        start_time="2026-11-01T00:00:00Z",
        end_time="2026-11-02T00:00:00Z",
    )
"""


def _events(path: Path) -> list[dict[str, Any]]:
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )


@pytest.mark.skipif(not _has_provider(), reason="the openlineage provider is not installed")
@pytest.mark.skipif(_airflow_major() < 3, reason="OpenLineage events are checked on Airflow 3 only")
def test_a_real_run_emits_the_api_and_the_file_with_the_row_count(
    emulator: AosEmulator, run_dag, tmp_path: Path
):
    out, dags, events_file = tmp_path / "out", tmp_path / "dags", tmp_path / "events.jsonl"
    out.mkdir()
    dags.mkdir()
    (dags / "audit_lineage_dag.py").write_text(DAG_FILE.format(dag_id=DAG_ID, out=out))
    transport = {"type": "file", "log_file_path": str(events_file), "append": True}
    env = {
        **connection_env(
            "aos_lineage",
            host=emulator.graph_url,
            login=emulator.config.client_id,
            password=emulator.config.client_secret,
            extra={"identity_url": emulator.identity_url},
        ),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "aos-test",
    }
    result = run_dag(DAG_ID, "2026-11-02", dags, env)
    assert result.returncode == 0, result.output[-5000:]
    manifest = result.xcom(DAG_ID, "export")
    assert manifest["records"] > 0

    events = _events(events_file)
    complete = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == f"{DAG_ID}.export"]
    assert len(complete) == 1, (
        f"events: {[(e['eventType'], e['job']['name']) for e in events]}\n{result.output[-5000:]}"
    )
    [event] = complete
    assert event["job"]["namespace"] == "aos-test"
    # The emulator's Graph API is http://127.0.0.1:PORT/graph.
    assert [(d["namespace"], d["name"]) for d in event["inputs"]] == [(emulator.root_url, "/graph/aos/audit")]
    [output] = event["outputs"]
    assert (output["namespace"], output["name"]) == ("file", str(out / "audit-2026-11-01.jsonl.gz"))
    stats = output["outputFacets"]["outputStatistics"]
    assert (
        stats["rowCount"]
        == manifest["records"]
        == emulator.count_audit(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))
    )
    assert stats["size"] == manifest["bytes"] == (out / "audit-2026-11-01.jsonl.gz").stat().st_size
    text = json.dumps(events)
    assert all(secret not in text for secret in [emulator.config.client_secret, *emulator.issued_tokens()])
