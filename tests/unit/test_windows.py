"""Unit tests of the time windows: reading times, writing them for the API, cutting ranges into windows."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pendulum
import pytest

from airflow_provider_aos.exceptions import AosConfigError
from airflow_provider_aos.windows import MAX_WINDOW, export_windows, iso_z, parse_time, split_window

NOV1 = datetime(2026, 11, 1, tzinfo=UTC)
DAY = timedelta(days=1)


# -- parse_time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-01T00:00:00Z",
        "2026-11-01T00:00:00z",
        "2026-11-01T00:00:00.000Z",  # what the trigger form sends
        " 2026-11-01T01:00:00+01:00 ",
        "2026-10-31T19:00:00-05:00",
        datetime(2026, 11, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        pendulum.datetime(2026, 11, 1, tz="UTC"),
    ],
)
def test_parse_time_reads_any_aware_form_as_utc(value: object) -> None:
    parsed = parse_time(value, "start_time")
    assert parsed == NOV1
    assert parsed.tzinfo is UTC
    assert type(parsed) is datetime  # not pendulum's: it would lose a stdlib tzinfo on arithmetic


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2026-11-01T00:00:00", "has no timezone"),
        ("2026-11-01", "has no timezone"),
        (datetime(2026, 11, 1), "has no timezone"),
        ("yesterday", "not an ISO 8601 date-time"),
        ("", "the template rendered to ''"),
        ("None", "the template rendered to 'None'"),  # {{ params.x }} of an unset param
        (1_700_000_000, "expected a datetime or ISO 8601 string, got int"),
    ],
)
def test_parse_time_refuses_naive_or_unreadable_values_naming_the_field(value: object, message: str) -> None:
    with pytest.raises(AosConfigError, match=rf"^end_time: .*{message}") as caught:
        parse_time(value, "end_time")
    assert caught.value.field == "end_time"


# -- iso_z ---------------------------------------------------------------------------------------


def test_iso_z_writes_utc_milliseconds_with_z() -> None:
    assert iso_z(NOV1) == "2026-11-01T00:00:00.000Z"
    assert iso_z(datetime(2026, 11, 1, 1, 2, 3, 456789, tzinfo=timezone(timedelta(hours=1)))) == (
        "2026-11-01T00:02:03.456Z"
    )
    assert iso_z(datetime(999, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)) == "0999-01-02T03:04:05.678Z"
    assert parse_time(iso_z(NOV1), "x") == NOV1  # what iso_z writes, parse_time reads back


# -- split_window --------------------------------------------------------------------------------


def test_split_window_cuts_at_most_seven_days_without_gaps() -> None:
    windows = list(split_window(NOV1, NOV1 + 16 * DAY))
    assert windows == [
        (NOV1, NOV1 + 7 * DAY),
        (NOV1 + 7 * DAY, NOV1 + 14 * DAY),
        (NOV1 + 14 * DAY, NOV1 + 16 * DAY),
    ]
    assert MAX_WINDOW == 7 * DAY


def test_split_window_of_an_empty_range_is_empty() -> None:
    assert list(split_window(NOV1, NOV1)) == []
    assert list(split_window(NOV1, NOV1 - DAY)) == []
    assert list(split_window(NOV1, NOV1 + DAY, DAY)) == [(NOV1, NOV1 + DAY)]


# -- export_windows ------------------------------------------------------------------------------


def test_export_windows_gives_one_whole_day_per_window_with_its_file() -> None:
    windows = export_windows(
        "2026-11-01T00:00:00Z",
        "2026-11-04T00:00:00Z",
        destination="/data/aos/audit-{start:%Y-%m-%d}.jsonl.gz",
    )
    assert windows == [
        {
            "start_time": f"2026-11-0{d}T00:00:00.000Z",
            "end_time": f"2026-11-0{d + 1}T00:00:00.000Z",
            "destination": f"/data/aos/audit-2026-11-0{d}.jsonl.gz",
        }
        for d in (1, 2, 3)
    ]


def test_export_windows_cover_the_range_exactly_and_the_last_one_is_shorter() -> None:
    start = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    end = datetime(2026, 11, 4, 0, 0, 0, 1000, tzinfo=UTC)
    windows = export_windows(start, end)
    assert [w["start_time"] for w in windows] == [
        "2026-11-01T06:30:00.000Z",
        "2026-11-02T06:30:00.000Z",
        "2026-11-03T06:30:00.000Z",
    ]
    assert windows[-1]["end_time"] == "2026-11-04T00:00:00.001Z"  # the range's end, not a day after
    assert all(a["end_time"] == b["start_time"] for a, b in itertools.pairwise(windows))  # no gap, no overlap
    assert set(windows[0]) == {"start_time", "end_time"}  # no destination asked for


def test_export_windows_reads_offsets_and_writes_utc() -> None:
    windows = export_windows(
        "2026-11-01T01:00:00+01:00",
        pendulum.datetime(2026, 11, 1, 12, tz="Europe/Paris"),
        every=timedelta(hours=6),
        destination="s3://b/{start:%Y%m%dT%H%M%SZ}_{end:%H%M}.jsonl",
    )
    assert windows == [
        {
            "start_time": "2026-11-01T00:00:00.000Z",
            "end_time": "2026-11-01T06:00:00.000Z",
            "destination": "s3://b/20261101T000000Z_0600.jsonl",
        },
        {
            "start_time": "2026-11-01T06:00:00.000Z",
            "end_time": "2026-11-01T11:00:00.000Z",  # 12:00 in Paris (UTC+1 in November)
            "destination": "s3://b/20261101T060000Z_1100.jsonl",
        },
    ]


def test_export_windows_refuse_a_pattern_that_gives_two_windows_one_file() -> None:
    with pytest.raises(
        AosConfigError, match=r"^destination: .*'/d/audit-2026-11-01\.jsonl' to both"
    ) as caught:
        export_windows(
            NOV1, NOV1 + DAY, every=timedelta(hours=12), destination="/d/audit-{start:%Y-%m-%d}.jsonl"
        )
    assert "would replace the first one's file" in str(caught.value)
    assert "{start:%Y%m%dT%H%M%SZ}" in str(caught.value)  # how to fix it
    with pytest.raises(AosConfigError, match=r"^destination: .*to both"):
        export_windows(NOV1, NOV1 + 2 * DAY, destination="/d/audit.jsonl")  # no placeholder at all


@pytest.mark.parametrize("pattern", ["/d/{day}.jsonl", "/d/{0}.jsonl", "/d/{start.nope}", "/d/{start:%Y"])
def test_export_windows_refuse_a_pattern_that_cannot_be_formatted(pattern: str) -> None:
    with pytest.raises(AosConfigError, match=r"^destination: .*cannot be formatted.*\{start\} and \{end\}"):
        export_windows(NOV1, NOV1 + DAY, destination=pattern)


def test_export_windows_keep_literal_braces_written_doubled() -> None:
    (window,) = export_windows(NOV1, NOV1 + DAY, destination="/d/{{x}}/{start:%d}")
    assert window["destination"] == "/d/{x}/01"


@pytest.mark.parametrize(
    ("start", "end", "field", "message"),
    [
        ("2026-11-01T00:00:00", "2026-11-02T00:00:00Z", "start", "has no timezone"),
        ("2026-11-01T00:00:00Z", datetime(2026, 11, 2), "end", "has no timezone"),
        ("2026-11-01T00:00:00Z", "tomorrow", "end", "not an ISO 8601 date-time"),
        (
            "2026-11-02T00:00:00Z",
            "2026-11-02T00:00:00Z",
            "end",
            "is not after start 2026-11-02T00:00:00.000Z",
        ),
        ("2026-11-02T00:00:00Z", "2026-11-01T00:00:00Z", "end", "is not after start"),
        ("2026-11-01T00:00:00.000500Z", "2026-11-02T00:00:00Z", "start", "has microseconds.*the millisecond"),
    ],
)
def test_export_windows_refuse_a_bad_range_naming_the_field(
    start: object, end: object, field: str, message: str
) -> None:
    with pytest.raises(AosConfigError, match=rf"^{field}: .*{message}") as caught:
        export_windows(start, end)  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("every", "message"),
    [
        (timedelta(0), "give a positive timedelta"),
        (-DAY, "give a positive timedelta"),
        (86400, "give a positive timedelta"),  # seconds are not a length of time here
        (timedelta(microseconds=1500), "not a whole number of milliseconds"),
    ],
)
def test_export_windows_refuse_a_bad_every(every: object, message: str) -> None:
    with pytest.raises(AosConfigError, match=rf"^every: .*{message}"):
        export_windows(NOV1, NOV1 + DAY, every=every)  # type: ignore[arg-type]


def test_export_windows_stop_at_airflows_max_map_length() -> None:
    assert len(export_windows(NOV1, NOV1 + 1024 * DAY)) == 1024  # [core] max_map_length, default 1024
    with pytest.raises(AosConfigError, match=r"^every: .* makes 1025 windows, more than") as caught:
        export_windows(NOV1, NOV1 + 1024 * DAY + timedelta(milliseconds=1))
    message = str(caught.value)
    assert "[core] max_map_length is 1024 (1024 by default)" in message
    assert "Give a longer every, split the range over several runs" in message
    # Counted before any window is built: a year in milliseconds fails at once.
    with pytest.raises(AosConfigError, match=r"makes 31536000000 windows"):
        export_windows(NOV1, NOV1 + 365 * DAY, every=timedelta(milliseconds=1))


def test_export_windows_follow_the_configured_max_map_length(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "3")
    assert len(export_windows(NOV1, NOV1 + 3 * DAY)) == 3
    with pytest.raises(AosConfigError, match=r"makes 4 windows, .*max_map_length is 3 \(1024 by default\)"):
        export_windows(NOV1, NOV1 + 4 * DAY)


def test_export_windows_take_an_explicit_limit() -> None:
    assert len(export_windows(NOV1, NOV1 + 2000 * DAY, max_windows=2000)) == 2000
    with pytest.raises(AosConfigError, match=r"makes 3 windows, more than max_windows=2\."):
        export_windows(NOV1, NOV1 + 3 * DAY, max_windows=2)
