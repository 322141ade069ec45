"""
Daily health check of AvePoint Cloud Backup jobs, and a wait on a running Microsoft 365 backup.

**Health check.** Each run reads the jobs of the previous UTC day (its data interval: jobs that
*started* that day) of all six Cloud Backup services: Microsoft 365, IaaS + PaaS, Dynamics 365,
Google Workspace, Salesforce and AOS scan, one mapped task per service. A service's task fails when
any of its jobs FAILED, with one message naming every failed job (id, state, raw state, first error),
after the whole day was read; Airflow's usual failure alerts (``email_on_failure``, callbacks) then
tell you. Jobs that finished with exceptions (PARTIAL), were stopped or skipped do not fail the
check: the ``backup_report`` task lists them, with each service's jobs per state. (Want PARTIAL to
fail too? Add it to ``FAIL_ON``.) A job still running when the check runs is counted as RUNNING and
not judged (it belongs to the day it started, so the next day's check does not see it either): if
your backups run past midnight, run the check later in the day.

**Waiting on a backup.** ``wait_for_m365_backup`` waits, in the triggerer (deferrable: no worker
slot is held), until a Microsoft 365 backup job ends, and fails if it FAILED, was stopped or finished
with exceptions. Which job: the ``m365_job_id`` param of the run if given, else the Airflow Variable
``aos_m365_backup_job_id`` if set, else the newest Microsoft 365 backup job that started in the run's
window. Its XCom is the final job (``AosJob.to_dict()``) for downstream tasks.

**Manual runs** (the Trigger button, the REST API, ``airflow dags trigger``) check, like every run, the
run's data interval; an Airflow 3 run triggered without a logical date has none, and checks the
previous full UTC day before the run was triggered (the rule of ``example_aos_audit_export``).

The connection ``aos_default`` holds the app's client ID and its secret or certificate; the app needs
the read scopes of the six services (``microsoft365backup.jobInfo.read.all``,
``platformbackup.readwrite.all``, ``dynamics.readwrite.all``, ``gsuite.graph.read.all``,
``salesforce.public.read.all``, ``autodiscovery.readwrite.all``). Drop the services you do not use
from ``SERVICES``. Large tenants with thousands of jobs a day: give the health check a
``destination=`` (object storage) instead of returning the jobs to XCom.

The sensor polls every ``AOS_EXAMPLE_POLL_INTERVAL`` seconds (environment variable, default 300; the
demo and the tests set it low).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, time, timedelta
from typing import Any

from airflow.timetables.interval import CronDataIntervalTimetable
from jinja2 import pass_context

from airflow_provider_aos.operators.backup import AosBackupJobsOperator
from airflow_provider_aos.sensors.backup import AosBackupJobSensor

try:  # Airflow 3
    from airflow.sdk import DAG, Param, task
except ImportError:  # Airflow 2.11
    from airflow.decorators import task  # type: ignore[no-redef]
    from airflow.models.dag import DAG  # type: ignore[assignment,no-redef]
    from airflow.models.param import Param  # type: ignore[assignment,no-redef]

SERVICES = ["m365", "iaas_paas", "dynamics365", "google_workspace", "salesforce", "aos_scan"]
# One health-check task per service; Google Workspace lists the Admin data source unless asked for
# ReCenter (the API's default), so it gets one task per data source to cover every job.
CHECKS = [
    {"service": service, "data_source": source}
    for service in SERVICES
    for source in ((1, 2) if service == "google_workspace" else (None,))
]
FAIL_ON = ("FAILED",)  # the states that fail the health check; PARTIAL, STOPPED, SKIPPED are reported
REPORTED = ("PARTIAL", "STOPPED", "SKIPPED")
POLL_INTERVAL = float(os.environ.get("AOS_EXAMPLE_POLL_INTERVAL", "300"))


@pass_context
def check_window(context: Any) -> dict[str, str]:
    """
    The window checked, as UTC ISO 8601 ``start``/``end``: the run's data interval, or (an Airflow 3
    run without one) the previous full UTC day before the run's ``run_after``.
    """
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or start == end:
        run_after = getattr(context.get("dag_run"), "run_after", None) or datetime.now(UTC)
        end = datetime.combine(run_after.astimezone(UTC).date(), time.min, UTC)
        start = end - timedelta(days=1)
    return {"start": _iso(start), "end": _iso(end)}


def _iso(moment: datetime) -> str:
    return datetime.fromtimestamp(moment.timestamp(), UTC).isoformat().replace("+00:00", "Z")


with DAG(
    dag_id="example_aos_backup_monitoring",
    # A data-interval timetable: each run covers the whole previous day. (On Airflow 3, "@daily"
    # alone gives runs with an empty data interval.)
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2)},
    params={
        "m365_job_id": Param(
            None,
            type=["null", "string"],
            title="Microsoft 365 job to wait for",
            description="A Cloud Backup for Microsoft 365 job id (e.g. FB20261203081645800671). Empty: "
            "the Variable aos_m365_backup_job_id, else the newest Microsoft 365 backup job of the window.",
        )
    },
    user_defined_macros={"check_window": check_window},
    tags=["aos", "backup", "example"],
    doc_md=__doc__,
) as dag:
    # [START howto_operator_aos_backup_health_check]
    check_backups = AosBackupJobsOperator.partial(
        task_id="check_backups",
        aos_conn_id="aos_default",
        start_time="{{ check_window().start }}",
        end_time="{{ check_window().end }}",
        fail_on=FAIL_ON,
        # A FAILED job is still FAILED on a retry; transient API errors are retried inside the hook.
        retries=0,
    ).expand_kwargs(CHECKS)
    # [END howto_operator_aos_backup_health_check]

    @task(trigger_rule="all_done")
    def backup_report(jobs_per_service: Any) -> dict[str, Any]:
        """Each service's jobs per state, and the jobs worth a look (PARTIAL, STOPPED, SKIPPED)."""
        report: dict[str, Any] = {s: {"jobs": 0, "states": {}, "attention": []} for s in SERVICES}
        # A failed check returned nothing (its failure names the FAILED jobs): skipped here.
        for job in (job for jobs in jobs_per_service if jobs for job in jobs):
            entry = report[job["kind"]]
            entry["jobs"] += 1
            entry["states"][job["state"]] = entry["states"].get(job["state"], 0) + 1
            if job["state"] in REPORTED:
                error = job["errors"][0] if job["errors"] else None
                entry["attention"].append({"id": job["id"], "state": job["state"], "error": error})
        for service, entry in report.items():
            print(f"{service}: {entry['jobs']} job(s) {entry['states']}")
            for job in entry["attention"]:
                print(f"  {job['id']} {job['state']}: {job['error'] or '-'}")
        return report

    backup_report(check_backups.output)

    # [START howto_sensor_aos_backup_job]
    wait_for_m365_backup = AosBackupJobSensor(
        task_id="wait_for_m365_backup",
        aos_conn_id="aos_default",
        service="m365",
        job_id="{{ params.m365_job_id or var.value.get('aos_m365_backup_job_id', '') }}",
        # Without a job id: the newest Microsoft 365 backup job that started in the window.
        job_type="Backup",
        start_time="{{ check_window().start }}",
        end_time="{{ check_window().end }}",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=timedelta(hours=12).total_seconds(),
    )
    # [END howto_sensor_aos_backup_job]
