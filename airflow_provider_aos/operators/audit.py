"""Export AOS audit records to object storage."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Executor
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_aos.exceptions import AosConfigError, AosError
from airflow_provider_aos.hooks.aos import AosHook
from airflow_provider_aos.pagination import decode_records_raw
from airflow_provider_aos.slices import (
    Counts,
    Progress,
    Slice,
    SliceRun,
    Writable,
    encode_page,
    plan_slices,
    remove_folder,
    spool_folder,
)
from airflow_provider_aos.storage import AtomicDestination
from airflow_provider_aos.throttle import AdaptiveLimit, Cancelled
from airflow_provider_aos.windows import iso_z, parse_time, split_window

__all__ = ["AosAuditExportOperator", "iso_z", "parse_time", "split_window"]

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

AUDIT_PATH = "aos/audit"
AUDIT_SCOPE = "audit.read.all"
KILLED = "the export was stopped because the task was killed; no file was written"
MAX_CONCURRENCY = 64


def _concurrency(value: Any) -> int:
    """``max_concurrency`` as a whole number from 1 to 64 (a template renders a string)."""
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_CONCURRENCY or isinstance(value, bool | float):
        raise AosConfigError(
            "max_concurrency",
            f"{value!r}: give a whole number of time slices to walk at once, from 1 to {MAX_CONCURRENCY} "
            "(default 4)",
        )
    return number


def _filter_values(value: Any, field: str) -> list[str]:
    """A filter as a list: accepts a list, or one string with comma-separated values."""
    if value is None or value == "" or value == []:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    out = [str(v).strip() for v in items if str(v).strip()]
    if not all(v.replace("_", "").isalnum() for v in out):
        raise AosConfigError(field, f"values must be plain names such as 'Portal' or 'NAM', got {out!r}")
    return out


class AosAuditExportOperator(BaseOperator):
    """
    Export the AOS audit records of a time window to a file, as JSON Lines (optionally gzip).

    Records stream page by page from ``GET /aos/audit`` to the destination; they are never held in
    memory or pushed to XCom. The file is written under a temporary name beside the destination and
    moved into place only when complete, so a killed or retried task never leaves a partial file, and
    a rerun of the same window replaces the file. The window is half-open, ``[start_time,
    end_time)``: a record stamped exactly at ``end_time`` belongs to the next run, so consecutive runs
    neither drop nor repeat records.

    **Concurrency.** The window is cut into time slices (:attr:`slice_duration`: a day into 24 slices
    of an hour on hour boundaries, 20 days into 40 of 12 hours), whatever ``max_concurrency`` is. Up
    to ``max_concurrency`` slices are walked at once, each page's successor fetched while the page in
    hand is written, each slice into a spool file in the worker's temporary directory; the spools are
    appended to the destination in time order. So the file holds the same bytes at any concurrency
    and on a rerun. Each slice costs at least one request, even an empty one. The requests in flight
    start at one and grow by one per round of successes up to ``max_concurrency``; each 429 or 503
    halves them (``Retry-After`` is honoured as for any request), so a throttling service sets the
    pace instead of failing the task. Records are written as the API sent them (compact JSON, one
    per line); only their ``actionTime`` is decoded.

    Every argument, the connection and the destination's folder are checked before the first API
    request. A kill (``on_kill``) stops the export at the next page and removes the temporary file
    and the spools; each attempt also removes what killed earlier attempts left for the same
    destination. With ``outlets`` (an ``Asset``, a ``Dataset`` on Airflow 2.11), each asset event
    carries the manifest as its ``extra``.

    :param destination: file path or URL understood by Airflow object storage, e.g.
        ``/data/aos/audit-{{ ds }}.jsonl.gz`` or ``s3://bucket/aos/{{ ds }}.jsonl`` (templated).
    :param aos_conn_id: the AOS connection (templated).
    :param start_time: start of the window, aware datetime or ISO 8601 string (templated).
        Default: the run's ``data_interval_start``. Runs without a data interval (an Airflow 3 manual
        run) must pass it, e.g. ``"{{ params.start_time }}"``.
    :param end_time: end of the window (templated). Default: the run's ``data_interval_end``.
    :param product_types: only these products, e.g. ``["Portal", "Office365Backup"]`` (templated).
    :param geo_locations: only these geo locations of a Multi-Geo tenant, e.g. ``["NAM"]`` (templated).
    :param compression: ``"gzip"``, ``None``, or ``"infer"`` (gzip when the destination ends in ``.gz``,
        any case).
    :param destination_conn_id: connection for the object store (e.g. an ``aws`` one), if it needs one
        (templated).
    :param max_concurrency: the most time slices walked (and requests in flight) at once, 1 to 64
        (templated; default 4).
    :return: a manifest: ``path``, ``records``, ``pages``, ``start_time``, ``end_time``, ``slices``,
        ``windows`` (the same number: each slice is one API window), ``max_concurrency`` (asked),
        ``max_concurrency_used`` (the most requests that were in flight at once),
        ``throttled_requests`` (429/503 answers that made the export slow down), ``compression``,
        ``bytes``, ``skipped_outside_window`` (records the API returned that belong to a neighbouring
        slice or window), ``escaped_records`` (records written with ``\\uXXXX`` escapes because they
        hold text UTF-8 cannot encode, such as a lone surrogate).
    """

    template_fields: Sequence[str] = (
        "aos_conn_id",
        "destination",
        "start_time",
        "end_time",
        "product_types",
        "geo_locations",
        "destination_conn_id",
        "max_concurrency",
    )
    ui_color = "#e8f1fb"
    slice_duration: timedelta | None = None
    """
    The width of the time slices, cut at multiples of it since the epoch (UTC), at most 7 days. None
    (the default): the narrowest of 1, 2, 3, 4, 6, 8, 12 hours, 1, 2, 4, 7 days that cuts the window
    into at most 48 slices (:func:`~airflow_provider_aos.slices.slice_width`). Set it on a subclass.
    """

    # State of the running export, read by on_kill(). Class defaults rather than __init__ attributes:
    # Airflow deep-copies and serializes operators, and these are only meaningful inside execute().
    _killed: bool = False
    _dest: AtomicDestination | None = None
    _spools: Path | None = None
    _limit: AdaptiveLimit | None = None
    _manifest: dict[str, Any] | None = None  # the last manifest, for OpenLineage
    _api_url: str | None = None

    def __init__(
        self,
        *,
        destination: str,
        aos_conn_id: str = AosHook.default_conn_name,
        start_time: datetime | str | None = None,
        end_time: datetime | str | None = None,
        product_types: list[str] | str | None = None,
        geo_locations: list[str] | str | None = None,
        compression: str | None = "infer",
        destination_conn_id: str | None = None,
        max_concurrency: int | str = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.destination = destination
        self.aos_conn_id = aos_conn_id
        self.start_time = start_time
        self.end_time = end_time
        self.product_types = product_types
        self.geo_locations = geo_locations
        self.compression = compression
        self.destination_conn_id = destination_conn_id
        self.max_concurrency = max_concurrency

    def _window(self, context: Context) -> tuple[datetime, datetime]:
        start = self.start_time if self.start_time is not None else context.get("data_interval_start")
        end = self.end_time if self.end_time is not None else context.get("data_interval_end")
        if start is None or end is None:
            raise AosConfigError(
                "start_time" if start is None else "end_time",
                "the run has no data interval (e.g. an Airflow 3 manual run, whose logical date is empty), "
                "so there is no default window. Pass start_time and end_time, e.g. from DAG params: "
                "start_time='{{ params.start_time }}', end_time='{{ params.end_time }}'",
            )
        start_dt, end_dt = parse_time(start, "start_time"), parse_time(end, "end_time")
        if end_dt < start_dt:
            raise AosConfigError("end_time", f"{iso_z(end_dt)} is before start_time {iso_z(start_dt)}")
        if end_dt == start_dt:
            raise AosConfigError(
                "end_time",
                f"the window {iso_z(start_dt)} to {iso_z(end_dt)} is empty. With Airflow 3 a cron schedule has "
                "empty data intervals unless the DAG uses CronDataIntervalTimetable; use it, or pass "
                "start_time and end_time",
            )
        return start_dt, end_dt

    def on_kill(self) -> None:
        """
        Stop the export at the next page and remove the temporary file and the spools.

        Airflow 3 only calls this on SIGTERM (nothing is raised in the task) and SIGKILLs about 5 s
        later, so the files go now rather than in ``execute``'s cleanup, which a SIGKILL would skip.
        It runs inside the signal handler, interrupting ``execute`` in the main thread, so it takes no
        lock: closing the HTTP client here could deadlock on a connection-pool lock the interrupted
        request holds. ``execute`` closes the client; requests in flight finish first.
        """
        self._killed = True
        if self._limit is not None:
            self._limit.cancel()
        dest = self._dest
        if dest is not None:
            try:
                dest.discard()
            except Exception:
                self.log.warning("Could not remove the temporary file %s", dest.tmp)
        remove_folder(self._spools)

    def _check_killed(self) -> None:
        if self._killed:
            raise AosError(KILLED)

    def _sleep(self, seconds: float) -> None:
        """The hook's wait between retries, cut short by a kill (a Retry-After may be minutes)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._check_killed()
            time.sleep(min(left, 0.2))
        self._check_killed()

    def execute(self, context: Context) -> dict[str, Any]:
        self._killed = False
        start, end = self._window(context)
        dest = AtomicDestination(
            self.destination, conn_id=self.destination_conn_id, compression=self.compression
        )
        product_types = _filter_values(self.product_types, "product_types")
        geo_locations = _filter_values(self.geo_locations, "geo_locations")
        concurrency = _concurrency(self.max_concurrency)
        slices = plan_slices(start, end, self.slice_duration)
        hook = AosHook(aos_conn_id=self.aos_conn_id)
        hook.config  # noqa: B018 - validates the connection before anything is written or requested
        hook.sleep = self._sleep  # type: ignore[method-assign]
        hook.limit = limit = self._limit = AdaptiveLimit(concurrency)
        self.log.info(
            "Exporting AOS audit records %s to %s to %s: %d slice(s) of at most %s, up to %d at once",
            iso_z(start), iso_z(end), dest.path, len(slices), max(s.end - s.start for s in slices),
            concurrency,
        )  # fmt: skip

        base: dict[str, Any] = {}
        # The docs type both filters as one string and never show several values; the API's list
        # convention elsewhere is a repeated parameter, so that is what we send (endpoints.md §2).
        if product_types:
            base["productTypes"] = product_types
        if geo_locations:
            base["geoLocations"] = geo_locations

        def walk(piece: Slice, spool: Writable, fetcher: Executor) -> Counts:
            return self._export_slice(hook, run, piece, spool, fetcher, base)

        self._dest = dest
        try:
            with dest as out:  # the temporary file is created (destination proven writable) first
                self._spools = spool_folder(str(dest.path))
                run = SliceRun(slices, concurrency, walk, self._spools, Progress(self.log, len(slices)))
                totals = run.run(out)
                self._check_killed()
        except Cancelled:
            raise AosError(KILLED) from None
        except OSError as exc:
            if self._killed:
                # The rename or a write of the file on_kill() removed: say why, not "file not found".
                # Anything else (Airflow 2's AirflowTaskTerminated) keeps its type: Airflow acts on it.
                raise AosError(KILLED) from exc
            raise
        finally:
            remove_folder(self._spools)
            self._dest = self._spools = self._limit = None
            hook.close()
        path, size, gz = dest.path, dest.size, dest.gzip
        self._api_url = hook.config.api_url
        self.log.info(
            "Exported %d AOS audit records (%s to %s, %d page(s), %d slice(s), up to %d requests at once) to %s",
            totals.records, iso_z(start), iso_z(end), totals.pages, len(slices), limit.peak, path,
        )  # fmt: skip
        if limit.throttled:
            self.log.info(
                "The API throttled %d request(s) (429/503): the export slowed down and retried them",
                limit.throttled,
            )
        if totals.outside:
            # They belong to a neighbouring window (e.g. stamped exactly at end_time), not lost.
            self.log.info("Skipped %d record(s) stamped outside their slice", totals.outside)
        if totals.escaped:
            self.log.info(
                "Wrote %d record(s) with \\uXXXX escapes: they hold text UTF-8 cannot encode (a lone surrogate)",
                totals.escaped,
            )
        manifest = {
            "path": str(path),
            "records": totals.records,
            "pages": totals.pages,
            "start_time": iso_z(start),
            "end_time": iso_z(end),
            "slices": len(slices),
            "windows": len(slices),
            "max_concurrency": concurrency,
            "max_concurrency_used": limit.peak,
            "throttled_requests": limit.throttled,
            "compression": "gzip" if gz else None,
            "bytes": size,
            "skipped_outside_window": totals.outside,
            "escaped_records": totals.escaped,
        }
        self._manifest = manifest
        publish_to_outlets(self, context, manifest)
        return manifest

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """
        OpenLineage facets of a finished export (only called when the openlineage provider is
        installed): the AOS audit API as input, the written file as output, with its record count.
        """
        from airflow_provider_aos.lineage import audit_export_lineage

        if self._manifest is None or self._api_url is None:
            return None
        return audit_export_lineage(api_url=self._api_url, manifest=self._manifest)

    def _export_slice(
        self,
        hook: AosHook,
        run: SliceRun,
        piece: Slice,
        spool: Writable,
        fetcher: Executor,
        base: dict[str, Any],
    ) -> Counts:
        """Write one slice's records to its spool (runs in a slice thread)."""
        counts = Counts()
        params = {"startTime": iso_z(piece.start), "endTime": iso_z(piece.end), **base}
        pages = hook.paginate(
            AUDIT_PATH, params=params, scope=AUDIT_SCOPE, decode=decode_records_raw, prefetch=fetcher
        ).pages
        for page in pages:
            # Checked per page: a kill or another slice's failure waits at most for one request.
            self._check_killed()
            run.check()
            counts.pages += 1
            spool.write(encode_page(page.items, piece.start, piece.end, counts))
        return counts


def publish_to_outlets(task: BaseOperator, context: Context, manifest: dict[str, Any]) -> None:
    """
    Put the manifest in the ``extra`` of the asset event of each outlet (an ``Asset`` on Airflow 3,
    a ``Dataset`` on 2.11), so DAGs scheduled on it read which file and window arrived.
    """
    from airflow.providers.common.compat.assets import Asset  # Dataset on Airflow 2.11

    events = context.get("outlet_events")
    if events is None:
        return
    for outlet in getattr(task, "outlets", None) or []:
        # Only assets carry events; an AssetAlias or anything else is left alone.
        if isinstance(outlet, Asset):
            events[outlet].extra = dict(manifest)
