"""
Daily export of AvePoint Online Services audit records to JSON Lines (gzip).

Each run exports the records of its data interval, one day, to
``{aos_audit_export_base}/audit-YYYY-MM-DD.jsonl.gz`` (the day the records cover). Set the Airflow Variable ``aos_audit_export_base``
to a local folder or an object-storage URL (``s3://bucket/aos``...); the default is a local folder.
The connection ``aos_default`` holds the app's client ID and its secret or certificate.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_aos.operators.audit import AosAuditExportOperator

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow.models.dag import DAG  # type: ignore[assignment,no-redef]

with DAG(
    dag_id="example_aos_audit_export",
    # A data-interval timetable: each run covers the whole previous day. (On Airflow 3, "@daily"
    # alone gives runs with an empty data interval.)
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2)},
    tags=["aos", "audit", "example"],
) as dag:
    # [START howto_operator_aos_audit_export]
    export_audit = AosAuditExportOperator(
        task_id="export_audit",
        aos_conn_id="aos_default",
        # Named after the day the records cover (the data interval), not the run's logical date.
        destination="{{ var.value.get('aos_audit_export_base', '/tmp/aos-audit') }}"
        "/audit-{{ data_interval_start | ds }}.jsonl.gz",
    )
    # [END howto_operator_aos_audit_export]
