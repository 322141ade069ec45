"""The Opus connector's rules without transport: record checks, failedItems matching, batches, checkpoints."""

from __future__ import annotations

import gzip
import io
import json
from typing import Any

import pytest

from airflow_provider_aos.exceptions import AosConfigError
from airflow_provider_aos.opus import (
    BatchFailure,
    BatchRunner,
    CsvInput,
    FailedRecordsWriter,
    Failure,
    InputRow,
    ItemFailure,
    Prepared,
    Progress,
    Tally,
    check_items_per_page,
    check_record,
    failed_items,
    failed_path_for,
    id_rows,
    iter_jsonl,
    iter_list,
    literal_list,
    open_binary,
    opus_connection_guid,
    prepare_destroy,
    prepare_submission,
    source_format,
)


def rec(i: int | str, **over: Any) -> dict[str, Any]:
    record = {
        "rowKey": f"doc-{i}", "leafName": f"Document {i}", "timeCreated": "2024-12-19T18:15:00Z",
        "timeModified": "2024-12-19 18:15:00 ", "createdBy": "jack.smith", "modifiedBy": "jack.smith",
    }  # fmt: skip
    record.update(over)
    return {k: v for k, v in record.items() if v is not ...}


# -- check_record --------------------------------------------------------------------------------


def test_a_complete_record_passes_unchanged():
    item, problems = check_record(rec(1, termFullPath="Connector/Set/Term", Region="EMEA", Count=3))
    assert problems == []
    assert item == rec(1, termFullPath="Connector/Set/Term", Region="EMEA", Count=3)


@pytest.mark.parametrize(
    "column", ["rowKey", "leafName", "timeCreated", "timeModified", "createdBy", "modifiedBy"]
)
@pytest.mark.parametrize("value", [..., None, "", "   "])
def test_each_required_column_missing_or_empty_is_named(column, value):
    _, problems = check_record(rec(1, **{column: value}))
    assert problems == [(column, "required, missing or empty")]


@pytest.mark.parametrize(
    "value",
    ["2024-12-19T18:15:00Z", "2024-12-19T18:15:00.123+02:00", "2024-12-19 18:15:00 ", "2024-12-19",
     "12/19/2024 6:15 PM", "12/19/2024 18:15:00", "12/19/2024"],
)  # fmt: skip
def test_documented_and_sampled_datetimes_pass(value):
    assert check_record(rec(1, timeCreated=value))[1] == []


@pytest.mark.parametrize("value", ["yesterday", "2024-13-40", "19.12.2024", 1734632100, "DateTime"])
def test_a_malformed_datetime_is_named_with_an_example(value):
    _, problems = check_record(rec(1, timeModified=value))
    assert [f for f, _ in problems] == ["timeModified"]
    assert "not a date-time" in problems[0][1]
    assert "2024-12-19T18:15:00Z" in problems[0][1]


@pytest.mark.parametrize(
    ("value", "sent"),
    [("[1,3]", "[1,3]"), ("[ann@contoso.com, bob@contoso.com]", "[ann@contoso.com, bob@contoso.com]"),
     ([1, 3], "[1,3]"), (["ann@contoso.com"], "[ann@contoso.com]"),
     ("[draft] notes", "[draft] notes")],  # text that merely starts with a bracket is text
)  # fmt: skip
def test_bracket_lists_pass_and_json_lists_are_sent_in_the_documented_form(value, sent):
    item, problems = check_record(rec(1, Tags=value))
    assert problems == []
    assert item["Tags"] == sent


@pytest.mark.parametrize(
    ("value", "why"),
    [("[1,2", "does not close"), ("[1,,2]", "empty item"), ("[1, ann@contoso.com]", "mixes"),
     ("[1, two]", "not option numbers"), ("[ann@contoso.com, bob]", "not full email addresses"),
     ([{"a": 1}], "only option numbers or email addresses"), ({"a": 1}, "an object")],
)  # fmt: skip
def test_malformed_lists_and_objects_are_named(value, why):
    _, problems = check_record(rec(1, Tags=value))
    assert [f for f, _ in problems] == ["Tags"]
    assert why in problems[0][1]


def test_a_numeric_rowkey_is_sent_as_text_and_a_list_name_is_refused():
    item, problems = check_record(rec(1, rowKey=42))
    assert problems == []
    assert item["rowKey"] == "42"
    assert check_record(rec(1, leafName=["x"]))[1] == [("leafName", "must be text, got list")]


def test_several_problems_of_one_record_are_all_reported():
    _, problems = check_record(rec(1, leafName=..., timeCreated="soon", Tags="[1,"))
    assert [f for f, _ in problems] == ["leafName", "timeCreated", "Tags"]


def test_duplicate_rowkeys_are_reported_on_the_later_row():
    rows = list(iter_list([rec(1), rec(2), rec(1, leafName="again")]))
    prepared = list(prepare_submission(rows))
    assert [p.problems for p in prepared[:2]] == [[], []]
    assert prepared[2].problems[0][0] == "rowKey"
    assert "earlier row" in prepared[2].problems[0][1]


# -- arguments -----------------------------------------------------------------------------------


def test_arguments_are_checked_with_the_field_named():
    assert (
        opus_connection_guid(" {D9DA492F-cc67-4920-99f9-6fbaae1f1410} ")
        == "D9DA492F-cc67-4920-99f9-6fbaae1f1410"
    )
    with pytest.raises(AosConfigError, match=r"^opus_connection_id: 'aos_default' is not a GUID"):
        opus_connection_guid("aos_default")
    assert check_items_per_page("100") == 100
    with pytest.raises(AosConfigError, match=r"items_per_page: 0: .*use 1-100"):
        check_items_per_page(0)
    with pytest.raises(AosConfigError, match="items_per_page: 101"):
        check_items_per_page(101)
    assert literal_list("[{'rowKey': 'a'}]", "records") == [{"rowKey": "a"}]
    with pytest.raises(AosConfigError, match="records: expected a list, got str"):
        literal_list("not a list", "records")


def test_formats_and_default_failed_paths():
    assert source_format("s3://b/in.JSONL.gz") == "jsonl"
    assert source_format("/d/in.csv") == "csv"
    assert source_format("/d/in.txt", "csv") == "csv"
    with pytest.raises(AosConfigError, match=r"source: '/d/in\.txt': cannot tell the format"):
        source_format("/d/in.txt")
    assert failed_path_for("/d/in.jsonl") == "/d/in.failed.jsonl"
    assert failed_path_for("s3://b/x/in.csv.gz") == "s3://b/x/in.failed.csv.gz"
    assert failed_path_for("/d/in.failed.jsonl") == "/d/in.failed.failed.jsonl"


# -- reading -------------------------------------------------------------------------------------


def test_jsonl_rows_are_line_numbers_and_bad_lines_are_kept_raw():
    data = b'{"rowKey":"a"}\n\n{not json\n[1]\n{"rowKey":"b","_aos_error":{"reason":"old"}}\n'
    rows = list(iter_jsonl(io.BytesIO(data)))
    assert [r.row for r in rows] == [1, 3, 4, 5]
    assert rows[1].record is None
    assert rows[1].raw == "{not json"
    assert "not valid JSON" in (rows[1].error or "")
    assert rows[2].error == "expected a JSON object, got list"
    assert rows[3].record == {"rowKey": "b"}  # the reason of an earlier run is dropped on reading


def test_csv_header_is_checked_first_and_empty_cells_are_no_value():
    with pytest.raises(AosConfigError, match=r"source: .*columns named twice: \['rowKey'\]"):
        CsvInput(io.BytesIO(b"rowKey,leafName,rowKey\n"))
    with pytest.raises(AosConfigError, match="column 2 has no name"):
        CsvInput(io.BytesIO(b"rowKey,,x\n"))
    csv_input = CsvInput(
        io.BytesIO("\ufeffrowKey,leafName,Region,_aos_error\na,A,,old reason\nb,B\n".encode())
    )
    assert csv_input.header == ["rowKey", "leafName", "Region"]
    rows = list(csv_input.rows())
    assert rows[0].record == {"rowKey": "a", "leafName": "A"}
    assert rows[0].raw == ["a", "A", ""]
    assert rows[1].record is None
    assert rows[1].error == "has 2 cells but the header has 3 columns"


def test_gzip_sources_are_read_by_name():
    data = gzip.compress(b'{"rowKey":"a"}\n')
    assert [r.record for r in iter_jsonl(open_binary(io.BytesIO(data), "x.jsonl.GZ"))] == [{"rowKey": "a"}]


# -- the failed-records file round trip ----------------------------------------------------------


def _failure(row: int, key: str | None = None) -> Failure:
    return Failure(
        row, key, "failed", "Term not found", status=418, item={"rowKey": key, "errorMessage": "x"}
    )


def test_failed_jsonl_feeds_back_as_the_same_records():
    out = io.BytesIO()
    writer = FailedRecordsWriter(out, "jsonl")
    rows = list(iter_list([rec(1), rec(2, Tags="[1,2]")]))
    for r in rows:
        writer.write(r, _failure(r.row, r.record["rowKey"] if r.record else None))
    bad = next(iter_jsonl(io.BytesIO(b"{broken\n")))
    writer.write(bad, Failure(1, None, "invalid", "not valid JSON"))
    writer.close()
    lines = out.getvalue().decode().splitlines()
    assert json.loads(lines[0])["_aos_error"]["reason"] == "Term not found"
    assert lines[2] == "{broken"  # an unreadable line goes back as it was
    again = list(iter_jsonl(io.BytesIO(out.getvalue())))
    assert [r.record for r in again[:2]] == [rec(1), rec(2, Tags="[1,2]")]


def test_failed_csv_keeps_the_header_and_feeds_back():
    source = CsvInput(io.BytesIO(b'rowKey,leafName,Region\na,"A, the first",EMEA\nb,B\n'))
    rows = list(source.rows())
    out = io.BytesIO()
    writer = FailedRecordsWriter(out, "csv", source.header)
    for r in rows:
        writer.write(r, _failure(r.row, "a"))
    writer.close()
    text = out.getvalue().decode()
    assert text.splitlines()[0] == "rowKey,leafName,Region,_aos_error"
    back = CsvInput(io.BytesIO(out.getvalue()))
    assert back.header == source.header
    assert [r.raw for r in back.rows()] == [["a", "A, the first", "EMEA"], ["b", "B", ""]]


# -- failedItems ---------------------------------------------------------------------------------

KEYS = ["a", "b", "c"]


@pytest.mark.parametrize("conflict", ["conflictOption", "confilictOption"])
def test_failed_items_match_by_rowkey_with_either_spelling(conflict):
    body = {
        "statusCode": 418, "message": "Exist Failed Data Operation",
        "failedItems": [{"rowKey": "b", conflict: "Overwrite", "errorMessage": "Term not found"}],
    }  # fmt: skip
    outcome = failed_items(418, body, KEYS)
    assert isinstance(outcome, dict)
    assert list(outcome) == ["b"]
    assert outcome["b"].reason == "Term not found"
    assert outcome["b"].item[conflict] == "Overwrite"


@pytest.mark.parametrize(
    ("item", "reason"),
    [({"RowKey": "c", "Message": "m"}, "m"), ({"data": {"rowKey": "c"}, "error": {"message": "e"}}, "e"),
     ({"record": {"rowKey": "c"}, "reason": "r"}, "r"), ("c", "Exist Failed Data Operation"),
     ({"whatever": "c"}, "Exist Failed Data Operation")],
)  # fmt: skip
def test_undocumented_item_shapes_are_read_tolerantly(item, reason):
    outcome = failed_items(418, {"message": "Exist Failed Data Operation", "failedItems": [item]}, KEYS)
    assert isinstance(outcome, dict)
    assert {k: v.reason for k, v in outcome.items()} == {"c": reason}


def test_a_message_list_gives_one_reason_per_item():
    body = {"message": ["a: no term", "c: no user"], "failedItems": [{"rowKey": "a"}, {"rowKey": "c"}]}
    outcome = failed_items(418, body, KEYS)
    assert isinstance(outcome, dict)
    assert {k: v.reason for k, v in outcome.items()} == {"a": "a: no term", "c": "c: no user"}


def test_an_item_naming_no_record_fails_every_record_not_otherwise_named():
    body = {"failedItems": [{"rowKey": "b", "errorMessage": "x"}, {"rowKey": "zzz", "errorMessage": "y"}]}
    outcome = failed_items(418, body, KEYS)
    assert isinstance(outcome, dict)
    assert outcome["b"].reason == "x"
    assert set(outcome) == {"a", "b", "c"}
    assert "name no record of this batch" in outcome["a"].reason


def test_a_418_without_items_fails_the_batch_and_success_means_success():
    assert isinstance(failed_items(418, {"statusCode": 418, "message": "oops"}, KEYS), BatchFailure)
    assert isinstance(failed_items(200, {"statusCode": 500, "message": "db down"}, KEYS), BatchFailure)
    assert failed_items(201, {"statusCode": 201, "message": None}, KEYS) == {}
    assert failed_items(204, None, KEYS) == {}
    assert failed_items(200, {"statusCode": 200, "message": None}, KEYS) == {}


# -- batches, tally and checkpoints --------------------------------------------------------------


class FakeServer:
    """Answers batches: fails rowKeys in ``reject`` (418 items) and whole batches listed in ``down``."""

    def __init__(self, reject: dict[str, str] | None = None, down: set[int] | None = None) -> None:
        self.reject = reject or {}
        self.down = down or set()
        self.batches: list[list[str]] = []
        self.stored: dict[str, int] = {}

    def send(self, batch: list[Prepared]) -> dict[str, ItemFailure] | BatchFailure:
        keys = [p.key for p in batch if p.key is not None]
        self.batches.append(keys)
        if len(self.batches) in self.down:
            return BatchFailure("AOS API POST /records/connector/records failed: HTTP 503", 503)
        for key in keys:
            if key not in self.reject:
                self.stored[key] = self.stored.get(key, 0) + 1
        return {k: ItemFailure(self.reject[k], 418) for k in keys if k in self.reject}


def run(records: list[Any], server: FakeServer, **kwargs: Any) -> tuple[Tally, list[Failure], Progress]:
    failures: list[Failure] = []
    saved: list[Progress] = []
    runner = BatchRunner(
        server.send, lambda row, f: failures.append(f), fingerprint="fp", save=saved.append, **kwargs
    )
    for p in prepare_submission(iter_list(records)):
        runner.add(p)
    tally = runner.finish()
    return tally, failures, saved[-1]


def test_47_records_go_out_as_15_15_15_2_and_rejected_rows_are_reported():
    server = FakeServer(reject={"doc-3": "Term not found", "doc-20": "Unknown user"})
    tally, failures, _ = run([rec(i) for i in range(1, 48)], server)
    assert [len(b) for b in server.batches] == [15, 15, 15, 2]
    assert (tally.records, tally.submitted, tally.succeeded, tally.failed, tally.invalid) == (
        47,
        47,
        45,
        2,
        0,
    )
    assert [(f.row, f.key, f.reason) for f in failures] == [
        (3, "doc-3", "Term not found"),
        (20, "doc-20", "Unknown user"),
    ]
    assert set(tally.listed) == {"doc-3", "doc-20"}


def test_invalid_records_are_not_sent_and_valid_ones_still_go():
    records = [rec(i) for i in range(1, 21)]
    records[4] = rec(5, timeCreated="someday")
    records[9] = rec(10, rowKey="")
    tally, failures, _ = run(records, FakeServer())
    assert (tally.submitted, tally.succeeded, tally.invalid) == (18, 18, 2)
    assert [(f.row, f.field, f.kind) for f in failures] == [
        (5, "timeCreated", "invalid"),
        (10, "rowKey", "invalid"),
    ]
    assert tally.listed["row 10"]["field"] == "rowKey"  # no rowKey: named by its row


def test_a_whole_batch_failure_fails_each_of_its_records():
    server = FakeServer(down={2})
    tally, failures, progress = run([rec(i) for i in range(1, 48)], server)
    assert (tally.succeeded, tally.failed) == (32, 15)
    assert [f.row for f in failures] == list(range(16, 31))
    assert all(f.status == 503 and "HTTP 503" in f.reason for f in failures)
    assert progress.cursor == 47
    assert progress.failed == [[16, 30]]


def test_after_consecutive_whole_batch_failures_the_rest_is_not_sent_but_kept():
    server = FakeServer(down={1, 2, 3})
    tally, failures, _ = run([rec(i) for i in range(1, 101)], server, max_consecutive_batch_failures=3)
    assert len(server.batches) == 3
    assert (tally.failed, tally.not_sent, tally.succeeded) == (45, 55, 0)
    assert len(failures) == 100
    assert failures[-1].kind == "not_sent"
    assert "3 batches in a row" in failures[-1].reason


def test_a_retry_resends_only_what_did_not_succeed():
    records = [rec(i) for i in range(1, 48)]
    records[6] = rec(7, leafName="")
    first = FakeServer(reject={"doc-3": "busy", "doc-20": "busy"})
    _, _, progress = run(records, first)
    assert progress.failed == [[3, 3], [7, 7], [20, 20]]
    progress = Progress.from_json(progress.to_json())  # what the file holds
    second = FakeServer()
    tally, failures, _ = run(records, second, resume=progress)
    assert second.batches == [["doc-3", "doc-20"]]  # row 7 is invalid again: reported, not sent
    assert (tally.succeeded, tally.succeeded_earlier, tally.invalid) == (46, 44, 1)
    assert [f.row for f in failures] == [7]


def test_a_retry_after_a_crash_continues_from_the_last_checkpoint():
    records = [rec(i) for i in range(1, 101)]
    server = FakeServer()
    saved: list[Progress] = []
    clock = iter(range(1000))
    runner = BatchRunner(
        server.send, lambda row, f: None, fingerprint="fp", save=saved.append, checkpoint_every=2,
        clock=lambda: float(next(clock)),
    )  # fmt: skip
    prepared = list(prepare_submission(iter_list(records)))
    for p in prepared[:50]:  # then the worker dies: no finish()
        runner.add(p)
    last = saved[-1]
    assert 0 < last.cursor <= 45
    assert last.failed == []
    second = FakeServer()
    run(records, second, resume=last)
    resent = [k for b in second.batches for k in b]
    assert resent == [f"doc-{i}" for i in range(last.cursor + 1, 101)]  # at most the batches since the save
    assert set(server.stored) | set(second.stored) == {f"doc-{i}" for i in range(1, 101)}


def test_a_checkpoint_of_another_input_is_ignored():
    server = FakeServer()
    tally, _, _ = run([rec(1)], server, resume=Progress("other", cursor=1))
    assert tally.submitted == 1
    assert tally.succeeded_earlier == 0
    assert Progress.from_json(b"garbage") is None
    assert Progress.from_json(b'{"version": 2}') is None


def test_progress_ranges_merge():
    progress = Progress("fp")
    for row in (1, 2, 3, 5, 6, 9):
        progress.add_failed(row)
    assert progress.failed == [[1, 3], [5, 6], [9, 9]]


# -- destroy -------------------------------------------------------------------------------------


def test_destroy_ids_are_deduplicated_and_a_missing_rowkey_is_invalid():
    tally = Tally()
    rows = [*id_rows(["a", "b", "a", 7]), InputRow(5, {"leafName": "x"}, {"leafName": "x"})]
    prepared = list(prepare_destroy(rows, tally))
    assert [p.key for p in prepared] == ["a", "b", "7", None]
    assert prepared[-1].problems[0][0] == "rowKey"
    assert tally.duplicates == 1
