"""Emulator settings: the ``EmulatorConfig`` dataclass and validation of its runtime settings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

RANDOM_FAULT_KINDS: tuple[str, ...] = ("429", "500", "503", "drop")
SPELLINGS: tuple[str, ...] = ("sample", "table")
SCAN_SKIP_UNITS: tuple[str, ...] = ("items", "pages")
RESTORE_OUTCOMES: tuple[str, ...] = ("succeeded", "failed", "partial")
# Opus (opus.md): the two spellings of the conflict field, and how Opus restore jobs may end
# (name -> GetRestoreJobStatus ``job.status``: 2 Finished, 3 Failed, 4 Finished with exception,
# 5 Stopped, 6 Skipped, 10 Timed out).
OPUS_CONFLICT_SPELLINGS: tuple[str, ...] = ("conflictOption", "confilictOption")
OPUS_INVALID_RECORD: tuple[str, ...] = ("item", "request")
OPUS_MESSAGE_STYLES: tuple[str, ...] = ("string", "list")
OPUS_RESTORE_OUTCOMES: dict[str, int] = {
    "finished": 2, "failed": 3, "partial": 4, "stopped": 5, "skipped": 6, "timed_out": 10,
}  # fmt: skip
# Archived scopes every emulator starts with, so a demo can restore without setting anything up.
OPUS_DEMO_ARCHIVES: tuple[tuple[str, str], ...] = (
    ("site_collection", "https://contoso.sharepoint.com/sites/ArchivedProjects"),
    ("teams_group", "archived-team@contoso.onmicrosoft.com"),
)
RUNTIME_SETTINGS: frozenset[str] = frozenset(
    {
        "latency", "latency_per_record", "max_concurrent", "fault_rate", "fault_kinds", "retry_after",
        "token_ttl", "page_size", "discovery", "spelling", "first_page_index", "scan_skip",
        "restore_seconds", "restore_outcome",
        "opus_conflict_spelling", "opus_invalid_record", "opus_due_empty_status", "opus_destroy_status",
        "opus_message_style", "opus_retention_days", "opus_restore_seconds", "opus_restore_outcome",
        "opus_restore_failure_status",
    }
)  # fmt: skip


@dataclass
class EmulatorConfig:
    """Settings of one emulator; the runtime ones can later be changed with ``configure()``.

    :param host: interface to bind; loopback unless you mean to expose fake credentials.
    :param port: TCP port; 0 picks a free one (read it back from ``root_url``).
    :param records: number of seeded audit records, spread over [data_start, data_end).
    :param data_start: time of the first possible record (naive = UTC).
    :param data_end: end (exclusive) of the seeded records (naive = UTC).
    :param seed: makes records, seeded jobs and random faults reproducible.
    :param page_size: audit records per page.
    :param token_ttl: ``expires_in`` of minted tokens, in seconds.
    :param latency: seconds slept before answering each identity/Graph request.
    :param latency_per_record: further seconds slept per record of an ``/aos/audit`` page, so a
        full page answers slower than an empty one (0.0001 adds 100 ms to a page of 1000).
    :param max_concurrent: how many Graph requests may be in process at once; one more is answered
        429 at once, with ``Retry-After``. None = no limit. Identity and admin requests never count.
    :param fault_rate: probability that a Graph request gets a random fault.
    :param fault_kinds: faults drawn at random: any of "429", "500", "503", "drop".
    :param retry_after: ``Retry-After`` seconds sent with 429 and 503.
    :param discovery: False makes discovery answer 404, forcing the ``/connect/token`` fallback.
    :param client_id: the default client, registered with every scope.
    :param client_secret: the default client's secret.
    :param verbose: log one line per request to stderr.
    :param jobs_per_service: seeded backup/scan jobs per service, spread over the data range.
    :param spelling: where backup-jobs.md gives two spellings, "sample" answers as its samples do
        (``totalCount``, ``*Count`` in the M365 list, ``nextLink``, Salesforce ``state``), "table"
        as its tables do (``totalNumber``, ``*Number``, IaaS ``nextlink``, Salesforce ``status``).
    :param first_page_index: 0: M365/Salesforce ``pageIndex`` 0 is the first page (the tables);
        1: ``pageIndex`` 1 is the first page and 0 answers the same items (the samples, §8).
    :param scan_skip: ``/aos/jobs`` ``skip`` counts "items" (the table) or "pages" (the sample's
        nextLink, §8; the walk then ends on an empty page).
    :param restore_seconds: how long a job started by ``POST /backup/m365/restore/jobs`` runs.
    :param restore_outcome: how it ends: "succeeded", "failed" or "partial".
    :param opus_conflict_spelling: the conflict field's name in Opus ``failedItems`` items:
        "conflictOption" (the corrected spelling) or "confilictOption" (the one the docs say the
        response keeps).
    :param opus_invalid_record: a submitted record missing a required column (or with an empty
        ``rowKey``) is reported in ``failedItems`` of a 418 while the others are stored ("item"), or
        fails the whole call with 400 and nothing stored ("request").
    :param opus_due_empty_status: 200 (an empty ``queriedItems``, as the Opus page shows) or 204 (no
        body, as the general status page says) when no record is due.
    :param opus_destroy_status: 200 (``{statusCode: 200, message: null}``) or 204 (no body) for a
        destroy call in which every id succeeded.
    :param opus_message_style: ``message`` of an Opus 418: "string" or "list" (one text per failed
        item; the destroy table types it as a list).
    :param opus_retention_days: records with no disposal due date set explicitly are due this many
        days after their ``timeModified`` (when it parses as a date-time); None = not due.
    :param opus_restore_seconds: how long an Opus restore job started over HTTP runs.
    :param opus_restore_outcome: how it ends (unless its archive says otherwise): "finished",
        "failed", "partial", "stopped", "skipped" or "timed_out".
    :param opus_restore_failure_status: HTTP status of an Opus restore-API answer with
        ``success: false`` (undocumented): 400 or 200.
    :param opus_archives: (kind, scope) pairs that have archived data from the start; kind is
        "site_collection" (scope = site URL) or "teams_group" (scope = group email).
    """

    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port
    records: int = 50_000  # number of seeded audit records
    data_start: datetime = datetime(2026, 10, 1, tzinfo=UTC)
    data_end: datetime = datetime(2026, 12, 1, tzinfo=UTC)
    seed: int = 42
    page_size: int = 1000  # audit records per page
    token_ttl: int = 3600  # expires_in of minted tokens, seconds
    latency: float = 0.0  # seconds slept before answering each (non-admin) request
    latency_per_record: float = 0.0  # further seconds per record of an /aos/audit page
    max_concurrent: int | None = None  # Graph requests in process at once; None = unlimited
    fault_rate: float = 0.0  # probability that a Graph request gets a random fault
    fault_kinds: tuple[str, ...] = RANDOM_FAULT_KINDS
    retry_after: int = 1  # Retry-After seconds sent with 429 and 503
    discovery: bool = True  # False: discovery answers 404 (clients must fall back)
    client_id: str = "aos-demo-client"
    client_secret: str = "demo-secret-not-for-production"  # noqa: S105 - fake by design
    verbose: bool = False
    jobs_per_service: int = 60  # seeded jobs per backup/scan service
    spelling: str = "sample"  # "sample" | "table": which documented field spelling to serve
    first_page_index: int = 0  # 0 | 1: first M365/Salesforce pageIndex (1: pages 0 and 1 alike)
    scan_skip: str = "items"  # "items" | "pages": what /aos/jobs `skip` counts
    restore_seconds: float = 5.0  # run time of jobs started by the restore endpoint
    restore_outcome: str = "succeeded"  # how those restore jobs end
    opus_conflict_spelling: str = "conflictOption"  # or "confilictOption" (failedItems items)
    opus_invalid_record: str = "item"  # "item": 418 failedItems | "request": 400 for the call
    opus_due_empty_status: int = 200  # 200 | 204 when no record is due
    opus_destroy_status: int = 200  # 200 | 204 for a fully successful destroy
    opus_message_style: str = "string"  # "string" | "list": message of an Opus 418
    opus_retention_days: float | None = None  # derived disposal due = timeModified + days
    opus_restore_seconds: float = 5.0  # run time of Opus restore jobs started over HTTP
    opus_restore_outcome: str = "finished"  # how they end (see OPUS_RESTORE_OUTCOMES)
    opus_restore_failure_status: int = 400  # HTTP status of {success: false} answers
    opus_archives: tuple[tuple[str, str], ...] = OPUS_DEMO_ARCHIVES


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"{key} must be one of {allowed}")
    return value.lower()


def validated_settings(changes: Mapping[str, object]) -> dict[str, Any]:
    """Type-check and normalise runtime settings (they may come from admin JSON)."""
    unknown = set(changes) - RUNTIME_SETTINGS
    if unknown:
        raise ValueError(f"not a runtime setting: {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "discovery":
            if not isinstance(value, bool):
                raise ValueError("discovery must be a boolean")
            out[key] = value
        elif key == "fault_kinds":
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise ValueError("fault_kinds must be a list")
            kinds = tuple(str(k).lower() for k in value)
            bad = [k for k in kinds if k not in RANDOM_FAULT_KINDS]
            if bad or not kinds:
                raise ValueError(f"fault_kinds must be a non-empty subset of {RANDOM_FAULT_KINDS}")
            out[key] = kinds
        elif key == "spelling":
            out[key] = _choice(key, value, SPELLINGS)
        elif key == "scan_skip":
            out[key] = _choice(key, value, SCAN_SKIP_UNITS)
        elif key == "restore_outcome":
            out[key] = _choice(key, value, RESTORE_OUTCOMES)
        elif key == "opus_conflict_spelling":
            if not isinstance(value, str) or value.lower() not in {
                s.lower() for s in OPUS_CONFLICT_SPELLINGS
            }:
                raise ValueError(f"{key} must be one of {OPUS_CONFLICT_SPELLINGS}")
            out[key] = next(s for s in OPUS_CONFLICT_SPELLINGS if s.lower() == value.lower())
        elif key == "opus_invalid_record":
            out[key] = _choice(key, value, OPUS_INVALID_RECORD)
        elif key == "opus_message_style":
            out[key] = _choice(key, value, OPUS_MESSAGE_STYLES)
        elif key == "opus_restore_outcome":
            out[key] = _choice(key, value, tuple(OPUS_RESTORE_OUTCOMES))
        elif key in ("opus_retention_days", "max_concurrent") and value is None:
            out[key] = None
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number")
        elif key in ("opus_due_empty_status", "opus_destroy_status", "opus_restore_failure_status"):
            allowed = (200, 400) if key == "opus_restore_failure_status" else (200, 204)
            if value not in allowed:
                raise ValueError(f"{key} must be one of {allowed}")
            out[key] = int(value)
        elif key in ("opus_retention_days", "opus_restore_seconds"):
            if not 0 <= value <= 36_500:
                raise ValueError(f"{key} out of range")
            out[key] = float(value)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number")
        elif key == "first_page_index":
            if value not in (0, 1):
                raise ValueError("first_page_index must be 0 or 1")
            out[key] = int(value)
        elif key in ("latency", "latency_per_record", "fault_rate", "restore_seconds"):
            limit = {"fault_rate": 1.0, "latency": 3600.0, "latency_per_record": 60.0}.get(key, 86_400.0)
            if not 0 <= value <= limit:
                raise ValueError(f"{key} out of range")
            out[key] = float(value)
        else:  # retry_after, token_ttl, page_size, max_concurrent: whole numbers
            low = 1 if key in ("page_size", "max_concurrent") else 0
            if not float(value).is_integer() or value < low:
                raise ValueError(f"{key} must be a whole number >= {low}")
            out[key] = int(value)
    return out
