"""CLI: ``python -m airflow_provider_aos.emulator`` (console script ``aos-emulator``).

Prints one JSON "ready" line on stdout once serving, then runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import sys
import threading
from datetime import datetime
from types import FrameType

from .config import OPUS_CONFLICT_SPELLINGS, OPUS_RESTORE_OUTCOMES
from .data import to_utc
from .opus import KINDS as OPUS_KINDS
from .server import AosEmulator, EmulatorConfig


def _datetime(value: str) -> datetime:
    return to_utc(datetime.fromisoformat(value))  # a zone-less value is taken as UTC


def _fault_kinds(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _opus_archive(value: str) -> tuple[str, str]:
    kind, sep, scope = value.partition("=")
    if not sep or kind.strip() not in OPUS_KINDS or not scope.strip():
        raise argparse.ArgumentTypeError(f"use KIND=SCOPE with KIND one of {', '.join(OPUS_KINDS)}")
    return kind.strip(), scope.strip()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    d = EmulatorConfig()
    p = argparse.ArgumentParser(
        prog="aos-emulator",
        description="Local AOS identity service + Graph API emulator (audit, backup jobs, Opus). Prints one JSON ready line "
        "(URLs and the demo credentials) on stdout once serving, then runs until SIGINT/SIGTERM.",
    )
    p.add_argument(
        "--host",
        default=d.host,
        help="interface to bind (default: %(default)s); a non-loopback one needs --allow-remote",
    )
    p.add_argument(
        "--port",
        type=int,
        default=d.port,
        help="TCP port to listen on; 0 picks a free one, read it from the ready line (default: %(default)s)",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="permit a non-loopback --host, exposing the well-known fake credentials to the network",
    )
    p.add_argument(
        "--records",
        type=int,
        default=d.records,
        help="number of seeded audit records, spread over [--data-start, --data-end) (default: %(default)s)",
    )
    p.add_argument(
        "--data-start",
        type=_datetime,
        default=d.data_start,
        help="ISO 8601 time of the first possible record; no zone means UTC (default: %(default)s)",
    )
    p.add_argument(
        "--data-end",
        type=_datetime,
        default=d.data_end,
        help="ISO 8601 end (exclusive) of the seeded records; no zone means UTC (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help="random seed that makes the records and the random faults reproducible (default: %(default)s)",
    )
    p.add_argument(
        "--page-size",
        type=int,
        default=d.page_size,
        help="audit records per page of GET /aos/audit (default: %(default)s)",
    )
    p.add_argument(
        "--token-ttl",
        type=int,
        default=d.token_ttl,
        help="expires_in of the access tokens handed out, in seconds (default: %(default)s)",
    )
    p.add_argument(
        "--latency",
        type=float,
        default=d.latency,
        help="seconds slept before answering each identity or Graph request, to mimic a remote API (default: %(default)s)",
    )
    p.add_argument(
        "--latency-per-record",
        type=float,
        default=d.latency_per_record,
        metavar="SECONDS",
        help="further seconds slept per record of an audit page, so full pages answer slower than empty ones "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=d.max_concurrent,
        metavar="N",
        help="how many Graph requests may be in process at once; one more is answered 429 at once with "
        "Retry-After (default: no limit)",
    )
    p.add_argument(
        "--fault-rate",
        type=float,
        default=d.fault_rate,
        help="probability (0 to 1) that a Graph request gets a random fault from --fault-kinds "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--fault-kinds",
        type=_fault_kinds,
        default=d.fault_kinds,
        help="comma list of the random faults to draw from: 429, 500, 503, drop "
        f"(default: {','.join(d.fault_kinds)})",
    )
    p.add_argument(
        "--retry-after",
        type=int,
        default=d.retry_after,
        help="Retry-After seconds sent with 429 and 503 faults (default: %(default)s)",
    )
    p.add_argument(
        "--no-discovery",
        dest="discovery",
        action="store_false",
        help="make OpenID discovery answer 404, so clients must fall back to /connect/token",
    )
    p.add_argument(
        "--client-id",
        default=d.client_id,
        help="client ID of the default app registration, granted every scope (default: %(default)s)",
    )
    # The default secret is fake by design, but --help is no place to print a secret.
    p.add_argument(
        "--client-secret",
        default=d.client_secret,
        help="client secret of the default app registration (default: the built-in demo secret)",
    )
    p.add_argument(
        "--jobs-per-service",
        type=int,
        default=d.jobs_per_service,
        help="seeded backup/scan jobs per service, spread over the data range (default: %(default)s)",
    )
    p.add_argument(
        "--spelling",
        choices=("sample", "table"),
        default=d.spelling,
        help="field spellings where the docs give two: as in the samples (totalCount, *Count, nextLink, "
        "Salesforce state) or as in the tables (totalNumber, *Number, nextlink, status) (default: %(default)s)",
    )
    p.add_argument(
        "--first-page-index",
        type=int,
        choices=(0, 1),
        default=d.first_page_index,
        help="first page index of the M365 and Salesforce job lists; 1 makes pages 0 and 1 the same page "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--scan-skip",
        choices=("items", "pages"),
        default=d.scan_skip,
        help="what skip counts in the AOS scan job list's next links (default: %(default)s)",
    )
    p.add_argument(
        "--restore-seconds",
        type=float,
        default=d.restore_seconds,
        help="how long a Microsoft 365 restore job runs before it ends (default: %(default)s)",
    )
    p.add_argument(
        "--restore-outcome",
        choices=("succeeded", "failed", "partial"),
        default=d.restore_outcome,
        help="how Microsoft 365 restore jobs end (default: %(default)s)",
    )
    p.add_argument(
        "--opus-conflict-spelling",
        choices=OPUS_CONFLICT_SPELLINGS,
        default=d.opus_conflict_spelling,
        help="name of the conflict-option field in Opus failedItems items: the corrected spelling or the "
        "old one the docs say the response keeps (default: %(default)s)",
    )
    p.add_argument(
        "--opus-invalid-record",
        choices=("item", "request"),
        default=d.opus_invalid_record,
        help="how an Opus record missing a required column is answered: as a failed item of a 418 while "
        "the others are stored, or as a 400 for the whole call (default: %(default)s)",
    )
    p.add_argument(
        "--opus-due-empty-status",
        type=int,
        choices=(200, 204),
        default=d.opus_due_empty_status,
        help="status of the Opus due-records answer when nothing is due: 200 with an empty queriedItems "
        "or 204 with no body (default: %(default)s)",
    )
    p.add_argument(
        "--opus-destroy-status",
        type=int,
        choices=(200, 204),
        default=d.opus_destroy_status,
        help="status of a fully successful Opus destroy call: 200 with a body or 204 without (default: %(default)s)",
    )
    p.add_argument(
        "--opus-message-style",
        choices=("string", "list"),
        default=d.opus_message_style,
        help="message of an Opus 418 answer: one string, or a list with one text per failed item "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--opus-retention-days",
        type=float,
        default=d.opus_retention_days,
        help="make Opus records without an explicit disposal due date due this many days after their "
        "timeModified; unset means such records are never due (default: %(default)s)",
    )
    p.add_argument(
        "--opus-restore-seconds",
        type=float,
        default=d.opus_restore_seconds,
        help="how long an Opus restore job started over HTTP runs before it ends (default: %(default)s)",
    )
    p.add_argument(
        "--opus-restore-outcome",
        choices=tuple(OPUS_RESTORE_OUTCOMES),
        default=d.opus_restore_outcome,
        help="how Opus restore jobs end, unless their archive was given another outcome (default: %(default)s)",
    )
    p.add_argument(
        "--opus-restore-failure-status",
        type=int,
        choices=(200, 400),
        default=d.opus_restore_failure_status,
        help="HTTP status of Opus restore-API answers with success false, which the docs leave open "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--opus-archive",
        type=_opus_archive,
        action="append",
        default=[],
        metavar="KIND=SCOPE",
        help="give a scope archived data that Opus can restore, e.g. site_collection=https://contoso."
        "sharepoint.com/sites/Legal or teams_group=legal@contoso.com; repeatable, added to the demo archives",
    )
    p.add_argument(
        "--no-opus-demo-archives",
        dest="opus_demo_archives",
        action="store_false",
        help="start without the two built-in demo archives (a Contoso site collection and Team)",
    )
    p.add_argument("--verbose", action="store_true", help="log one line per request to stderr")
    p.add_argument(
        "--ready-file",
        help="also write the ready JSON line to this path, atomically (for callers that cannot read stdout)",
    )
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not _is_loopback(args.host) and not args.allow_remote:
        # The emulator hands out well-known fake credentials; keep it off the network by default.
        print(f"refusing non-loopback --host {args.host} without --allow-remote", file=sys.stderr)
        return 2
    d = EmulatorConfig()
    config = EmulatorConfig(
        host=args.host, port=args.port, records=args.records, data_start=args.data_start,
        data_end=args.data_end, seed=args.seed, page_size=args.page_size,
        token_ttl=args.token_ttl, latency=args.latency, latency_per_record=args.latency_per_record,
        max_concurrent=args.max_concurrent, fault_rate=args.fault_rate,
        fault_kinds=args.fault_kinds, retry_after=args.retry_after, discovery=args.discovery,
        client_id=args.client_id, client_secret=args.client_secret, verbose=args.verbose,
        jobs_per_service=args.jobs_per_service, spelling=args.spelling,
        first_page_index=args.first_page_index, scan_skip=args.scan_skip,
        restore_seconds=args.restore_seconds, restore_outcome=args.restore_outcome,
        opus_conflict_spelling=args.opus_conflict_spelling, opus_invalid_record=args.opus_invalid_record,
        opus_due_empty_status=args.opus_due_empty_status, opus_destroy_status=args.opus_destroy_status,
        opus_message_style=args.opus_message_style, opus_retention_days=args.opus_retention_days,
        opus_restore_seconds=args.opus_restore_seconds, opus_restore_outcome=args.opus_restore_outcome,
        opus_restore_failure_status=args.opus_restore_failure_status,
        opus_archives=(*(d.opus_archives if args.opus_demo_archives else ()), *args.opus_archive),
    )  # fmt: skip
    try:
        emulator = AosEmulator(config)
    except ValueError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before serving so a signal during start-up still ends the process cleanly.
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    emulator.start()
    try:
        line = json.dumps(emulator.ready_info())
        if args.ready_file:
            tmp = f"{args.ready_file}.tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(line + "\n")
            os.replace(tmp, args.ready_file)  # readers never see a half-written file
        print(line, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
