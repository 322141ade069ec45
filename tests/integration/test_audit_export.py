"""AosAuditExportOperator against the emulator: windows, boundaries, filters, bad input, no partial files."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import logging
import signal
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pendulum
import pytest

from airflow_provider_aos.emulator import AosEmulator
from airflow_provider_aos.exceptions import AosApiError, AosConfigError, AosError
from airflow_provider_aos.operators.audit import AosAuditExportOperator, iso_z, split_window

UTC = UTC
NOV1 = datetime(2026, 11, 1, tzinfo=UTC)


def export(conn_id: str, destination: Path | str, context: dict | None = None, **kwargs) -> dict:
    op = AosAuditExportOperator(task_id="export", aos_conn_id=conn_id, destination=str(destination), **kwargs)
    return op.execute(context or {})


def logged(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """What the operator logged: Airflow 2 logs through stdlib logging, Airflow 3 through structlog."""
    out, err = capsys.readouterr()
    return caplog.text if caplog.records else out + err


def read_lines(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        return [json.loads(line) for line in fh]


def test_window_longer_than_seven_days_is_split_and_complete(emulator: AosEmulator, aos_connection, tmp_path):
    conn = aos_connection()
    start, end = NOV1, NOV1 + timedelta(days=16)
    manifest = export(conn, tmp_path / "a.jsonl", start_time=start.isoformat(), end_time=end.isoformat())
    assert manifest["slices"] == manifest["windows"] == 48  # 8-hour slices: the API refuses over 7 days
    assert read_lines(tmp_path / "a.jsonl") == list(emulator.iter_audit(start, end))
    assert manifest["records"] == emulator.count_audit(start, end)
    assert emulator.stats()["audit_error"] == 0


def test_records_on_a_window_boundary_are_exported_exactly_once(
    emulator: AosEmulator, aos_connection, tmp_path
):
    """Consecutive runs split at a record's exact time: it lands in the later run only (half-open windows)."""
    conn = aos_connection()
    boundary_record = next(emulator.iter_audit(NOV1, NOV1 + timedelta(days=1)))
    boundary = datetime.fromisoformat(boundary_record["actionTime"])
    first = export(conn, tmp_path / "1.jsonl", start_time=NOV1 - timedelta(days=1), end_time=boundary)
    second = export(conn, tmp_path / "2.jsonl", start_time=boundary, end_time=NOV1 + timedelta(days=1))
    assert boundary_record not in read_lines(tmp_path / "1.jsonl")
    assert first["skipped_outside_window"] >= 1  # the API (inclusive end) returned it; reported, not hidden
    assert read_lines(tmp_path / "2.jsonl")[0] == boundary_record
    both = read_lines(tmp_path / "1.jsonl") + read_lines(tmp_path / "2.jsonl")
    assert both == list(emulator.iter_audit(NOV1 - timedelta(days=1), NOV1 + timedelta(days=1)))
    assert first["records"] + second["records"] == len(both)


def test_default_window_is_the_runs_data_interval(emulator: AosEmulator, aos_connection, tmp_path):
    conn = aos_connection()
    context = {
        "data_interval_start": pendulum.datetime(2026, 11, 3, tz="UTC"),
        "data_interval_end": pendulum.datetime(2026, 11, 4, tz="UTC"),
    }
    manifest = export(conn, tmp_path / "d.jsonl.gz", context)
    assert manifest["start_time"] == "2026-11-03T00:00:00.000Z"
    assert manifest["end_time"] == "2026-11-04T00:00:00.000Z"
    assert manifest["compression"] == "gzip"
    assert manifest["records"] == emulator.count_audit(
        datetime(2026, 11, 3, tzinfo=UTC), datetime(2026, 11, 4, tzinfo=UTC)
    )
    assert len(read_lines(tmp_path / "d.jsonl.gz")) == manifest["records"]


def test_gzip_output_is_byte_identical_on_rerun(aos_connection, tmp_path):
    conn = aos_connection()
    kwargs = {"start_time": "2026-11-01T00:00:00Z", "end_time": "2026-11-02T00:00:00Z"}
    export(conn, tmp_path / "x.jsonl.gz", **kwargs)
    first = (tmp_path / "x.jsonl.gz").read_bytes()
    export(conn, tmp_path / "x.jsonl.gz", **kwargs)
    assert (tmp_path / "x.jsonl.gz").read_bytes() == first
    assert first[:2] == b"\x1f\x8b"


@pytest.mark.parametrize(
    ("product_types", "geo_locations"),
    [(["Portal"], None), ("Portal,Office365Backup", None), (None, ["NAM", "EUR"]), (["Portal"], "JPN")],
)
def test_filters_are_sent_and_applied(
    emulator: AosEmulator, aos_connection, tmp_path, product_types, geo_locations
):
    conn = aos_connection()
    start, end = NOV1, NOV1 + timedelta(days=3)
    manifest = export(
        conn,
        tmp_path / "f.jsonl",
        start_time=start,
        end_time=end,
        product_types=product_types,
        geo_locations=geo_locations,
    )
    as_list = lambda v: v.split(",") if isinstance(v, str) else v  # noqa: E731
    expected = list(emulator.iter_audit(start, end, as_list(product_types), as_list(geo_locations)))
    assert 0 < manifest["records"] < emulator.count_audit(start, end)
    assert read_lines(tmp_path / "f.jsonl") == expected


def test_failure_mid_export_leaves_no_file_and_keeps_the_previous_one(
    emulator: AosEmulator, aos_connection, tmp_path
):
    conn = aos_connection()
    target = tmp_path / "keep.jsonl"
    target.write_text("previous complete export\n")
    emulator.configure(page_size=20)
    emulator.inject_faults("audit", ["ok", "ok", 400])  # two pages are written, then a 400 (never retried)
    with pytest.raises(AosApiError) as err:
        export(
            conn,
            target,
            start_time="2026-11-01T00:00:00Z",
            end_time="2026-11-02T00:00:00Z",
            max_concurrency=1,
        )
    assert err.value.status == 400
    assert err.value.trace_id
    assert emulator.stats()["audit"] == 2
    assert target.read_text() == "previous complete export\n"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.jsonl"]  # and no temporary file is left
    assert spools_of(target) == []


def spools_of(destination: Path) -> list[Path]:
    """The spool folders of exports to ``destination`` in the temporary directory."""
    tag = hashlib.sha256(str(destination).encode()).hexdigest()[:16]
    return list(Path(tempfile.gettempdir()).glob(f"aos-audit-spool-{tag}-*"))


def test_a_failing_slice_stops_the_others_and_leaves_no_file_or_spool(
    emulator: AosEmulator, aos_connection, tmp_path
):
    """With 16 slices in flight, one 400 ends the run: the others stop, nothing is left behind."""
    emulator.configure(page_size=5, latency=0.02)
    emulator.inject_faults("audit", ["ok"] * 30 + [400])
    target = tmp_path / "c.jsonl"
    with pytest.raises(AosApiError) as err:
        export(
            aos_connection(), target, start_time="2026-11-01T00:00:00Z", end_time="2026-11-03T00:00:00Z",
            max_concurrency=16,
        )  # fmt: skip
    assert err.value.status == 400
    requests_at_failure = emulator.stats()["audit"]
    assert requests_at_failure < 120  # the window needs far more pages: the run stopped early
    assert list(tmp_path.iterdir()) == []
    assert spools_of(target) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"start_time": "2026-11-02T00:00:00Z", "end_time": "2026-11-01T00:00:00Z"}, "end_time"),
        ({"start_time": datetime(2026, 11, 1), "end_time": "2026-11-02T00:00:00Z"}, "start_time"),
        ({"start_time": "2026-11-01T00:00:00Z", "end_time": "2026-11-02T00:00:00"}, "end_time"),
        ({"start_time": "yesterday", "end_time": "2026-11-02T00:00:00Z"}, "start_time"),
        ({"start_time": "2026-11-01T00:00:00Z", "end_time": "2026-11-01T00:00:00Z"}, "end_time"),
        ({"start_time": "2026-11-01T00:00:00Z"}, "end_time"),
        (
            {
                "start_time": "2026-11-01T00:00:00Z",
                "end_time": "2026-11-02T00:00:00Z",
                "product_types": ["Portal&x=1"],
            },
            "product_types",
        ),
        (
            {"start_time": "2026-11-01T00:00:00Z", "end_time": "2026-11-02T00:00:00Z", "compression": "zip"},
            "compression",
        ),
    ],
)
def test_bad_arguments_fail_before_any_request(
    emulator: AosEmulator, aos_connection, tmp_path, kwargs, field
):
    conn = aos_connection()
    with pytest.raises(AosConfigError) as err:
        export(conn, tmp_path / "bad.jsonl", **kwargs)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")
    assert emulator.stats()["requests"] == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("destination", ["relative/path.jsonl", "/tmp/folder/", ""])
def test_bad_destination_is_refused(aos_connection, destination):
    conn = aos_connection()
    with pytest.raises(AosConfigError) as err:
        export(conn, destination, start_time="2026-11-01T00:00:00Z", end_time="2026-11-02T00:00:00Z")
    assert err.value.field == "destination"


def test_split_window_covers_the_range_without_gaps():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=20, hours=5)
    windows = list(split_window(start, end))
    assert windows[0][0] == start
    assert windows[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))
    assert all(hi - lo <= timedelta(days=7) for lo, hi in windows)


def test_stale_temp_files_of_earlier_attempts_are_removed_and_nothing_else(aos_connection, tmp_path):
    """A SIGKILLed attempt leaves ``.{name}.{uuid}.tmp``; the next attempt sweeps exactly those."""
    conn = aos_connection()
    stale = tmp_path / f".s.jsonl.{uuid.uuid4().hex}.tmp"
    kept = [
        tmp_path / ".s.jsonl.not-a-uuid.tmp",  # not our pattern
        tmp_path / f".other.jsonl.{uuid.uuid4().hex}.tmp",  # another destination's
        tmp_path / f"s.jsonl.{uuid.uuid4().hex}.tmp",  # no leading dot
        tmp_path / f".s.jsonl.{uuid.uuid4().hex}.tmp.bak",
        tmp_path / "notes.txt",
    ]
    for file in [stale, *kept]:
        file.write_text("partial")
    export(conn, tmp_path / "s.jsonl", start_time="2026-11-01T00:00:00Z", end_time="2026-11-01T06:00:00Z")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["s.jsonl", *(p.name for p in kept)])


def test_a_record_utf8_cannot_encode_is_exported_escaped_and_counted(
    emulator: AosEmulator, aos_connection, tmp_path, monkeypatch, caplog, capsys
):
    """A lone surrogate is valid JSON (the emulator sends it as ``\\ud800``) but not encodable as UTF-8."""
    original = emulator._data.record

    def record(i: int) -> dict:
        out = original(i)
        if i % 50 == 0:
            out["comment"] = "bad \ud800 text"
        return out

    monkeypatch.setattr(emulator._data, "record", record)
    start, end = NOV1, NOV1 + timedelta(days=1)
    expected = list(emulator.iter_audit(start, end))
    n_bad = sum(1 for r in expected if r["comment"])
    assert n_bad > 0
    with caplog.at_level(logging.INFO):
        manifest = export(aos_connection(), tmp_path / "u.jsonl", start_time=start, end_time=end)
    assert manifest["escaped_records"] == n_bad
    assert manifest["records"] == len(expected)
    lines = (tmp_path / "u.jsonl").read_bytes().decode("utf-8").splitlines()  # the file is valid UTF-8
    assert [json.loads(line) for line in lines] == expected  # and decodes to exactly the same records
    assert f"Wrote {n_bad} record(s) with \\uXXXX escapes" in logged(caplog, capsys)


def test_destination_matching_is_case_insensitive_for_gz(aos_connection, tmp_path):
    conn = aos_connection()
    manifest = export(
        conn, tmp_path / "X.JSONL.GZ", start_time="2026-11-01T00:00:00Z", end_time="2026-11-01T06:00:00Z"
    )
    assert manifest["compression"] == "gzip"
    assert (tmp_path / "X.JSONL.GZ").read_bytes()[:2] == b"\x1f\x8b"


@pytest.mark.parametrize("case", ["existing_directory", "parent_is_a_file", "not_writable"])
def test_unusable_destination_fails_before_any_request(emulator: AosEmulator, aos_connection, tmp_path, case):
    conn = aos_connection()
    if case == "existing_directory":
        (tmp_path / "out.jsonl").mkdir()
        destination = tmp_path / "out.jsonl"
    elif case == "parent_is_a_file":
        (tmp_path / "file").write_text("x")
        destination = tmp_path / "file" / "sub" / "out.jsonl"
    else:  # tests run as root, so chmod cannot block writes; /proc refuses new files even to root
        destination = Path("/proc/self/aos-audit-out.jsonl")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(AosConfigError) as err:
        export(conn, destination, start_time="2026-11-01T00:00:00Z", end_time="2026-11-02T00:00:00Z")
    assert err.value.field == "destination"
    assert emulator.stats()["requests"] == 0  # no token, no audit page: nothing was downloaded
    assert sorted(tmp_path.rglob("*")) == before  # and no temporary file left


def test_dates_before_year_1000_are_zero_padded(emulator: AosEmulator, aos_connection, tmp_path):
    assert iso_z(datetime(999, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)) == "0999-01-02T03:04:05.678Z"
    assert iso_z(datetime(2026, 11, 1, tzinfo=UTC)) == "2026-11-01T00:00:00.000Z"
    manifest = export(
        aos_connection(),
        tmp_path / "old.jsonl",
        start_time="0999-01-01T00:00:00Z",
        end_time="0999-01-02T00:00:00Z",
    )
    assert (manifest["start_time"], manifest["end_time"]) == (
        "0999-01-01T00:00:00.000Z",
        "0999-01-02T00:00:00.000Z",
    )
    assert manifest["records"] == 0
    assert emulator.stats()["audit_error"] == 0  # the API got well-formed ISO 8601 times


def test_a_long_window_logs_how_many_api_windows_it_takes(
    emulator: AosEmulator, aos_connection, tmp_path, caplog, capsys
):
    start, end = datetime(2025, 11, 1, tzinfo=UTC), datetime(2026, 11, 8, tzinfo=UTC)  # 372 days
    with caplog.at_level(logging.INFO):
        manifest = export(aos_connection(), tmp_path / "y.jsonl", start_time=start, end_time=end)
    assert manifest["slices"] == 54  # 7-day slices: the most the API accepts
    line = (
        f"Exporting AOS audit records 2025-11-01T00:00:00.000Z to 2026-11-08T00:00:00.000Z to {tmp_path}/y.jsonl: "
        "54 slice(s) of at most 7 days, 0:00:00, up to 4 at once"
    )
    assert logged(caplog, capsys).count(line) == 1


@pytest.mark.parametrize(
    "context",
    [{}, {"data_interval_start": None, "data_interval_end": None, "logical_date": None}],
    ids=["absent", "none"],
)
def test_a_run_without_data_interval_names_the_fix(emulator: AosEmulator, aos_connection, tmp_path, context):
    """An Airflow 3 manual run has logical_date null and no data interval."""
    with pytest.raises(AosConfigError) as err:
        export(aos_connection(), tmp_path / "n.jsonl", context)
    assert err.value.field == "start_time"
    assert "no data interval" in str(err.value)
    assert "{{ params.start_time }}" in str(err.value)
    assert emulator.stats()["requests"] == 0


@pytest.mark.parametrize("rendered", ["None", "", "  "])
@pytest.mark.parametrize("field", ["start_time", "end_time"])
def test_a_template_rendering_to_none_or_empty_names_the_field(
    emulator: AosEmulator, aos_connection, tmp_path, field, rendered
):
    kwargs = {"start_time": "2026-11-01T00:00:00Z", "end_time": "2026-11-02T00:00:00Z", field: rendered}
    with pytest.raises(AosConfigError) as err:
        export(aos_connection(), tmp_path / "t.jsonl", **kwargs)
    assert err.value.field == field
    assert "template rendered to" in str(err.value)
    assert "ISO 8601" not in str(err.value)  # not a parse error about the text 'None'
    assert emulator.stats()["requests"] == 0


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_kill_during_a_retry_wait_stops_at_once_and_leaves_no_file(
    emulator: AosEmulator, aos_connection, tmp_path, concurrency
):
    """
    What Airflow 3's task runner does on SIGTERM: call ``on_kill()`` from the signal handler and raise
    nothing. Here the signal arrives while the hook waits out a 30 s ``Retry-After``.
    """
    emulator.configure(page_size=20, retry_after=30, latency=0.01)
    emulator.inject_faults("audit", ["ok", "ok", 429])
    op = AosAuditExportOperator(
        task_id="export",
        aos_conn_id=aos_connection(),
        destination=str(tmp_path / "k.jsonl"),
        start_time="2026-11-01T00:00:00Z",
        end_time="2026-11-08T00:00:00Z",
        max_concurrency=concurrency,
    )
    previous = signal.signal(signal.SIGALRM, lambda *_: op.on_kill())
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    began = time.monotonic()
    try:
        with pytest.raises(AosError, match="killed"):
            op.execute({})
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - began < 3
    stats = emulator.stats()
    assert stats["fault_429"] == 1  # and the throttled request was not retried after the kill
    if concurrency == 1:
        assert stats["audit"] == 2  # two pages, the 429, then nothing: one request at a time
    assert list(tmp_path.iterdir()) == []
    assert spools_of(tmp_path / "k.jsonl") == []
