"""The Opus records operators against the emulator over real HTTP: what Opus ends up holding is counted."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_aos.exceptions import AosConfigError, AosError
from airflow_provider_aos.hooks.aos import AosHook
from airflow_provider_aos.operators.opus import (
    MANIFEST_KEY,
    AosOpusDestroyRecordsOperator,
    AosOpusDueRecordsOperator,
    AosOpusSubmitRecordsOperator,
)

GUID = "d9da492f-cc67-4920-99f9-6fbaae1f1410"


def rec(i: int, **over: Any) -> dict[str, Any]:
    record = {
        "rowKey": f"doc-{i:03d}", "leafName": f"Document {i}", "termFullPath": "Connector/Set/Term",
        "timeCreated": "2024-12-19T18:15:00Z", "timeModified": "2024-12-19 18:15:00 ",
        "createdBy": "jack.smith", "modifiedBy": "jack.smith", "Region": "EMEA",
    }  # fmt: skip
    record.update(over)
    return record


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Ti:
    """The task instance in the context: what the operator reads (ids) and pushes (XCom)."""

    def __init__(self, run_id: str = "manual__1", task_id: str = "submit") -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = "opus_dag", task_id, run_id, -1
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


@pytest.fixture
def conn(aos_connection) -> str:
    return aos_connection()


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str]]]:
    """A spy on the hook (the real request still goes out): (method, keys) of each connector call."""
    seen: list[tuple[str, list[str]]] = []
    real = AosHook.request

    def spy(self: AosHook, method: str, path: str, **options: Any) -> Any:
        body = options.get("json") or {}
        if "data" in body:
            seen.append((method, [r.get("rowKey") for r in body["data"]]))
        elif "disposalIds" in body:
            seen.append((method, list(body["disposalIds"])))
        return real(self, method, path, **options)

    monkeypatch.setattr(AosHook, "request", spy)
    return seen


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries of the hook without their real backoff (the number of attempts is unchanged)."""
    for cls in (AosOpusSubmitRecordsOperator, AosOpusDestroyRecordsOperator):
        monkeypatch.setattr(cls, "_sleep", lambda self, seconds: None)


def submit(conn: str, ti: Ti | None = None, **kwargs: Any) -> dict[str, Any]:
    op = AosOpusSubmitRecordsOperator(task_id="submit", opus_connection_id=GUID, aos_conn_id=conn, **kwargs)
    return op.execute({"ti": ti or Ti()})  # type: ignore[arg-type]


FORTY_SEVEN = [rec(i) for i in range(1, 48)]
REJECTED = {"doc-003": "Term Connector/Set/Term was not found.", "doc-020": "User jack.smith is unknown."}


def test_47_records_in_batches_rows_3_and_20_rejected_then_fed_back(emulator, conn, batches, tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", FORTY_SEVEN)
    emulator.opus_fail_rows(GUID, REJECTED, times=1)
    ti = Ti()
    with pytest.raises(AosError, match=r"2 of 47 record\(s\) did not succeed") as err:
        submit(conn, ti, source=str(source))
    assert "row 3 (doc-003): Term Connector/Set/Term was not found." in str(err.value)
    assert [len(keys) for _, keys in batches] == [15, 15, 15, 2]
    manifest = ti.xcom[MANIFEST_KEY]  # pushed even though the task failed
    assert {k: v["reason"] for k, v in manifest["reasons"].items()} == REJECTED
    assert {k: v["row"] for k, v in manifest["reasons"].items()} == {"doc-003": 3, "doc-020": 20}
    assert (manifest["submitted"], manifest["succeeded"], manifest["failed"], manifest["invalid"]) == (
        47,
        45,
        2,
        0,
    )
    failed_file = tmp_path / "docs.failed.jsonl"
    assert manifest["failed_records_path"] == str(failed_file)
    failed = read_jsonl(failed_file)
    assert [r["rowKey"] for r in failed] == ["doc-003", "doc-020"]
    assert [r["_aos_error"]["reason"] for r in failed] == list(REJECTED.values())
    assert len(emulator.opus_records(GUID)) == 45

    # Fed back unchanged, in a new run: only those two go out; Opus then holds all 47, once each.
    batches.clear()
    again = submit(conn, Ti(run_id="manual__2"), source=str(failed_file))
    assert batches == [("POST", ["doc-003", "doc-020"])]
    assert (again["submitted"], again["succeeded"], again["failed"]) == (2, 2, 0)
    assert emulator.opus_records(GUID) == {r["rowKey"]: r for r in FORTY_SEVEN}
    assert emulator.stats()["opus_records_stored"] == 47  # no record was ever stored twice
    assert read_jsonl(tmp_path / "docs.failed.failed.jsonl") == []  # nothing failed: an empty file


def test_warn_mode_succeeds_with_the_same_manifest(emulator, conn, tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", FORTY_SEVEN)
    emulator.opus_fail_rows(GUID, REJECTED)
    manifest = submit(conn, source=str(source), on_failure="warn")
    assert set(manifest["reasons"]) == set(REJECTED)
    assert [r["rowKey"] for r in read_jsonl(tmp_path / "docs.failed.jsonl")] == ["doc-003", "doc-020"]


def test_a_task_retry_resubmits_only_what_did_not_succeed(emulator, conn, batches, tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", FORTY_SEVEN)
    emulator.opus_fail_rows(GUID, REJECTED, times=1)
    ti = Ti()
    with pytest.raises(AosError):
        submit(conn, ti, source=str(source))
    assert [p.name for p in tmp_path.glob(".docs.failed.jsonl.*.progress.json")]  # the checkpoint
    batches.clear()
    manifest = submit(conn, ti, source=str(source))  # the same task instance, next try
    assert batches == [("POST", ["doc-003", "doc-020"])]
    assert (manifest["records"], manifest["submitted"], manifest["succeeded"]) == (47, 2, 47)
    assert manifest["succeeded_in_earlier_tries"] == 45
    assert emulator.stats()["opus_records_stored"] == 47
    assert not list(tmp_path.glob(".*progress.json"))  # all done: the checkpoint is gone
    assert read_jsonl(tmp_path / "docs.failed.jsonl") == []  # no stale failures left in the file


def test_a_try_that_dies_midway_is_continued_not_repeated(emulator, conn, monkeypatch, tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", FORTY_SEVEN)
    real = AosHook.request
    calls: list[list[str]] = []

    def dies_on_third_batch(self: AosHook, method: str, path: str, **options: Any) -> Any:
        if len(calls) == 2:
            raise KeyboardInterrupt  # the worker goes away before the third batch is sent
        calls.append([r["rowKey"] for r in options["json"]["data"]])
        return real(self, method, path, **options)

    monkeypatch.setattr(AosHook, "request", dies_on_third_batch)
    ti = Ti()
    with pytest.raises(KeyboardInterrupt):
        submit(conn, ti, source=str(source))
    assert not (tmp_path / "docs.failed.jsonl").exists()  # no partial failed file
    assert not list(tmp_path.glob(".docs.failed.jsonl.*.tmp"))
    calls.clear()
    monkeypatch.setattr(AosHook, "request", real)
    monkeypatch.setattr(AosHook, "request", lambda self, m, p, **o: (calls.append([r["rowKey"] for r in o["json"]["data"]]), real(self, m, p, **o))[1])  # fmt: skip
    manifest = submit(conn, ti, source=str(source))
    assert calls == [[f"doc-{i:03d}" for i in range(31, 46)], ["doc-046", "doc-047"]]
    assert (manifest["succeeded"], manifest["succeeded_in_earlier_tries"]) == (47, 30)
    assert emulator.stats()["opus_records_stored"] == 47


@pytest.mark.parametrize("fault", ["500", "503", "drop", "drop_after"])
def test_a_transient_failure_neither_loses_nor_duplicates(emulator, conn, batches, tmp_path, fault):
    source = write_jsonl(tmp_path / "docs.jsonl", FORTY_SEVEN)
    emulator.inject_faults("opus_submit", ["ok", fault])  # the second batch meets the fault once
    manifest = submit(conn, source=str(source))
    assert (manifest["succeeded"], manifest["failed"], manifest["batches"]) == (47, 0, 4)
    assert emulator.opus_records(GUID) == {r["rowKey"]: r for r in FORTY_SEVEN}
    # Re-sent at most the batch that met the fault; "drop_after" is the case where Opus had stored it.
    assert emulator.stats()["opus_records_stored"] == 47 + (15 if fault == "drop_after" else 0)


def test_a_batch_that_keeps_failing_counts_its_records_failed(emulator, conn, tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", FORTY_SEVEN)
    emulator.inject_faults("opus_submit", ["ok"] + ["503"] * 6)  # every attempt of batch 2
    manifest = submit(conn, source=str(source), on_failure="warn")
    assert (manifest["succeeded"], manifest["failed"]) == (32, 15)
    failed = read_jsonl(tmp_path / "docs.failed.jsonl")
    assert [r["rowKey"] for r in failed] == [f"doc-{i:03d}" for i in range(16, 31)]
    assert all(r["_aos_error"]["status"] == 503 for r in failed)
    assert len(emulator.opus_records(GUID)) == 32


def test_invalid_records_are_reported_by_row_and_field_and_never_sent(emulator, conn, batches, tmp_path):
    records = [rec(i) for i in range(1, 21)]
    records[1] = rec(2, timeCreated="next Tuesday")
    records[4] = {k: v for k, v in rec(5).items() if k != "leafName"}
    records[7] = rec(8, rowKey="")
    records[11] = rec(12, Owners="[ann@contoso.com, bob]")
    records[15] = rec(3)  # row 16 repeats row 3's rowKey
    source = write_jsonl(tmp_path / "docs.jsonl", records)
    manifest = submit(conn, source=str(source), on_failure="warn")
    expected = {
        "doc-002": (2, "timeCreated"), "doc-005": (5, "leafName"), "row 8": (8, "rowKey"),
        "doc-012": (12, "Owners"), "doc-003": (16, "rowKey"),  # its first row went
    }  # fmt: skip
    assert {k: (v["row"], v["field"]) for k, v in manifest["reasons"].items()} == expected
    assert (manifest["invalid"], manifest["submitted"], manifest["succeeded"]) == (5, 15, 15)
    sent = {key for _, keys in batches for key in keys}
    assert len(sent) == 15
    assert sent.isdisjoint({"doc-002", "doc-005", "doc-012", ""})
    assert emulator.stats()["opus_records_failed"] == 0  # the server never saw a bad record
    assert set(emulator.opus_records(GUID)) == sent
    failed = read_jsonl(tmp_path / "docs.failed.jsonl")
    assert [r["_aos_error"]["row"] for r in failed] == [2, 5, 8, 12, 16]


def test_csv_source_and_its_failed_file_round_trip(emulator, conn, tmp_path):
    source = tmp_path / "docs.csv"
    columns = ["rowKey", "leafName", "timeCreated", "timeModified", "createdBy", "modifiedBy", "Region"]
    with source.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for i in range(1, 21):
            writer.writerow(
                [f"doc-{i:03d}", f"Doc, {i}", "2024-12-19 18:15:00", "12/19/2024 6:15 PM", "a", "b", ""]
            )
    emulator.opus_fail_rows(GUID, {"doc-007": "Locked."}, times=1)
    manifest = submit(conn, source=str(source), on_failure="warn")
    assert manifest["failed_records_format"] == "csv"
    failed_file = tmp_path / "docs.failed.csv"
    with failed_file.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == [*columns, "_aos_error"]
    assert rows[1][:2] == ["doc-007", "Doc, 7"]
    assert "Locked." in rows[1][-1]
    assert "Region" not in emulator.opus_records(GUID)["doc-001"]  # an empty cell is no value
    again = submit(conn, Ti(run_id="manual__2"), source=str(failed_file))
    assert (again["submitted"], again["succeeded"]) == (1, 1)
    assert len(emulator.opus_records(GUID)) == 20


def test_records_from_xcom_write_their_failures_as_jsonl(emulator, conn, tmp_path):
    emulator.opus_fail_rows(GUID, {"doc-002": "No."})
    failed = tmp_path / "failed" / "submit.jsonl"
    manifest = submit(conn, records=[rec(1), rec(2)], failed_records_path=str(failed), on_failure="warn")
    assert manifest["source"] is None
    assert [r["rowKey"] for r in read_jsonl(failed)] == ["doc-002"]
    with pytest.raises(AosConfigError, match=r"^failed_records_path: with records"):
        AosOpusSubmitRecordsOperator(task_id="x", opus_connection_id=GUID, records=[rec(1)])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"opus_connection_id": "aos_default"}, "^opus_connection_id: 'aos_default' is not a GUID"),
     ({"source": "/nowhere/docs.jsonl"}, "^source: '/nowhere/docs.jsonl' does not exist"),
     ({"source": "HEADER"}, r"^source: the CSV header must name each column once"),
     ({"failed_records_path": "relative.jsonl"}, "^failed_records_path: 'relative.jsonl' is relative")],
)  # fmt: skip
def test_bad_arguments_fail_before_any_request(emulator, conn, tmp_path, kwargs, match):
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("rowKey,leafName,rowKey\na,b,c\n")
    args = {"opus_connection_id": GUID, "source": str(write_jsonl(tmp_path / "d.jsonl", [rec(1)])), **kwargs}
    if args["source"] == "HEADER":
        args["source"] = str(bad_csv)
    op = AosOpusSubmitRecordsOperator(task_id="s", aos_conn_id=conn, **args)
    with pytest.raises(AosConfigError, match=match):
        op.execute({"ti": Ti()})  # type: ignore[arg-type]
    assert emulator.stats()["token"] == 0
    assert emulator.stats()["opus_submit"] == 0


# -- due records ---------------------------------------------------------------------------------


def due(conn: str, dest: Path, **kwargs: Any) -> dict[str, Any]:
    op = AosOpusDueRecordsOperator(
        task_id="due", opus_connection_id=GUID, destination=str(dest), aos_conn_id=conn, **kwargs
    )
    return op.execute({"data_interval_end": "2026-12-01T00:00:00Z"})  # type: ignore[arg-type]


def test_due_records_stream_every_page_to_the_file(emulator, conn, tmp_path):
    emulator.opus_add_records(GUID, [rec(i) for i in range(1, 101)], disposal_due="2026-11-15T00:00:00Z")
    emulator.opus_add_records(GUID, [rec(i) for i in range(101, 131)], disposal_due="2027-01-15T00:00:00Z")
    expected = emulator.opus_due_count(GUID, "2026-12-01T00:00:00Z")
    assert expected == 100
    manifest = due(conn, tmp_path / "due.jsonl", items_per_page=7)
    records = read_jsonl(tmp_path / "due.jsonl")
    assert len(records) == manifest["records"] == expected
    assert {r["rowKey"] for r in records} == {f"doc-{i:03d}" for i in range(1, 101)}
    assert manifest["pages"] == 15  # 100 records, 7 per page: the walk really paged
    assert manifest["disposal_due_date"] == "2026-12-01T00:00:00"


@pytest.mark.parametrize("status", [200, 204])
def test_none_due_is_an_empty_file_for_204_and_for_an_empty_200(emulator, conn, tmp_path, status):
    emulator.configure(opus_due_empty_status=status)
    emulator.opus_add_records(GUID, [rec(1)], disposal_due="2027-01-15T00:00:00Z")
    manifest = due(conn, tmp_path / "due.jsonl", disposal_due_date="2026-12-01T00:00:00+01:00")
    assert manifest["records"] == 0
    assert (tmp_path / "due.jsonl").read_bytes() == b""
    assert manifest["disposal_due_date"] == "2026-11-30T23:00:00"


def test_due_records_refuse_bad_arguments_by_name(emulator, conn, tmp_path):
    with pytest.raises(AosConfigError, match=r"^items_per_page: 101"):
        due(conn, tmp_path / "d.jsonl", items_per_page=101)
    with pytest.raises(AosConfigError, match=r"^disposal_due_date: .*has no timezone"):
        due(conn, tmp_path / "d.jsonl", disposal_due_date="2024-12-20T11:13:00")
    assert emulator.stats()["opus_due"] == 0


# -- destroy -------------------------------------------------------------------------------------


def destroy(conn: str, ti: Ti | None = None, **kwargs: Any) -> dict[str, Any]:
    op = AosOpusDestroyRecordsOperator(task_id="destroy", opus_connection_id=GUID, aos_conn_id=conn, **kwargs)
    return op.execute({"ti": ti or Ti(task_id="destroy")})  # type: ignore[arg-type]


def test_destroy_the_due_records_with_a_partial_failure_then_feed_back(emulator, conn, batches, tmp_path):
    emulator.opus_add_records(GUID, [rec(i) for i in range(1, 41)], disposal_due="2026-11-15T00:00:00Z")
    due(conn, tmp_path / "due.jsonl")
    emulator.opus_fail_destroy({"doc-004": "Awaiting approval.", "doc-033": "On hold."}, times=1)
    batches.clear()
    with pytest.raises(AosError, match=r"2 of 40 id\(s\) did not succeed"):
        destroy(conn, source=str(tmp_path / "due.jsonl"))
    assert [(m, len(k)) for m, k in batches] == [("DELETE", 15), ("DELETE", 15), ("DELETE", 10)]
    failed = read_jsonl(tmp_path / "due.failed.jsonl")
    assert {r["rowKey"]: r["_aos_error"]["reason"] for r in failed} == {
        "doc-004": "Awaiting approval.", "doc-033": "On hold.",
    }  # fmt: skip
    assert len(emulator.opus_destroyed(GUID)) == 38
    again = destroy(
        conn, Ti(run_id="manual__2", task_id="destroy"), source=str(tmp_path / "due.failed.jsonl")
    )
    assert (again["submitted"], again["succeeded"]) == (2, 2)
    assert emulator.opus_destroyed(GUID) == [f"doc-{i:03d}" for i in range(1, 41)]


@pytest.mark.parametrize("status", [200, 204])
def test_destroy_ids_from_xcom(emulator, conn, tmp_path, status):
    emulator.configure(opus_destroy_status=status)
    emulator.opus_add_records(GUID, [rec(1), rec(2)])
    manifest = destroy(
        conn, record_ids=["doc-001", "doc-002", "doc-001", "doc-404"], failed_records_path=str(tmp_path / "f.jsonl"),
        on_failure="warn",
    )  # fmt: skip
    assert (manifest["succeeded"], manifest["failed"], manifest["duplicates_skipped"]) == (2, 1, 1)
    assert read_jsonl(tmp_path / "f.jsonl")[0]["rowKey"] == "doc-404"
    assert emulator.opus_destroyed(GUID) == ["doc-001", "doc-002"]
