"""
The audit export in concurrent time slices, against the emulator: the same bytes at any concurrency
and on a rerun, records on slice and window boundaries exactly once, throttling followed instead of
failed on, spools cleaned up, and ``max_concurrency`` checked before any request.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_aos.emulator import AosEmulator, EmulatorConfig
from airflow_provider_aos.exceptions import AosApiError, AosConfigError, AosError
from airflow_provider_aos.operators.audit import AosAuditExportOperator
from airflow_provider_aos.slices import SPOOL_PREFIX
from tests.integration.test_audit_export import spools_of

NOV1 = datetime(2026, 11, 1, tzinfo=UTC)
LIVENESS = 60.0  # seconds: only a bound for "it did happen"


def export(conn_id: str, destination: Path, start: datetime, end: datetime, **kwargs: Any) -> dict:
    op = AosAuditExportOperator(
        task_id="export",
        aos_conn_id=conn_id,
        destination=str(destination),
        start_time=start.isoformat(),
        end_time=end.isoformat(),
        **kwargs,
    )
    return op.execute({})


def read_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return [json.loads(line) for line in data.splitlines()]


def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + LIVENESS
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


# -- the same bytes at any concurrency -----------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "suffix", "slices", "page_size"),
    [(1, ".jsonl", 25, 5), (20, ".jsonl", 41, 50), (20, ".jsonl.gz", 41, 50)],
    ids=["1-day", "20-days", "20-days-gzip"],
)
def test_output_is_byte_identical_at_any_concurrency_and_on_rerun(
    emulator: AosEmulator, aos_connection, tmp_path: Path, days: int, suffix: str, slices: int, page_size: int
):
    """
    1, 4 and 16 slices at once, each run twice: one file, byte for byte, holding exactly the API's
    records. The window starts and ends off the slice grid: a day is 23 slices of an hour and two
    part hours, 20 days 39 of 12 hours and two parts.
    """
    conn = aos_connection()
    emulator.configure(page_size=page_size)  # slices of several pages: pages are prefetched within a slice
    start, end = NOV1 + timedelta(hours=5, minutes=17), NOV1 + timedelta(days=days, hours=5, minutes=17)
    expected = list(emulator.iter_audit(start, end))
    assert len(expected) == emulator.count_audit(start, end) > 0
    outputs: dict[tuple[int, int], bytes] = {}
    for concurrency in (1, 4, 16):
        for attempt in (1, 2):
            emulator.reset_stats()
            target = tmp_path / f"c{concurrency}-{attempt}{suffix}"
            manifest = export(conn, target, start, end, max_concurrency=concurrency)
            outputs[concurrency, attempt] = target.read_bytes()
            stats = emulator.stats()
            assert manifest["records"] == len(expected)
            assert manifest["slices"] == manifest["windows"] == slices
            assert manifest["pages"] == stats["audit"] > slices  # some slices took several pages
            assert manifest["max_concurrency"] == concurrency
            assert 1 <= manifest["max_concurrency_used"] <= concurrency
            assert stats["max_concurrent_seen"] <= concurrency  # what the API saw at once
            assert manifest["throttled_requests"] == 0
            assert manifest["bytes"] == len(outputs[concurrency, attempt])
            assert manifest["compression"] == ("gzip" if suffix.endswith(".gz") else None)
            assert stats["token"] == 1  # one token shared by every slice
    if suffix.endswith(".gz"):
        assert outputs[16, 1][:2] == b"\x1f\x8b"
    assert len(set(outputs.values())) == 1, "the bytes differ between concurrencies or reruns"
    assert read_lines(tmp_path / f"c16-1{suffix}") == expected  # the records, in time order, once each
    # Concurrency was really used: a 16-slice run had several requests in flight at once.
    assert manifest["max_concurrency_used"] > 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"c{c}-{a}{suffix}" for c in (1, 4, 16) for a in (1, 2)
    )  # no temporary file left
    assert spools_of(tmp_path / f"c16-1{suffix}") == []


# -- records on boundaries -----------------------------------------------------------------------

# Two records every millisecond (record i at data_start + floor(i / 2) ms): every slice and window
# boundary on a millisecond has records stamped exactly on it, hour boundaries included.
DENSE_START = datetime(2026, 11, 1, tzinfo=UTC)
DENSE_HOURS = 3


@pytest.fixture
def dense() -> Iterator[AosEmulator]:
    config = EmulatorConfig(
        records=2 * DENSE_HOURS * 3_600_000,
        data_start=DENSE_START,
        data_end=DENSE_START + timedelta(hours=DENSE_HOURS),
        page_size=50,
    )
    with AosEmulator(config) as emu:
        yield emu


@pytest.fixture
def dense_conn(dense: AosEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    conn = {
        "conn_type": "aos",
        "host": dense.graph_url,
        "login": dense.config.client_id,
        "password": dense.config.client_secret,
        "extra": {"identity_url": dense.identity_url},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AOS_DENSE", json.dumps(conn))
    return "aos_dense"


def _stamped_at(emu: AosEmulator, moment: datetime) -> list[dict]:
    return list(emu.iter_audit(moment, moment + timedelta(milliseconds=1)))


class TenMillisecondSlices(AosAuditExportOperator):
    slice_duration = timedelta(milliseconds=10)


def test_dense_data_has_records_exactly_on_the_boundaries(dense: AosEmulator):
    """The premise of the boundary tests below."""
    hour = DENSE_START + timedelta(hours=1)
    on_hour = _stamped_at(dense, hour)
    assert len(on_hour) == 2
    assert {r["actionTime"] for r in on_hour} == {"2026-11-01T01:00:00.000Z"}
    assert dense.count_audit(hour - timedelta(milliseconds=50), hour + timedelta(milliseconds=50)) == 200


def test_records_on_an_hour_slice_boundary_and_on_the_window_ends_are_exported_once(
    dense: AosEmulator, dense_conn: str, tmp_path: Path
):
    hour = DENSE_START + timedelta(hours=1)
    start, end = hour - timedelta(milliseconds=75), hour + timedelta(milliseconds=75)  # both on records
    for moment in (start, hour, end):
        assert _stamped_at(dense, moment)
    manifest = export(dense_conn, tmp_path / "h.jsonl", start, end, max_concurrency=4)
    lines = read_lines(tmp_path / "h.jsonl")
    assert manifest["slices"] == 2  # [start, 01:00) and [01:00, end): the hour is a slice boundary
    assert lines == list(dense.iter_audit(start, end))
    assert len(lines) == manifest["records"] == 300
    assert len({r["objectName"] for r in lines}) == 300  # no record twice
    assert [r["actionTime"] for r in lines[:2]] == ["2026-11-01T00:59:59.925Z"] * 2  # the start: in
    assert sum(r["actionTime"] == "2026-11-01T01:00:00.000Z" for r in lines) == 2  # the boundary: once
    assert lines[-1]["actionTime"] == "2026-11-01T01:00:00.074Z"  # the end: out
    # The API's windows end inclusively: the records at 01:00 (in slice 1's answer) and at the end.
    assert manifest["skipped_outside_window"] == 4


def test_records_on_many_slice_boundaries_are_exported_once_at_any_concurrency(
    dense: AosEmulator, dense_conn: str, tmp_path: Path
):
    """10 ms slices: 12 slices, every boundary carrying two records, several pages per slice."""
    start = DENSE_START + timedelta(hours=2) - timedelta(milliseconds=55)
    end = start + timedelta(milliseconds=110)
    outputs = []
    for concurrency in (1, 16):
        target = tmp_path / f"m{concurrency}.jsonl"
        op = TenMillisecondSlices(
            task_id="export", aos_conn_id=dense_conn, destination=str(target),
            start_time=start, end_time=end, max_concurrency=concurrency,
        )  # fmt: skip
        manifest = op.execute({})
        outputs.append(target.read_bytes())
        assert manifest["slices"] == 12  # [.945, .950), 10 of 10 ms, [.050, .055)
        assert manifest["records"] == 220
        assert manifest["skipped_outside_window"] == 2 * 12  # each slice's end, answered inclusively
    assert outputs[0] == outputs[1]
    lines = read_lines(tmp_path / "m16.jsonl")
    assert lines == list(dense.iter_audit(start, end))
    assert len({r["objectName"] for r in lines}) == len(lines) == 220


def test_consecutive_exports_split_on_an_hour_boundary_record_neither_drop_nor_repeat(
    dense: AosEmulator, dense_conn: str, tmp_path: Path
):
    hour = DENSE_START + timedelta(hours=2)
    a, c = hour - timedelta(milliseconds=40), hour + timedelta(milliseconds=40)
    first = export(dense_conn, tmp_path / "1.jsonl", a, hour, max_concurrency=16)
    second = export(dense_conn, tmp_path / "2.jsonl", hour, c, max_concurrency=16)
    before, after = read_lines(tmp_path / "1.jsonl"), read_lines(tmp_path / "2.jsonl")
    assert all(r["actionTime"] < "2026-11-01T02:00:00.000Z" for r in before)
    assert [r["actionTime"] for r in after[:2]] == ["2026-11-01T02:00:00.000Z"] * 2  # the later run only
    assert before + after == list(dense.iter_audit(a, c))
    assert first["records"] + second["records"] == 160


# -- a throttling API ------------------------------------------------------------------------------


def test_an_api_capped_at_4_concurrent_requests_slows_the_export_down_instead_of_failing_it(
    emulator: AosEmulator, aos_connection, tmp_path: Path
):
    conn = aos_connection()
    emulator.configure(page_size=10)
    start, end = NOV1, NOV1 + timedelta(days=4)  # 48 slices of 2 hours, about 1,300 records, 3 pages each
    reference = export(conn, tmp_path / "free.jsonl", start, end, max_concurrency=16)
    assert reference["throttled_requests"] == 0

    emulator.configure(max_concurrent=4, retry_after=0, latency=0.05)  # requests overlap
    emulator.reset_stats()
    manifest = export(conn, tmp_path / "capped.jsonl", start, end, max_concurrency=16)
    stats = emulator.stats()
    assert (tmp_path / "capped.jsonl").read_bytes() == (tmp_path / "free.jsonl").read_bytes()
    assert manifest["records"] == reference["records"] == emulator.count_audit(start, end)
    assert stats["throttled_concurrency"] >= 1  # the cap was reached...
    assert manifest["throttled_requests"] == stats["throttled_concurrency"]  # ...and each 429 was seen
    assert stats["max_concurrent_after_throttle"] <= 5  # then at most one probe over the cap at a time
    assert manifest["max_concurrency_used"] <= 16
    assert stats["audit"] == manifest["pages"]  # every page answered once, retries aside


# -- spools -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["kill", "failure"])
def test_a_killed_or_failed_export_leaves_no_spool_folder(
    emulator: AosEmulator, aos_connection, tmp_path: Path, how: str
):
    conn = aos_connection()
    emulator.configure(page_size=20, latency=0.02)  # minutes of pages: it is stopped long before
    target = tmp_path / "s.jsonl"
    op = AosAuditExportOperator(
        task_id="export", aos_conn_id=conn, destination=str(target), max_concurrency=8,
        start_time="2026-10-01T00:00:00Z", end_time="2026-11-30T00:00:00Z",
    )  # fmt: skip
    during: list[list[str]] = []

    def interrupt() -> None:
        # Mid-export: the spool folder exists (spools_of finds it) and slices are being written.
        _until(
            lambda: emulator.stats()["audit"] >= 20 and any(p.iterdir() for p in spools_of(target)),
            "no spools",
        )
        during.append([p.name for folder in spools_of(target) for p in folder.iterdir()])
        if how == "kill":
            op.on_kill()
        else:
            emulator.inject_faults("audit", [400])

    helper = threading.Thread(target=interrupt)
    helper.start()
    try:
        with pytest.raises((AosError, AosApiError)) as err:
            op.execute({})
    finally:
        helper.join(LIVENESS)
    assert during, "the spools were never seen"
    assert during[0], "the spool folder was empty"
    if how == "kill":
        assert "killed" in str(err.value)
    else:
        assert isinstance(err.value, AosApiError)
        assert err.value.status == 400
    assert spools_of(target) == []
    assert list(tmp_path.iterdir()) == []
    assert emulator.stats()["audit"] < 500  # it stopped, it did not finish the walk


def test_an_attempt_removes_the_stale_spools_of_earlier_attempts_for_its_destination_only(
    emulator: AosEmulator, aos_connection, tmp_path: Path
):
    """SIGKILL skips every cleanup: the next attempt for the same destination removes what was left."""
    target, other = tmp_path / "d.jsonl", tmp_path / "other.jsonl"
    base = Path(tempfile.gettempdir())
    stale = [Path(tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{_tag(target)}-", dir=base)) for _ in range(2)]
    for folder in stale:
        (folder / "0000003.jsonl").write_bytes(b'{"half":"written"}\n')
    kept = Path(tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{_tag(other)}-", dir=base))
    (kept / "0000000.jsonl").write_bytes(b"another export's spool\n")
    try:
        assert sorted(spools_of(target)) == sorted(stale)  # the helper sees the stale folders
        start, end = NOV1, NOV1 + timedelta(days=1)
        manifest = export(aos_connection(), target, start, end, max_concurrency=4)
        assert manifest["records"] == emulator.count_audit(start, end)
        assert read_lines(target) == list(emulator.iter_audit(start, end))
        assert spools_of(target) == []  # the stale ones, and this attempt's own
        assert spools_of(other) == [kept]  # another destination's folder is left alone
        assert (kept / "0000000.jsonl").read_bytes() == b"another export's spool\n"
    finally:
        for folder in [*stale, kept]:
            if folder.exists():
                for child in folder.iterdir():
                    child.unlink()
                folder.rmdir()


def _tag(destination: Path) -> str:
    return hashlib.sha256(str(destination).encode()).hexdigest()[:16]


# -- max_concurrency is checked before any request -------------------------------------------------


@pytest.mark.parametrize("value", [0, 65, -1, "abc", "", "2.5", 2.5, 8.0, True, False, None])
def test_a_bad_max_concurrency_fails_before_any_request(
    emulator: AosEmulator, aos_connection, tmp_path: Path, value: Any
):
    conn = aos_connection()
    with pytest.raises(AosConfigError) as err:
        export(conn, tmp_path / "bad.jsonl", NOV1, NOV1 + timedelta(days=1), max_concurrency=value)
    assert err.value.field == "max_concurrency"
    assert str(err.value).startswith("max_concurrency: ")
    assert "1 to 64" in str(err.value)
    assert emulator.stats()["requests"] == 0  # not even a token
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("value", "expected"), [("{{ params.concurrency }}", 8), (" 8 ", 8), (1, 1), (64, 64)]
)
def test_max_concurrency_may_be_a_rendered_template(
    emulator: AosEmulator, aos_connection, tmp_path: Path, value: Any, expected: int
):
    op = AosAuditExportOperator(
        task_id="export", aos_conn_id=aos_connection(), destination=str(tmp_path / "t.jsonl"),
        start_time="2026-11-01T00:00:00Z", end_time="2026-11-01T06:00:00Z", max_concurrency=value,
    )  # fmt: skip
    assert "max_concurrency" in op.template_fields
    op.render_template_fields({"params": {"concurrency": "8"}})
    manifest = op.execute({})
    assert manifest["max_concurrency"] == expected
    assert manifest["records"] == emulator.count_audit(NOV1, NOV1 + timedelta(hours=6))
