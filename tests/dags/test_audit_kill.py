"""
A real task kill mid-export: ``airflow dags test`` in a subprocess gets SIGTERM while it is paging
through a slow emulator. The task must stop within seconds and leave neither a temporary nor a final file,
nor a spool folder; a second run of the same DAG (the retry) then exports the whole window.

On Airflow 3 the task runner's SIGTERM handler only calls ``on_kill()`` (and in a deployment the
supervisor SIGKILLs about 5 s later); on Airflow 2 it calls ``on_kill()`` and raises in the task.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from airflow_provider_aos.emulator import AosEmulator
from tests.dags.support import DagRunResult, connection_env
from tests.integration.test_audit_export import spools_of

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
# The task's failure as each Airflow logs it: our error on Airflow 3, the one Airflow 2 raises in the task.
STOPPED = re.compile(r"the export was stopped because the task was killed|AirflowTaskTerminated")
STOP_WITHIN = 3.0  # seconds; Airflow 3's supervisor would SIGKILL at 5


def _wait_until(
    condition: Callable[[], bool], timeout: float, proc: subprocess.Popen | None, log: Path, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc is None or proc.poll() is None, "the DAG run ended early:\n" + log.read_text()[-5000:]
        assert time.monotonic() < deadline, f"{what}:\n" + log.read_text()[-5000:]
        time.sleep(0.05)


def test_sigterm_mid_export_stops_promptly_and_leaves_no_file(
    emulator: AosEmulator, airflow_home: Path, tmp_path: Path
):
    out, dags, log = tmp_path / "out", tmp_path / "dags", tmp_path / "run.log"
    destination = out / "audit.jsonl.gz"
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
        "PYTHONUNBUFFERED": "1",  # the log file is read while the run goes on
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
        # Mid-export: the temporary file exists and pages are being written into it, slices into spools.
        _wait_until(
            lambda: (
                emulator.stats()["audit"] >= 5
                and any(TEMP.fullmatch(p.name) for p in out.iterdir())
                and any(folder.exists() for folder in spools_of(destination))
            ),
            timeout=180,
            proc=proc,
            log=log,
            what="the export did not start",
        )
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # The task must have stopped and cleaned up well before the 5 s SIGKILL of Airflow 3's supervisor.
        _wait_until(
            lambda: STOPPED.search(log.read_text()) is not None,
            timeout=STOP_WITHIN,
            proc=None,
            log=log,
            what=f"the task did not stop within {STOP_WITHIN}s of SIGTERM",
        )
        stopped_after = time.monotonic() - killed_at
        files_at_stop = sorted(p.name for p in out.iterdir())
        spools_at_stop = spools_of(destination)
        # The rest is `airflow dags test` closing the run and its interpreter (about 2 s), not the task.
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert files_at_stop == [], log.read_text()[-5000:]  # no temp file, no partial file
    assert sorted(p.name for p in out.iterdir()) == []
    assert stopped_after < STOP_WITHIN
    assert emulator.stats()["audit"] < 1000  # it stopped paging, it did not finish the walk
    assert spools_at_stop == []  # on_kill removed the spools with the temporary file
    assert spools_of(destination) == []

    # The retry: the same DAG run again on a fast API exports the whole window, exactly.
    emulator.configure(latency=0.0, page_size=1000)
    emulator.reset_stats()
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", DAG_ID, "2026-11-02"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    retry = DagRunResult(done.returncode, done.stdout + done.stderr, airflow_home)
    assert retry.returncode == 0, retry.output[-5000:]
    manifest = retry.xcom(DAG_ID, "export")
    start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    expected = emulator.count_audit(start, end)
    assert manifest["records"] == expected == emulator.config.records  # the window holds the whole data set
    with gzip.open(destination, "rt") as fh:
        assert sum(1 for _ in fh) == expected
    assert sorted(p.name for p in out.iterdir()) == [destination.name]  # no temporary file either
    assert spools_of(destination) == []
