"""
The rules of the AvePoint Opus connector (opus.md §1), without transport and without Airflow.

- :func:`check_record`: the client-side checks of one record to submit (required built-in columns,
  a non-empty ``rowKey``, recognisable value formats), each problem named by its field.
- :func:`read_rows` / :class:`FailedRecordsWriter`: stream records from JSON Lines or CSV (or a
  list), and write the records that did not succeed back in the same format, each with the reason
  in the reserved ``_aos_error`` key (JSON) or column (CSV), which reading drops again: the file can
  be fed back unchanged.
- :func:`failed_items`: which records of a batch the server's answer says failed, and why (the
  ``failedItems`` item shape is undocumented, so it is read tolerantly).
- :class:`BatchRunner`: batches of at most 15, one answer per batch, the tally, the failures, and a
  resumable checkpoint (:class:`Progress`) so that a task retry resubmits only what did not succeed.

The operators in :mod:`airflow_provider_aos.operators.opus` wire these to the hook and to object
storage.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from airflow_provider_aos.exceptions import AosConfigError

CONNECTOR_PATH = "records/connector/records"
OPUS_SCOPE = "records.readwrite.all"
MAX_BATCH = 15
"""The connector takes at most 15 records (submit) or ids (destroy) per call."""
REQUIRED_COLUMNS = ("rowKey", "leafName", "timeCreated", "timeModified", "createdBy", "modifiedBy")
DATETIME_COLUMNS = ("timeCreated", "timeModified")
TEXT_COLUMNS = ("rowKey", "leafName", "termFullPath", "createdBy", "modifiedBy")
CONFLICT_OPTIONS = ("Overwrite", "Skip")
ERROR_KEY = "_aos_error"
"""Reserved key (JSON Lines) or column (CSV) holding why a record failed; dropped when read back."""
MAX_REASON = 500
GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_EMAIL = re.compile(r"[^@\s,\[\]]+@[^@\s,\[\]]+\.[^@\s,\[\]]+")
_US_DATETIME_FORMATS = (
    "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M %p", "%m/%d/%Y",
)  # fmt: skip


# -- arguments -----------------------------------------------------------------------------------


def opus_connection_guid(value: Any) -> str:
    """The Opus connector connection's GUID (from its JSON file in Opus > Settings > Connector)."""
    text = str(value or "").strip().strip("{}")
    if not GUID.fullmatch(text):
        raise AosConfigError(
            "opus_connection_id",
            f"{value!r} is not a GUID. Give the connection id from the JSON file that Opus > Settings > "
            "Connector downloads, e.g. d9da492f-cc67-4920-99f9-6fbaae1f1410 (this is not an Airflow "
            "connection id)",
        )
    return text


def check_conflict_option(value: Any) -> str:
    """``Overwrite`` or ``Skip``, in any case."""
    text = str(value or "").strip()
    for option in CONFLICT_OPTIONS:
        if text.lower() == option.lower():
            return option
    raise AosConfigError(
        "conflict_option",
        f"{value!r}: use 'Overwrite' (replace a record with the same rowKey) or 'Skip' (keep it)",
    )


def on_failure_mode(value: Any) -> str:
    text = str(value or "").strip().lower()
    if text not in ("fail", "warn"):
        raise AosConfigError(
            "on_failure",
            f"{value!r}: use 'fail' (fail the task once the whole input was processed) or 'warn' "
            "(log and succeed)",
        )
    return text


def check_items_per_page(value: Any) -> int:
    """1-100 records per due-records page (a template renders a string)."""
    try:
        number = int(str(value).strip())
    except ValueError:
        number = -1
    if number == 0:
        raise AosConfigError(
            "items_per_page",
            "0: the API documents 0-100, but a page of 0 items can return no records; use 1-100",
        )
    if not 1 <= number <= 100:
        raise AosConfigError("items_per_page", f"{value!r}: the API takes 1-100 records per page")
    return number


def literal_list(value: Any, field_name: str) -> list[Any]:
    """
    A list from a list, or from what a template renders: a JSON or Python list literal
    (``"{{ ti.xcom_pull(...) }}"`` without native rendering).
    """
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        parsed: Any = None
        try:
            parsed = json.loads(text)
        except ValueError:
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                parsed = None
        if isinstance(parsed, list | tuple):
            return list(parsed)
    raise AosConfigError(
        field_name,
        f"expected a list, got {type(value).__name__}. Pass a list, an XComArg, or render templates as "
        "native objects (DAG(render_template_as_native_obj=True))",
    )


# -- reading input -------------------------------------------------------------------------------


@dataclass
class InputRow:
    """
    One record of the input.

    :param row: its 1-based position: line number (JSON Lines), data record number after the header
        (CSV), or list index + 1 (``records``).
    :param record: the record as read (without ``_aos_error``), or None when it could not be read.
    :param raw: what to write back when it fails: the record, the CSV cells, or the unreadable line.
    :param error: why it could not be read.
    """

    row: int
    record: dict[str, Any] | None
    raw: Any
    error: str | None = None


def source_format(path: str, declared: str | None = None) -> str:
    """``jsonl`` or ``csv``, from ``declared`` or the file name (``.jsonl``, ``.ndjson``, ``.json``, ``.csv``, optionally ``.gz``)."""
    if declared and declared != "infer":
        fmt = declared.strip().lower()
        if fmt in ("jsonl", "ndjson", "json"):
            return "jsonl"
        if fmt == "csv":
            return "csv"
        raise AosConfigError("source_format", f"{declared!r}: use 'jsonl', 'csv' or 'infer'")
    name = path.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    raise AosConfigError(
        "source",
        f"{path!r}: cannot tell the format from the name; name it .jsonl or .csv (optionally .gz), or "
        "pass source_format='jsonl' or 'csv'",
    )


def failed_path_for(source: str) -> str:
    """The default failed-records file beside ``source``: ``in.jsonl`` -> ``in.failed.jsonl``."""
    head, slash, name = source.rpartition("/")
    lowered = name.lower()
    gz = ".gz" if lowered.endswith(".gz") else ""
    base = name[: len(name) - len(gz)]
    stem, dot, ext = base.rpartition(".")
    new = f"{stem}.failed.{ext}{gz}" if dot and stem else f"{base}.failed{gz}"
    return f"{head}{slash}{new}"


def iter_list(records: Iterable[Any]) -> Iterator[InputRow]:
    for i, item in enumerate(records, start=1):
        if isinstance(item, Mapping):
            record = {str(k): v for k, v in item.items() if k != ERROR_KEY}
            yield InputRow(i, record, record)
        else:
            yield InputRow(
                i, None, item, f"expected an object (a dict of columns), got {type(item).__name__}"
            )


def iter_jsonl(binary: IO[bytes]) -> Iterator[InputRow]:
    # readline, not iteration: Airflow 2's object-storage file wrapper is not iterable.
    for number, line in enumerate(iter(binary.readline, b""), start=1):
        text = line.strip()
        if not text:
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raw = line.decode("utf-8", "replace").rstrip("\r\n")
            yield InputRow(number, None, raw, f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(value, dict):
            yield InputRow(number, None, value, f"expected a JSON object, got {type(value).__name__}")
            continue
        value.pop(ERROR_KEY, None)
        yield InputRow(number, value, value)


class CsvInput:
    """A CSV source: the header is read (and checked) first, before any request; rows stream after."""

    def __init__(self, binary: IO[bytes], *, field_name: str = "source") -> None:
        self._text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
        self._reader = csv.reader(self._text)
        self.header: list[str] = []
        self.error_index: int | None = None
        header = next(self._reader, None)
        if header is None:
            return  # an empty file: no records
        names = [h.strip() for h in header]
        problems = []
        if any(not n for n in names):
            problems.append(f"column {names.index('') + 1} has no name")
        dupes = sorted({n for n in names if n and names.count(n) > 1})
        if dupes:
            problems.append(f"columns named twice: {dupes}")
        if problems:
            raise AosConfigError(
                field_name,
                "the CSV header must name each column once, by the connection's internal column names "
                f"(rowKey, leafName, ...): {'; '.join(problems)}",
            )
        # A failed-records file fed back: its reason column is ours, not the connection's.
        self.error_index = names.index(ERROR_KEY) if ERROR_KEY in names else None
        self.header = [n for n in names if n != ERROR_KEY]

    def rows(self) -> Iterator[InputRow]:
        """The rows after the header; row N is the Nth row after it (blank rows are skipped, counted)."""
        drop = self.error_index
        for number, cells in enumerate(self._reader, start=1):
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            if drop is not None and len(cells) > drop:
                cells = cells[:drop] + cells[drop + 1 :]
            if len(cells) != len(self.header):
                why = f"has {len(cells)} cells but the header has {len(self.header)} columns"
                yield InputRow(number, None, cells, why)
                continue
            # An empty cell is "no value": not sent (a required column is then reported missing).
            record = {h: v for h, v in zip(self.header, cells, strict=True) if v != ""}
            yield InputRow(number, record, cells)


def open_binary(raw: IO[bytes], path: str) -> IO[bytes]:
    """The file's bytes, gunzipped when the name ends in ``.gz`` (any case)."""
    if path.lower().endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


# -- checking one record -------------------------------------------------------------------------


def is_datetime(text: str) -> bool:
    """A date and/or time in a form Opus documents or samples: ISO 8601, ``2024-12-19 18:15:00 ``, US dates."""
    value = text.strip()
    if not value:
        return False
    iso = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value
    try:
        datetime.fromisoformat(iso)
        return True
    except ValueError:
        pass
    for fmt in _US_DATETIME_FORMATS:
        try:
            datetime.strptime(value, fmt)
            return True
        except ValueError:
            continue
    return False


def _bracket_problem(text: str) -> str | None:
    """
    The problem of a ``[...]`` value meant as a Choice (multiple) or Person or Group list, if it is
    recognisably one: its items are option numbers or email addresses. Text that merely starts with
    a bracket (``[draft] notes``) is left alone.
    """
    stripped = text.strip()
    inner = stripped[1:-1] if stripped.endswith("]") else stripped[1:]
    items = [i.strip() for i in inner.split(",")]
    numbers = [i for i in items if i.isdigit()]
    emails = [i for i in items if _EMAIL.fullmatch(i)]
    if not numbers and not emails:
        return None  # not recognisably a list: text
    example = "e.g. [1,3] (Choice) or [ann@contoso.com,bob@contoso.com] (Person or Group)"
    if not stripped.endswith("]"):
        return f"{text!r} opens a [...] list but does not close it; {example}"
    if any(not i for i in items):
        return f"{text!r} has an empty item; {example}"
    if numbers and emails:
        return f"{text!r} mixes option numbers and email addresses; {example}"
    bad = [i for i in items if i not in numbers and i not in emails]
    if bad:
        kind = "option numbers (whole numbers)" if numbers else "full email addresses"
        return f"{text!r}: {bad[:3]} are not {kind}; {example}"
    return None


def _list_text(values: list[Any]) -> str | None:
    """A JSON list of scalars in the documented ``[a,b]`` text form; None if it cannot be one."""
    if any(isinstance(v, dict | list | bool) or v is None for v in values):
        return None
    return "[" + ",".join(str(v).strip() for v in values) + "]"


def check_record(record: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """
    Check one record to submit; returns (the body item to send, problems as ``(field, message)``).

    The item is the record itself, except that a ``rowKey`` given as a number is sent as text and a
    JSON list of option numbers or email addresses is sent in the documented ``[a,b]`` form. A record
    with any problem must not be sent.
    """
    problems: list[tuple[str, str]] = []
    item: dict[str, Any] = dict(record)
    for name in REQUIRED_COLUMNS:
        value = record.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            problems.append((name, "required, missing or empty"))
    for name in TEXT_COLUMNS:
        value = record.get(name)
        if value is None or any(f == name for f, _ in problems):
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            item[name] = str(value)
        elif not isinstance(value, str):
            problems.append((name, f"must be text, got {type(value).__name__}"))
    for name in DATETIME_COLUMNS:
        value = record.get(name)
        if value is None or any(f == name for f, _ in problems):
            continue
        if not isinstance(value, str) or not is_datetime(value):
            problems.append(
                (
                    name,
                    f"{value!r} is not a date-time; use ISO 8601, e.g. 2024-12-19T18:15:00Z or 2024-12-19 18:15:00",
                )
            )
    for name, value in record.items():
        if name in REQUIRED_COLUMNS or name == "termFullPath":
            continue
        if not name.strip():
            problems.append((repr(name), "a column needs its internal name"))
        elif isinstance(value, dict):
            problems.append((name, "an object is not a value of any Opus column type"))
        elif isinstance(value, list):
            text = _list_text(value)
            if text is None:
                problems.append((name, "a list may hold only option numbers or email addresses"))
            elif (problem := _bracket_problem(text)) is not None:
                problems.append((name, problem))
            else:
                item[name] = text
        elif (
            isinstance(value, str)
            and value.lstrip().startswith("[")
            and (problem := _bracket_problem(value)) is not None
        ):
            problems.append((name, problem))
    return item, problems


def record_key(record: Mapping[str, Any] | None, key_field: str = "rowKey") -> str | None:
    """The record's unique key as text, or None when it has none."""
    if record is None:
        return None
    value = record.get(key_field)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        text = str(value)
        return text if text.strip() else None
    return None


# -- reading the server's answer -----------------------------------------------------------------

_KEY_FIELDS = ("rowkey", "disposalid", "recordid", "uniquekey", "id", "key")
_REASON_FIELDS = (
    "message",
    "error",
    "errormessage",
    "reason",
    "errormsg",
    "failedreason",
    "errordetail",
    "detail",
)
_NESTED = ("data", "record", "item", "value")


def _lower_keys(item: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in item.items()}


def _item_key(item: Any, keys: set[str], depth: int = 0) -> str | None:
    """The batch key an undocumented ``failedItems`` item refers to, if any."""
    if isinstance(item, str | int) and not isinstance(item, bool):
        return str(item) if str(item) in keys else None
    if not isinstance(item, Mapping) or depth > 2:
        return None
    lowered = _lower_keys(item)
    for name in _KEY_FIELDS:
        value = lowered.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value) in keys:
            return str(value)
    for name in _NESTED:
        found = _item_key(lowered.get(name), keys, depth + 1)
        if found is not None:
            return found
    for value in item.values():  # last resort: any text in the item that is one of the batch's keys
        if isinstance(value, str) and value in keys:
            return value
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, list):
        parts = [str(v).strip() for v in value if isinstance(v, str | int | float) and str(v).strip()]
        return "; ".join(parts) or None
    if isinstance(value, Mapping):
        return _text(_lower_keys(value).get("message"))
    return None


def _item_reason(item: Any) -> str | None:
    if not isinstance(item, Mapping):
        return None
    lowered = _lower_keys(item)
    for name in _REASON_FIELDS:
        text = _text(lowered.get(name))
        if text:
            return text
    return None


@dataclass(frozen=True)
class ItemFailure:
    """Why one record (or id) of a batch failed on the server."""

    reason: str
    status: int | None
    item: Any = None  # the server's failedItems entry, as sent


@dataclass(frozen=True)
class BatchFailure:
    """The whole batch failed (400, 5xx after retries, no response): each record in it failed."""

    reason: str
    status: int | None
    fatal: bool = False  # no later batch can succeed either (an auth or configuration error)


def failed_items(status: int, body: Any, keys: Sequence[str]) -> dict[str, ItemFailure] | BatchFailure:
    """
    Which keys of a batch failed, from the connector's answer (201/200/204, or 418).

    A 418 (or any answer with a ``failedItems`` list) names the failed records; each item is matched
    to a submitted key by ``rowKey`` (or any field holding one of the batch's keys), its reason taken
    from ``message``/``error``/``errorMessage``/``reason``, else from the answer's ``message`` (a
    string, or a list with one text per item). An item that names no key of the batch makes every
    record of the batch not otherwise named count as failed: we cannot tell which one it was, and
    reporting a stored record as failed (re-sending it is harmless) beats losing a failed one.
    """
    envelope = _lower_keys(body) if isinstance(body, Mapping) else {}
    items = envelope.get("faileditems")
    code = envelope.get("statuscode")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    message = envelope.get("message")
    if status == 418 or code == 418 or (isinstance(items, list) and items):
        if not isinstance(items, list) or not items:
            why = _text(message) or "no failedItems"
            return BatchFailure(
                f"Opus answered 418 (some records failed) without failedItems ({why}); every record of "
                "the batch is reported as failed, since which ones were stored cannot be told",
                418,
            )
        key_set = set(keys)
        out: dict[str, ItemFailure] = {}
        unmatched: list[Any] = []
        per_item = message if isinstance(message, list) and len(message) == len(items) else None
        for i, item in enumerate(items):
            key = _item_key(item, key_set)
            reason = _item_reason(item) or (_text(per_item[i]) if per_item else None) or _text(message)
            if key is None:
                unmatched.append(item)
                continue
            out[key] = ItemFailure((reason or "rejected by Opus (no reason given)")[:MAX_REASON], 418, item)
        if unmatched:
            shown = json.dumps(unmatched[:3], default=str)[:300]
            for key in keys:
                if key not in out:
                    out[key] = ItemFailure(
                        f"Opus reported {len(unmatched)} failed item(s) that name no record of this batch "
                        f"({shown}); this record may or may not be stored, so it is reported as failed",
                        418,
                    )
        return out
    if 200 <= status < 300 and code is not None and code >= 400:
        return BatchFailure(
            f"Opus answered HTTP {status} with statusCode {code}: {_text(message) or 'no message'}", code
        )
    return {}


# -- the failed-records file ---------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One record that did not succeed: invalid (never sent), failed (on the server), or not sent."""

    row: int
    key: str | None
    kind: str  # "invalid" | "failed" | "not_sent"
    reason: str
    field: str | None = None
    status: int | None = None
    item: Any = None

    def to_dict(self, *, with_item: bool = True) -> dict[str, Any]:
        """For the failed-records file; ``with_item=False`` for XCom (the item may repeat the record)."""
        out: dict[str, Any] = {"row": self.row, "kind": self.kind, "reason": self.reason}
        if self.field is not None:
            out["field"] = self.field
        if self.status is not None:
            out["status"] = self.status
        if self.item is not None and with_item:
            out["server_item"] = self.item
        return out

    def text(self) -> str:
        where = f"row {self.row}" + (f" ({self.key})" if self.key else "")
        named = self.field and not self.reason.startswith(f"{self.field}:")
        return where + (f", {self.field}" if named else "") + f": {self.reason}"


class FailedRecordsWriter:
    """
    Writes failed rows in the input's format, each with its reason in ``_aos_error``: JSON Lines
    (the record plus an ``_aos_error`` object; an unreadable line is written back as it was) or CSV
    (the input's header plus an ``_aos_error`` column).
    """

    def __init__(self, out: IO[bytes], fmt: str, header: Sequence[str] = ()) -> None:
        self.fmt = fmt
        self.count = 0
        self._out = out
        self._header = list(header)
        self._csv: Any = None
        if fmt == "csv":
            self._text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
            self._csv = csv.writer(self._text)
            self._csv.writerow([*self._header, ERROR_KEY])

    def write(self, row: InputRow, failure: Failure) -> None:
        self.count += 1
        if self._csv is not None:
            cells = list(row.raw) if isinstance(row.raw, list) else [str(row.raw)]
            if len(cells) < len(self._header):
                cells += [""] * (len(self._header) - len(cells))
            self._csv.writerow([*cells, failure.text()])
            return
        if isinstance(row.raw, dict):
            line = json.dumps({**row.raw, ERROR_KEY: failure.to_dict()}, ensure_ascii=False, default=str)
        elif (
            isinstance(row.raw, str)
            and row.record is None
            and row.error
            and row.error.startswith("not valid JSON")
        ):
            line = row.raw  # an unreadable line goes back as it was, to be fixed by hand
        else:
            line = json.dumps(row.raw, ensure_ascii=False, default=str)
        try:
            data = line.encode()
        except UnicodeEncodeError:
            data = line.encode("utf-8", "backslashreplace")
        self._out.write(data + b"\n")

    def close(self) -> None:
        if self._csv is not None:
            self._text.flush()
            self._text.detach()  # the caller closes the underlying file


# -- the resumable checkpoint --------------------------------------------------------------------


@dataclass
class Progress:
    """
    How far one task instance got: every input row up to ``cursor`` was processed, and of those,
    exactly the rows in ``failed`` (sorted, inclusive ``[first, last]`` ranges) did not succeed.

    A retry of the task skips every row up to ``cursor`` that is not in ``failed``: the server
    confirmed it. It is saved now and then, not after every batch: rows processed after the last save
    are sent again by a retry, which cannot duplicate anything (a record's ``rowKey`` is its unique
    key, and ``conflictOption`` is Overwrite or Skip; destroying twice destroys once).
    """

    fingerprint: str
    cursor: int = 0
    failed: list[list[int]] = field(default_factory=list)
    succeeded: int = 0

    def add_failed(self, row: int) -> None:
        if self.failed and self.failed[-1][1] >= row - 1:
            self.failed[-1][1] = max(self.failed[-1][1], row)
        else:
            self.failed.append([row, row])

    def to_json(self) -> bytes:
        return json.dumps(
            {"version": 1, "fingerprint": self.fingerprint, "cursor": self.cursor,
             "failed": self.failed, "succeeded": self.succeeded},
            separators=(",", ":"),
        ).encode()  # fmt: skip

    @classmethod
    def from_json(cls, data: bytes) -> Progress | None:
        try:
            doc = json.loads(data)
            if doc.get("version") != 1:
                return None
            return cls(str(doc["fingerprint"]), int(doc["cursor"]),
                       [[int(a), int(b)] for a, b in doc["failed"]], int(doc.get("succeeded", 0)))  # fmt: skip
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


class SucceededRows:
    """Answers "did an earlier try get this row stored?" for rows asked in increasing order."""

    def __init__(self, progress: Progress | None) -> None:
        self._cursor = progress.cursor if progress else 0
        self._ranges = progress.failed if progress else []
        self._i = 0

    def __contains__(self, row: int) -> bool:
        if row > self._cursor:
            return False
        while self._i < len(self._ranges) and self._ranges[self._i][1] < row:
            self._i += 1
        return not (self._i < len(self._ranges) and self._ranges[self._i][0] <= row)


# -- batches -------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """A row ready for a batch: its key and the body item to send, or why it cannot be sent."""

    row: InputRow
    key: str | None
    item: Any = None
    problems: list[tuple[str, str]] = field(default_factory=list)


Send = Callable[[list[Prepared]], "dict[str, ItemFailure] | BatchFailure"]


@dataclass
class Tally:
    records: int = 0  # input rows read
    submitted: int = 0  # sent in this try
    succeeded: int = 0  # confirmed by the server, this try or an earlier one
    succeeded_earlier: int = 0  # of those, confirmed in an earlier try (not sent again)
    failed: int = 0  # rejected by the server (item by item, or with their whole batch)
    invalid: int = 0  # refused before sending
    not_sent: int = 0  # valid, but not sent: the API kept failing whole batches
    duplicates: int = 0  # (destroy) an id given again; sent once
    batches: int = 0
    listed: dict[str, dict[str, Any]] = field(default_factory=dict)
    omitted: int = 0
    first: list[str] = field(default_factory=list)

    @property
    def unsuccessful(self) -> int:
        return self.failed + self.invalid + self.not_sent


class BatchRunner:
    """
    Sends prepared rows in batches of at most ``batch_size`` and accounts for every row.

    Invalid rows are never sent; each row an earlier try got stored (``resume``) is skipped; every
    other row goes out in a batch, and the batch's answer decides row by row. Every row that did not
    succeed is passed to ``on_failure`` (the failed-records file) with its reason. After
    ``max_consecutive_batch_failures`` whole-batch failures in a row (the API is down, or refuses
    every call) the rest of the input is not sent but still read, and written to the failed file
    as "not sent", so that nothing is lost and the task ends in reasonable time.

    :param send: sends one batch; returns the failures in it, or a :class:`BatchFailure`.
    :param on_failure: called for each row that did not succeed.
    :param fingerprint: identifies the input and target; a checkpoint of another one is ignored.
    :param resume: the checkpoint of an earlier try of the same task, if any.
    :param save: persists a checkpoint; called at most every ``checkpoint_every`` seconds, and at the end.
    :param check_stop: called between batches; raises to stop (a kill).
    """

    def __init__(
        self,
        send: Send,
        on_failure: Callable[[InputRow, Failure], None],
        *,
        fingerprint: str,
        resume: Progress | None = None,
        save: Callable[[Progress], None] | None = None,
        checkpoint_every: float = 5.0,
        batch_size: int = MAX_BATCH,
        max_consecutive_batch_failures: int | None = 10,
        max_listed: int = 100,
        noun: str = "record",
        clock: Callable[[], float] = time.monotonic,
        log: Any = None,
        check_stop: Callable[[], None] | None = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise AosConfigError("batch_size", f"{batch_size}: the connector takes 1 to {MAX_BATCH} per call")
        self.send = send
        self.on_failure = on_failure
        self.earlier = SucceededRows(resume if resume and resume.fingerprint == fingerprint else None)
        self.progress = Progress(fingerprint)
        self.save = save
        self.checkpoint_every = checkpoint_every
        self.batch_size = batch_size
        self.max_failures = max_consecutive_batch_failures
        self.max_listed = max_listed
        self.noun = noun
        self.clock = clock
        self.log = log
        self.check_stop = check_stop
        self.tally = Tally()
        self._batch: list[Prepared] = []
        self._segment_failed: list[int] = []  # failed rows since the cursor last moved
        self._last_row = 0
        self._last_save = clock()
        self._consecutive = 0
        self._tripped: BatchFailure | None = None

    def add(self, prepared: Prepared) -> None:
        row = prepared.row.row
        self.tally.records += 1
        self._last_row = row
        if prepared.problems:
            fields = ", ".join(dict.fromkeys(f for f, _ in prepared.problems))
            reason = "; ".join(f"{f}: {m}" if f else m for f, m in prepared.problems)
            self._fail(prepared, Failure(row, prepared.key, "invalid", reason[:MAX_REASON], fields or None))
        elif row in self.earlier:
            self.tally.succeeded += 1
            self.tally.succeeded_earlier += 1
        elif self._tripped is not None:
            why = self._tripped
            self._fail(prepared, Failure(
                row, prepared.key, "not_sent",
                f"not sent: the API failed {self._consecutive} batches in a row (last: {why.reason})"[:MAX_REASON],
                status=why.status,
            ))  # fmt: skip
        else:
            self._batch.append(prepared)
            if len(self._batch) >= self.batch_size:
                self._flush()
        if not self._batch:
            self._advance()

    def finish(self) -> Tally:
        self._flush()
        self._advance()
        if self.save is not None:
            self.save(self.progress)
        return self.tally

    def _fail(self, prepared: Prepared, failure: Failure) -> None:
        if failure.kind == "invalid":
            self.tally.invalid += 1
        elif failure.kind == "failed":
            self.tally.failed += 1
        else:
            self.tally.not_sent += 1
        self._segment_failed.append(failure.row)
        self.on_failure(prepared.row, failure)
        if len(self.tally.listed) < self.max_listed:
            name = failure.key if failure.key is not None else f"row {failure.row}"
            if name in self.tally.listed:
                name = f"{name} (row {failure.row})"
            self.tally.listed[name] = failure.to_dict(with_item=False)
        else:
            self.tally.omitted += 1
        if len(self.tally.first) < 20:
            self.tally.first.append(failure.text())

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        if self.check_stop is not None:
            self.check_stop()
        self.tally.batches += 1
        self.tally.submitted += len(batch)
        outcome = self.send(batch)
        if isinstance(outcome, BatchFailure):
            self._consecutive += 1
            for p in batch:
                self._fail(
                    p, Failure(p.row.row, p.key, "failed", outcome.reason[:MAX_REASON], status=outcome.status)
                )
            if outcome.fatal or (self.max_failures is not None and self._consecutive >= self.max_failures):
                self._tripped = outcome
                if self.log is not None:
                    self.log.error(
                        "Stopped sending: %d batch(es) in a row failed as a whole (last: %s); the rest of the "
                        "input is written to the failed-records file as not sent",
                        self._consecutive, outcome.reason,
                    )  # fmt: skip
            return
        self._consecutive = 0
        for p in batch:
            assert p.key is not None
            failure = outcome.get(p.key)
            if failure is None:
                self.tally.succeeded += 1
            else:
                self._fail(
                    p,
                    Failure(
                        p.row.row, p.key, "failed", failure.reason, status=failure.status, item=failure.item
                    ),
                )

    def _advance(self) -> None:
        """Every row read so far is settled: move the cursor, and save now and then."""
        for row in sorted(self._segment_failed):
            self.progress.add_failed(row)
        self._segment_failed.clear()
        self.progress.cursor = self._last_row
        self.progress.succeeded = self.tally.succeeded
        if self.save is not None and self.clock() - self._last_save >= self.checkpoint_every:
            self._last_save = self.clock()
            self.save(self.progress)


def prepare_submission(rows: Iterable[InputRow]) -> Iterator[Prepared]:
    """Check each row for submission; a rowKey seen before (in any earlier row) is a duplicate."""
    seen: set[str] = set()
    for row in rows:
        if row.record is None:
            yield Prepared(row, None, problems=[("", row.error or "unreadable")])
            continue
        key = record_key(row.record)
        item, problems = check_record(row.record)
        if key is not None:
            if key in seen:
                problems.append(
                    (
                        "rowKey",
                        f"{key!r} appears in an earlier row of this input (a rowKey is the unique key)",
                    )
                )
            seen.add(key)
        yield Prepared(row, key, item, problems)


def prepare_destroy(rows: Iterable[InputRow], tally: Tally, key_field: str = "rowKey") -> Iterator[Prepared]:
    """Ids to destroy; an id given again is skipped (counted in ``tally.duplicates``), not sent twice."""
    seen: set[str] = set()
    for row in rows:
        if row.record is None:
            yield Prepared(row, None, problems=[("", row.error or "unreadable")])
            continue
        key = record_key(row.record, key_field)
        if key is None:
            yield Prepared(
                row, None, problems=[(key_field, "required, missing or empty (the record's unique key)")]
            )
            continue
        if key in seen:
            tally.duplicates += 1
            continue
        seen.add(key)
        yield Prepared(row, key, key)


def id_rows(ids: Iterable[Any]) -> Iterator[InputRow]:
    """``record_ids`` as rows: each id becomes ``{"rowKey": id}`` (what a failed-ids file holds)."""
    for i, value in enumerate(ids, start=1):
        if isinstance(value, Mapping):
            record = {str(k): v for k, v in value.items() if k != ERROR_KEY}
            yield InputRow(i, record, record)
        elif isinstance(value, str | int) and not isinstance(value, bool):
            record = {"rowKey": str(value).strip()}
            yield InputRow(i, record, record)
        else:
            yield InputRow(i, None, value, f"expected an id (text), got {type(value).__name__}")
