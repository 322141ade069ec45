"""
The example backup-monitoring DAG, run for real on the emulator's seeded jobs: a clean day passes and
reports what needs a look; a day with failed jobs fails the check of each service that had one, naming
every failed job; the sensor waits for the job of the Variable, or takes the day's newest M365 backup.
"""

from __future__ import annotations

import importlib.util
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from airflow_provider_aos.emulator import AosEmulator
from tests.dags.support import ROOT, DagRunResult, connection_env

DAG_ID = "example_aos_backup_monitoring"
EXAMPLE_DAG_FILE = ROOT / "example_dags" / "example_aos_backup_monitoring.py"
CLEAN_RUN = "2026-11-04"  # checks 2026-11-03: jobs in all six services, one PARTIAL, none FAILED
FAILING_RUN = "2026-11-06"  # checks 2026-11-05: FAILED and PARTIAL jobs


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("example_aos_backup_monitoring", EXAMPLE_DAG_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env(emulator: AosEmulator, **extra: str) -> dict[str, str]:
    return {
        **connection_env(
            "aos_default",
            host=emulator.graph_url,
            login=emulator.config.client_id,
            password=emulator.config.client_secret,
            extra={"identity_url": emulator.identity_url},
        ),
        "AOS_EXAMPLE_POLL_INTERVAL": "1",
        **extra,
    }


def _day_jobs(emulator: AosEmulator, service: str, run: str) -> list[dict[str, Any]]:
    """The emulator's jobs of ``service`` that started on the day a run of ``run`` checks."""
    day = (datetime.fromisoformat(run) - timedelta(days=1)).date().isoformat()
    return [job for job in emulator.list_jobs(service) if str(job["startTime"]).startswith(day)]


def _states(result: DagRunResult) -> dict[tuple[str, int], str]:
    """(task_id, map_index) -> state, of the newest run."""
    with sqlite3.connect(result.home / "airflow.db") as db:
        rows = db.execute(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = "
            "(SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1)",
            (DAG_ID, DAG_ID),
        ).fetchall()  # the newest run's: the session's metadata DB keeps every run of the module
    return {(task, index): state for task, index, state in rows}


def _task_logs(output: str) -> dict[tuple[str, int], str]:
    logs: dict[tuple[str, int], str] = {}
    parts = re.split(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)", output)
    for task, index, text in zip(parts[1::3], parts[2::3], parts[3::3], strict=True):
        logs[task, int(index)] = logs.get((task, int(index)), "") + text
    return logs


def _state_counts(jobs: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs:
        name = {"SUCCESS": "SUCCEEDED"}.get(str(job["stateClass"]), str(job["stateClass"]))
        counts[name] = counts.get(name, 0) + 1
    return counts


def _google_checks(checks: list[dict[str, Any]]) -> list[int]:
    return [i for i, check in enumerate(checks) if check["service"] == "google_workspace"]


def test_a_clean_day_passes_reports_partial_jobs_and_waits_for_the_variables_job(
    emulator: AosEmulator, run_dag
):
    checks = _example().CHECKS
    # Running when Airflow reaches the sensor (it starts in 10-15 s), so the sensor defers on it.
    job_id = emulator.add_job("m365", run_seconds=30)
    result = run_dag(
        DAG_ID, CLEAN_RUN, ROOT / "example_dags", _env(emulator, AIRFLOW_VAR_AOS_M365_BACKUP_JOB_ID=job_id)
    )
    assert result.returncode == 0, result.output[-6000:]
    states = _states(result)
    assert {k: v for k, v in states.items() if v != "success"} == {}, result.output[-6000:]
    assert sorted(i for task, i in states if task == "check_backups") == list(range(len(checks)))

    report = result.xcom(DAG_ID, "backup_report")
    services = [s for s in _example().SERVICES]
    assert sorted(report) == sorted(services)
    for service in services:
        jobs = _day_jobs(emulator, service, CLEAN_RUN)
        assert jobs, f"the demo day should have {service} jobs"
        assert "FAILED" not in _state_counts(jobs)
        if service == "google_workspace":  # the emulator's admin view does not show the data source
            assert report[service]["jobs"] == len(jobs)
        assert report[service]["states"] == _state_counts(jobs), service
        attention = {j["jobId"] for j in jobs if j["stateClass"] in ("PARTIAL", "STOPPED", "SKIPPED")}
        assert {j["id"] for j in report[service]["attention"]} == attention  # report entries use "id"
    assert any(entry["attention"] for entry in report.values())  # the day has a PARTIAL job to report

    waited = result.xcom(DAG_ID, "wait_for_m365_backup")
    assert (waited["id"], waited["state"], waited["raw_state"]) == (job_id, "SUCCEEDED", "Finished")
    assert emulator.job_status("m365", job_id)["running"] is False


def test_a_day_with_failed_jobs_fails_each_check_naming_every_failed_job(emulator: AosEmulator, run_dag):
    checks = _example().CHECKS
    result = run_dag(DAG_ID, FAILING_RUN, ROOT / "example_dags", _env(emulator))
    assert result.returncode != 0 or "failed" in _states(result).values()
    states, logs = _states(result), _task_logs(result.output)
    failed_services = set()
    for index, check in enumerate(checks):
        service = check["service"]
        jobs = _day_jobs(emulator, service, FAILING_RUN)
        failed = [j["jobId"] for j in jobs if j["stateClass"] == "FAILED"]
        if service == "google_workspace":
            continue  # split by data source, which the admin view does not show: checked below
        if failed:
            failed_services.add(service)
            assert states["check_backups", index] == "failed", service
            log = logs["check_backups", index]
            # One message, after the whole day was read, naming every failed job with its raw state.
            assert f"{len(failed)} of {len(jobs)} " in log, log[-3000:]
            for job_id in failed:
                assert re.search(rf"\n\s+{job_id} FAILED \(raw state ", log), (service, job_id)
        else:
            assert states["check_backups", index] == "success", service
    assert failed_services, "the failing day should have failed jobs"
    google_failed = [
        j["jobId"]
        for j in _day_jobs(emulator, "google_workspace", FAILING_RUN)
        if j["stateClass"] == "FAILED"
    ]
    google_logs = "".join(logs["check_backups", i] for i in _google_checks(checks))
    for job_id in google_failed:
        assert f"{job_id} FAILED" in google_logs

    # The report still runs, and lists the PARTIAL jobs of the services whose check passed.
    assert states["backup_report", -1] == "success"
    report = result.xcom(DAG_ID, "backup_report")
    for service in set(_example().SERVICES) - failed_services - {"google_workspace"}:
        jobs = _day_jobs(emulator, service, FAILING_RUN)
        assert report[service]["states"] == _state_counts(jobs), service

    # No job id given: the newest Microsoft 365 backup job (job type 1) of the day. That day has
    # none (only a retention job), and the day is over: the sensor says so instead of waiting.
    assert not [j for j in _day_jobs(emulator, "m365", FAILING_RUN) if j["jobType"] == 1]
    assert states["wait_for_m365_backup", -1] == "failed"
    assert re.search(
        r"no job found: the newest Cloud Backup for Microsoft 365 job matching \{'job_type': 'Backup'\} "
        r"started 2026-11-05T00:00:00Z to 2026-11-06T00:00:00Z, and the window ended",
        logs["wait_for_m365_backup", -1],
    ), logs["wait_for_m365_backup", -1][-3000:]
    assert "running trigger in line" not in logs["wait_for_m365_backup", -1]


# -- The window a run checks (fast: the macro itself, no Airflow run) ----------------------------------


def test_a_run_without_data_interval_checks_the_previous_full_utc_day():
    window = _example().check_window
    run = SimpleNamespace(run_after=datetime(2026, 12, 3, 7, 53, tzinfo=UTC))
    # Airflow 3, triggered without a logical date: no data interval, or an empty one.
    empty = {"data_interval_start": run.run_after, "data_interval_end": run.run_after}
    for context in ({"dag_run": run}, {"dag_run": run, **empty}):
        assert window(context) == {"start": "2026-12-02T00:00:00Z", "end": "2026-12-03T00:00:00Z"}
    interval = {
        "data_interval_start": datetime(2026, 11, 3, tzinfo=UTC),
        "data_interval_end": datetime(2026, 11, 4, tzinfo=UTC),
    }
    assert window(interval) == {"start": "2026-11-03T00:00:00Z", "end": "2026-11-04T00:00:00Z"}


def test_the_job_id_param_is_empty_by_default():
    param = _example().dag.params.get_param("m365_job_id")
    assert param.value is None  # the Variable, else the newest M365 backup job of the window
    assert param.schema["type"] == ["null", "string"]
