"""
Export an explicit range of days of AvePoint Online Services audit records: one mapped task per day.

Trigger it with the first and last day to export (both included, as ``airflow backfill create
--to-date`` counts them), in the trigger form's **Run Parameters** or as run conf::

    airflow dags trigger example_aos_audit_backfill -c '{"start_date": "2026-11-01", "end_date": "2026-11-30"}'

``plan_windows`` turns the range into one window per UTC day (``export_windows``: consecutive half-open
windows, so a record stamped exactly at midnight is exported once, with the day it starts), and
``export_day`` is mapped over them: one ``AosAuditExportOperator`` task per day, writing
``{aos_audit_export_base}/audit-YYYY-MM-DD.jsonl.gz``, the same file the daily DAG
``example_aos_audit_export`` writes for that day (the same bytes: a day exported by both is simply
replaced). ``summarise`` checks the mapped manifests (one file per day, each covering its own day) and
returns the totals: files, records, bytes. Set the Airflow Variable ``aos_audit_export_base`` to a local
folder or an object-storage URL; the connection ``aos_default`` holds the app's credentials.

**Why mapped tasks.** Each day is a task instance of its own, queued on its own: with the
CeleryExecutor or the KubernetesExecutor the days run on as many workers (or pods) at once as the pools
and ``max_active_tis_per_dagrun`` (``PARALLEL_DAYS`` here) allow, each day is retried alone when it
fails, and the grid shows one box per day. A single task over the whole range would run on one worker
and retry everything. Each export also walks its day in time slices, ``max_concurrency`` at once, so a
run keeps up to ``PARALLEL_DAYS`` x ``max_concurrency`` requests in flight: keep the product within
what your tenant's API allows (each export slows down on 429s, but only its own requests).

**When to backfill the daily DAG instead.** For days the daily DAG should have run (it was paused,
created later, or failed), prefer ``airflow backfill create --dag-id example_aos_audit_export
--from-date ... --to-date ...`` (Airflow 3) or ``airflow dags backfill -s ... -e ...
example_aos_audit_export`` (2.11): each day becomes a regular run of that DAG, with its own data
interval, visible and rerunnable in its history, and its outlets (asset events) emitted per day. This
DAG suits a one-off export of a range (a new destination, an audit request, a migration) that should
not appear as runs of the daily schedule, chosen at trigger time. One run maps at most ``[core]
max_map_length`` days (1024 by default); ``export_windows`` says so before anything runs.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import DAG, AirflowFailException, Param, task

from airflow_provider_aos.exceptions import AosConfigError
from airflow_provider_aos.operators.audit import AosAuditExportOperator
from airflow_provider_aos.windows import export_windows, parse_time

log = logging.getLogger(__name__)

DAY = timedelta(days=1)
PARALLEL_DAYS = 4  # days exported at once per run (each walks its day with max_concurrency requests)


def _day(value: str, field: str) -> date:
    """A ``YYYY-MM-DD`` param as a date (a UTC day)."""
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise AosConfigError(field, f"{value!r} is not a day; give YYYY-MM-DD, e.g. 2026-11-01") from None


def _day_param(default: str, which: str) -> Param:
    return Param(
        default,
        type="string",
        format="date",
        title=f"{which.capitalize()} day",
        description=f"The {which} UTC day to export (included), YYYY-MM-DD.",
    )


with DAG(
    dag_id="example_aos_audit_backfill",
    schedule=None,  # triggered with the range to export
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    # The defaults are days the bundled emulator's seeded data covers (October and November 2026).
    params={"start_date": _day_param("2026-11-01", "first"), "end_date": _day_param("2026-11-04", "last")},
    tags=["aos", "audit", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def plan_windows(start_date: str, end_date: str, base: str) -> list[dict[str, str]]:
        """One window (and file) per UTC day from ``start_date`` to ``end_date``, both included."""
        first, last = _day(start_date, "start_date"), _day(end_date, "end_date")
        if last < first:
            raise AosConfigError(
                "end_date", f"{last} is before start_date {first}; end_date is the last day exported"
            )
        # str.format pattern: braces in the folder's name are literal.
        folder = base.rstrip("/").replace("{", "{{").replace("}", "}}")
        windows = export_windows(
            datetime.combine(first, time.min, UTC),
            datetime.combine(last, time.min, UTC) + DAY,
            every=DAY,
            destination=folder + "/audit-{start:%Y-%m-%d}.jsonl.gz",
        )
        log.info("Exporting %d day(s), %s to %s, into %s", len(windows), first, last, base)
        return windows

    windows = plan_windows(
        start_date="{{ params.start_date }}",
        end_date="{{ params.end_date }}",
        base="{{ var.value.get('aos_audit_export_base', '/tmp/aos-audit') }}",
    )

    # [START howto_operator_aos_audit_export_mapped]
    export_day = AosAuditExportOperator.partial(
        task_id="export_day",
        aos_conn_id="aos_default",
        max_active_tis_per_dagrun=PARALLEL_DAYS,
        map_index_template="{{ task.start_time[:10] }}",  # the grid labels each task with its day
        retries=2,
        retry_delay=timedelta(minutes=2),
    ).expand_kwargs(windows)
    # [END howto_operator_aos_audit_export_mapped]

    @task
    def summarise(manifests: Any, windows: list[dict[str, str]]) -> dict[str, Any]:
        """Check that each day's file covers exactly its day; the totals."""
        manifests = list(manifests)  # the mapped tasks' manifests, in map index order
        if len(manifests) != len(windows):
            raise AirflowFailException(f"{len(windows)} day(s) planned, {len(manifests)} exported")
        days = []
        for window, manifest in zip(windows, manifests, strict=True):
            exported = [parse_time(manifest[k], k) for k in ("start_time", "end_time")]
            planned = [parse_time(window[k], k) for k in ("start_time", "end_time")]
            if exported != planned or manifest["path"] != window["destination"]:
                raise AirflowFailException(
                    f"the export of {window['start_time']} to {window['end_time']} into "
                    f"{window['destination']} wrote {manifest['path']} for {manifest['start_time']} to "
                    f"{manifest['end_time']}"
                )
            days.append(
                {"day": window["start_time"][:10], "path": manifest["path"], "records": manifest["records"]}
            )
            log.info("%s: %d records in %s", days[-1]["day"], manifest["records"], manifest["path"])
        summary = {
            "start_time": windows[0]["start_time"],
            "end_time": windows[-1]["end_time"],
            "files": len(days),
            "records": sum(m["records"] for m in manifests),
            "bytes": sum(m["bytes"] for m in manifests),
            "days": days,
        }
        log.info(
            "Exported %d records in %d file(s), %d bytes, %s to %s",
            summary["records"], summary["files"], summary["bytes"], summary["start_time"], summary["end_time"],
        )  # fmt: skip
        return summary

    summarise(export_day.output, windows)
