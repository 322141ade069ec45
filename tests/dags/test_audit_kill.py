"""
A real task kill mid-export: ``airflow dags test`` in a subprocess gets SIGTERM while it is paging
through a slow emulator. The task must stop within seconds and leave neither a temporary nor a final file.

On Airflow 3 the task runner's SIGTERM handler only calls ``on_kill()`` (and in a deployment the
supervisor SIGKILLs about 5 s later); on Airflow 2 it calls ``on_kill()`` and raises in the task.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from airflow_provider_aos.emulator import AosEmulator
from tests.dags.support import connection_env

DAG_ID = "aos_audit_kill"
DAG_FILE = """
from datetime import datetime, timezone

from airflow_provider_aos.operators.audit import AosAuditExportOperator

try:
    from airflow.sdk import DAG
except ImportError:
    from airflow.models.dag import DAG

with DAG("{dag_id}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
         catchup=False, default_args={{"retries": 0}}):
    AosAuditExportOperator(
        task_id="export",
        aos_conn_id="aos_kill",
        destination="{out}/audit.jsonl.gz",
        start_time="2026-10-01T00:00:00Z",
        end_time="2026-12-01T00:00:00Z",
    )
"""
TEMP = re.compile(r"\.audit\.jsonl\.gz\.[0-9a-f]{32}\.tmp")
STOP_WITHIN = 4.0  # seconds; Airflow 3's supervisor would SIGKILL at 5


def _wait_until(condition, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the DAG run ended before the kill:\n" + log.read_text()[-5000:]
        assert time.monotonic() < deadline, "the export did not start:\n" + log.read_text()[-5000:]
        time.sleep(0.1)


def test_sigterm_mid_export_stops_promptly_and_leaves_no_file(
    emulator: AosEmulator, airflow_home: Path, tmp_path: Path
):
    out, dags, log = tmp_path / "out", tmp_path / "dags", tmp_path / "run.log"
    out.mkdir()
    dags.mkdir()
    (dags / "audit_kill_dag.py").write_text(DAG_FILE.format(dag_id=DAG_ID, out=out))
    # 20,000 records at 20 a page and 0.1 s a request: the export would take minutes.
    emulator.configure(latency=0.1, page_size=20)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        **connection_env(
            "aos_kill",
            host=emulator.graph_url,
            login=emulator.config.client_id,
            password=emulator.config.client_secret,
            extra={"identity_url": emulator.identity_url},
        ),
    }
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "dags", "test", DAG_ID, "2026-11-02"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        # Mid-export: the temporary file exists and pages are being written into it.
        _wait_until(
            lambda: emulator.stats()["audit"] >= 5 and any(TEMP.fullmatch(p.name) for p in out.iterdir()),
            timeout=180,
            proc=proc,
            log=log,
        )
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_WITHIN)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running {STOP_WITHIN}s after SIGTERM ({emulator.stats()['audit']} audit requests); "
                f"files: {sorted(p.name for p in out.iterdir())}"
            ) from None
        took = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    requests_at_exit = emulator.stats()["audit"]
    assert sorted(p.name for p in out.iterdir()) == [], log.read_text()[-5000:]  # no temp, no partial file
    assert took < STOP_WITHIN
    assert requests_at_exit < 1000  # it stopped paging, it did not finish the walk
    assert proc.returncode != 0 or "killed" in log.read_text()
