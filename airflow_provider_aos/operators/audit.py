"""Export AOS audit records to object storage."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_aos.exceptions import AosConfigError, AosError
from airflow_provider_aos.hooks.aos import AosHook
from airflow_provider_aos.storage import AtomicDestination, encode_record

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

AUDIT_PATH = "aos/audit"
AUDIT_SCOPE = "audit.read.all"
MAX_WINDOW = timedelta(days=7)
"""``endTime - startTime`` may be at most 7 days (audit.md §1); longer windows are split."""
KILLED = "the export was stopped because the task was killed; no file was written"


def parse_time(value: Any, field: str) -> datetime:
    """
    A timezone-aware datetime from a datetime or an ISO 8601 string (what a template renders).

    Naive values are refused: "midnight" means a different instant on every worker's clock.
    """
    if isinstance(value, str):
        text = value.strip()
        if text in ("", "None"):
            # What Jinja renders for a missing or None value, e.g. ``{{ params.start_time }}`` unset.
            raise AosConfigError(
                field,
                f"the template rendered to {text!r}: the value it refers to (e.g. a DAG param) is empty "
                f"or None. Give {field} a date-time, e.g. 2026-11-01T00:00:00Z",
            )
        try:
            value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise AosConfigError(
                field, f"{text!r} is not an ISO 8601 date-time, e.g. 2026-11-01T00:00:00Z"
            ) from None
    if not isinstance(value, datetime):
        raise AosConfigError(field, f"expected a datetime or ISO 8601 string, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise AosConfigError(
            field,
            f"{value.isoformat()} has no timezone; give an aware datetime or an ISO string with an offset, "
            f"e.g. {value.isoformat()}Z",
        )
    utc = value.astimezone(UTC)
    # A plain datetime: pendulum's (what Airflow puts in the context) loses a stdlib tzinfo on arithmetic.
    return datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=UTC
    )


def iso_z(moment: datetime) -> str:
    """UTC ISO 8601 with a ``Z``, the form of every sample in the AOS docs."""
    # isoformat, not strftime: %Y gives "999" for year 999 on Linux, which is not ISO 8601.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def split_window(
    start: datetime, end: datetime, size: timedelta = MAX_WINDOW
) -> Iterator[tuple[datetime, datetime]]:
    """Consecutive ``[start, end)`` windows of at most ``size``."""
    cursor = start
    while cursor < end:
        upper = min(cursor + size, end)
        yield cursor, upper
        cursor = upper


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
    a rerun of the same window replaces the file. Windows longer than 7 days (the API's limit) are
    split. The window is half-open, ``[start_time, end_time)``: a record stamped exactly at
    ``end_time`` belongs to the next run, so consecutive runs neither drop nor repeat records.

    Every argument, the connection and the destination's folder are checked before the first API
    request. A kill (``on_kill``) stops the export at the next page and removes the temporary file; each
    attempt also removes temporary files that killed earlier attempts left for the same destination.

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
    :return: a manifest: ``path``, ``records``, ``pages``, ``start_time``, ``end_time``, ``windows``,
        ``compression``, ``bytes``, ``skipped_outside_window`` (records the API returned that belong to
        a neighbouring window), ``escaped_records`` (records written with ``\\uXXXX`` escapes because
        they hold text UTF-8 cannot encode, such as a lone surrogate).
    """

    template_fields: Sequence[str] = (
        "aos_conn_id",
        "destination",
        "start_time",
        "end_time",
        "product_types",
        "geo_locations",
        "destination_conn_id",
    )
    ui_color = "#e8f1fb"

    # State of the running export, read by on_kill(). Class defaults rather than __init__ attributes:
    # Airflow deep-copies and serializes operators, and these are only meaningful inside execute().
    _killed: bool = False
    _dest: AtomicDestination | None = None

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
        Stop the export at the next page and remove the temporary file.

        Airflow 3 only calls this on SIGTERM (nothing is raised in the task) and SIGKILLs about 5 s
        later, so the file goes now rather than in ``execute``'s cleanup, which a SIGKILL would skip.
        It runs inside the signal handler, interrupting ``execute`` in the same thread, so it takes no
        lock: closing the HTTP client here could deadlock on a connection-pool lock the interrupted
        request holds. ``execute`` closes the client; a request in flight finishes first.
        """
        self._killed = True
        dest = self._dest
        if dest is not None:
            try:
                dest.discard()
            except Exception:
                self.log.warning("Could not remove the temporary file %s", dest.tmp)

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
        hook = AosHook(aos_conn_id=self.aos_conn_id)
        hook.config  # noqa: B018 - validates the connection before anything is written or requested
        hook.sleep = self._sleep  # type: ignore[method-assign]
        n_windows = math.ceil((end - start) / MAX_WINDOW)
        self.log.info(
            "Exporting AOS audit records %s to %s: %d API request window(s) of at most 7 days",
            iso_z(start), iso_z(end), n_windows,
        )  # fmt: skip

        records = pages = outside = escaped = windows = 0
        self._dest = dest
        try:
            with dest as out:  # the temporary file is created (destination proven writable) first
                for lo, hi in split_window(start, end):
                    windows += 1
                    counts = self._export_window(hook, out, lo, hi, product_types, geo_locations)
                    records += counts[0]
                    pages += counts[1]
                    outside += counts[2]
                    escaped += counts[3]
                self._check_killed()
        except OSError as exc:
            if self._killed:
                # The rename or a write of the file on_kill() removed: say why, not "file not found".
                # Anything else (Airflow 2's AirflowTaskTerminated) keeps its type: Airflow acts on it.
                raise AosError(KILLED) from exc
            raise
        finally:
            self._dest = None
            hook.close()
        path, size, gz = dest.path, dest.size, dest.gzip
        self.log.info(
            "Exported %d AOS audit records (%s to %s, %d page(s), %d window(s)) to %s",
            records, iso_z(start), iso_z(end), pages, windows, path,
        )  # fmt: skip
        if outside:
            # They belong to a neighbouring window (e.g. stamped exactly at end_time), not lost.
            self.log.info("Skipped %d record(s) stamped outside [start_time, end_time)", outside)
        if escaped:
            self.log.info(
                "Wrote %d record(s) with \\uXXXX escapes: they hold text UTF-8 cannot encode (a lone surrogate)",
                escaped,
            )
        return {
            "path": str(path),
            "records": records,
            "pages": pages,
            "start_time": iso_z(start),
            "end_time": iso_z(end),
            "windows": windows,
            "compression": "gzip" if gz else None,
            "bytes": size,
            "skipped_outside_window": outside,
            "escaped_records": escaped,
        }

    def _export_window(
        self,
        hook: AosHook,
        out: IO[bytes],
        start: datetime,
        end: datetime,
        product_types: list[str],
        geo_locations: list[str],
    ) -> tuple[int, int, int, int]:
        """Write one API window; returns (records, pages, outside the window, escaped)."""
        params: dict[str, Any] = {"startTime": iso_z(start), "endTime": iso_z(end)}
        # The docs type both filters as one string and never show several values; the API's list
        # convention elsewhere is a repeated parameter, so that is what we send (endpoints.md §2).
        if product_types:
            params["productTypes"] = product_types
        if geo_locations:
            params["geoLocations"] = geo_locations
        records = outside = escaped = 0
        iterator = hook.paginate(AUDIT_PATH, params=params, scope=AUDIT_SCOPE)
        for page in iterator.pages:
            # Checked per page: a kill waits at most for the request in flight.
            self._check_killed()
            lines = []
            for record in page.items:
                if not _in_window(record, start, end):
                    outside += 1
                    continue
                line, was_escaped = encode_record(record)
                lines.append(line)
                escaped += was_escaped
            if lines:
                out.write(b"\n".join(lines) + b"\n")
            records += len(lines)
        self.log.info(
            "Window %s to %s: %d records in %d page(s)",
            iso_z(start),
            iso_z(end),
            records,
            iterator.page_number,
        )
        return records, iterator.page_number, outside, escaped


def _in_window(record: Any, start: datetime, end: datetime) -> bool:
    """
    Whether a record belongs to ``[start, end)``.

    The docs do not say whether ``endTime`` is inclusive; treating the API's answer as half-open here
    keeps consecutive windows (and runs) from repeating a record stamped exactly on a boundary. A record
    without a readable ``actionTime`` is kept: dropping data we cannot place would lose it silently.
    """
    stamp = record.get("actionTime") if isinstance(record, dict) else None
    if not isinstance(stamp, str):
        return True
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return True
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the API documents UTC ("...Z") stamps
    return start <= moment < end
