"""
AosOpusRestoreOperator and AosOpusRestoreJobSensor in real DAG runs (``airflow dags test``) against
the emulator, poke and deferrable (``airflow dags test`` runs a deferred task's trigger in line: a
real trigger run).

- One run of a DAG of cases: operator + poke sensor, operator + deferrable sensor, the operator
  waiting in the worker and in the triggerer, restores ending badly, a scope without archived data.
  Every task has ``trigger_rule="all_done"``, so a failing case does not hide the ones after it.
- A run of a DAG whose restores fail their first try after starting: on Airflow 3.3 the retry
  resumes through ``task_state_store`` (one restore start each); on 2.11 there is no store.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow import __version__ as airflow_version

from airflow_provider_aos.emulator import AosEmulator, EmulatorConfig
from airflow_provider_aos.hooks.aos import AosHook
from airflow_provider_aos.jobs_api import read_job
from tests.dags.support import DagRunResult, connection_env

AIRFLOW_3_3 = tuple(int(p) for p in airflow_version.split(".")[:2]) >= (3, 3)
CONN_ID = "aos_opus"
CASES = "aos_opus_restore_cases"
RESUME = "aos_opus_restore_resume"
SITE = "https://contoso.sharepoint.com/sites/"
ARCHIVES = {  # scope -> (kind, outcome); restores of each run RUN_SECONDS
    SITE + "PokeCase": ("site_collection", "finished"),
    SITE + "DeferredOperator": ("site_collection", "finished"),
    "sync-team@contoso.com": ("teams_group", "finished"),
    "deferred-sensor-team@contoso.com": ("teams_group", "finished"),
    SITE + "FailsDeferred": ("site_collection", "failed"),
    SITE + "TimesOut": ("site_collection", "timed_out"),
    SITE + "StopsUnderSensor": ("site_collection", "stopped"),
    SITE + "Partial": ("site_collection", "partial"),
}
MISSING = SITE + "NeverArchived"
RUN_SECONDS = 4.0

CASES_DAG = """
from datetime import datetime, timezone

from airflow_provider_aos.operators.opus_restore import AosOpusRestoreOperator
from airflow_provider_aos.sensors.opus import AosOpusRestoreJobSensor

try:
    from airflow.sdk import DAG, chain
except ImportError:
    from airflow.models.baseoperator import chain
    from airflow.models.dag import DAG

SITE = {site!r}
COMMON = dict(aos_conn_id={conn_id!r}, poll_interval=0.5)


def restore(task_id, scope, **kwargs):
    return AosOpusRestoreOperator(task_id=task_id, scope=scope, **COMMON, **kwargs)


def sensor(task_id, start_task, **kwargs):
    job_id = "{{{{ ti.xcom_pull(task_ids='%s', key='aos_job_id') }}}}" % start_task
    return AosOpusRestoreJobSensor(task_id=task_id, job_id=job_id, timeout=120, **COMMON, **kwargs)


with DAG({dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False,
         default_args={{"retries": 0, "trigger_rule": "all_done"}}):
    chain(
        # Passing: start without waiting, then a sensor (poke, then deferrable) waits.
        restore("start_poke", SITE + "PokeCase", wait=False, grace_period_days=14),
        sensor("wait_poke", "start_poke", deferrable=False),
        restore("start_for_deferred_sensor", "deferred-sensor-team@contoso.com", kind="teams_group", wait=False),
        sensor("wait_deferred", "start_for_deferred_sensor", deferrable=True),
        # Passing: the operator waits itself, in the triggerer and in the worker.
        restore("restore_deferred", SITE + "DeferredOperator", deferrable=True, conflict_resolution="Skip",
                include_sharing_link=True, site_administrator="megan@contoso.com"),
        restore("restore_sync", "sync-team@contoso.com", kind="teams_group", deferrable=False),
        restore("restore_partial_accepted", SITE + "Partial", deferrable=True, accept_partial=True),
        # Failing.
        restore("restore_failed_deferred", SITE + "FailsDeferred", deferrable=True),
        restore("restore_timed_out_sync", SITE + "TimesOut", deferrable=False),
        restore("start_stopping", SITE + "StopsUnderSensor", wait=False),
        sensor("wait_stopped_deferred", "start_stopping", deferrable=True),
        restore("restore_missing", {missing!r}, deferrable=True),
    )
"""
PASSING = [
    "start_poke", "wait_poke", "start_for_deferred_sensor", "wait_deferred", "restore_deferred", "restore_sync",
    "restore_partial_accepted", "start_stopping",
]  # fmt: skip
FAILING = ["restore_failed_deferred", "restore_timed_out_sync", "wait_stopped_deferred", "restore_missing"]
DEFERRED = ["wait_deferred", "restore_deferred", "restore_partial_accepted", "restore_failed_deferred",
            "wait_stopped_deferred"]  # fmt: skip
NOT_DEFERRED = ["wait_poke", "restore_sync", "restore_timed_out_sync", "restore_missing"]

RESUME_DAG = '''
import json
import urllib.request
from datetime import datetime, timedelta, timezone

from airflow_provider_aos.operators.opus_restore import AosOpusRestoreOperator

try:
    from airflow.sdk import DAG, chain, task
except ImportError:
    from airflow.decorators import task
    from airflow.models.baseoperator import chain
    from airflow.models.dag import DAG


@task
def fail_next_status_poll():
    """The next GetRestoreJobStatus answers 400 (not transient): that try fails after its start."""
    body = json.dumps({{"kind": "opus_restore_status", "faults": ["400"]}}).encode()
    request = urllib.request.Request({admin!r} + "/faults", data=body, method="POST",
                                     headers={{"Content-Type": "application/json"}})
    urllib.request.urlopen(request).close()


COMMON = dict(aos_conn_id={conn_id!r}, poll_interval=0.5, retries=1, retry_delay=timedelta(0))

with DAG({dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False,
         default_args={{"trigger_rule": "all_done"}}):
    chain(
        fail_next_status_poll.override(task_id="fault_sync")(),
        AosOpusRestoreOperator(task_id="resume_sync", scope={site_sync!r}, grace_period_days=21, **COMMON),
        fail_next_status_poll.override(task_id="fault_deferred")(),
        AosOpusRestoreOperator(task_id="resume_deferred", scope={site_deferred!r}, deferrable=True, **COMMON),
    )
'''
RESUME_SCOPES = {"resume_sync": SITE + "ResumeSync", "resume_deferred": SITE + "ResumeDeferred"}


def run_env(emulator: AosEmulator) -> dict[str, str]:
    return connection_env(
        CONN_ID,
        host=emulator.graph_url,
        login=emulator.config.client_id,
        password=emulator.config.client_secret,
        extra={"identity_url": emulator.identity_url},
    )


def task_logs(output: str) -> dict[str, str]:
    """The CLI output of each task (tries and trigger runs included), split at the [DAG TEST] markers."""
    logs: dict[str, str] = {}
    parts = re.split(r"\[DAG TEST\] starting task_id=(\S+)", output)
    for task_id, text in zip(parts[1::2], parts[2::2], strict=True):
        logs[task_id] = logs.get(task_id, "") + text
    return logs


def query(result: DagRunResult, sql: str, *args: Any) -> list[tuple]:
    with sqlite3.connect(result.home / "airflow.db") as db:
        return db.execute(sql, args).fetchall()


def xcom(result: DagRunResult, dag_id: str, task_id: str, key: str) -> Any:
    rows = query(
        result, "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = ?", dag_id, task_id, key
    )
    assert len(rows) == 1, rows
    value = json.loads(rows[0][0])
    return json.loads(value) if isinstance(value, str) and value.startswith('"') else value


def fresh_read(emulator: AosEmulator, monkeypatch: pytest.MonkeyPatch, job_id: str) -> dict[str, Any]:
    for name, value in run_env(emulator).items():
        monkeypatch.setenv(name, value)
    hook = AosHook(aos_conn_id=CONN_ID)
    try:
        job = hook.drive(lambda session: read_job(session, "opus_restore", job_id))
    finally:
        hook.close()
    assert job is not None
    return job.to_dict()


def starts_of(emulator: AosEmulator, scope: str) -> list[dict[str, Any]]:
    return [j for j in emulator.opus_restore_jobs() if str(j["scope"]).lower() == scope.lower()]


class CasesRun:
    def __init__(self, emulator: AosEmulator, result: DagRunResult) -> None:
        self.emulator = emulator
        self.result = result
        self.states = result.task_states(CASES)
        self.logs = task_logs(result.output)

    def job_id(self, task_id: str) -> str:
        return str(xcom(self.result, CASES, task_id, "aos_job_id"))


@pytest.fixture(scope="module")
def cases(airflow_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CasesRun]:
    # One emulator and one `airflow dags test` for the module (each run costs 10-15 s to start).
    with AosEmulator(EmulatorConfig(records=100)) as emulator:
        for scope, (kind, outcome) in ARCHIVES.items():
            emulator.opus_add_archive(kind, scope, outcome=outcome, run_seconds=RUN_SECONDS)
        dags = tmp_path_factory.mktemp("opus-restore-dags")
        (dags / "opus_restore_cases.py").write_text(
            textwrap.dedent(CASES_DAG.format(dag_id=CASES, conn_id=CONN_ID, site=SITE, missing=MISSING))
        )
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            **run_env(emulator),
        }
        done = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", CASES, "2026-12-01"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        yield CasesRun(emulator, DagRunResult(done.returncode, done.stdout + done.stderr, airflow_home))


def test_every_case_ends_in_its_state(cases: CasesRun):
    expected = {**dict.fromkeys(PASSING, "success"), **dict.fromkeys(FAILING, "failed")}
    states = {task: cases.states.get(task) for task in expected}
    assert states == expected, cases.result.output[-8000:]


def test_deferrable_waits_ran_in_the_trigger_and_poke_waits_did_not(cases: CasesRun):
    for task in DEFERRED:
        log = cases.logs[task]
        assert "running trigger in line" in log, f"{task} never deferred:\n{log[-3000:]}"
        assert "Trigger completed" in log, task
    for task in NOT_DEFERRED:
        assert "running trigger in line" not in cases.logs[task], task


def test_each_waited_restore_returns_its_final_job_as_a_fresh_read_gives_it(
    cases: CasesRun, monkeypatch: pytest.MonkeyPatch
):
    for waiter, starter in [
        ("wait_poke", "start_poke"),
        ("wait_deferred", "start_for_deferred_sensor"),
        ("restore_deferred", "restore_deferred"),
        ("restore_sync", "restore_sync"),
        ("restore_partial_accepted", "restore_partial_accepted"),
    ]:
        job_id = cases.job_id(starter)
        final = cases.result.xcom(CASES, waiter)
        assert final == fresh_read(cases.emulator, monkeypatch, job_id), waiter
        assert final["kind"] == "opus_restore"
        assert final["finish_time"] is not None
    assert cases.result.xcom(CASES, "restore_partial_accepted")["raw_state"] == 4
    # Started without waiting: the job id is the return value too.
    assert xcom(cases.result, CASES, "start_poke", "return_value") == cases.job_id("start_poke")


def test_the_sensors_met_their_jobs_running(cases: CasesRun):
    """They really waited: polls before the job was done (the job ran RUN_SECONDS)."""
    assert re.search(r"is RUNNING \((0|1)\)", cases.logs["wait_poke"])
    assert re.search(r"is RUNNING \((0|1)\)", cases.logs["wait_deferred"])


def test_one_restore_per_started_task_with_its_arguments_and_grace_period(cases: CasesRun):
    emulator = cases.emulator
    for scope in ARCHIVES:
        assert len(starts_of(emulator, scope)) == 1, scope
    assert starts_of(emulator, MISSING) == []
    assert starts_of(emulator, SITE + "DeferredOperator")[0]["request"] == {
        "scope": SITE + "DeferredOperator",
        "conflictResolution": 1,
        "includeSharingLink": True,
        "siteAdministratorUserPrincipalName": "megan@contoso.com",
    }
    assert emulator.opus.grace_period("site_collection", SITE + "PokeCase") == 14
    assert emulator.opus.grace_period("site_collection", SITE + "DeferredOperator") is None


def test_failed_restores_fail_with_their_status(cases: CasesRun):
    assert "ended FAILED (raw state 3 'Failed')" in cases.logs["restore_failed_deferred"]
    assert "ended FAILED (raw state 10 'Timed out')" in cases.logs["restore_timed_out_sync"]
    assert "ended STOPPED (raw state 5 'Stopped')" in cases.logs["wait_stopped_deferred"]
    # The job id was pushed before the wait, so a failed task still says which job it watched.
    job_id = cases.job_id("restore_failed_deferred")
    assert cases.emulator.opus_restore_job(job_id)["finalStatus"] == 3


def test_a_scope_without_archived_data_fails_naming_it(cases: CasesRun):
    log = cases.logs["restore_missing"]
    assert f"AvePoint Opus holds no archived data for the site collection '{MISSING}'" in log
    assert "running trigger in line" not in log
    rows = query(
        cases.result, "SELECT COUNT(*) FROM xcom WHERE dag_id = ? AND task_id = 'restore_missing'", CASES
    )
    assert rows == [(0,)]


# -- retries ---------------------------------------------------------------------------------------


def resume_run(emulator: AosEmulator, run_dag: Callable[..., DagRunResult], tmp_path: Path) -> DagRunResult:
    for scope in RESUME_SCOPES.values():
        emulator.opus_add_archive("site_collection", scope, run_seconds=RUN_SECONDS)
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "opus_restore_resume.py").write_text(
        textwrap.dedent(
            RESUME_DAG.format(
                dag_id=RESUME,
                conn_id=CONN_ID,
                admin=emulator.admin_url,
                site_sync=RESUME_SCOPES["resume_sync"],
                site_deferred=RESUME_SCOPES["resume_deferred"],
            )
        )
    )
    return run_dag(RESUME, "2026-12-01", dags, env=run_env(emulator))


@pytest.mark.skipif(
    not AIRFLOW_3_3,
    reason="Airflow < 3.3 has no task_state_store to resume from (see the test below)",
)
def test_a_retried_restore_resumes_the_job_its_first_try_started(
    emulator: AosEmulator,
    run_dag: Callable[..., DagRunResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    result = resume_run(emulator, run_dag, tmp_path)

    states = result.task_states(RESUME)
    assert states == dict.fromkeys(
        ["fault_sync", "resume_sync", "fault_deferred", "resume_deferred"], "success"
    ), result.output[-8000:]
    tries = dict(query(result, "SELECT task_id, try_number FROM task_instance WHERE dag_id = ?", RESUME))
    assert (tries["resume_sync"], tries["resume_deferred"]) == (2, 2)  # each first try did fail
    logs = task_logs(result.output)
    assert "running trigger in line" in logs["resume_deferred"]  # the first try's wait was a trigger's
    stats = emulator.stats()
    assert stats["opus_restore_site"] == 2  # one start per task: the retries started nothing
    assert stats["opus_has_archive_site"] == 2
    for task_id, scope in RESUME_SCOPES.items():
        (job,) = starts_of(emulator, scope)
        job_id = str(job["id"])
        assert f"Resuming AvePoint Opus restore job {job_id}, started by an earlier try" in logs[task_id]
        # task_state_store exists under `airflow dags test` on 3.3 and kept the id across tries.
        stored = query(
            result,
            "SELECT key, value FROM task_state_store WHERE dag_id = ? AND task_id = ?",
            RESUME,
            task_id,
        )
        assert stored == [("aos_job_id", f'"{job_id}"')]
        final = result.xcom(RESUME, task_id)
        assert (final["id"], final["state"]) == (job_id, "SUCCEEDED")
        assert final == fresh_read(emulator, monkeypatch, job_id)
    # The grace period was set by the retry too (same value), on the resumed job's scope.
    assert emulator.opus.grace_period("site_collection", RESUME_SCOPES["resume_sync"]) == 21
    assert stats["opus_grace_site"] == 2


@pytest.mark.skipif(AIRFLOW_3_3, reason="Airflow 3.3+ resumes the job (test above)")
def test_before_airflow_3_3_a_retry_cannot_know_the_running_restore(
    emulator: AosEmulator, run_dag: Callable[..., DagRunResult], tmp_path: Path
):
    """
    The documented limit on Airflow 2.11: no task_state_store, so the retry asks for a new restore.
    Opus (the emulator, as the real service is expected to) refuses a second restore of a scope
    whose restore still runs, so the retry fails with the server's reason and nothing is doubled.
    """
    result = resume_run(emulator, run_dag, tmp_path)

    states = result.task_states(RESUME)
    assert (states["resume_sync"], states["resume_deferred"]) == ("failed", "failed"), result.output[-8000:]
    assert "already in progress" in task_logs(result.output)["resume_sync"]
    for scope in RESUME_SCOPES.values():
        assert len(starts_of(emulator, scope)) == 1
    assert emulator.stats()["opus_restore_refused"] == 2
