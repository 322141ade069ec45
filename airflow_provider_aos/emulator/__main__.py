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

from .data import to_utc
from .server import AosEmulator, EmulatorConfig


def _datetime(value: str) -> datetime:
    return to_utc(datetime.fromisoformat(value))  # a zone-less value is taken as UTC


def _fault_kinds(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


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
        prog="aos-emulator", description="Local AOS identity service + Graph audit API emulator."
    )
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port, help="0 picks a free port")
    p.add_argument("--allow-remote", action="store_true", help="permit a non-loopback --host")
    p.add_argument("--records", type=int, default=d.records)
    p.add_argument("--data-start", type=_datetime, default=d.data_start)
    p.add_argument("--data-end", type=_datetime, default=d.data_end)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--page-size", type=int, default=d.page_size)
    p.add_argument("--token-ttl", type=int, default=d.token_ttl)
    p.add_argument("--latency", type=float, default=d.latency, help="seconds per request")
    p.add_argument("--fault-rate", type=float, default=d.fault_rate)
    p.add_argument("--fault-kinds", type=_fault_kinds, default=d.fault_kinds,
                   help="comma list of 429,500,503,drop")  # fmt: skip
    p.add_argument("--retry-after", type=int, default=d.retry_after)
    p.add_argument("--no-discovery", dest="discovery", action="store_false")
    p.add_argument("--client-id", default=d.client_id)
    p.add_argument("--client-secret", default=d.client_secret)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--ready-file", help="also write the ready JSON to this path")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not _is_loopback(args.host) and not args.allow_remote:
        # The emulator hands out well-known fake credentials; keep it off the network by default.
        print(f"refusing non-loopback --host {args.host} without --allow-remote", file=sys.stderr)
        return 2
    config = EmulatorConfig(
        host=args.host, port=args.port, records=args.records, data_start=args.data_start,
        data_end=args.data_end, seed=args.seed, page_size=args.page_size,
        token_ttl=args.token_ttl, latency=args.latency, fault_rate=args.fault_rate,
        fault_kinds=args.fault_kinds, retry_after=args.retry_after, discovery=args.discovery,
        client_id=args.client_id, client_secret=args.client_secret, verbose=args.verbose,
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
