"""AvePoint Opus connector: submit records, retrieve due records, destroy records (opus.md §1)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC
from typing import IO, TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import BaseOperator, ObjectStoragePath

from airflow_provider_aos.exceptions import AosApiError, AosAuthError, AosConfigError, AosError
from airflow_provider_aos.hooks.aos import AosHook
from airflow_provider_aos.operators.audit import parse_time
from airflow_provider_aos.opus import (
    CONNECTOR_PATH,
    MAX_BATCH,
    OPUS_SCOPE,
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
    check_conflict_option,
    check_items_per_page,
    failed_items,
    failed_path_for,
    id_rows,
    iter_jsonl,
    iter_list,
    literal_list,
    on_failure_mode,
    open_binary,
    opus_connection_guid,
    prepare_destroy,
    prepare_submission,
    source_format,
)
from airflow_provider_aos.pagination import StartIndexPaging
from airflow_provider_aos.redact import scrub
from airflow_provider_aos.storage import AtomicDestination, encode_record

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

KILLED = "stopped because the task was killed; a retry resubmits only what did not succeed"
MAX_LOGGED_FAILURES = 100
MANIFEST_KEY = "manifest"
"""XCom key under which the manifest is also pushed (a failing task has no return value)."""


class _Input:
    """Where the rows come from (a list or an object-storage file) and where failures go."""

    def __init__(
        self,
        *,
        items: list[Any] | None,
        source: str | None,
        failed_records_path: str | None,
        conn_id: str | None,
        declared_format: str | None,
        list_field: str,
        list_rows: Callable[[list[Any]], Iterator[InputRow]],
    ) -> None:
        self.items = items
        self.source = source
        self.conn_id = conn_id
        self.list_rows = list_rows
        if source is not None:
            self.fmt = source_format(source, declared_format)
            failed = failed_records_path or failed_path_for(source)
            if failed.strip() == source.strip():
                raise AosConfigError(
                    "failed_records_path", f"{failed!r} is the source itself; give another file"
                )
        else:
            self.fmt = "jsonl"
            if not failed_records_path:
                raise AosConfigError(
                    "failed_records_path",
                    f"with {list_field} there is no input file to write failed records beside: give a "
                    "file path or URL, e.g. '/data/opus/failed-{{ ds }}.jsonl'",
                )
            failed = failed_records_path
        name = failed.lower().removesuffix(".gz")
        if (self.fmt == "csv") != name.endswith(".csv") and name.endswith(
            (".csv", ".jsonl", ".ndjson", ".json")
        ):
            raise AosConfigError(
                "failed_records_path",
                f"{failed!r}: failed records are written in the input's format ({self.fmt}); name the file so",
            )
        self.failed_path = failed
        self.dest = AtomicDestination(failed, conn_id=conn_id, field="failed_records_path")
        self._file: IO[bytes] | None = None
        self.header: list[str] = []

    def open(self) -> Iterator[InputRow]:
        """Open the input (a CSV header is read and checked now) and return its rows."""
        if self.source is None:
            assert self.items is not None
            return self.list_rows(self.items)
        self.check()
        path = ObjectStoragePath(self.source, conn_id=self.conn_id)
        try:
            self._file = open_binary(path.open("rb"), self.source)  # type: ignore[no-untyped-call]
        except OSError as exc:
            raise AosConfigError("source", f"cannot read {self.source!r}: {exc.strerror or exc}") from exc
        if self.fmt == "csv":
            csv_input = CsvInput(self._file)
            self.header = csv_input.header
            return csv_input.rows()
        return iter_jsonl(self._file)

    def check(self) -> None:
        """The source exists and is a file."""
        if self.source is None:
            return
        try:
            is_file = ObjectStoragePath(self.source, conn_id=self.conn_id).is_file()
        except OSError as exc:
            raise AosConfigError("source", f"cannot read {self.source!r}: {exc.strerror or exc}") from exc
        if not is_file:
            raise AosConfigError("source", f"{self.source!r} does not exist or is not a file")

    def fingerprint(self, *parts: Any) -> str:
        """Identifies input and target: a checkpoint of anything else is ignored."""
        digest = hashlib.sha256(json.dumps(parts, default=str).encode())
        if self.source is None:
            digest.update(json.dumps(self.items, sort_keys=True, default=str).encode())
        else:
            path = ObjectStoragePath(self.source, conn_id=self.conn_id)
            info: Any = path.stat()
            size = getattr(info, "st_size", None) or (info.get("size") if isinstance(info, dict) else None)
            mtime = getattr(info, "st_mtime", None) or (
                info.get("mtime") or info.get("LastModified") or info.get("ETag")
                if isinstance(info, dict)
                else None
            )
            digest.update(json.dumps([self.source, size, mtime], default=str).encode())
        return digest.hexdigest()

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None


class _Checkpoint:
    """The progress file of one task instance, beside the failed-records file (hidden name)."""

    def __init__(self, failed_path: str, conn_id: str | None, context: Context) -> None:
        ti = context.get("ti")
        self.path: str | None = None
        self.conn_id = conn_id
        if ti is None:
            return  # outside a task run (a benchmark's execute({})): nothing to resume
        key = json.dumps([ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1)])
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        head, slash, name = failed_path.rpartition("/")
        self.path = f"{head}{slash}.{name}.{digest}.progress.json"

    def load(self) -> Progress | None:
        if self.path is None:
            return None
        path = ObjectStoragePath(self.path, conn_id=self.conn_id)
        try:
            if not path.exists():
                return None
            with path.open("rb") as fh:  # type: ignore[no-untyped-call]
                return Progress.from_json(fh.read())
        except OSError:
            return None

    def save(self, progress: Progress) -> None:
        if self.path is None:
            return
        with AtomicDestination(
            self.path, conn_id=self.conn_id, compression=None, field="failed_records_path"
        ) as out:
            out.write(progress.to_json())

    def remove(self) -> None:
        if self.path is not None:
            ObjectStoragePath(self.path, conn_id=self.conn_id).unlink(missing_ok=True)


class _ConnectorBatchOperator(BaseOperator):
    """What submitting and destroying share: input, batches, failed file, checkpoint, kill, result."""

    noun: ClassVar[str] = "record"
    verb: ClassVar[str] = "submitted"
    list_field: ClassVar[str] = "records"
    ui_color = "#e8f1fb"

    _killed: bool = False
    _dest: AtomicDestination | None = None

    def on_kill(self) -> None:
        """Stop before the next batch and remove the temporary failed-records file (see the audit export)."""
        self._killed = True
        dest = self._dest
        if dest is not None:
            with contextlib.suppress(Exception):
                dest.discard()

    def _check_killed(self) -> None:
        if self._killed:
            raise AosError(KILLED)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._check_killed()
            time.sleep(min(left, 0.2))
        self._check_killed()

    def _prepare(self, rows: Iterator[InputRow], tally: Tally) -> Iterator[Prepared]:
        raise NotImplementedError

    def _body(self, batch: list[Prepared]) -> tuple[str, dict[str, Any], bool]:
        raise NotImplementedError

    def _run(
        self,
        context: Context,
        source_input: _Input,
        hook: AosHook,
        fingerprint_parts: Sequence[Any],
        on_failure: str,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        self._killed = False
        hook.config  # noqa: B018 - a bad connection fails before anything is read, written or sent
        hook.sleep = self._sleep  # type: ignore[method-assign]
        source_input.check()
        checkpoint = _Checkpoint(source_input.failed_path, source_input.conn_id, context)
        fingerprint = source_input.fingerprint(type(self).__name__, *fingerprint_parts)
        resume = checkpoint.load()
        if resume is not None and resume.fingerprint != fingerprint:
            self.log.info("Ignoring the checkpoint of an earlier try: the input or the target changed")
            resume = None
        elif resume is not None:
            self.log.info(
                "Resuming: an earlier try of this task processed %d input row(s); the %d it got stored are "
                "not sent again", resume.cursor, resume.succeeded,
            )  # fmt: skip
        dest = source_input.dest
        self._dest = dest
        logged = [0]
        runner: BatchRunner | None = None
        try:
            rows = source_input.open()
            with dest as out:  # proves the failed-records file writable before the first request
                writer = FailedRecordsWriter(out, source_input.fmt, source_input.header)

                def record_failure(row: InputRow, failure: Failure) -> None:
                    writer.write(row, failure)
                    if logged[0] < MAX_LOGGED_FAILURES:
                        self.log.warning("Not %s: %s", self.verb, failure.text())
                    logged[0] += 1

                runner = BatchRunner(
                    lambda batch: self._send(hook, batch),
                    record_failure,
                    fingerprint=fingerprint,
                    resume=resume,
                    save=checkpoint.save,
                    noun=self.noun,
                    log=self.log,
                    check_stop=self._check_killed,
                )
                for prepared in self._prepare(rows, runner.tally):
                    runner.add(prepared)
                tally = runner.finish()
                writer.close()
                self._check_killed()
        except BaseException:
            if runner is not None:
                # What the server confirmed so far survives a failed try (not a SIGKILL: then the
                # last periodic checkpoint does, and the rows since are re-sent, harmlessly).
                with contextlib.suppress(Exception):
                    checkpoint.save(runner.progress)
            raise
        finally:
            self._dest = None
            source_input.close()
            hook.close()
        if tally.unsuccessful == 0:
            checkpoint.remove()  # all done: a cleared task starts afresh
        manifest = self._manifest(tally, source_input, extra)
        self.log.info(
            "%d %s(s) read: %d %s in %d batch(es), %d succeeded (%d in earlier tries), %d failed, %d invalid, "
            "%d not sent; failed records file: %s (%d)",
            tally.records, self.noun, tally.submitted, self.verb, tally.batches, tally.succeeded,
            tally.succeeded_earlier, tally.failed, tally.invalid, tally.not_sent, dest.path, tally.unsuccessful,
        )  # fmt: skip
        ti = context.get("ti")
        if ti is not None:
            ti.xcom_push(key=MANIFEST_KEY, value=manifest)
        if tally.unsuccessful:
            message = self._failure_message(tally, str(dest.path))
            if on_failure == "fail":
                raise AosError(message)
            self.log.warning("%s (on_failure='warn': the task succeeds)", message)
        return manifest

    def _failure_message(self, tally: Tally, path: str) -> str:
        lines = [
            f"{tally.unsuccessful} of {tally.records} {self.noun}(s) did not succeed ({tally.failed} failed on the "
            f"server, {tally.invalid} invalid, {tally.not_sent} not sent). They are in {path}, each with its "
            f"reason in _aos_error; fix them and feed that file back as source:"
        ]
        lines += [f"  {text}" for text in tally.first]
        if tally.unsuccessful > len(tally.first):
            lines.append(f"  ... and {tally.unsuccessful - len(tally.first)} more (all in the file)")
        return "\n".join(lines)

    def _manifest(self, tally: Tally, source_input: _Input, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            **extra,
            "source": source_input.source,
            "failed_records_path": str(source_input.dest.path),
            "failed_records_format": source_input.fmt,
            "failed_records": tally.unsuccessful,
            "records": tally.records,
            "submitted": tally.submitted,
            "succeeded": tally.succeeded,
            "succeeded_in_earlier_tries": tally.succeeded_earlier,
            "failed": tally.failed,
            "invalid": tally.invalid,
            "not_sent": tally.not_sent,
            "duplicates_skipped": tally.duplicates,
            "batches": tally.batches,
            "reasons": tally.listed,
            "reasons_omitted": tally.omitted,
        }

    def _send(self, hook: AosHook, batch: list[Prepared]) -> dict[str, ItemFailure] | BatchFailure:
        method, body, idempotent = self._body(batch)
        keys = [p.key for p in batch if p.key is not None]
        try:
            reply = hook.request(
                method, CONNECTOR_PATH, json=body, scope=OPUS_SCOPE, idempotent=idempotent, ok_statuses=(418,)
            )
        except AosAuthError as exc:
            return BatchFailure(str(exc), exc.status, fatal=True)
        except AosApiError as exc:  # already scrubbed of secrets by the hook
            return BatchFailure(str(exc), exc.status, fatal=exc.status in (401, 403))
        try:
            answer = reply.json()
        except ValueError:
            answer = None
        outcome = failed_items(reply.status, answer, keys)
        secrets = self._secrets(hook)
        if isinstance(outcome, BatchFailure):
            return BatchFailure(scrub(outcome.reason, secrets), outcome.status, outcome.fatal)
        return {k: ItemFailure(scrub(f.reason, secrets), f.status, f.item) for k, f in outcome.items()}

    @staticmethod
    def _secrets(hook: AosHook) -> list[str]:
        token = hook.tokens.get(OPUS_SCOPE)
        return [*hook.config.secrets(), *([token.value] if token else [])]


class AosOpusSubmitRecordsOperator(_ConnectorBatchOperator):
    """
    Submit records to one AvePoint Opus connector connection, in batches of at most 15.

    Records come from ``records`` (a list of dicts, e.g. from XCom) or ``source`` (an object-storage
    file: JSON Lines, one record per line, or CSV with a header of the connection's column internal
    names; ``.gz`` is read as gzip), streamed, so a million records never sit in memory (only the set
    of rowKeys seen, to refuse duplicates: about 130 bytes per record, 13 MiB per 100,000 in bench/).

    Before anything is sent every record is checked: the required built-in columns (``rowKey``,
    ``leafName``, ``timeCreated``, ``timeModified``, ``createdBy``, ``modifiedBy``), a non-empty
    ``rowKey`` that no earlier row of the input has, date-times (ISO 8601, ``2024-12-19 18:15:00``
    or US ``12/19/2024 6:15 PM``), and ``[...]`` values recognisably meant as Choice (option numbers)
    or Person or Group (email addresses) lists. A bad record is reported with its row and field and
    never sent; the good ones still go. A JSON list of option numbers or emails is sent in the
    documented ``[1,3]`` text form; a CSV's empty cell is no value (not sent).

    A batch answered 201 is stored. A 418 names its failed records in ``failedItems``: each is
    matched to a submitted record by ``rowKey`` and reported with the server's reason. A batch that
    fails as a whole (400, 5xx after retries, no response) counts each of its records as failed with
    that reason; after ``max_consecutive_batch_failures`` such batches in a row the rest of the input
    is not sent, only written to the failed-records file.

    **Re-sending a batch cannot create a duplicate**: a record's ``rowKey`` is its unique key in
    Opus, and ``conflictOption`` (``Overwrite`` or ``Skip``) says what happens to a record whose key
    exists. So a batch is retried after a 5xx or a dropped connection (the request is idempotent)
    instead of being lost, and a task retry may safely re-send the few batches since its last
    checkpoint.

    **A task retry resubmits only what did not succeed.** Each try keeps a small checkpoint beside
    the failed-records file (``.<failed file name>.<hash of dag, task, run, map index>.progress.json``,
    rewritten atomically at most every 5 s and when the try ends, even by an error): the number of
    input rows processed and the ranges of rows among them that did not succeed. The next try of the
    same task instance, on the same input and target (a fingerprint of the source's path, size and
    modification time, or of the ``records`` list, plus ``opus_connection_id`` and
    ``conflict_option``), skips every row the server confirmed. It is removed once a try leaves nothing
    failed. A try killed with SIGKILL loses at most the last 5 s of progress: those batches are sent
    again, harmlessly (see above).

    Every record that did not succeed is written, atomically, to ``failed_records_path`` (default:
    beside the source, ``in.jsonl`` -> ``in.failed.jsonl``) in the input's format, with its reason in
    the reserved ``_aos_error`` key (JSON Lines) or last column (CSV); this operator drops
    ``_aos_error`` when it reads, so the file can be fed back unchanged as ``source`` once fixed. The
    file is always written (empty when nothing failed), so it never shows an earlier try's failures.

    :param opus_connection_id: the Opus connector connection's GUID, from its JSON file in Opus >
        Settings > Connector (templated). Not an Airflow connection.
    :param records: the records, a list of dicts keyed by column internal names (templated).
    :param source: or a file of records, a path or URL for Airflow object storage (templated).
    :param conflict_option: ``Overwrite`` (replace a record with the same rowKey) or ``Skip``.
    :param on_failure: ``fail`` (default: fail the task after the whole input was processed, when any
        record did not succeed) or ``warn`` (log and succeed).
    :param failed_records_path: where to write the records that did not succeed (templated); required
        with ``records``.
    :param source_format: ``infer`` (from the name: ``.jsonl``/``.ndjson``/``.json`` or ``.csv``),
        ``jsonl`` or ``csv``.
    :param storage_conn_id: connection of the object store of ``source`` and the failed file (templated).
    :param max_consecutive_batch_failures: whole-batch failures in a row after which nothing more is
        sent (None: never stop).
    :param aos_conn_id: the AOS connection (templated).
    :return: a manifest (also pushed under the XCom key ``manifest``, even when the task fails):
        ``records`` (read), ``submitted`` (sent by this try), ``succeeded`` (all tries),
        ``succeeded_in_earlier_tries``, ``failed`` (by the server), ``invalid``, ``not_sent``,
        ``batches``, ``failed_records_path``, ``failed_records``, and ``reasons``: per rowKey (or
        ``row N`` without one) its row, kind, field, reason and the server's item, for at most 100
        records (``reasons_omitted`` counts the rest; all are in the failed-records file).
    """

    template_fields: Sequence[str] = (
        "aos_conn_id", "opus_connection_id", "records", "source", "failed_records_path", "storage_conn_id",
    )  # fmt: skip
    template_fields_renderers: ClassVar[dict[str, str]] = {"records": "json"}

    def __init__(
        self,
        *,
        opus_connection_id: str,
        records: list[dict[str, Any]] | str | None = None,
        source: str | None = None,
        conflict_option: str = "Overwrite",
        on_failure: str = "fail",
        failed_records_path: str | None = None,
        source_format: str = "infer",
        storage_conn_id: str | None = None,
        max_consecutive_batch_failures: int | None = 10,
        aos_conn_id: str = AosHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (records is None) == (source is None):
            raise AosConfigError(
                "records", "give exactly one of records (a list of dicts) or source (a file)"
            )
        if records is not None and failed_records_path is None:
            raise AosConfigError(
                "failed_records_path",
                "with records there is no input file to write failed records beside: give a file path or "
                "URL, e.g. '/data/opus/failed-{{ ds }}.jsonl'",
            )
        self.opus_connection_id = opus_connection_id
        self.records = records
        self.source = source
        self.conflict_option = check_conflict_option(conflict_option)
        self.on_failure = on_failure_mode(on_failure)
        self.failed_records_path = failed_records_path
        self.source_format = source_format
        self.storage_conn_id = storage_conn_id
        self.max_consecutive_batch_failures = max_consecutive_batch_failures
        self.aos_conn_id = aos_conn_id

    def _prepare(self, rows: Iterator[InputRow], tally: Tally) -> Iterator[Prepared]:
        return prepare_submission(rows)

    def _body(self, batch: list[Prepared]) -> tuple[str, dict[str, Any], bool]:
        body = {"id": self._guid, "conflictOption": self.conflict_option, "data": [p.item for p in batch]}
        return "POST", body, True  # idempotent: rowKey is the unique key (see the class docstring)

    def execute(self, context: Context) -> dict[str, Any]:
        self._guid = opus_connection_guid(self.opus_connection_id)
        items = literal_list(self.records, "records") if self.records is not None else None
        source = str(self.source).strip() if self.source is not None else None
        source_input = _Input(
            items=items, source=source, failed_records_path=self.failed_records_path,
            conn_id=self.storage_conn_id, declared_format=self.source_format, list_field="records",
            list_rows=iter_list,
        )  # fmt: skip
        hook = AosHook(aos_conn_id=self.aos_conn_id)
        self.log.info(
            "Submitting %s to Opus connection %s (conflictOption %s), batches of %d",
            source or f"{len(items or [])} records", self._guid, self.conflict_option, MAX_BATCH,
        )  # fmt: skip
        return self._run(
            context, source_input, hook, [self._guid, self.conflict_option], self.on_failure,
            {"opus_connection_id": self._guid, "conflict_option": self.conflict_option},
        )  # fmt: skip

    _guid: str = ""


class AosOpusDestroyRecordsOperator(_ConnectorBatchOperator):
    """
    Mark records as Destroyed in AvePoint Opus (``DELETE /records/connector/records``), at most 15
    ids per call.

    The ids (the records' ``rowKey``) come from ``record_ids`` (a list, e.g. from XCom) or ``source``:
    a JSON Lines or CSV file with a ``rowKey`` per record, such as the file
    :class:`AosOpusDueRecordsOperator` writes (after an approval step, when Opus requires manual
    approval). The body is the documented ``{"disposalIds": [...]}`` plus the connection as ``id``
    (as in the other connector calls; the docs do not show it for destroy), so that a rowKey used by
    several connections is destroyed in this one only. An id given twice is sent once. A 200 or 204 call destroyed every id; a 418 names the
    ids that failed in ``failedItems``, each reported with the server's reason; a call failing as a
    whole (400, 5xx after retries) counts each of its ids as failed. DELETE is idempotent, so a
    call is retried after a 5xx or a dropped connection.

    Ids that did not succeed go to ``failed_records_path`` (default: beside the source, ``x.jsonl``
    -> ``x.failed.jsonl``), in the input's format (JSON Lines ``{"rowKey": ..., "_aos_error": ...}``
    for ``record_ids``), to be fed back as ``source``. A task retry destroys only what did not succeed,
    and ``on_failure`` works, as for :class:`AosOpusSubmitRecordsOperator`.

    :param opus_connection_id: the Opus connector connection's GUID (templated).
    :param record_ids: the rowKeys to destroy (templated).
    :param source: or a file of records with a ``rowKey`` each (templated).
    :param on_failure: ``fail`` (default) or ``warn``.
    :param failed_records_path: where to write the ids that did not succeed (templated); required with
        ``record_ids``.
    :param source_format: ``infer``, ``jsonl`` or ``csv``.
    :param storage_conn_id: connection of the object store (templated).
    :param max_consecutive_batch_failures: whole-call failures in a row after which nothing more is sent.
    :param aos_conn_id: the AOS connection (templated).
    :return: a manifest as for submission (``submitted`` = ids sent by this try, ``duplicates_skipped``).
    """

    noun = "id"
    verb = "destroyed"
    list_field = "record_ids"
    template_fields: Sequence[str] = (
        "aos_conn_id", "opus_connection_id", "record_ids", "source", "failed_records_path", "storage_conn_id",
    )  # fmt: skip

    def __init__(
        self,
        *,
        opus_connection_id: str,
        record_ids: list[str] | str | None = None,
        source: str | None = None,
        on_failure: str = "fail",
        failed_records_path: str | None = None,
        source_format: str = "infer",
        storage_conn_id: str | None = None,
        max_consecutive_batch_failures: int | None = 10,
        aos_conn_id: str = AosHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (record_ids is None) == (source is None):
            raise AosConfigError("record_ids", "give exactly one of record_ids (a list) or source (a file)")
        if record_ids is not None and failed_records_path is None:
            raise AosConfigError(
                "failed_records_path",
                "with record_ids there is no input file to write failed ids beside: give a file path or URL, "
                "e.g. '/data/opus/destroy-failed-{{ ds }}.jsonl'",
            )
        self.opus_connection_id = opus_connection_id
        self.record_ids = record_ids
        self.source = source
        self.on_failure = on_failure_mode(on_failure)
        self.failed_records_path = failed_records_path
        self.source_format = source_format
        self.storage_conn_id = storage_conn_id
        self.max_consecutive_batch_failures = max_consecutive_batch_failures
        self.aos_conn_id = aos_conn_id

    _guid: str = ""

    def _prepare(self, rows: Iterator[InputRow], tally: Tally) -> Iterator[Prepared]:
        return prepare_destroy(rows, tally)

    def _body(self, batch: list[Prepared]) -> tuple[str, dict[str, Any], bool]:
        # The docs show only disposalIds; the connection goes along as ``id``, as in the other connector
        # calls, so that a rowKey used by several connections is destroyed in this one only.
        return "DELETE", {"id": self._guid, "disposalIds": [p.key for p in batch]}, True

    def execute(self, context: Context) -> dict[str, Any]:
        self._guid = guid = opus_connection_guid(self.opus_connection_id)
        ids = literal_list(self.record_ids, "record_ids") if self.record_ids is not None else None
        source = str(self.source).strip() if self.source is not None else None
        source_input = _Input(
            items=ids, source=source, failed_records_path=self.failed_records_path,
            conn_id=self.storage_conn_id, declared_format=self.source_format, list_field="record_ids",
            list_rows=id_rows,
        )  # fmt: skip
        hook = AosHook(aos_conn_id=self.aos_conn_id)
        self.log.info(
            "Destroying the records of %s in Opus connection %s", source or f"{len(ids or [])} ids", guid
        )
        return self._run(context, source_input, hook, [guid], self.on_failure, {"opus_connection_id": guid})


def disposal_due_text(value: Any) -> str:
    """``disposalDueDate`` as the docs write it (``2024-12-20T11:13:00``), in UTC."""
    moment = parse_time(value, "disposal_due_date").astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


class AosOpusDueRecordsOperator(BaseOperator):
    """
    Retrieve the records of an Opus connector connection whose disposal due date is before a time,
    streamed to a file as JSON Lines.

    Pages are walked with the endpoint's ``startIndex`` (resent until it is null or empty) through the
    hook's page iterator, one page in memory at a time, into a temporary file moved into place when
    complete (a killed or retried task leaves no partial file). A 204 and a 200 with no
    ``queriedItems`` both mean "none due" (the docs show each): an empty file is written. The output
    feeds :class:`AosOpusDestroyRecordsOperator` as its ``source``.

    The docs give ``disposalDueDate`` without a zone (``2024-12-20T11:13:00``); it is sent in UTC.

    :param opus_connection_id: the Opus connector connection's GUID (templated).
    :param destination: the JSON Lines file, a path or URL for Airflow object storage (templated); gzip
        for ``.gz``.
    :param disposal_due_date: records due before this time, an aware datetime or ISO 8601 string with a
        zone (templated). Default: the run's data interval end.
    :param items_per_page: records per page, 1-100.
    :param destination_conn_id: connection of the object store (templated).
    :param aos_conn_id: the AOS connection (templated).
    :return: a manifest: ``path``, ``records``, ``pages``, ``disposal_due_date``, ``opus_connection_id``,
        ``bytes``.
    """

    template_fields: Sequence[str] = (
        "aos_conn_id", "opus_connection_id", "destination", "disposal_due_date", "destination_conn_id",
    )  # fmt: skip
    ui_color = "#e8f1fb"

    _killed: bool = False
    _dest: AtomicDestination | None = None

    def __init__(
        self,
        *,
        opus_connection_id: str,
        destination: str,
        disposal_due_date: Any = None,
        items_per_page: int | str = 100,
        destination_conn_id: str | None = None,
        aos_conn_id: str = AosHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.opus_connection_id = opus_connection_id
        self.destination = destination
        self.disposal_due_date = disposal_due_date
        self.items_per_page = items_per_page
        if isinstance(items_per_page, int):
            check_items_per_page(items_per_page)  # a literal is checked when the DAG is parsed
        self.destination_conn_id = destination_conn_id
        self.aos_conn_id = aos_conn_id

    def on_kill(self) -> None:
        """Stop at the next page and remove the temporary file."""
        self._killed = True
        dest = self._dest
        if dest is not None:
            with contextlib.suppress(Exception):
                dest.discard()

    def execute(self, context: Context) -> dict[str, Any]:
        self._killed = False
        guid = opus_connection_guid(self.opus_connection_id)
        per_page = check_items_per_page(self.items_per_page)
        due = (
            self.disposal_due_date if self.disposal_due_date is not None else context.get("data_interval_end")
        )
        if due is None:
            raise AosConfigError(
                "disposal_due_date",
                "the run has no data interval (e.g. an Airflow 3 manual run): pass disposal_due_date, e.g. "
                "'{{ params.disposal_due_date }}' or '2026-12-01T00:00:00Z'",
            )
        due_text = disposal_due_text(due)
        dest = AtomicDestination(self.destination, conn_id=self.destination_conn_id)
        hook = AosHook(aos_conn_id=self.aos_conn_id)
        hook.config  # noqa: B018 - validates the connection before anything is written or requested
        params = {"id": guid, "disposalDueDate": due_text, "itemsPerPage": per_page}
        records = 0
        iterator = hook.paginate(CONNECTOR_PATH, params=params, scope=OPUS_SCOPE, style=StartIndexPaging())
        self._dest = dest
        try:
            with dest as out:
                for page in iterator.pages:
                    if self._killed:
                        raise AosError("stopped because the task was killed; no file was written")
                    if page.items:
                        out.write(b"\n".join(encode_record(item)[0] for item in page.items) + b"\n")
                    records += len(page.items)
        finally:
            self._dest = None
            hook.close()
        self.log.info(
            "%d record(s) of Opus connection %s due before %s (%d page(s)) written to %s",
            records, guid, due_text, iterator.page_number, dest.path,
        )  # fmt: skip
        return {
            "path": str(dest.path),
            "records": records,
            "pages": iterator.page_number,
            "disposal_due_date": due_text,
            "opus_connection_id": guid,
            "bytes": dest.size,
        }


# The contract path of the restore operator (its code lives beside: operators/opus_restore.py).
from airflow_provider_aos.operators.opus_restore import AosOpusRestoreOperator  # noqa: E402

__all__ = [
    "AosOpusDestroyRecordsOperator",
    "AosOpusDueRecordsOperator",
    "AosOpusRestoreOperator",
    "AosOpusSubmitRecordsOperator",
]
