"""
Daily records management with AvePoint Opus: submit documents as records, dispose of the records
that are due, and (on request) restore an archived SharePoint site.

Three independent branches:

**Submit records.** ``submit_records`` sends the documents of a CSV file to an Opus connector
connection, 15 records per call. The CSV's header names the connection's column internal names:
the built-in ``rowKey`` (the record's unique key), ``leafName``, ``timeCreated``, ``timeModified``,
``createdBy``, ``modifiedBy``, optionally ``termFullPath`` (the full path of a term in Opus) and
custom columns; an empty cell is no value. By default it is ``data/opus_documents.csv`` beside this
file (41 sample documents); point the Variable ``aos_opus_documents`` at your own export (a path or
object-storage URL, CSV). Every record is checked before it is sent; records that the check or
Opus rejects are written, each with its reason in the last column ``_aos_error``, to
``{base}/<day>/submit-failed.csv``, and the task fails once the whole file was processed, naming
them. Fix the rows in that file and submit it as the source (it can be fed back unchanged); a
record's ``rowKey`` is its unique key in Opus and records are submitted with
``conflictOption=Overwrite``, so resubmitting never creates a duplicate. A task retry resubmits
only what did not succeed.

**Dispose of due records.** ``due_records`` writes the records whose disposal due date is before the
run's data interval end (one line of JSON each) to ``{base}/<day>/due.jsonl``; ``destroy_records``
then marks every record of that file as Destroyed in Opus. Ids that could not be destroyed land in
``{base}/<day>/due.failed.jsonl`` (and fail the task), ready to be fed back. If your Opus disposal
needs a review first, put an approval step between the two tasks (e.g. a human-in-the-loop
operator, or a sensor waiting for a reviewed copy of the file) and destroy from the reviewed file.

**Restore an archived site.** ``restore_site`` restores an archived SharePoint site collection in
place and waits for the restore job in the triggerer (deferrable: no worker slot is held), failing
if the job fails, times out or is stopped. It runs only when a site is given: the ``restore_site``
param of a manual run (**Run Parameters** in the trigger form), else the Variable
``aos_opus_restore_site``; otherwise ``restore_requested`` skips it. A site without archived data
fails the task with a clear message, before anything is started.

**Configure:**

- The connection ``aos_default``: the app's client ID and its secret or certificate; the app needs
  the scope ``records.readwrite.all``.
- The Variable ``aos_opus_connection_id``: the Opus connector connection's GUID, from its JSON file
  in Opus > Settings > Connector (the ``opus_connection_id`` param of a run overrides it). Default:
  ``00000000-0000-4000-8000-000000000001``, a placeholder that only the emulator accepts.
- The Variable ``aos_opus_base``: the folder (a local path or an object-storage URL such as
  ``s3://bucket/opus``) for the files above, one subfolder per day. Default: ``/tmp/aos-opus``.
- Optionally ``aos_opus_documents`` and ``aos_opus_restore_site`` (see above).

**Manual runs** use their data interval like scheduled ones; an Airflow 3 run triggered without a
logical date has none and disposes of the records due before the time it was triggered. The
``disposal_due_date`` param (ISO 8601 with an offset) chooses another cut-off. ``<day>`` is the
cut-off's UTC date (``2026-11-02``), or its full UTC time (``20261102T093000Z``) when it is not
midnight.

The restore polls every ``AOS_EXAMPLE_POLL_INTERVAL`` seconds (environment variable, default 300; the
demo and the tests set it low).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from airflow.timetables.interval import CronDataIntervalTimetable
from jinja2 import pass_context

from airflow_provider_aos.operators.audit import parse_time  # the operators' own reading of times
from airflow_provider_aos.operators.opus import (
    AosOpusDestroyRecordsOperator,
    AosOpusDueRecordsOperator,
    AosOpusRestoreOperator,
    AosOpusSubmitRecordsOperator,
)

try:  # Airflow 3
    from airflow.sdk import DAG, Param, task
except ImportError:  # Airflow 2.11
    from airflow.decorators import task  # type: ignore[no-redef]
    from airflow.models.dag import DAG  # type: ignore[assignment,no-redef]
    from airflow.models.param import Param  # type: ignore[assignment,no-redef]

DOCUMENTS = Path(__file__).resolve().parent / "data" / "opus_documents.csv"
PLACEHOLDER_CONNECTION = "00000000-0000-4000-8000-000000000001"
POLL_INTERVAL = float(os.environ.get("AOS_EXAMPLE_POLL_INTERVAL", "300"))

BASE = "{{ var.value.get('aos_opus_base', '/tmp/aos-opus') }}/{{ opus_run().day }}"
OPUS_CONNECTION = (
    "{{ params.opus_connection_id or var.value.get('aos_opus_connection_id', placeholder_connection) }}"
)
RESTORE_SITE = "{{ params.restore_site or var.value.get('aos_opus_restore_site', '') }}"


class OpusRun(NamedTuple):
    """What a run works on: ``due_before`` (UTC ISO 8601) and ``day``, its folder's name."""

    due_before: str
    day: str


@pass_context
def opus_run(context: Any) -> OpusRun:
    """
    The disposal cut-off: the ``disposal_due_date`` param if set, else the run's data interval end,
    else (an Airflow 3 run without a data interval) the run's ``run_after``. In templates:
    ``{{ opus_run().due_before }}`` and ``{{ opus_run().day }}``.
    """
    param = (context.get("params") or {}).get("disposal_due_date")
    if param:
        cutoff = parse_time(param, "disposal_due_date")
    elif context.get("data_interval_end") is not None:  # scheduled runs; every run on Airflow 2
        cutoff = parse_time(context["data_interval_end"], "data_interval_end")
    else:  # Airflow 3, a run triggered without a logical date
        run_after = getattr(context.get("dag_run"), "run_after", None) or datetime.now(UTC)
        cutoff = parse_time(run_after, "run_after").replace(microsecond=0)
    midnight = cutoff.time() == datetime.min.time()
    day = f"{cutoff:%Y-%m-%d}" if midnight else f"{cutoff:%Y%m%dT%H%M%SZ}"
    return OpusRun(cutoff.isoformat().replace("+00:00", "Z"), day)


with DAG(
    dag_id="example_aos_opus_records",
    # A data-interval timetable: each run's cut-off is the end of the day it covers. (On Airflow 3,
    # "@daily" alone gives runs with an empty data interval.)
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    # One retry, after Airflow's [core] default_task_retry_delay (300 s unless configured). A retry of
    # submit_records or destroy_records sends only what did not succeed in the first try.
    default_args={"retries": 1},
    params={
        "opus_connection_id": Param(
            None,
            type=["null", "string"],
            title="Opus connection",
            description="The Opus connector connection's GUID. Empty: the Variable aos_opus_connection_id.",
        ),
        "disposal_due_date": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Disposal cut-off",
            description="Dispose of the records due before this time (ISO 8601 with an offset, e.g. "
            "2026-11-02T00:00:00Z). Empty: the run's data interval end (a run without one: the time "
            "it was triggered).",
        ),
        "restore_site": Param(
            None,
            type=["null", "string"],
            title="Archived site to restore",
            description="A SharePoint site collection URL whose archived data Opus restores in place. "
            "Empty: the Variable aos_opus_restore_site; without it, nothing is restored.",
        ),
    },
    user_defined_macros={
        "opus_run": opus_run,
        "placeholder_connection": PLACEHOLDER_CONNECTION,
        "example_documents": str(DOCUMENTS),
    },
    tags=["aos", "opus", "example"],
    doc_md=__doc__,
) as dag:
    # [START howto_operator_aos_opus_submit_records]
    submit_records = AosOpusSubmitRecordsOperator(
        task_id="submit_records",
        aos_conn_id="aos_default",
        opus_connection_id=OPUS_CONNECTION,
        source="{{ var.value.get('aos_opus_documents', example_documents) }}",
        failed_records_path=BASE + "/submit-failed.csv",
        conflict_option="Overwrite",
    )
    # [END howto_operator_aos_opus_submit_records]

    # [START howto_operator_aos_opus_due_and_destroy]
    due_records = AosOpusDueRecordsOperator(
        task_id="due_records",
        aos_conn_id="aos_default",
        opus_connection_id=OPUS_CONNECTION,
        disposal_due_date="{{ opus_run().due_before }}",
        destination=BASE + "/due.jsonl",
    )
    destroy_records = AosOpusDestroyRecordsOperator(
        task_id="destroy_records",
        aos_conn_id="aos_default",
        opus_connection_id=OPUS_CONNECTION,
        source=BASE + "/due.jsonl",  # ids that could not be destroyed: due.failed.jsonl
    )
    due_records >> destroy_records
    # [END howto_operator_aos_opus_due_and_destroy]

    @task.short_circuit
    def restore_requested(site: str) -> bool:
        """Go on to the restore only when a site was given (param or Variable)."""
        print(f"Archived site to restore: {site}" if site else "No site to restore: skipping the restore")
        return bool(site.strip())

    # [START howto_operator_aos_opus_restore]
    restore_site = AosOpusRestoreOperator(
        task_id="restore_site",
        aos_conn_id="aos_default",
        kind="site_collection",
        scope=RESTORE_SITE,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=timedelta(hours=12),
    )
    # [END howto_operator_aos_opus_restore]
    restore_requested(RESTORE_SITE) >> restore_site
