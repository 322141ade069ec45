"""
AosBackupJobSensor in a real DAG run (``airflow dags test``) against the emulator, poke and deferrable.

One DAG run holds every case, as a chain of tasks: each waiting sensor is preceded by a task that adds
its job to the emulator (admin endpoint) just before the sensor starts, so the sensor meets the job
running and must really wait: in poke mode by poking, in deferrable mode through the trigger, which
``airflow dags test`` runs inline (a real trigger run). Every task has ``trigger_rule="all_done"``,
so a failing case does not hide the cases after it. The tests below read the run's task states, XComs
and per-task log output.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_aos.emulator import AosEmulator, EmulatorConfig
from tests.dags.support import DagRunResult, connection_env

DAG_ID = "aos_backup_sensor_cases"
RUN_SECONDS = 3  # how long a waited-for job runs; its sensor starts well under a second after it is added
POLL = 1  # poke_interval / poll_interval of every sensor
TIMEOUT = 2  # the timeout cases' sensor timeout; their job runs for an hour

DAG_FILE = '''
import json
import urllib.request
from datetime import datetime, timezone

from airflow_provider_aos.sensors.backup import AosBackupJobSensor

try:
    from airflow.sdk import DAG, chain, task
except ImportError:
    from airflow.decorators import task
    from airflow.models.baseoperator import chain
    from airflow.models.dag import DAG

WINDOW = {{"start_time": {start!r}, "end_time": {end!r}}}
RUN, POLL, TIMEOUT = {run}, {poll}, {timeout}


@task
def add_job(service, outcome="succeeded", run_seconds=RUN, start=None, errors=None):
    """Add a job to the emulator now (admin endpoint); its id."""
    body = {{"service": service, "outcome": outcome, "run_seconds": run_seconds}}
    if start is not None:
        body["start"] = start
    if errors is not None:
        body["errors"] = errors
    request = urllib.request.Request(
        {admin!r} + "/jobs", data=json.dumps(body).encode(), method="POST",
        headers={{"Content-Type": "application/json"}},
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)["jobId"]


def start(task_id, *args, **kwargs):
    return add_job.override(task_id=task_id)(*args, **kwargs)


def sensor(task_id, service, job_id=None, **kwargs):
    kwargs.setdefault("poll_interval", POLL)
    kwargs.setdefault("timeout", 120)
    return AosBackupJobSensor(task_id=task_id, service=service, job_id=job_id, **kwargs)


with DAG("{dag_id}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
         catchup=False, default_args={{"retries": 0, "trigger_rule": "all_done"}}):
    steps = []

    def case(*tasks):
        steps.extend(tasks)
        return tasks[0]

    # Passing waits. The same M365 job (detail poll) waited on by the trigger, then read by a poke.
    job = case(start("start_m365", "m365"))
    case(sensor("m365_deferred", "m365", job, deferrable=True),
         sensor("m365_poke_after", "m365", job, deferrable=False))
    # The same for a job that a poke waits on, then a deferrable sensor finds terminal (never defers).
    job = case(start("start_m365_b", "m365"))
    case(sensor("m365_poke", "m365", job), sensor("m365_deferred_after", "m365", job, deferrable=True))
    job = case(start("start_m365_resched", "m365"))
    case(sensor("m365_reschedule", "m365", job, mode="reschedule"))
    job = case(start("start_iaas", "iaas_paas"))  # an id search of the list
    case(sensor("iaas_poke", "iaas_paas", job))
    job = case(start("start_iaas_d", "iaas_paas"))
    case(sensor("iaas_deferred", "iaas_paas", job, deferrable=True))
    job = case(start("start_d365", "dynamics365"))  # no way to read one job: scan the window's list
    case(sensor("d365_poke", "dynamics365", job, **WINDOW))
    job = case(start("start_d365_d", "dynamics365"))
    case(sensor("d365_deferred", "dynamics365", job, deferrable=True, **WINDOW))
    # No job id: the newest Salesforce backup of the window (an older failed one must not be chosen).
    case(start("start_sf_old", "salesforce", "failed", 0, start={old!r}))
    case(start("start_sf_new", "salesforce"))
    case(sensor("sf_newest_poke", "salesforce", job_type="Backup", **WINDOW))
    case(start("start_sf_newer", "salesforce"))
    case(sensor("sf_newest_deferred", "salesforce", job_type="Backup", deferrable=True, **WINDOW))
    job = case(start("start_partial_ok", "m365", "partial"))
    case(sensor("partial_accepted", "m365", job, accept_partial=True, deferrable=True))

    # Failing waits.
    job = case(start("start_failed", "m365", "failed", 0, errors=["The mailbox could not be found."]))
    case(sensor("failed_poke", "m365", job),
         sensor("failed_deferred_precheck", "m365", job, deferrable=True),
         sensor("failed_soft_deferred_precheck", "m365", job, deferrable=True, soft_fail=True))
    job = case(start("start_failed_late", "iaas_paas", "failed", errors=["The snapshot failed."]))
    case(sensor("failed_deferred", "iaas_paas", job, deferrable=True))
    job = case(start("start_partial", "m365", "partial", 0))
    case(sensor("partial_poke", "m365", job))
    job = case(start("start_partial_late", "m365", "partial"))
    case(sensor("partial_deferred", "m365", job, deferrable=True))
    job = case(start("start_long", "m365", run_seconds=3600))
    case(sensor("timeout_poke", "m365", job, timeout=TIMEOUT),
         sensor("timeout_deferred", "m365", job, timeout=TIMEOUT, deferrable=True),
         sensor("timeout_soft_poke", "m365", job, timeout=TIMEOUT, soft_fail=True),
         sensor("timeout_soft_deferred", "m365", job, timeout=TIMEOUT, soft_fail=True, deferrable=True))
    chain(*steps)
'''

PASSING = [
    "m365_deferred", "m365_poke_after", "m365_poke", "m365_deferred_after", "m365_reschedule",
    "iaas_poke", "iaas_deferred", "d365_poke", "d365_deferred", "sf_newest_poke", "sf_newest_deferred",
    "partial_accepted",
]  # fmt: skip
FAILING = [
    "failed_poke", "failed_deferred_precheck", "failed_deferred", "partial_poke", "partial_deferred",
    "timeout_poke", "timeout_deferred",
]  # fmt: skip
SKIPPED = ["failed_soft_deferred_precheck", "timeout_soft_poke", "timeout_soft_deferred"]
WAITED_BY_TRIGGER = [
    "m365_deferred", "iaas_deferred", "d365_deferred", "sf_newest_deferred", "partial_accepted",
    "failed_deferred", "partial_deferred", "timeout_deferred", "timeout_soft_deferred",
]  # fmt: skip
NEVER_DEFERRED = ["m365_deferred_after", "failed_deferred_precheck", "failed_soft_deferred_precheck"]


class SensorRun:
    """The finished run: the emulator it ran against, and what Airflow kept."""

    def __init__(self, emulator: AosEmulator, result: DagRunResult) -> None:
        self.emulator = emulator
        self.result = result
        self.states = result.task_states(DAG_ID)
        self.logs = _task_logs(result.output)

    def xcom(self, task_id: str) -> Any:
        """A task's return value (support.DagRunResult.xcom decodes twice, which breaks a plain string)."""
        with sqlite3.connect(self.result.home / "airflow.db") as db:
            row = db.execute(
                "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value' "
                "ORDER BY timestamp DESC LIMIT 1",
                (DAG_ID, task_id),
            ).fetchone()
        assert row is not None, f"no XCom for {task_id}"
        value = json.loads(row[0])
        if isinstance(value, str):  # Airflow 2.11 stores JSON text; Airflow 3 the value itself
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        return value

    def job(self, start_task: str, service: str) -> dict[str, object]:
        """The emulator's view of the job a start task added."""
        return self.emulator.job_status(service, self.xcom(start_task))


def _task_logs(output: str) -> dict[str, str]:
    """The CLI output of each task (tries and trigger runs included), split at the [DAG TEST] markers."""
    logs: dict[str, str] = {}
    parts = re.split(r"\[DAG TEST\] starting task_id=(\S+)", output)
    for task_id, text in zip(parts[1::2], parts[2::2], strict=True):
        logs[task_id] = logs.get(task_id, "") + text
    return logs


@pytest.fixture(scope="module")
def sensor_run(airflow_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SensorRun]:
    # One emulator and one `airflow dags test` for the whole module (each run costs 10-15 s to start).
    with AosEmulator(EmulatorConfig(records=100)) as emulator:
        now = datetime.now(UTC).replace(microsecond=0)
        dags = tmp_path_factory.mktemp("backup-sensor-dags")
        (dags / "backup_sensor_cases.py").write_text(
            textwrap.dedent(
                DAG_FILE.format(
                    dag_id=DAG_ID,
                    admin=emulator.admin_url,
                    start=(now - timedelta(hours=1)).isoformat(),
                    end=(now + timedelta(hours=1)).isoformat(),
                    old=(now - timedelta(minutes=10)).isoformat(),
                    run=RUN_SECONDS,
                    poll=POLL,
                    timeout=TIMEOUT,
                )
            )
        )
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            **connection_env(
                "aos_default",
                host=emulator.graph_url,
                login=emulator.config.client_id,
                password=emulator.config.client_secret,
                extra={"identity_url": emulator.identity_url},
            ),
        }
        done = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", DAG_ID, "2026-12-01"],
            env=env,
            capture_output=True,
            text=True,
            timeout=280,
            check=False,
        )
        yield SensorRun(emulator, DagRunResult(done.returncode, done.stdout + done.stderr, airflow_home))


def test_every_case_ends_in_its_state(sensor_run: SensorRun):
    expected = {
        **dict.fromkeys(PASSING, "success"),
        **dict.fromkeys(FAILING, "failed"),
        **dict.fromkeys(SKIPPED, "skipped"),
    }
    states = {task: sensor_run.states.get(task) for task in expected}
    assert states == expected, sensor_run.result.output[-8000:]


def test_deferrable_sensors_waited_in_a_real_trigger_run(sensor_run: SensorRun):
    for task in WAITED_BY_TRIGGER:
        log = sensor_run.logs[task]
        # The sensor met the job running, deferred, and the trigger polled until the outcome.
        assert "running trigger in line" in log, f"{task} never deferred:\n{log[-3000:]}"
        assert "Trigger completed" in log, task
    for task in NEVER_DEFERRED:  # the job was already over: the check before deferring decided
        assert "running trigger in line" not in sensor_run.logs[task], task


def test_poke_and_deferrable_return_the_same_final_job(sensor_run: SensorRun):
    for start, first, second in [
        ("start_m365", "m365_deferred", "m365_poke_after"),
        ("start_m365_b", "m365_poke", "m365_deferred_after"),
    ]:
        job_id = sensor_run.xcom(start)
        waited, read = sensor_run.xcom(first), sensor_run.xcom(second)
        assert waited == read  # the whole dict: nothing legitimately differs for the same finished job
        assert waited["id"] == job_id
        assert (waited["kind"], waited["state"], waited["raw_state"]) == ("m365", "SUCCEEDED", "Finished")
        assert waited["finish_time"] is not None
        assert waited["counts"]["total"] >= waited["counts"]["succeeded"]
    # The poke really waited (it met the job running) before returning it.
    assert re.search(r"Microsoft 365 job \S+ is RUNNING \('In Progress'\)", sensor_run.logs["m365_poke"])


def test_each_service_and_lookup_returns_its_job(sensor_run: SensorRun):
    for task, start, service, raw in [
        ("m365_reschedule", "start_m365_resched", "m365", "Finished"),
        ("iaas_poke", "start_iaas", "iaas_paas", 2),
        ("iaas_deferred", "start_iaas_d", "iaas_paas", 2),
        ("d365_poke", "start_d365", "dynamics365", 3),
        ("d365_deferred", "start_d365_d", "dynamics365", 3),
        ("sf_newest_poke", "start_sf_new", "salesforce", 2),
        ("sf_newest_deferred", "start_sf_newer", "salesforce", 2),
    ]:
        job = sensor_run.xcom(task)
        assert (job["kind"], job["id"], job["state"], job["raw_state"]) == (
            service, sensor_run.xcom(start), "SUCCEEDED", raw,
        ), task  # fmt: skip
        assert sensor_run.job(start, service)["stateClass"] == "SUCCESS"
    # Without a job id the sensor took the newest matching job, never the older failed one.
    old = sensor_run.xcom("start_sf_old")
    assert old not in (sensor_run.xcom("sf_newest_poke")["id"], sensor_run.xcom("sf_newest_deferred")["id"])


def test_reschedule_mode_gives_the_slot_back_between_pokes(sensor_run: SensorRun):
    # The task ended its try while the job ran (up for reschedule), and was started again, twice or more.
    starts = sensor_run.result.output.count("[DAG TEST] starting task_id=m365_reschedule ")
    assert starts >= 2, sensor_run.logs["m365_reschedule"][-3000:]
    assert sensor_run.xcom("m365_reschedule")["state"] == "SUCCEEDED"


def test_a_failed_job_fails_the_task_with_its_id_and_errors(sensor_run: SensorRun):
    job_id = sensor_run.xcom("start_failed")
    for task in ("failed_poke", "failed_deferred_precheck"):
        assert re.search(
            rf"m365 job {job_id} ended FAILED \(raw state 'Failed'\): The mailbox could not be found\.",
            sensor_run.logs[task],
        ), sensor_run.logs[task][-3000:]
    late = sensor_run.xcom("start_failed_late")
    assert re.search(
        rf"iaas_paas job {late} ended FAILED \(raw state 16\): The snapshot failed\.",
        sensor_run.logs["failed_deferred"],
    ), sensor_run.logs["failed_deferred"][-3000:]


def test_partial_fails_by_default_saying_how_to_accept_it(sensor_run: SensorRun):
    for task, start in [("partial_poke", "start_partial"), ("partial_deferred", "start_partial_late")]:
        job_id = sensor_run.xcom(start)
        log = sensor_run.logs[task]
        assert re.search(rf"m365 job {job_id} ended PARTIAL", log), log[-3000:]
        assert "to accept that, set accept_partial=True" in log
    accepted = sensor_run.xcom("partial_accepted")
    assert (accepted["id"], accepted["state"]) == (sensor_run.xcom("start_partial_ok"), "PARTIAL")
    assert accepted["errors"]  # the exceptions are in the XCom for whoever reads it


def test_timeout_fails_as_a_sensor_timeout_and_soft_fail_skips(sensor_run: SensorRun):
    assert "AirflowSensorTimeout" in sensor_run.logs["timeout_poke"]
    assert "Sensor has timed out" in sensor_run.logs["timeout_poke"]
    deferred = sensor_run.logs["timeout_deferred"]
    assert "AirflowSensorTimeout" in deferred
    assert re.search(r"Microsoft 365 job \S+ was not done by the deadline \(timeout 2s\)", deferred), (
        deferred[-3000:]
    )
    # The job itself is still running: the sensor gave up, the job did not end.
    assert sensor_run.job("start_long", "m365")["running"] is True
