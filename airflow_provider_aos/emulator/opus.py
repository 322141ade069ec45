"""AvePoint Opus (opus.md): connector records and the restore of archived data.

| route (scope ``records.readwrite.all``)          | name (stats key, fault target) | answer                 |
|--------------------------------------------------|--------------------------------|------------------------|
| POST   /records/connector/records                | opus_submit                    | 201 / 418 failedItems  |
| GET    /records/connector/records                | opus_due                       | 200 (204 if set)       |
| DELETE /records/connector/records (JSON body)    | opus_destroy                   | 200 (204 if set) / 418 |
| GET    /api/restore/HasArchivedSiteCollectionData | opus_has_archive_site          | {success, message, ..} |
| GET    /api/restore/HasArchivedTeamsGroupData    | opus_has_archive_group         |                        |
| POST   /api/restore/RestoreSiteCollection        | opus_restore_site              |                        |
| POST   /api/restore/RestoreTeamsGroup            | opus_restore_group             |                        |
| GET    /api/restore/GetRestoreJobStatus          | opus_restore_status            |                        |
| POST   /api/restore/SetRestoreGracePeriodSiteCollection | opus_grace_site         |                        |
| POST   /api/restore/SetRestoreGracePeriodTeamsGroup | opus_grace_group             |                        |

Fault targets beyond the route names: "opus_connector" (the three connector routes),
"opus_restore" (the seven ``/api/restore`` routes) and "opus" (all ten).

Choices where opus.md is silent (clients must not rely on them beyond what the docs say):

- Connector errors use the connector's own envelope ``{statusCode, message}``; restore-API errors
  ``{success: false, message}`` with HTTP ``opus_restore_failure_status`` (400 or 200).
- A connection is any GUID: the first submission creates it. GUIDs compare case-insensitively.
- The request's conflict field may be spelled ``conflictOption`` or ``confilictOption`` (both
  spellings existed); its value ``Overwrite``/``Skip`` matches case-insensitively.
- Required columns: the docs define 418 as "processed, some records failed" and list the required
  columns per record, so by default (``opus_invalid_record="item"``) a record missing one (absent,
  null or "") is a failed *item*: reported in ``failedItems``, the others are stored. With
  ``"request"`` the whole call is a 400 and nothing is stored. A body that is not a JSON object,
  a missing or non-GUID ``id``, a bad conflict option, or a ``data`` that is not a list of 1..15
  objects is always a 400.
- ``failedItems`` item (submit): the submitted record's fields, the conflict option under the
  spelling ``opus_conflict_spelling``, and ``errorMessage`` (the reason). Destroy: ``{"rowKey": id,
  "errorMessage": reason}``. The 418 ``message`` is "Exist Failed Data Operation", or with
  ``opus_message_style="list"`` a list of ``"{rowKey}: {reason}"`` texts.
- Overwrite replaces a stored record (and un-destroys it); Skip keeps the stored one and counts the
  new one as skipped (not failed). Within one call records apply in order.
- Due records: stored, not destroyed records whose disposal due date (set explicitly, or
  ``timeModified`` + ``opus_retention_days``) is earlier than ``disposalDueDate`` (zone-less = UTC),
  ordered by (due date, rowKey). ``startIndex`` is an opaque token (base64url JSON holding the last
  record's sort key, bound to ``id`` and ``disposalDueDate``): records destroyed between pages never
  shift the rest. ``startIndex`` is ``null`` on the last page. ``itemsPerPage`` (any casing) is
  required, 0..100; 0 means the default of 100. Items carry the seven documented fields only; the
  two times re-formatted like the sample (``"2024-12-19 18:15:00 "``, trailing space) when they
  parse, else as submitted. The 200 body is ``{startIndex, statusCode: 200, message: null,
  queriedItems}``.
- Destroy: ``disposalIds`` are rowKeys, looked up in every connection (an optional, undocumented
  ``id`` in the body narrows to one). 1..15 ids, else 400. An id destroyed before succeeds again
  (so a retried call is harmless); an unknown id is a failed item "Record not found.".
- Restore: a scope matches case-insensitively (site URLs also without a trailing slash). Starting a
  restore of a scope with no archived data, or while a restore of it is still running, fails
  (``success: false``). A job's status follows a schedule: before its start -1 None, then its
  phases (default: 0 Waiting for 20% of the run, 1 In progress for the rest, the last 20% 7
  Stopping if it ends Stopped), then the outcome. ``progress`` is 0 until In progress, rises
  linearly through it (at most 99 while running), is 100 for Finished / Finished with exception,
  0 for Skipped and 50 for the other outcomes. Times are ``yyyy-MM-ddTHH:mm:ssZ``; ``finishTime``
  is null while running. An unknown or non-GUID ``jobId`` fails (``success: false``).
- Grace period: ``deleteArchivedDataDaysAfterRestore`` is a required integer 0..365; the scope must
  have archived data. The value is remembered per scope (``OpusStore.archives()``).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from .config import OPUS_CONFLICT_SPELLINGS, OPUS_RESTORE_OUTCOMES, EmulatorConfig
from .data import to_utc
from .routing import ApiError, Reply, Request, Route

OPUS_SCOPE = "records.readwrite.all"
MAX_RECORDS = 15  # per submit or destroy call
MAX_ITEMS_PER_PAGE = 100
DEFAULT_ITEMS_PER_PAGE = 100  # what itemsPerPage=0 means here
REQUIRED_COLUMNS: tuple[str, ...] = (
    "rowKey",
    "leafName",
    "timeCreated",
    "timeModified",
    "createdBy",
    "modifiedBy",
)
DUE_FIELDS: tuple[str, ...] = (
    "rowKey", "leafName", "termFullPath", "timeCreated", "timeModified", "createdBy", "modifiedBy",
)  # fmt: skip
CONFLICT_OPTIONS: tuple[str, ...] = ("Overwrite", "Skip")
PARTIAL_MESSAGE = "Exist Failed Data Operation"
ERROR_FIELD = "errorMessage"  # the reason in a failedItems item (undocumented; our choice)
NOT_FOUND = "Record not found."
KINDS: tuple[str, ...] = ("site_collection", "teams_group")
RESTORE_STATUS_LABELS: dict[int, str] = {
    -1: "None", 0: "Waiting", 1: "In progress", 2: "Finished", 3: "Failed", 4: "Finished with exception",
    5: "Stopped", 6: "Skipped", 7: "Stopping", 8: "Calculating", 9: "Pending", 10: "Timed out",
}  # fmt: skip
RUNNING_STATUSES = frozenset({-1, 0, 1, 7, 8, 9})
FINAL_STATUSES = frozenset({2, 3, 4, 5, 6, 10})
CONNECTOR_ROUTES: tuple[str, ...] = ("opus_submit", "opus_due", "opus_destroy")
RESTORE_ROUTES: tuple[str, ...] = (
    "opus_has_archive_site", "opus_has_archive_group", "opus_restore_site", "opus_restore_group",
    "opus_restore_status", "opus_grace_site", "opus_grace_group",
)  # fmt: skip
OPUS_ROUTES: tuple[str, ...] = (*CONNECTOR_ROUTES, *RESTORE_ROUTES)
OPUS_FAULT_GROUPS: tuple[str, ...] = ("opus", "opus_connector", "opus_restore")
# Beyond the route counters: 400s of any Opus route, 418 answers, and item counts.
OPUS_STAT_KEYS: tuple[str, ...] = (
    *OPUS_ROUTES, "opus_error", "opus_partial", "opus_records_stored", "opus_records_skipped",
    "opus_records_failed", "opus_records_destroyed", "opus_destroy_failed", "opus_restore_refused",
)  # fmt: skip

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
TimeLike = datetime | str | float | int

RowPredicate = Callable[[Mapping[str, Any]], str | None]


# -- small helpers ---------------------------------------------------------------------------


def _epoch(value: TimeLike) -> float:
    """Epoch seconds of a datetime, an ISO 8601 string (zone-less = UTC) or a number."""
    if isinstance(value, datetime):
        return to_utc(value).timestamp()
    if isinstance(value, str):
        parsed = _parse_time(value)
        if parsed is None:
            raise ValueError(f"not an ISO 8601 date-time: {value!r}")
        return parsed
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("a time must be a datetime, an ISO 8601 string or epoch seconds")
    return float(value)


def _parse_time(text: object) -> float | None:
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return to_utc(datetime.fromisoformat(text.strip())).timestamp()
    except ValueError:
        return None


def _fmt_z(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt_sample(ts: float) -> str:  # "2024-12-19 18:15:00 " as in the due-records sample
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S ")


def _guid(value: object) -> str | None:
    """The lower-case GUID, or None if `value` is not one."""
    if isinstance(value, str) and _GUID.fullmatch(value.strip()):
        return value.strip().lower()
    return None


def _scope_key(kind: str, scope: str) -> tuple[str, str]:
    text = scope.strip().lower()
    return kind, text.rstrip("/") if kind == "site_collection" else text


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    return kind


def _outcome_status(outcome: str | int) -> int:
    if isinstance(outcome, int) and not isinstance(outcome, bool):
        if outcome not in FINAL_STATUSES:
            raise ValueError(f"a final status must be one of {sorted(FINAL_STATUSES)}")
        return outcome
    if isinstance(outcome, str) and outcome.lower() in OPUS_RESTORE_OUTCOMES:
        return OPUS_RESTORE_OUTCOMES[outcome.lower()]
    raise ValueError(f"outcome must be one of {tuple(OPUS_RESTORE_OUTCOMES)} or a final status number")


# -- the store -------------------------------------------------------------------------------


@dataclass
class OpusRecord:
    fields: dict[str, Any]  # as submitted
    due: float | None = None  # explicit disposal due date (epoch); None = derived, if any
    destroyed: bool = False
    seq: int = 0


@dataclass
class _Rule:
    reason: str
    remaining: int | None  # submissions/destroys left to fail; None = every time

    def fire(self) -> str | None:
        if self.remaining is not None:
            if self.remaining <= 0:
                return None
            self.remaining -= 1
        return self.reason


@dataclass
class Archive:
    kind: str
    scope: str  # as registered
    outcome: int | None = None  # final status of restores of it; None = the config's
    run_seconds: float | None = None  # None = the config's opus_restore_seconds
    grace_days: int | None = None
    restores: int = 0


@dataclass
class RestoreJob:
    job_id: str
    kind: str
    scope: str
    start: float
    phases: tuple[tuple[int, float], ...]  # (running status, seconds), in order
    final: int
    request: dict[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> float:
        return self.start + sum(seconds for _, seconds in self.phases)

    def running(self, now: float) -> bool:
        return now < self.end

    def status(self, now: float) -> int:
        if now < self.start:
            return -1
        t = self.start
        for status, seconds in self.phases:
            t += seconds
            if now < t:
                return status
        return self.final

    def progress(self, now: float) -> int:
        if not self.running(now):
            return {2: 100, 4: 100, 6: 0}.get(self.final, 50)
        total = sum(seconds for status, seconds in self.phases if status == 1)
        if total <= 0:
            return 0
        done, t = 0.0, self.start
        for status, seconds in self.phases:
            if status == 1:
                done += min(max(now - t, 0.0), seconds)
            t += seconds
        return min(99, int(100 * done / total))

    def wire(self, now: float) -> dict[str, object]:
        """``job`` of GetRestoreJobStatus."""
        return {
            "id": self.job_id,
            "status": self.status(now),
            "progress": self.progress(now),
            "startTime": _fmt_z(self.start),
            "finishTime": None if self.running(now) else _fmt_z(self.end),
        }

    def admin(self, now: float) -> dict[str, object]:
        status = self.status(now)
        return {
            "kind": self.kind, "scope": self.scope, **self.wire(now),
            "statusLabel": RESTORE_STATUS_LABELS[status], "running": self.running(now),
            "finalStatus": self.final, "endTime": _fmt_z(self.end), "request": dict(self.request),
        }  # fmt: skip


def default_phases(run_seconds: float, final: int) -> tuple[tuple[int, float], ...]:
    """0 Waiting for 20% of the run, then 1 In progress (the last 20% 7 Stopping if it stops)."""
    if run_seconds <= 0:
        return ()
    if final == 5:
        return ((0, 0.2 * run_seconds), (1, 0.6 * run_seconds), (7, 0.2 * run_seconds))
    return ((0, 0.2 * run_seconds), (1, 0.8 * run_seconds))


class OpusStore:
    """Connector records per connection, failure rules, archived scopes and restore jobs.

    Thread-safe; the HTTP routes (``OpusService``) and the Python/admin API share it.
    """

    def __init__(self, archives: Iterable[tuple[str, str]] = ()) -> None:
        self._lock = threading.RLock()
        self._records: dict[str, dict[str, OpusRecord]] = {}
        self._seq = 0
        self._version = 0  # bumped when records or due dates change (not when destroyed)
        # (connection, cutoff, retention days) -> (version, sorted (due, rowKey)): paging through
        # a large connection sorts it once, not once per page.
        self._due_cache: dict[tuple[str, float, float | None], tuple[int, list[tuple[float, str]]]] = {}
        self._row_rules: dict[tuple[str | None, str], _Rule] = {}
        self._predicates: list[tuple[str | None, RowPredicate, list[int | None]]] = []
        self._destroy_rules: dict[str, _Rule] = {}
        self._archives: dict[tuple[str, str], Archive] = {}
        self._jobs: dict[str, RestoreJob] = {}
        for kind, scope in archives:
            self.add_archive(kind, scope)

    # -- records -------------------------------------------------------------------------------

    @staticmethod
    def _conn(connection_id: str) -> str:
        guid = _guid(connection_id)
        if guid is None:
            raise ValueError(f"connection id must be a GUID, not {connection_id!r}")
        return guid

    def _put(self, conn: str, fields: Mapping[str, Any], due: float | None) -> None:
        self._seq += 1
        self._version += 1
        self._records.setdefault(conn, {})[str(fields["rowKey"])] = OpusRecord(
            dict(fields), due, False, self._seq
        )

    def records(self, connection_id: str, *, include_destroyed: bool = False) -> dict[str, dict[str, Any]]:
        """rowKey -> the record as submitted (copies), in storage order; live records only unless
        `include_destroyed`."""
        with self._lock:
            stored = self._records.get(self._conn(connection_id), {})
            return {k: dict(r.fields) for k, r in stored.items() if include_destroyed or not r.destroyed}

    def destroyed(self, connection_id: str | None = None) -> list[str]:
        """Sorted rowKeys marked Destroyed (in one connection, or in all)."""
        with self._lock:
            conns = [self._conn(connection_id)] if connection_id else list(self._records)
            return sorted({k for c in conns for k, r in self._records.get(c, {}).items() if r.destroyed})

    def add_records(
        self,
        connection_id: str,
        records: Iterable[Mapping[str, Any]],
        *,
        disposal_due: TimeLike | None = None,
    ) -> int:
        """Store records directly (Overwrite, no validation beyond a rowKey); their count.

        :param disposal_due: one disposal due date for all of them (None: derived, if at all).
        """
        conn = self._conn(connection_id)
        due = None if disposal_due is None else _epoch(disposal_due)
        count = 0
        with self._lock:
            for record in records:
                if not isinstance(record, Mapping) or not str(record.get("rowKey") or ""):
                    raise ValueError("every record must be an object with a non-empty rowKey")
                self._put(conn, record, due)
                count += 1
        return count

    def set_disposal_due(self, connection_id: str, due: Mapping[str, TimeLike | None]) -> None:
        """Set (or with None clear) the disposal due date of stored records; KeyError if one is absent."""
        conn = self._conn(connection_id)
        with self._lock:
            stored = self._records.get(conn, {})
            missing = [k for k in due if k not in stored]
            if missing:
                raise KeyError(f"no records {missing} in connection {conn}")
            for key, value in due.items():
                stored[key].due = None if value is None else _epoch(value)
            self._version += 1

    def fail_rows(
        self,
        connection_id: str | None,
        rows: Mapping[str, str] | RowPredicate,
        *,
        times: int | None = None,
    ) -> None:
        """Make submissions of chosen records fail (418, in ``failedItems``) instead of being stored.

        :param connection_id: the connection, or None for every connection.
        :param rows: rowKey -> reason, or a function of the submitted record returning a reason
            (or None to let it through).
        :param times: how many submissions of each row (of matches, for a function) fail; None = all.
        """
        conn = None if connection_id is None else self._conn(connection_id)
        if times is not None and times < 0:
            raise ValueError("times must be >= 0")
        with self._lock:
            if callable(rows):
                self._predicates.append((conn, rows, [times]))
                return
            for key, reason in rows.items():
                self._row_rules[(conn, str(key))] = _Rule(str(reason), times)

    def fail_destroy(self, ids: Mapping[str, str], *, times: int | None = None) -> None:
        """Make destroying chosen ids fail (418, in ``failedItems``): id -> reason; `times` as above."""
        with self._lock:
            for key, reason in ids.items():
                self._destroy_rules[str(key)] = _Rule(str(reason), times)

    def clear(self, connection_id: str | None = None) -> None:
        """Forget the records (of one connection, or all) and every row/destroy failure rule."""
        with self._lock:
            self._version += 1
            if connection_id is None:
                self._records.clear()
            else:
                self._records.pop(self._conn(connection_id), None)
            self._row_rules.clear()
            self._predicates.clear()
            self._destroy_rules.clear()

    def _row_failure(self, conn: str, record: Mapping[str, Any]) -> str | None:
        key = str(record.get("rowKey"))
        for rule_key in ((conn, key), (None, key)):
            rule = self._row_rules.get(rule_key)
            if rule is not None:
                reason = rule.fire()
                if reason is not None:
                    return reason
        for rule_conn, predicate, left in self._predicates:
            if rule_conn not in (None, conn) or left[0] == 0:
                continue
            reason = predicate(dict(record))
            if reason is not None:
                if left[0] is not None:
                    left[0] -= 1
                return str(reason)
        return None

    def _due_of(self, record: OpusRecord, retention_days: float | None) -> float | None:
        if record.due is not None:
            return record.due
        if retention_days is None:
            return None
        modified = _parse_time(record.fields.get("timeModified"))
        return None if modified is None else modified + retention_days * 86_400

    def _due_keys(self, conn: str, cutoff: float, retention_days: float | None) -> list[tuple[float, str]]:
        """Sorted (due, rowKey) of the records (destroyed ones included) due before `cutoff`."""
        cache_key = (conn, cutoff, retention_days)
        cached = self._due_cache.get(cache_key)
        if cached is not None and cached[0] == self._version:
            return cached[1]
        keys = []
        for key, record in self._records.get(conn, {}).items():
            due = self._due_of(record, retention_days)
            if due is not None and due < cutoff:
                keys.append((due, key))
        keys.sort()
        if len(self._due_cache) >= 16:
            self._due_cache.clear()
        self._due_cache[cache_key] = (self._version, keys)
        return keys

    def due(
        self, connection_id: str, before: TimeLike, retention_days: float | None
    ) -> list[tuple[float, str, dict[str, Any]]]:
        """(due, rowKey, fields) of live records due before `before`, in paging order."""
        items, _ = self.due_page(connection_id, before, retention_days, None, None)
        return items

    def due_page(
        self,
        connection_id: str,
        before: TimeLike,
        retention_days: float | None,
        after: tuple[float, str] | None,
        size: int | None,
    ) -> tuple[list[tuple[float, str, dict[str, Any]]], bool]:
        """Up to `size` (None: all) live due records after the sort key `after`; and whether more follow."""
        conn, cutoff = self._conn(connection_id), _epoch(before)
        out: list[tuple[float, str, dict[str, Any]]] = []
        with self._lock:
            keys = self._due_keys(conn, cutoff, retention_days)
            stored = self._records.get(conn, {})
            for due, key in keys[0 if after is None else bisect.bisect_right(keys, after) :]:
                record = stored[key]
                if record.destroyed:
                    continue
                if size is not None and len(out) == size:
                    return out, True
                out.append((due, key, dict(record.fields)))
        return out, False

    # -- restore -------------------------------------------------------------------------------

    def add_archive(
        self, kind: str, scope: str, *, outcome: str | int | None = None, run_seconds: float | None = None
    ) -> None:
        """Give a scope archived data; restores of it end as `outcome` after `run_seconds`
        (None: the config's ``opus_restore_outcome`` / ``opus_restore_seconds``)."""
        _check_kind(kind)
        if not isinstance(scope, str) or not scope.strip():
            raise ValueError("scope must be a non-empty string")
        final = None if outcome is None else _outcome_status(outcome)
        if run_seconds is not None and not 0 <= run_seconds <= 86_400:
            raise ValueError("run_seconds out of range")
        with self._lock:
            old = self._archives.get(_scope_key(kind, scope))
            archive = Archive(kind, scope.strip(), final, run_seconds)
            if old is not None:
                archive.grace_days, archive.restores = old.grace_days, old.restores
            self._archives[_scope_key(kind, scope)] = archive

    def remove_archive(self, kind: str, scope: str) -> None:
        with self._lock:
            self._archives.pop(_scope_key(_check_kind(kind), scope), None)

    def archive(self, kind: str, scope: str) -> Archive | None:
        with self._lock:
            return self._archives.get(_scope_key(kind, scope))

    def archives(self) -> list[dict[str, object]]:
        """Every archived scope: {kind, scope, outcome, runSeconds, gracePeriodDays, restores}."""
        with self._lock:
            return [
                {"kind": a.kind, "scope": a.scope, "outcome": a.outcome, "runSeconds": a.run_seconds,
                 "gracePeriodDays": a.grace_days, "restores": a.restores}
                for a in self._archives.values()
            ]  # fmt: skip

    def grace_period(self, kind: str, scope: str) -> int | None:
        archive = self.archive(_check_kind(kind), scope)
        return None if archive is None else archive.grace_days

    def add_restore_job(
        self,
        kind: str = "site_collection",
        scope: str = "https://contoso.sharepoint.com/sites/ArchivedProjects",
        *,
        outcome: str | int = "finished",
        run_seconds: float = 2.0,
        start: TimeLike | None = None,
        phases: Sequence[tuple[int, float]] | None = None,
        request: Mapping[str, Any] | None = None,
    ) -> str:
        """Add a restore job (no archive needed); its id.

        :param outcome: "finished", "failed", "partial", "stopped", "skipped", "timed_out", or a
            final status number (2, 3, 4, 5, 6, 10).
        :param run_seconds: length of the default phases (ignored when `phases` is given).
        :param start: when it starts (before that it shows -1 None); None = now.
        :param phases: (running status, seconds) pairs shown in order before the outcome, e.g.
            ``[(-1, 1), (9, 1), (8, 1), (1, 2)]``; statuses among -1, 0, 1, 7, 8, 9.
        """
        _check_kind(kind)
        final = _outcome_status(outcome)
        if phases is None:
            steps = default_phases(run_seconds, final)
        else:
            steps = tuple((int(s), float(sec)) for s, sec in phases)
            if any(s not in RUNNING_STATUSES or sec < 0 for s, sec in steps):
                raise ValueError(f"phase statuses must be among {sorted(RUNNING_STATUSES)}, seconds >= 0")
        job = RestoreJob(
            str(uuid.uuid4()), kind, scope, time.time() if start is None else _epoch(start), steps, final,
            dict(request or {}),
        )  # fmt: skip
        with self._lock:
            self._jobs[job.job_id] = job
        return job.job_id

    def restore_job(self, job_id: str) -> RestoreJob | None:
        with self._lock:
            return self._jobs.get(job_id.strip().lower())

    def restore_jobs(self, now: float | None = None) -> list[dict[str, object]]:
        """The admin view of every restore job, oldest first."""
        t = time.time() if now is None else now
        with self._lock:
            jobs = list(self._jobs.values())
        return [j.admin(t) for j in sorted(jobs, key=lambda j: j.start)]

    def start_restore(
        self, kind: str, scope: str, body: Mapping[str, Any], now: float, cfg: EmulatorConfig
    ) -> str:
        """Start a restore over HTTP: its job id; ValueError (the answer's message) if refused."""
        with self._lock:
            archive = self._archives.get(_scope_key(kind, scope))
            if archive is None:
                raise ValueError(f"No archived data was found for the scope {scope}.")
            key = _scope_key(kind, scope)
            if any(_scope_key(j.kind, j.scope) == key and j.running(now) for j in self._jobs.values()):
                raise ValueError(f"A restore job for the scope {scope} is already in progress.")
            final = (
                archive.outcome if archive.outcome is not None else _outcome_status(cfg.opus_restore_outcome)
            )
            run = archive.run_seconds if archive.run_seconds is not None else cfg.opus_restore_seconds
            job = RestoreJob(
                str(uuid.uuid4()), kind, scope, now, default_phases(run, final), final, dict(body)
            )
            self._jobs[job.job_id] = job
            archive.restores += 1
            return job.job_id

    def set_grace(self, kind: str, scope: str, days: int) -> None:
        with self._lock:
            archive = self._archives.get(_scope_key(kind, scope))
            if archive is None:
                raise ValueError(f"No archived data was found for the scope {scope}.")
            archive.grace_days = days


# -- start index tokens ------------------------------------------------------------------------


def _token(conn: str, due_date: str, after: tuple[float, str]) -> str:
    raw = json.dumps({"c": conn, "d": due_date, "k": [after[0], after[1]]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _untoken(token: str, conn: str, due_date: str) -> tuple[float, str] | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        key = data["k"]
        if data["c"] != conn or data["d"] != due_date:
            return None
        return float(key[0]), str(key[1])
    except (binascii.Error, ValueError, KeyError, TypeError, IndexError):
        return None


# -- the service -------------------------------------------------------------------------------


def connector_error(status: int, message: str, errors: Sequence[ApiError] = ()) -> Reply:
    """The connector envelope ``{statusCode, message}``."""
    return Reply(status, {"statusCode": status, "message": message})


def restore_error(status: int, message: str, errors: Sequence[ApiError] = ()) -> Reply:
    """The restore-API envelope ``{success: false, message}``."""
    return Reply(status, {"success": False, "message": message})


def _json_object(body: bytes) -> tuple[dict[str, Any] | None, str]:
    if not body:
        return None, "The request body is required."
    try:
        value = json.loads(body)
    except ValueError:
        return None, "The request body is not valid JSON."
    if not isinstance(value, dict):
        return None, "The request body must be a JSON object."
    return value, ""


class OpusService:
    """The Opus routes over one ``OpusStore``."""

    def __init__(self, store: OpusStore) -> None:
        self.store = store

    def routes(self) -> list[Route]:
        def route(
            method: str, path: str, name: str, handler: Callable[[Request], Reply], group: str
        ) -> Route:
            error = connector_error if group == "opus_connector" else restore_error
            return Route(method, re.compile(path, re.IGNORECASE), name, OPUS_SCOPE, handler, error,
                         "opus_error", (group, "opus"))  # fmt: skip

        records, restore = r"/records/connector/records", r"/api/restore/"
        return [
            route("POST", records, "opus_submit", self.submit, "opus_connector"),
            route("GET", records, "opus_due", self.due, "opus_connector"),
            route("DELETE", records, "opus_destroy", self.destroy, "opus_connector"),
            route("GET", restore + "HasArchivedSiteCollectionData", "opus_has_archive_site",
                  lambda r: self.has_archive(r, "site_collection"), "opus_restore"),
            route("GET", restore + "HasArchivedTeamsGroupData", "opus_has_archive_group",
                  lambda r: self.has_archive(r, "teams_group"), "opus_restore"),
            route("POST", restore + "RestoreSiteCollection", "opus_restore_site",
                  lambda r: self.restore(r, "site_collection"), "opus_restore"),
            route("POST", restore + "RestoreTeamsGroup", "opus_restore_group",
                  lambda r: self.restore(r, "teams_group"), "opus_restore"),
            route("GET", restore + "GetRestoreJobStatus", "opus_restore_status", self.job_status, "opus_restore"),
            route("POST", restore + "SetRestoreGracePeriodSiteCollection", "opus_grace_site",
                  lambda r: self.grace(r, "site_collection"), "opus_restore"),
            route("POST", restore + "SetRestoreGracePeriodTeamsGroup", "opus_grace_group",
                  lambda r: self.grace(r, "teams_group"), "opus_restore"),
        ]  # fmt: skip

    @staticmethod
    def _bad(message: str) -> Reply:
        reply = connector_error(400, message)
        reply.stat = "opus_error"
        return reply

    @staticmethod
    def _partial(route: str, failed: list[tuple[str, str, dict[str, Any]]], cfg: EmulatorConfig,
                 counts: dict[str, int]) -> Reply:  # fmt: skip
        """418 with failedItems: (rowKey, reason, item) triples."""
        message: object = PARTIAL_MESSAGE
        if cfg.opus_message_style == "list":
            message = [f"{key}: {reason}" for key, reason, _ in failed]
        body = {"statusCode": 418, "message": message, "failedItems": [item for _, _, item in failed]}
        return Reply(418, body, stat=route, counts={"opus_partial": 1, **counts})

    # -- connector -------------------------------------------------------------------------

    def submit(self, req: Request) -> Reply:
        cfg = req.config
        body, problem = _json_object(req.body)
        if body is None:
            return self._bad(problem)
        conn = _guid(body.get("id"))
        if conn is None:
            return self._bad("The connection id is required and must be a GUID.")
        spellings = [s for s in OPUS_CONFLICT_SPELLINGS if s in body]
        values = {str(body[s]) for s in spellings}
        if not spellings:
            return self._bad("conflictOption is required: Overwrite or Skip.")
        if len(values) > 1:
            return self._bad("conflictOption and confilictOption disagree.")
        raw_option = body[spellings[0]]
        option = next(
            (o for o in CONFLICT_OPTIONS if isinstance(raw_option, str) and o.lower() == raw_option.lower()),
            None,
        )
        if option is None:
            return self._bad(f"conflictOption must be Overwrite or Skip, not {raw_option!r}.")
        data = body.get("data")
        if not isinstance(data, list) or not data:
            return self._bad("data is required: a list of 1 to 15 records.")
        if len(data) > MAX_RECORDS:
            return self._bad(f"At most {MAX_RECORDS} records can be submitted in one call; got {len(data)}.")
        if not all(isinstance(item, dict) for item in data):
            return self._bad("Every item of data must be a JSON object.")
        invalid: dict[int, str] = {}
        for index, item in enumerate(data):
            missing = [c for c in REQUIRED_COLUMNS if item.get(c) is None or item.get(c) == ""]
            if missing:
                invalid[index] = f"The required column(s) {', '.join(missing)} are missing or empty."
            elif not isinstance(item["rowKey"], (str, int)) or isinstance(item["rowKey"], bool):
                invalid[index] = "rowKey must be a string."
        if invalid and cfg.opus_invalid_record == "request":
            first = min(invalid)
            return self._bad(f"Record {first} (rowKey {data[first].get('rowKey')!r}): {invalid[first]}")
        failed: list[tuple[str, str, dict[str, Any]]] = []
        stored = skipped = 0
        store = self.store
        with store._lock:
            existing = store._records.get(conn, {})
            for index, item in enumerate(data):
                reason = invalid.get(index) or store._row_failure(conn, item)
                if reason is not None:
                    failed.append((str(item.get("rowKey")), reason,
                                   {**item, cfg.opus_conflict_spelling: option, ERROR_FIELD: reason}))  # fmt: skip
                    continue
                key = str(item["rowKey"])
                if option == "Skip" and key in existing:
                    skipped += 1
                    continue
                old = existing.get(key)
                store._put(conn, item, None if old is None else old.due)
                existing = store._records[conn]
                stored += 1
        counts = {
            "opus_records_stored": stored,
            "opus_records_skipped": skipped,
            "opus_records_failed": len(failed),
        }
        if failed:
            return self._partial("opus_submit", failed, cfg, counts)
        return Reply(201, {"statusCode": 201, "message": None}, counts=counts)

    def due(self, req: Request) -> Reply:
        cfg = req.config
        conn = _guid(req.param("id"))
        if conn is None:
            return self._bad("id is required and must be the connection's GUID.")
        due_text = (req.param("disposalduedate") or "").strip()
        if _parse_time(due_text) is None:
            return self._bad("disposalDueDate is required, as a date-time such as 2024-12-20T11:13:00.")
        size_text = req.param("itemsperpage")  # itemsPerPage and itemsPerpage alike
        if size_text is None or not size_text.strip().lstrip("-").isdigit():
            return self._bad("itemsPerPage is required: an integer from 0 to 100.")
        size = int(size_text)
        if not 0 <= size <= MAX_ITEMS_PER_PAGE:
            return self._bad("itemsPerPage must be from 0 to 100.")
        size = size or DEFAULT_ITEMS_PER_PAGE
        token = (req.param("startindex") or "").strip()
        after = None
        if token and token.lower() != "null":
            after = _untoken(token, conn, due_text)
            if after is None:
                return self._bad("startIndex is not one this query returned.")
        page, more = self.store.due_page(conn, due_text, cfg.opus_retention_days, after, size)
        if not page and cfg.opus_due_empty_status == 204:
            return Reply(204, None)
        next_token = _token(conn, due_text, (page[-1][0], page[-1][1])) if more else None
        return Reply(200, {
            "startIndex": next_token, "statusCode": 200, "message": None,
            "queriedItems": [self._due_item(fields) for _, _, fields in page],
        })  # fmt: skip

    @staticmethod
    def _due_item(fields: Mapping[str, Any]) -> dict[str, object]:
        item: dict[str, object] = {}
        for name in DUE_FIELDS:
            value = fields.get(name)
            if name in ("timeCreated", "timeModified"):
                parsed = _parse_time(value)
                value = value if parsed is None else _fmt_sample(parsed)
            item[name] = value
        return item

    def destroy(self, req: Request) -> Reply:
        cfg = req.config
        body, problem = _json_object(req.body)
        if body is None:
            return self._bad(problem)
        ids = body.get("disposalIds")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
            return self._bad("disposalIds is required: a list of 1 to 15 record unique keys.")
        if len(ids) > MAX_RECORDS:
            return self._bad(f"At most {MAX_RECORDS} records can be destroyed in one call; got {len(ids)}.")
        narrow = None
        if body.get("id") is not None:
            narrow = _guid(body.get("id"))
            if narrow is None:
                return self._bad("id must be a connection GUID.")
        store = self.store
        failed: list[tuple[str, str, dict[str, Any]]] = []
        destroyed = 0
        with store._lock:
            conns = [narrow] if narrow else list(store._records)
            for key in ids:
                rule = store._destroy_rules.get(key)
                reason = None if rule is None else rule.fire()
                matches = [store._records[c][key] for c in conns if key in store._records.get(c, {})]
                if reason is None and not matches:
                    reason = NOT_FOUND
                if reason is not None:
                    failed.append((key, reason, {"rowKey": key, ERROR_FIELD: reason}))
                    continue
                for record in matches:
                    if not record.destroyed:
                        record.destroyed = True
                        destroyed += 1
        counts = {"opus_records_destroyed": destroyed, "opus_destroy_failed": len(failed)}
        if failed:
            return self._partial("opus_destroy", failed, cfg, counts)
        if cfg.opus_destroy_status == 204:
            return Reply(204, None, counts=counts)
        return Reply(200, {"statusCode": 200, "message": None}, counts=counts)

    # -- restore ---------------------------------------------------------------------------

    @staticmethod
    def _refuse(cfg: EmulatorConfig, message: str, stat: str = "opus_error") -> Reply:
        reply = restore_error(cfg.opus_restore_failure_status, message)
        reply.stat = stat
        return reply

    @staticmethod
    def _scope_problem(kind: str, scope: object) -> str | None:
        if not isinstance(scope, str) or not scope.strip():
            return "scope is required."
        if kind == "site_collection":
            url = urlsplit(scope.strip())
            if url.scheme not in ("http", "https") or not url.netloc:
                return "scope must be the site collection URL."
        elif not _EMAIL.fullmatch(scope.strip()):
            return "scope must be the group's email address."
        return None

    def has_archive(self, req: Request, kind: str) -> Reply:
        scope = req.param("scope")
        problem = self._scope_problem(kind, scope)
        if problem is not None:
            return self._refuse(req.config, problem)
        assert scope is not None
        found = self.store.archive(kind, scope) is not None
        return Reply(200, {"success": True, "message": None, "hasArchivedData": found, "scope": scope})

    def restore(self, req: Request, kind: str) -> Reply:
        cfg = req.config
        body, problem = _json_object(req.body)
        if body is None:
            return self._refuse(cfg, problem)
        scope = body.get("scope")
        problem = self._scope_problem(kind, scope) or ""
        for name in ("conflictResolution", "appsConflictResolution"):
            value = body.get(name)
            if value is not None and (isinstance(value, bool) or value not in (0, 1, 2)):
                problem = problem or f"{name} must be 0 (Overwrite), 1 (Skip) or 2 (Append)."
        for name in ("includeWorkflowDefinition", "includeSharingLink"):
            if body.get(name) is not None and not isinstance(body.get(name), bool):
                problem = problem or f"{name} must be a boolean."
        admin = body.get("siteAdministratorUserPrincipalName")
        if admin is not None and not (isinstance(admin, str) and _EMAIL.fullmatch(admin.strip())):
            problem = problem or "siteAdministratorUserPrincipalName must be a user principal name."
        if problem:
            return self._refuse(cfg, problem)
        assert isinstance(scope, str)
        try:
            job_id = self.store.start_restore(kind, scope.strip(), body, req.now, cfg)
        except ValueError as exc:
            return self._refuse(cfg, str(exc), "opus_restore_refused")
        return Reply(200, {"success": True, "message": None, "jobId": job_id})

    def job_status(self, req: Request) -> Reply:
        job_id = _guid(req.param("jobid"))
        if job_id is None:
            return self._refuse(req.config, "jobId is required and must be a GUID.")
        job = self.store.restore_job(job_id)
        if job is None:
            return self._refuse(req.config, f"The restore job {job_id} was not found.")
        return Reply(200, {"success": True, "message": None, "job": job.wire(req.now)})

    def grace(self, req: Request, kind: str) -> Reply:
        cfg = req.config
        body, problem = _json_object(req.body)
        if body is None:
            return self._refuse(cfg, problem)
        scope = body.get("scope")
        problem = self._scope_problem(kind, scope) or ""
        days = body.get("deleteArchivedDataDaysAfterRestore")
        if isinstance(days, float) and days.is_integer():
            days = int(days)
        if not isinstance(days, int) or isinstance(days, bool) or not 0 <= days <= 365:
            problem = problem or "deleteArchivedDataDaysAfterRestore is required: whole days from 0 to 365."
        if problem:
            return self._refuse(cfg, problem)
        assert isinstance(scope, str)
        assert isinstance(days, int)
        try:
            self.store.set_grace(kind, scope.strip(), days)
        except ValueError as exc:
            return self._refuse(cfg, str(exc))
        return Reply(200, {"success": True, "message": None})


# -- admin HTTP (/_emulator/opus/...) ---------------------------------------------------------


def admin(store: OpusStore, method: str, path: str, params: Mapping[str, list[str]],
          body: object) -> tuple[int, object]:  # fmt: skip
    """One ``/_emulator/opus/*`` call: (status, JSON answer). ValueError/KeyError/TypeError -> 400
    in the caller. `path` is below ``/_emulator/opus``; `params` names are lower-cased."""

    def param(name: str) -> str | None:
        values = params.get(name)
        return values[0] if values else None

    if method == "GET":
        if path == "/records":
            conn = param("id")
            if conn is None:
                raise ValueError("use GET /_emulator/opus/records?id={connection id}")
            with_destroyed = (param("include_destroyed") or "").lower() in ("1", "true", "yes")
            records = store.records(conn, include_destroyed=with_destroyed)
            return 200, {"count": len(records), "records": records, "destroyed": store.destroyed(conn)}
        if path == "/due":
            conn, before = param("id"), param("before")
            if conn is None or before is None:
                raise ValueError("use GET /_emulator/opus/due?id={connection id}&before={date-time}")
            days = param("retention_days")
            items = store.due(conn, before, None if days is None else float(days))
            return 200, {"count": len(items), "rowKeys": [key for _, key, _ in items]}
        if path == "/archives":
            return 200, {"archives": store.archives()}
        if path == "/restore_jobs":
            return 200, {"jobs": store.restore_jobs()}
        if path.startswith("/restore_jobs/"):
            job = store.restore_job(path[len("/restore_jobs/") :])
            if job is None:
                return 404, {"error": f"no restore job {path[len('/restore_jobs/') :]}"}
            return 200, job.admin(time.time())
        return 404, {"error": f"no admin route GET /_emulator/opus{path}"}
    if method != "POST":
        return 404, {"error": f"no admin route {method} /_emulator/opus{path}"}
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    payload: dict[str, Any] = body

    def fields(*allowed: str) -> None:
        unknown = set(payload) - set(allowed)
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; use {sorted(allowed)}")

    if path == "/records":
        fields("id", "records", "disposalDue")
        count = store.add_records(
            str(payload["id"]), payload["records"], disposal_due=payload.get("disposalDue")
        )
        return 200, {"added": count}
    if path == "/due":
        fields("id", "due")
        store.set_disposal_due(str(payload["id"]), payload["due"])
    elif path == "/fail_rows":
        fields("id", "rows", "times")
        store.fail_rows(payload.get("id"), payload["rows"], times=payload.get("times"))
    elif path == "/fail_destroy":
        fields("ids", "times")
        store.fail_destroy(payload["ids"], times=payload.get("times"))
    elif path == "/clear":
        fields("id")
        store.clear(payload.get("id"))
    elif path == "/archives":
        fields("kind", "scope", "outcome", "run_seconds")
        store.add_archive(str(payload["kind"]), str(payload["scope"]), outcome=payload.get("outcome"),
                          run_seconds=payload.get("run_seconds"))  # fmt: skip
    elif path == "/restore_jobs":
        fields("kind", "scope", "outcome", "run_seconds", "start", "phases")
        job_id = store.add_restore_job(**dict(payload))
        return 200, {"jobId": job_id}
    else:
        return 404, {"error": f"no admin route POST /_emulator/opus{path}"}
    return 200, {"ok": True}
