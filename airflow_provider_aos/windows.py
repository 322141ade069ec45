"""
Time windows: reading the times users give, writing the times the API reads, and cutting ranges.

Every operator reads ``start_time``/``end_time`` with :func:`parse_time` (aware datetimes or ISO 8601,
never naive) and sends :func:`iso_z` forms, the form of every sample in the AOS docs.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

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
