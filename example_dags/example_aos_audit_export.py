"""
Daily export of AvePoint Online Services audit records to JSON Lines (gzip).

Each scheduled run exports the records of its data interval, one UTC day, to
``{aos_audit_export_base}/audit-YYYY-MM-DD.jsonl.gz`` (the day the records cover). Set the Airflow
Variable ``aos_audit_export_base`` to a local folder or an object-storage URL (``s3://bucket/aos``...);
the default is a local folder. The connection ``aos_default`` holds the app's client ID and its secret
or certificate.

Each export updates the asset ``aos-audit://tenant/audit`` (a dataset on Airflow 2.11) with its manifest
as the event's ``extra`` (``path``, ``records``, ``start_time``, ``end_time``, ``bytes``...). The second
DAG in this file, ``example_aos_audit_export_consumer``, is scheduled on that asset and logs which file
and window arrived: the place to start a load into a warehouse.

**Manual runs** (the Trigger button, ``POST /api/v2/dags/example_aos_audit_export/dagRuns``,
``airflow dags trigger``) export, by default, the previous full UTC day: the day before the run was
triggered. (Airflow 3 can trigger a run without a logical date, e.g. ``"logical_date": null`` in the
REST API; such a run has no data interval, and this DAG uses the day before the run's ``run_after``.
A run with a logical date, and every run on Airflow 2.11, uses its data interval: the same day.)

To export another window, fill in ``start_time`` and ``end_time`` under **Run Parameters** in the
trigger form (its date-time picker uses the time zone chosen in the UI), or pass them as run conf::

    airflow dags trigger example_aos_audit_export \\
        -c '{"start_time": "2026-11-20T00:00:00Z", "end_time": "2026-11-21T00:00:00Z"}'

Give ISO 8601 date-times with an offset (``Z`` for UTC). With only ``start_time``, the run exports the
24 hours from it; with only ``end_time``, the 24 hours before it. The window is half-open,
``[start_time, end_time)``, and the file is named after it: ``audit-YYYY-MM-DD.jsonl.gz`` when it is one
whole UTC day, otherwise ``audit-<start>_<end>.jsonl.gz`` (UTC, e.g.
``audit-20261120T060000Z_20261120T120000Z.jsonl.gz``) so that a partial window never replaces a day's file.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, time, timedelta
from typing import Any, NamedTuple

from airflow.providers.common.compat.assets import Asset  # a Dataset on Airflow 2.11
from airflow.providers.common.compat.sdk import DAG, Param, task
from airflow.timetables.interval import CronDataIntervalTimetable
from jinja2 import pass_context

from airflow_provider_aos.operators.audit import (
    AosAuditExportOperator,
    parse_time,  # the operators' own reading of times
)

log = logging.getLogger(__name__)

DAY = timedelta(days=1)
AUDIT_EXPORTS = Asset("aos-audit://tenant/audit")
"""Updated by each export, with its manifest (file, window, records) as the event's ``extra``."""


class AuditWindow(NamedTuple):
    """The window a run exports: ``start``/``end`` as UTC ISO 8601 strings, ``name`` for the file."""

    start: str
    end: str
    name: str


@pass_context
def audit_window(context: Any) -> AuditWindow:
    """
    The window to export: the ``start_time``/``end_time`` params if set, else the run's data interval,
    else (a run without one) the previous full UTC day before the run's ``run_after``.

    Used in templates as ``{{ audit_window().start }}``, ``.end`` and ``.name`` (see the docstring above).
    """
    params = context.get("params") or {}
    start = parse_time(params["start_time"], "start_time") if params.get("start_time") else None
    end = parse_time(params["end_time"], "end_time") if params.get("end_time") else None
    if start and not end:
        end = start + DAY
    elif end and not start:
        start = end - DAY
    elif not start and not end:  # the run's own day
        if context.get("data_interval_start") is not None:  # scheduled runs; every run on Airflow 2
            start = parse_time(context["data_interval_start"], "data_interval_start")
            end = parse_time(context["data_interval_end"], "data_interval_end")
        else:  # Airflow 3, a run triggered without a logical date: no data interval
            run_after = getattr(context.get("dag_run"), "run_after", None) or datetime.now(UTC)
            end = datetime.combine(parse_time(run_after, "run_after").date(), time.min, UTC)
            start = end - DAY
    stamp = "%Y%m%dT%H%M%SZ"
    whole_day = end - start == DAY and start.time() == time.min
    name = f"{start:%Y-%m-%d}" if whole_day else f"{start:{stamp}}_{end:{stamp}}"
    return AuditWindow(_iso(start), _iso(end), name)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _window_param(which: str) -> Param:
    """A ``start_time``/``end_time`` param: a date-time picker in the trigger form, empty by default."""
    return Param(
        None,
        type=["null", "string"],
        format="date-time",
        title=f"{which.capitalize()} of the window",
        description=f"{which.capitalize()} of the window to export, e.g. 2026-11-20T00:00:00Z (ISO 8601 "
        "with an offset). Leave both empty to export the previous full UTC day (a scheduled run: its "
        "data interval). With only one of start/end set, the window is the 24 hours from/to it.",
    )


with DAG(
    dag_id="example_aos_audit_export",
    # A data-interval timetable: each run covers the whole previous day. (On Airflow 3, "@daily"
    # alone gives runs with an empty data interval.)
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2)},
    params={"start_time": _window_param("start"), "end_time": _window_param("end")},
    user_defined_macros={"audit_window": audit_window},
    tags=["aos", "audit", "example"],
    doc_md=__doc__,
) as dag:
    # [START howto_operator_aos_audit_export]
    export_audit = AosAuditExportOperator(
        task_id="export_audit",
        aos_conn_id="aos_default",
        # The file is named after the window exported (the day the records cover), not the run's date.
        destination="{{ var.value.get('aos_audit_export_base', '/tmp/aos-audit') }}"
        "/audit-{{ audit_window().name }}.jsonl.gz",
        start_time="{{ audit_window().start }}",
        end_time="{{ audit_window().end }}",
        outlets=[AUDIT_EXPORTS],  # each export emits an asset event carrying its manifest
    )
    # [END howto_operator_aos_audit_export]


with DAG(
    dag_id="example_aos_audit_export_consumer",
    schedule=[AUDIT_EXPORTS],  # runs after each export of example_aos_audit_export
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    tags=["aos", "audit", "example"],
    doc_md="Runs after each audit export and reads which file and window arrived (the asset event's extra).",
) as consumer_dag:

    @task
    def read_exported_files(**context: Any) -> list[dict[str, Any]]:
        """The files the triggering exports wrote, from their asset events' ``extra`` (the manifest)."""
        # Airflow 3: triggering_asset_events; 2.11: triggering_dataset_events. Both map each asset to
        # the events that triggered this run (several if exports ran before this DAG could start).
        events = context.get("triggering_asset_events") or context.get("triggering_dataset_events") or {}
        arrived = []
        for asset_events in events.values():
            for event in asset_events:
                manifest = dict(event.extra or {})
                if "path" not in manifest:  # e.g. an event created by hand, or a provider without manifests
                    log.warning(
                        "An asset event without an export manifest, from %s: %s",
                        event.source_dag_id,
                        manifest,
                    )
                    continue
                log.info(
                    "Arrived: %s, %s records, %s to %s",
                    manifest["path"], manifest.get("records"), manifest.get("start_time"), manifest.get("end_time"),
                )  # fmt: skip
                arrived.append(manifest)
        if not arrived:
            log.info("No export manifest among this run's triggering asset events (a manual run?)")
        return arrived

    read_exported_files()
