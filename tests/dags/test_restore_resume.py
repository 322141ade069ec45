"""
AosM365RestoreOperator in real DAG runs (``airflow dags test``) against the emulator.

- A retried task resumes the restore its first try started (Airflow 3.3's ``task_state_store``,
  kept per DAG run and task across tries): the emulator sees exactly one restore POST.
- Airflow 2.11 has no such store: a retry submits a new restore, as the operator documents.
- Waiting in the worker and waiting in the triggerer (a real trigger run) return the same value:
  the final job as a fresh read of it gives it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow import __version__ as airflow_version

from airflow_provider_aos.emulator import AosEmulator
from airflow_provider_aos.hooks.aos import AosHook
from airflow_provider_aos.jobs_api import read_job
from tests.dags.support import DagRunResult, connection_env

AIRFLOW_3_3 = tuple(int(p) for p in airflow_version.split(".")[:2]) >= (3, 3)
CONN_ID = "aos_restore"
DAG_FILE = """
from datetime import datetime, timedelta, timezone

from airflow_provider_aos.operators.backup import AosM365RestoreOperator

try:
    from airflow.sdk import DAG
except ImportError:
    from airflow.models.dag import DAG

COMMON = dict(
    aos_conn_id="{conn_id}",
    service_type="sharepoint",
    recovery_time="2026-11-30T23:00:00Z",
    site_url="https://contoso.sharepoint.com/sites/Finance",
    restore_targets=[{{"libraryName": "Documents", "folders": ["Shared/Reports/2026"],
                      "files": [{{"relativePath": "Shared/Budget.xlsx"}}]}}],
    poll_interval=0.3,
    retries=1,
    retry_delay=timedelta(0),
)

with DAG("{dag_id}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False):
    for task_id in {tasks!r}:
        AosM365RestoreOperator(task_id=task_id, deferrable=task_id.startswith("deferred"), **COMMON)
"""


def write_dag(folder: Path, dag_id: str, tasks: list[str]) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / f"{dag_id}.py").write_text(DAG_FILE.format(dag_id=dag_id, conn_id=CONN_ID, tasks=tasks))
    return folder


def run_env(emulator: AosEmulator) -> dict[str, str]:
    return connection_env(
        CONN_ID,
        host=emulator.graph_url,
        login=emulator.config.client_id,
        password=emulator.config.client_secret,
        extra={"identity_url": emulator.identity_url},
    )


def query(result: DagRunResult, sql: str, *args: Any) -> list[tuple]:
    with sqlite3.connect(result.home / "airflow.db") as db:
        return db.execute(sql, args).fetchall()


def fresh_read(emulator: AosEmulator, monkeypatch: pytest.MonkeyPatch, job_id: str) -> dict[str, Any]:
    for name, value in run_env(emulator).items():
        monkeypatch.setenv(name, value)
    hook = AosHook(aos_conn_id=CONN_ID)
    try:
        job = hook.drive(lambda session: read_job(session, "m365_restore", job_id))
    finally:
        hook.close()
    assert job is not None
    return job.to_dict()


def try_numbers(result: DagRunResult, dag_id: str) -> dict[str, int]:
    return dict(query(result, "SELECT task_id, try_number FROM task_instance WHERE dag_id = ?", dag_id))


@pytest.mark.skipif(
    not AIRFLOW_3_3,
    reason="Airflow < 3.3 has no task_state_store: a retry submits a new restore (documented; see the test below)",
)
def test_a_retried_restore_resumes_the_job_its_first_try_started(
    emulator: AosEmulator,
    run_dag: Callable[..., DagRunResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    dag_id = "aos_restore_resume"
    emulator.configure(restore_seconds=3.0)
    # The first try's first poll gets a 400 (not transient): that try fails after the restore started.
    emulator.inject_faults("jobs_m365_detail", ["400"])
    result = run_dag(
        dag_id, "2026-12-01", write_dag(tmp_path / "dags", dag_id, ["restore"]), env=run_env(emulator)
    )

    assert result.returncode == 0, result.output[-6000:]
    stats = emulator.stats()
    assert stats["restore_post"] == 1  # the retry did not start a second restore
    assert stats["jobs_error"] == 1  # the injected 400 did fail the first try
    assert try_numbers(result, dag_id) == {"restore": 2}
    job_id = emulator.list_jobs("m365")[0]["jobId"]
    assert str(job_id).startswith("RS")
    assert f"Resuming Cloud Backup for Microsoft 365 restore job {job_id}" in result.output
    # The id the first try stored is where the retry found it.
    stored = query(
        result, "SELECT key, value FROM task_state_store WHERE dag_id = ? AND task_id = 'restore'", dag_id
    )
    assert stored == [("aos_job_id", f'"{job_id}"')]
    final = result.xcom(dag_id, "restore")
    assert final["id"] == job_id
    assert final["state"] == "SUCCEEDED"
    assert final == fresh_read(emulator, monkeypatch, str(job_id))


@pytest.mark.skipif(AIRFLOW_3_3, reason="Airflow 3.3+ resumes the job (test above)")
def test_before_airflow_3_3_a_retry_submits_a_new_restore(
    emulator: AosEmulator, run_dag: Callable[..., DagRunResult], tmp_path: Path
):
    """The documented limit on Airflow 2.11: no task_state_store, so the retry cannot know the job."""
    dag_id = "aos_restore_no_resume"
    emulator.configure(restore_seconds=1.0)
    emulator.inject_faults("jobs_m365_detail", ["400"])
    result = run_dag(
        dag_id, "2026-12-01", write_dag(tmp_path / "dags", dag_id, ["restore"]), env=run_env(emulator)
    )

    assert result.returncode == 0, result.output[-6000:]
    assert emulator.stats()["restore_post"] == 2
    assert try_numbers(result, dag_id) == {"restore": 2}
    first, second = sorted(
        str(j["jobId"]) for j in emulator.list_jobs("m365") if str(j["jobId"]).startswith("RS")
    )[-2:]
    assert result.xcom(dag_id, "restore")["id"] in (first, second)


def test_deferred_and_worker_waits_return_the_same_final_job(
    emulator: AosEmulator,
    run_dag: Callable[..., DagRunResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    dag_id = "aos_restore_wait_modes"
    emulator.configure(restore_seconds=2.0)
    tasks = ["in_worker", "deferred"]
    result = run_dag(dag_id, "2026-12-01", write_dag(tmp_path / "dags", dag_id, tasks), env=run_env(emulator))

    assert result.returncode == 0, result.output[-6000:]
    assert emulator.stats()["restore_post"] == 2
    values = {task: result.xcom(dag_id, task) for task in tasks}
    for task, value in values.items():
        assert value["state"] == "SUCCEEDED", task
        assert value == fresh_read(emulator, monkeypatch, value["id"]), task
    assert values["in_worker"]["id"] != values["deferred"]["id"]
    assert set(values["in_worker"]) == set(values["deferred"])
    assert query(result, "SELECT state FROM task_instance WHERE dag_id = ?", dag_id) == [
        ("success",),
        ("success",),
    ]
    # The deferred one really went through a trigger run, and neither task was retried.
    assert result.output.count("[DAG TEST] running trigger in line") == 1
    assert try_numbers(result, dag_id) == {"in_worker": 1, "deferred": 1}
