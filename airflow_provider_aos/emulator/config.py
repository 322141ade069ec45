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
RUNTIME_SETTINGS: frozenset[str] = frozenset(
    {
        "latency", "fault_rate", "fault_kinds", "retry_after", "token_ttl", "page_size", "discovery",
        "spelling", "first_page_index", "scan_skip", "restore_seconds", "restore_outcome",
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
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number")
        elif key == "first_page_index":
            if value not in (0, 1):
                raise ValueError("first_page_index must be 0 or 1")
            out[key] = int(value)
        elif key in ("latency", "fault_rate", "restore_seconds"):
            limit = {"fault_rate": 1.0, "latency": 3600.0}.get(key, 86_400.0)
            if not 0 <= value <= limit:
                raise ValueError(f"{key} out of range")
            out[key] = float(value)
        else:  # retry_after, token_ttl, page_size: whole numbers
            if not float(value).is_integer() or value < (1 if key == "page_size" else 0):
                raise ValueError(f"{key} must be a non-negative integer (page_size >= 1)")
            out[key] = int(value)
    return out
