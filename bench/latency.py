"""
Benchmark: the audit export against a slow API, at max_concurrency 1, 4 and 8.

    python bench/latency.py                  # 200k records, 100 ms per request, 5 rounds; prints a table
    python bench/latency.py --readme         # the same, and records the table in bench/README.md
    python bench/latency.py --records 50000 --repeat 1    # a quick look

One emulator subprocess holds ``--records`` records spread over one day (2026-11-01, UTC) in pages
of 1000, and sleeps ``--latency`` seconds before answering each request (``--latency`` of the
emulator: identity requests included). The operator exports that day, so its window is cut into 24
slices of one hour. Each concurrency runs in a fresh child process (``bench/child.py ours-cN``), the
order rotated each round. Every output is checked: the record count equals the emulator's
(``GET {admin_url}/audit/count``) and the files of every concurrency and round are byte-identical.

Target (a ratio within one run): max_concurrency 8 at least 5x faster than 1 (wall time).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from run import (
    PAGE_SIZE,
    BenchError,
    Result,
    admin,
    by_round,
    emulator,
    machine,
    print_counters,
    run_one,
    update_readme,
    verdict,
    verify_round,
)

DAY_START = "2026-11-01T00:00:00.000Z"
DAY_END = "2026-11-02T00:00:00.000Z"
SPEEDUP_TARGET = 5.0
MARK_START = "<!-- latency:start -->"
MARK_END = "<!-- latency:end -->"


def bench(args: argparse.Namespace, workdir: Path) -> tuple[list[Result], dict[str, Any]]:
    methods = [f"ours-c{n}" for n in args.concurrency_list]
    runs: dict[str, list[Result]] = {m: [] for m in methods}
    extra = ["--latency", str(args.latency)]
    with emulator(args.records, workdir, DAY_START, DAY_END, extra) as info:
        expected = admin(info, "GET", f"/audit/count?startTime={DAY_START}&endTime={DAY_END}")["count"]
        if expected != args.records:
            raise BenchError(f"the emulator counts {expected} records in the day, not {args.records}")
        reference: dict[str, Any] = {}
        for rep in range(args.repeat):
            shift = rep % len(methods)
            round_ = []
            for method in [*methods[shift:], *methods[:shift]]:
                result, out = run_one(
                    method,
                    args.records,
                    info,
                    workdir,
                    start=DAY_START,
                    end=DAY_END,
                    tag="-latency",
                    options=args.options,
                )
                round_.append((result, out))
                runs[method].append(result)
                manifest = result.manifest or {}
                print(
                    f"  {method:<8} run {rep + 1}: {result.records:,} records, {result.pages} pages in "
                    f"{manifest.get('slices')} slices, {result.wall_s:6.2f} s, CPU {result.cpu_s:5.2f} s "
                    f"(emulator {result.emulator_cpu_s:5.2f} s, others {result.others_cpu_s:4.1f} s), up to {manifest.get('max_concurrency_used')} "
                    f"requests at once (emulator saw {result.max_in_flight}), peak RSS {result.peak_rss_mib:.0f} MiB",
                    flush=True,
                )
                print_counters(result)
            verify_round(round_, expected, reference)  # same count, byte-identical to every other
    requests = {r.audit_requests for rs in runs.values() for r in rs}
    if len(requests) != 1:
        raise BenchError(f"the concurrencies made different numbers of audit requests: {sorted(requests)}")
    best = []
    for method in methods:
        fastest = min(runs[method], key=lambda r: r.wall_s)
        fastest.peak_rss_mib = max(r.peak_rss_mib for r in runs[method])
        fastest.walls = tuple(r.wall_s for r in runs[method])
        fastest.cpus = tuple(r.cpu_s for r in runs[method])
        fastest.others = tuple(r.others_cpu_s for r in runs[method])
        best.append(fastest)
    return best, {"expected": expected, "sha": reference["ours_sha"][0]}


def floor_s(result: Result, latency: float) -> float:
    """
    The least wall time at this concurrency if each request cost exactly ``latency``: the token and
    discovery requests, then the slices' pages, one slice's pages one after another, N slices at once
    (slices of equal size: the records are spread evenly).
    """
    n = int(result.method.removeprefix("ours-c"))
    slices = int((result.manifest or {}).get("slices") or 1)
    per_slice = result.audit_requests / slices
    return (2 + math.ceil(slices / n) * per_slice) * latency


def report(
    results: Sequence[Result], facts: dict[str, Any], args: argparse.Namespace, elapsed: float
) -> tuple[str, bool]:
    one = next(r for r in results if r.method == "ours-c1")
    rows = [
        "| max_concurrency | wall (s) [every run] | records/s | speed-up vs 1 [round by round] "
        "| latency floor (s) | client CPU (s) | emulator CPU (s) | others' CPU (s) [every run] "
        "| audit requests | most requests at once (ours / emulator) | peak RSS (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rounds = sorted(o / w for o, w in zip(one.walls, r.walls, strict=True))
        manifest = r.manifest or {}
        rows.append(
            f"| {r.method.removeprefix('ours-c')} | {r.wall_s:.2f} [{', '.join(f'{w:.2f}' for w in r.walls)}] "
            f"| {r.records / r.wall_s:,.0f} | {one.wall_s / r.wall_s:.2f}x [{rounds[0]:.2f}x-{rounds[-1]:.2f}x] "
            f"| {floor_s(r, args.latency):.1f} | {min(r.cpus):.2f} | {r.emulator_cpu_s:.2f} "
            f"| {max(r.others_cpu_s, 0):.1f} [{', '.join(f'{max(o, 0):.1f}' for o in r.others)}] | {r.audit_requests} "
            f"| {manifest.get('max_concurrency_used')} / {r.max_in_flight} | {r.peak_rss_mib:.0f} |"
        )
    lines = []
    ok = True
    eight = next((r for r in results if r.method == "ours-c8"), None)
    if eight is not None:
        speedup = one.wall_s / eight.wall_s
        rounds, described = by_round(one, eight)
        text, ok = verdict(speedup, SPEEDUP_TARGET, rounds, at_most=False)
        lines.append(
            f"- Speed-up, max_concurrency 8 over 1: {one.wall_s:.2f} / {eight.wall_s:.2f} s = **{speedup:.2f}x** "
            f"(target ≥ {SPEEDUP_TARGET:.0f}x: {text}). {described}. With each request costing exactly the "
            f"latency it would be {floor_s(one, args.latency) / floor_s(eight, args.latency):.2f}x."
        )
    lines.append(
        f"- Verified: every run wrote the emulator's {facts['expected']:,} records for the day, and all "
        f"{len(results) * args.repeat} files are byte-identical (sha256 {facts['sha'][:16]}...)."
    )
    text = "\n".join(
        [
            f"Last run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
            f"`{' '.join(['python', 'bench/latency.py', *args.argv])}` ({elapsed:.0f} s in all): "
            f"{args.records:,} records over {DAY_START[:10]} in pages of {PAGE_SIZE}, {args.latency * 1000:.0f} ms "
            f"latency per request. Time: the fastest of each concurrency's runs; RSS: the highest.",
            "",
            f"Machine: {machine()}. Load average (1 min) at the start {args.load_before:.2f}, at the end "
            f"{os.getloadavg()[0]:.2f}.",
            "",
            *rows,
            "",
            *lines,
        ]
    )
    return text, ok


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=200_000, help="records in the day (default %(default)s)")
    p.add_argument("--latency", type=float, default=0.1, help="seconds per request (default %(default)s)")
    p.add_argument(
        "--concurrency", default="1,4,8", help="max_concurrency values (default %(default)s; 1 needed)"
    )
    p.add_argument("--repeat", type=int, default=5, help="rounds (default %(default)s)")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a child.py experiment switch for every run, e.g. full_limit=1, counters=1 (not for the README)",
    )
    p.add_argument("--readme", action="store_true", help="write the results into bench/README.md")
    p.add_argument("--workdir", help="where the output files and logs go (default: a temporary folder)")
    args = p.parse_args(argv)
    args.argv = argv
    args.options = dict(o.split("=", 1) for o in args.option)
    if args.options and args.readme:
        p.error("--option runs are experiments: not written into the README")
    args.concurrency_list = sorted({int(n) for n in args.concurrency.split(",") if n.strip()})
    if 1 not in args.concurrency_list or args.records < 1 or args.repeat < 1 or args.latency < 0:
        p.error("--concurrency must include 1; --records and --repeat at least 1; --latency not negative")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.load_before = os.getloadavg()[0]
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="aos-latency-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    try:
        results, facts = bench(args, workdir)
    except BenchError as exc:
        print(f"\nBENCHMARK FAILED: {exc}\n(workdir kept: {workdir})", file=sys.stderr)
        return 1
    text, ok = report(results, facts, args, (dt.datetime.now(dt.UTC) - started).total_seconds())
    print("\n" + text)
    if args.readme:
        update_readme(text, MARK_START, MARK_END)
        print(f"\nWrote the results into {Path(__file__).resolve().parent / 'README.md'}")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nTarget " + ("holds." if ok else "does NOT hold (see above)."))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
