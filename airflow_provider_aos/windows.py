"""
Time windows: reading the times users give, writing the times the API reads, and cutting ranges.

Every operator reads ``start_time``/``end_time`` with :func:`parse_time` (aware datetimes or ISO 8601,
never naive) and sends :func:`iso_z` forms, the form of every sample in the AOS docs.
:func:`export_windows` cuts a long range into the windows of mapped export tasks.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import conf

from airflow_provider_aos.exceptions import AosConfigError

MAX_WINDOW = timedelta(days=7)
"""``endTime - startTime`` may be at most 7 days (audit.md §1); longer windows are split."""


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


def export_windows(
    start: datetime | str,
    end: datetime | str,
    *,
    every: timedelta = timedelta(days=1),
    destination: str | None = None,
    max_windows: int | None = None,
) -> list[dict[str, str]]:
    """
    The keyword arguments of one export per window: ``[start, end)`` cut into consecutive windows.

    For dynamic task mapping, one mapped task per window::

        AosAuditExportOperator.partial(task_id="export").expand_kwargs(
            export_windows(start, end, destination="s3://bucket/aos/audit-{start:%Y-%m-%d}.jsonl.gz")
        )

    Windows are half-open and cover ``[start, end)`` exactly: each ends where the next starts, the last
    one ends at ``end`` (shorter than ``every`` when the range is not a multiple of it), so a record
    stamped on a boundary is exported once. Each dict holds ``start_time`` and ``end_time`` (UTC ISO 8601,
    :func:`iso_z`) and, with a ``destination`` pattern, ``destination``.

    :param start: start of the range (inclusive): an aware datetime or an ISO 8601 string with an offset.
    :param end: end of the range (exclusive), likewise.
    :param every: length of each window (one day by default); a whole number of milliseconds, the API's
        precision.
    :param destination: pattern of each window's file, formatted with ``start`` and ``end`` (UTC
        datetimes) by :meth:`str.format`, e.g. ``"/data/aos/audit-{start:%Y-%m-%d}.jsonl.gz"``. Two
        windows may not get the same file: the second export would replace the first one's data. This
        is :meth:`str.format`, not Jinja: render a template first (e.g. pass it to a ``@task``).
    :param max_windows: most windows allowed; default: Airflow's ``[core] max_map_length`` (1024 unless
        configured), the most mapped tasks one list may expand into.
    :raises AosConfigError: naming the argument to fix.
    """
    lower = _whole_ms(parse_time(start, "start"), "start")
    upper = _whole_ms(parse_time(end, "end"), "end")
    if upper <= lower:
        raise AosConfigError(
            "end", f"{iso_z(upper)} is not after start {iso_z(lower)}; give an end later than the start"
        )
    if not isinstance(every, timedelta) or every <= timedelta(0):
        raise AosConfigError("every", f"{every!r}: give a positive timedelta, e.g. timedelta(days=1)")
    if every % timedelta(milliseconds=1):
        raise AosConfigError("every", f"{every!r} is not a whole number of milliseconds, the API's precision")
    limit = _max_map_length() if max_windows is None else max_windows
    count = -((lower - upper) // every)  # ceil((upper - lower) / every), without building the list
    if count > limit:
        if max_windows is not None:
            why = f"max_windows={limit}"
        else:
            why = (
                f"one list may expand into: Airflow's [core] max_map_length is {limit} (1024 by default), "
                "and a longer list fails the task that returns it"
            )
        raise AosConfigError(
            "every",
            f"{iso_z(lower)} to {iso_z(upper)} every {every} makes {count} windows, more than {why}. Give a "
            "longer every, split the range over several runs, or raise [core] max_map_length",
        )
    windows: list[dict[str, str]] = []
    first_window_of: dict[str, tuple[datetime, datetime]] = {}
    for lo, hi in split_window(lower, upper, every):
        window = {"start_time": iso_z(lo), "end_time": iso_z(hi)}
        if destination is not None:
            path = _destination(destination, lo, hi)
            if path in first_window_of:
                other = first_window_of[path]
                raise AosConfigError(
                    "destination",
                    f"{destination!r} gives {path!r} to both {iso_z(other[0])}-{iso_z(other[1])} and "
                    f"{iso_z(lo)}-{iso_z(hi)}: the second export would replace the first one's file. Put "
                    "what tells the windows apart in the pattern, e.g. {start:%Y%m%dT%H%M%SZ}",
                )
            first_window_of[path] = (lo, hi)
            window["destination"] = path
        windows.append(window)
    return windows


def _whole_ms(moment: datetime, field: str) -> datetime:
    """``moment`` if it has no part below a millisecond (which :func:`iso_z` would drop)."""
    if moment.microsecond % 1000:
        raise AosConfigError(
            field,
            f"{moment.isoformat()} has microseconds; windows are cut to the millisecond, the API's "
            f"precision: give e.g. {iso_z(moment)}",
        )
    return moment


def _destination(pattern: str, start: datetime, end: datetime) -> str:
    if not isinstance(pattern, str):
        raise AosConfigError("destination", f"expected a string pattern, got {type(pattern).__name__}")
    try:
        return pattern.format(start=start, end=end)
    except (AttributeError, IndexError, KeyError, ValueError) as exc:
        raise AosConfigError(
            "destination",
            f"{pattern!r} cannot be formatted ({type(exc).__name__}: {exc}); it may use only {{start}} and "
            "{end} (UTC datetimes, e.g. {start:%Y-%m-%d}), and a literal brace is written {{ or }}",
        ) from None


def _max_map_length() -> int:
    """Airflow's ``[core] max_map_length``: how many items a list may have to expand a task."""
    return int(conf.getint("core", "max_map_length", fallback=1024))
