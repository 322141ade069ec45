"""
Benchmark: export N audit records from the emulator to a local JSON Lines file, against a raw loop.

    python bench/run.py                      # 100k and 1M; updates bench/README.md
    python bench/run.py --quick              # 20k and 100k, once; README untouched
    python bench/run.py --sizes 50000 --repeat 3 --no-readme --methods raw,ours-c1,ours-c4

For each size, one emulator subprocess serves the records (spread over exactly 7 days, 1000 per
page). Each method runs in a fresh subprocess (``bench/child.py``) that reports records written,
wall time, CPU and peak RSS: ``raw`` (fetch every page, parse and write nothing: the floor),
``ours-c1`` and ``ours-c4`` (AosAuditExportOperator at max_concurrency 1 and 4), ``naive`` and
``httpop`` (the older baselines). The outputs are checked: each holds exactly the emulator's count
of records for the window; ours is byte-identical at every concurrency; the baselines hold the same
records (byte for byte, or parsed where they re-encode differently). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import resource
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
README = BENCH / "README.md"
START = "2026-11-01T00:00:00.000Z"
END = "2026-11-08T00:00:00.000Z"  # exactly 7 days: the API's largest window
PAGE_SIZE = 1000
METHODS = ("raw", "ours-c1", "ours-c4", "naive", "httpop")
BASELINES = {
    "raw": "raw httpx loop (no parsing, no file)",
    "naive": "naive requests loop",
    "httpop": "HttpOperator + pagination_function",
}
OURS = "ours-c"
RAW_LIMIT = 1.15
"""Target: ours' wall time at the largest size within this factor of the raw loop's."""
RSS_GROWTH_LIMIT = 1.10
"""Target: ours' peak RSS at the largest size within this factor of at the smallest."""
SMALL = 200_000
"""Above this many records only ``--large-methods`` run (by default not the slow, memory-bound baselines)."""
MARK_START = "<!-- results:start -->"
MARK_END = "<!-- results:end -->"


class BenchError(RuntimeError):
    """A run failed or wrote the wrong records: the numbers would mean nothing."""


def is_ours(method: str) -> bool:
    return method.startswith(OURS)


def label(method: str) -> str:
    if is_ours(method):
        return f"AosAuditExportOperator, max_concurrency={method[len(OURS) :]}"
    return BASELINES[method]


@dataclass
class Result:
    size: int
    method: str
    records: int
    pages: int
    audit_requests: int
    wall_s: float
    cpu_s: float
    emulator_cpu_s: float
    baseline_rss_mib: float
    peak_rss_mib: float
    bytes: int
    others_cpu_s: float = float("nan")
    """CPU the rest of the machine (other processes than the child and the emulator) used meanwhile."""
    max_in_flight: int = 0
    """The most Graph requests the emulator had in process at once (its ``max_concurrent_seen``)."""
    counters: dict[str, Any] | None = None
    """With ``--option counters=1``: time spent in the export's steps (see child.install_counters)."""
    manifest: dict[str, Any] | None = None
    """Ours: the manifest's slices, max_concurrency_used, throttled_requests."""
    walls: tuple[float, ...] = ()
    """Wall time of every run of this method at this size, in repeat order (filled for the best run)."""
    cpus: tuple[float, ...] = ()
    others: tuple[float, ...] = ()

    @property
    def rate(self) -> float:
        return self.records / self.wall_s


# -- emulator -----------------------------------------------------------------------------------


@contextlib.contextmanager
def emulator(
    records: int, workdir: Path, start: str = START, end: str = END, extra: Sequence[str] = ()
) -> Iterator[dict[str, Any]]:
    """An emulator subprocess with ``records`` records over [start, end); yields its ready info."""
    log = (workdir / f"emulator-{records}.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "airflow_provider_aos.emulator", "--port", "0",
            "--records", str(records), "--data-start", start, "--data-end", end,
            "--page-size", str(PAGE_SIZE), *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=log,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=60):
                raise BenchError("the emulator printed no ready line within 60 s")
        line = proc.stdout.readline()
        if not line:
            raise BenchError(f"the emulator exited ({proc.wait()}); see {log.name}")
        yield json.loads(line)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process (Linux /proc), e.g. the emulator's."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def admin(info: dict[str, Any], method: str, path: str) -> Any:
    url = f"{info['admin_url']}{path}"  # the loopback emulator we started
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)  # noqa: S310
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        return json.loads(response.read())


# -- one run ------------------------------------------------------------------------------------


def child_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    home = workdir / "airflow-home"
    home.mkdir(exist_ok=True)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        PYTHONHASHSEED="0",
    )
    return env


def run_one(
    method: str,
    size: int,
    info: dict[str, Any],
    workdir: Path,
    *,
    start: str = START,
    end: str = END,
    tag: str = "",
    profile: Path | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[Result, Path]:
    """One export by ``method`` in a fresh child process; its result and output file."""
    name = f"{method}-{size}{tag}"
    out = workdir / f"{name}.jsonl"
    result_file = workdir / f"{name}.result.json"
    out.unlink(missing_ok=True)
    result_file.unlink(missing_ok=True)
    job = {
        **{k: info[k] for k in ("graph_url", "identity_url", "token_url", "client_id", "client_secret")},
        "start": start,
        "end": end,
        "out": str(out),
        "result": str(result_file),
        "emulator_pid": info["pid"],
    }
    if profile is not None:
        job["profile"] = str(profile)
    job.update(options or {})  # child.py's experiment switches (counters, full_limit, ...)
    admin(info, "POST", "/reset")
    emulator_cpu = process_cpu_seconds(info["pid"])
    log = workdir / f"{name}.log"
    with log.open("wb") as fh:
        code = subprocess.call(
            [sys.executable, str(BENCH / "child.py"), method, json.dumps(job)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=child_env(workdir),
            cwd=workdir,
        )
    if code != 0 or not result_file.exists():
        tail = log.read_text(errors="replace")[-3000:]
        raise BenchError(f"{method} at {size} failed (exit {code}); log {log}:\n{tail}")
    emulator_cpu = process_cpu_seconds(info["pid"]) - emulator_cpu
    raw = json.loads(result_file.read_text())
    stats = admin(info, "GET", "/stats")
    return (
        Result(
            size=size,
            method=method,
            records=raw["records"],
            pages=raw["pages"],
            audit_requests=stats["audit"],
            wall_s=raw["wall_s"],
            cpu_s=raw["cpu_s"],
            emulator_cpu_s=raw.get("emulator_cpu_s", emulator_cpu),  # over the timed span only
            others_cpu_s=raw.get("others_cpu_s", float("nan")),
            baseline_rss_mib=raw["baseline_rss_mib"],
            peak_rss_mib=raw["peak_rss_mib"],
            bytes=raw["bytes"],
            max_in_flight=int(stats.get("max_concurrent_seen", 0)),
            manifest=raw.get("manifest"),
            counters=raw.get("counters"),
        ),
        out,
    )


def print_counters(result: Result) -> None:
    """The step timings of a run with ``--option counters=1`` (thread CPU and wall, summed over threads)."""
    counted = 0.0
    for name, c in (result.counters or {}).items():
        print(f"      {name:<14} {c['calls']:6} calls, CPU {c['cpu_s']:6.2f} s, wall {c['wall_s']:7.2f} s")
        counted += c["cpu_s"] if name != "wait for page" else 0.0
    if result.counters:
        print(
            f"      {'not counted':<14} {'':6}        CPU {result.cpu_s - counted:6.2f} s (set-up, threads, ...)"
        )


def digest(path: Path) -> tuple[int, str]:
    """(line count, sha256) of a file."""
    sha, lines = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            lines += chunk.count(b"\n")
    return lines, sha.hexdigest()


def first_difference(a: Path, b: Path) -> str:
    with a.open("rb") as fa, b.open("rb") as fb:
        for number, (la, lb) in enumerate(zip(fa, fb, strict=False), start=1):
            if la != lb:
                return f"line {number}:\n  {a.name}: {la[:300]!r}\n  {b.name}: {lb[:300]!r}"
    return "one file is a prefix of the other"


def check_count(result: Result, out: Path, expected: int) -> str:
    """Fail unless the file holds exactly ``expected`` records (lines); its sha256."""
    lines, sha = digest(out)
    problems = []
    if result.records != expected:
        problems.append(f"reported {result.records} records")
    if lines != expected:
        problems.append(f"wrote {lines} lines")
    if problems:
        raise BenchError(
            f"{result.method} at {result.size}: the emulator holds {expected} records for the window but "
            f"the method {' and '.join(problems)}"
        )
    return sha


def same_records(ours: Path, other: Path) -> int:
    """
    Fail unless ``other`` holds the records of ``ours`` in the same order: each line the same bytes,
    or the same JSON once parsed (a baseline that re-encodes with ``ensure_ascii=False`` writes
    non-ASCII text where the API sent ``\\uXXXX``). Returns how many lines differed only in bytes.
    """
    reencoded = 0
    with ours.open("rb") as fa, other.open("rb") as fb:
        for number, (la, lb) in enumerate(zip(fa, fb, strict=True), start=1):
            if la != lb:
                if json.loads(la) != json.loads(lb):
                    raise BenchError(
                        f"{other.name} holds other records than {ours.name}: first difference at "
                        f"{first_difference(ours, other)} (line {number})"
                    )
                reencoded += 1
    return reencoded


def verify_round(
    round_: list[tuple[Result, Path]], expected: int, reference: dict[str, Any], *, keep: bool = False
) -> None:
    """
    Check one round (every method once): counts; ours byte-identical at every concurrency and to
    earlier rounds; the baselines' files the same records as ours; the raw loop fetched every page.
    The files are removed afterwards (unless ``keep``).
    """
    ours_file: Path | None = None
    for result, out in round_:
        if result.method == "raw":
            pages = -(-expected // PAGE_SIZE)
            if result.pages != pages or result.audit_requests != pages:
                raise BenchError(
                    f"raw at {result.size}: {result.pages} pages read and {result.audit_requests} audit "
                    f"requests seen, {pages} expected ({expected} records)"
                )
            if reference.setdefault("raw_bytes", result.bytes) != result.bytes:
                raise BenchError(
                    f"raw at {result.size} received {result.bytes} bytes, before {reference['raw_bytes']}"
                )
            continue
        sha = check_count(result, out, expected)
        if is_ours(result.method):
            if reference.setdefault("ours_sha", (sha, result.method))[0] != sha:
                was = reference["ours_sha"][1]
                raise BenchError(
                    f"{result.method} at {result.size} wrote other bytes than {was} "
                    f"(sha256 {sha[:12]} vs {reference['ours_sha'][0][:12]})"
                    + (f"; first difference at {first_difference(ours_file, out)}" if ours_file else "")
                )
            ours_file = ours_file or out
    for result, out in round_:
        if result.method != "raw" and not is_ours(result.method):
            if ours_file is None:
                raise BenchError(f"{result.method}: no output of ours in the round to compare with")
            reference[f"reencoded_{result.method}"] = same_records(ours_file, out)
    if not keep:
        for _, out in round_:
            out.unlink(missing_ok=True)


# -- the whole benchmark ------------------------------------------------------------------------


def bench_size(
    size: int, repeat: int, methods: Sequence[str], workdir: Path, options: dict[str, Any] | None = None
) -> list[Result]:
    """Every method ``repeat`` times against one emulator; the best throughput and the highest peak RSS."""
    runs: dict[str, list[Result]] = {m: [] for m in methods}
    with emulator(size, workdir) as info:
        expected = admin(info, "GET", f"/audit/count?startTime={START}&endTime={END}")["count"]
        if expected != size:
            raise BenchError(f"the emulator counts {expected} records in the window, not {size}")
        reference: dict[str, Any] = {}
        for rep in range(repeat):
            shift = rep % len(methods)
            order = [*methods[shift:], *methods[:shift]]  # rotate: no method always first
            round_ = []
            for method in order:
                result, out = run_one(method, size, info, workdir, options=options)
                round_.append((result, out))
                runs[method].append(result)
                print(
                    f"  {size:>9,} {method:<8} run {rep + 1}: {result.records:,} records, {result.pages} pages "
                    f"({result.audit_requests} audit requests), {result.wall_s:6.2f} s, "
                    f"{size / result.wall_s:9,.0f} rec/s, CPU {result.cpu_s:5.2f} s "
                    f"(emulator {result.emulator_cpu_s:5.2f} s, others {result.others_cpu_s:5.1f} s), "
                    f"peak RSS {result.peak_rss_mib:7.1f} MiB",
                    flush=True,
                )
                print_counters(result)
            verify_round(round_, expected, reference)
        for key in sorted(k for k in reference if k.startswith("reencoded_") and reference[k]):
            print(f"  note: {key[10:]} wrote {reference[key]:,} line(s) in other bytes but the same records")
    # Ours makes the same requests at every concurrency (one walk per slice); the baselines one walk.
    for group in ([m for m in methods if is_ours(m)], [m for m in methods if not is_ours(m)]):
        counts = {r.audit_requests for m in group for r in runs[m]}
        if len(counts) > 1:
            raise BenchError(
                f"{', '.join(group)} made different numbers of audit requests at {size}: {sorted(counts)}"
            )
    best: list[Result] = []
    for method in methods:
        fastest = min(runs[method], key=lambda r: r.wall_s)
        highest = max(runs[method], key=lambda r: r.peak_rss_mib)
        fastest.peak_rss_mib = highest.peak_rss_mib
        fastest.baseline_rss_mib = highest.baseline_rss_mib
        fastest.walls = tuple(r.wall_s for r in runs[method])
        fastest.cpus = tuple(r.cpu_s for r in runs[method])
        fastest.others = tuple(r.others_cpu_s for r in runs[method])
        best.append(fastest)
    return best


def table(results: Sequence[Result]) -> str:
    rows = [
        "| records | method | wall (s) [every run] | records/s | client CPU (s) | emulator CPU (s) "
        "| others' CPU (s) [every run] | audit requests | baseline RSS (MiB) | peak RSS (MiB) "
        "| peak - baseline (MiB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r.size:,} | {label(r.method)} | {r.wall_s:.2f} [{', '.join(f'{w:.2f}' for w in r.walls)}] "
            f"| {r.size / r.wall_s:,.0f} | {r.cpu_s:.2f} "
            f"| {r.emulator_cpu_s:.2f} | {max(r.others_cpu_s, 0):.1f} [{', '.join(f'{max(o, 0):.1f}' for o in r.others)}] "
            f"| {r.audit_requests:,} | {r.baseline_rss_mib:.0f} "
            f"| {r.peak_rss_mib:.0f} | {r.peak_rss_mib - r.baseline_rss_mib:.0f} |"
        )
    return "\n".join(rows)


def spread(values: Sequence[float]) -> str:
    values = sorted(values)
    return f"{values[0]:.2f}x-{values[-1]:.2f}x" if len(values) > 1 else f"{values[0]:.2f}x"


QUIET = 0.05
"""A run is quiet when the rest of the machine used less CPU meanwhile than this share of its wall time."""


def by_round(top: Result, bottom: Result) -> tuple[list[float], str]:
    """
    The ratio top wall / bottom wall of each round (the two runs back to back), and a description:
    range, median, and the rounds in which both runs were quiet (:data:`QUIET`).
    """
    pairs = list(zip(top.walls, top.others, bottom.walls, bottom.others, strict=True))
    values = [t / b for t, _, b, _ in pairs]
    quiet = [t / b for t, to, b, bo in pairs if to < QUIET * t and bo < QUIET * b]
    text = f"Round by round: {spread(values)}, median {statistics.median(values):.2f}x"
    if quiet:
        text += f"; in the {len(quiet)} quiet round(s): {', '.join(f'{q:.2f}x' for q in quiet)}"
    else:
        text += "; no quiet round"
    return values, text


def verdict(value: float, limit: float, rounds: Sequence[float], *, at_most: bool) -> tuple[str, bool]:
    """
    Whether ``value`` (best run over best run) and the median round both meet ``limit``; when not,
    whether some round met it (then: within the noise).
    """

    def meets(v: float) -> bool:
        return v <= limit if at_most else v >= limit

    if meets(value) and meets(statistics.median(rounds)):
        return "holds", True
    if meets(value):
        return "holds for the best runs, not for the median round", False
    if any(meets(v) for v in rounds):
        return "not shown: within this run's round-to-round spread", False
    return "does NOT hold", False


def ratios(results: Sequence[Result]) -> tuple[list[str], bool]:
    """The targets, as ratios within this run; and whether they all hold."""
    by = {(r.size, r.method): r for r in results}
    sizes = sorted({r.size for r in results})
    ours = [m for m in dict.fromkeys(r.method for r in results) if is_ours(m)]
    lines, ok = [], True
    large = sizes[-1]
    # 1. ours within RAW_LIMIT of the raw loop at the largest size (wall time; best of each).
    if (large, "raw") in by:
        raw = by[(large, "raw")]
        for method in ours:
            mine = by[(large, method)]
            value = mine.wall_s / raw.wall_s
            rounds, described = by_round(mine, raw)
            text, holds = verdict(value, RAW_LIMIT, rounds, at_most=True)
            ok &= holds
            lines.append(
                f"- Wall time at {large:,}, {method} / raw loop = {mine.wall_s:.2f} / {raw.wall_s:.2f} s = "
                f"**{value:.2f}x** (target ≤ {RAW_LIMIT}x: {text}). {described}. "
                f"Client CPU (least of the runs) {method} / raw: {min(mine.cpus):.2f} / {min(raw.cpus):.2f} s."
            )
        for size in sizes[:-1]:
            raw = by[(size, "raw")]
            parts = [f"{m} {by[(size, m)].wall_s / raw.wall_s:.2f}x" for m in ours]
            lines.append(f"- Wall time at {size:,} / raw loop (no target): {', '.join(parts)}.")
    # 2. memory flat.
    if len(sizes) >= 2:
        for method in ours:
            small, big = by[(sizes[0], method)], by[(large, method)]
            growth = big.peak_rss_mib / small.peak_rss_mib
            holds = growth <= RSS_GROWTH_LIMIT
            ok &= holds
            lines.append(
                f"- Memory, {method}: peak RSS at {large:,} / at {sizes[0]:,} = {big.peak_rss_mib:.0f} / "
                f"{small.peak_rss_mib:.0f} MiB = **{growth:.2f}x** (target ≤ {RSS_GROWTH_LIMIT}x: "
                f"{'holds' if holds else 'does NOT hold'})"
            )
    # 3. max_concurrency 4 no slower than 1.
    if "ours-c1" in ours and "ours-c4" in ours:
        for size in sizes:
            one, four = by[(size, "ours-c1")], by[(size, "ours-c4")]
            value = one.wall_s / four.wall_s
            rounds, described = by_round(one, four)
            text, holds = verdict(value, 1.0, rounds, at_most=False)
            ok &= holds
            lines.append(
                f"- Records/s at {size:,}, ours-c4 / ours-c1 = {size / four.wall_s:,.0f} / {size / one.wall_s:,.0f} = "
                f"**{value:.2f}x** (target ≥ 1.00x: {text}). {described}."
            )
    # Not a target: where the older baselines stand.
    for size in sizes:
        parts = []
        for base in ("naive", "httpop"):
            if (size, base) in by and ours:
                mine = by[(size, ours[-1])]
                parts.append(f"{ours[-1]} / {base} = {by[(size, base)].wall_s / mine.wall_s:.2f}x")
        if parts:
            lines.append(f"- Records/s at {size:,} (no target): {', '.join(parts)}.")
    return lines, ok


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        match = re.search(r"^model name\s*:\s*(.+)$", fh.read(), re.MULTILINE)
        if match:
            cpu = match.group(1).strip()
    mem = ""
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="ascii") as fh:
        mem = f", {int(fh.readline().split()[1]) / 1024 / 1024:.0f} GiB RAM"
    versions = []
    for module in ("airflow", "airflow.providers.http", "requests", "httpx", "msgspec"):
        with contextlib.suppress(Exception):
            out = subprocess.run(
                [sys.executable, "-c", f"import {module} as m; print(getattr(m, '__version__', '?'))"],
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, "AIRFLOW_HOME": tempfile.gettempdir()},
            ).stdout.strip()
            versions.append(f"{module} {out.splitlines()[-1] if out else '?'}")
    return (
        f"{os.cpu_count()} CPU cores ({cpu}){mem}, Linux {platform.release()}, "
        f"Python {platform.python_version()}, {', '.join(versions)}"
    )


def report(results: Sequence[Result], args: argparse.Namespace, elapsed: float) -> tuple[str, bool]:
    ratio_lines, ok = ratios(results)
    text = "\n".join(
        [
            f"Last run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, `{' '.join(['python', 'bench/run.py', *args.argv])}`"
            f" ({elapsed:.0f} s in all). Time: the fastest of each method's runs; RSS: the highest.",
            "",
            f"Machine: {machine()}. Load average (1 min) at the start {args.load_before:.2f}, at the end "
            f"{os.getloadavg()[0]:.2f}: other work on the machine slows the wall-clock numbers.",
            "",
            table(results),
            "",
            *ratio_lines,
        ]
    )
    return text, ok


def update_readme(text: str, start: str = MARK_START, end: str = MARK_END) -> None:
    """Replace the README's section between the ``start`` and ``end`` markers with ``text``."""
    readme = README.read_text(encoding="utf-8")
    if start not in readme or end not in readme:
        raise BenchError(f"{README} has no {start} ... {end} section to update")
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    README.write_text(f"{head}{start}\n{text}\n{end}{tail}", encoding="utf-8")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000", help="comma list of record counts (default 100k,1M)")
    p.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma list of methods: {OURS}N (any N), {', '.join(BASELINES)} (default: %(default)s)",
    )
    p.add_argument("--quick", action="store_true", help="20k and 100k, one run each, README untouched")
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per method and size (default: 5; 1 with --quick)",
    )
    p.add_argument(
        "--large-methods",
        default="raw,ours-c1,ours-c4",
        help=f"of --methods, those that also run above {SMALL:,} records, or 'all' (default: %(default)s: the "
        "naive and HttpOperator baselines take ~35 s each at 1M and hold every record or page in memory)",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a child.py switch for every run: counters=1 (step timings, printed), full_limit=1, "
        "switch_interval=S (experiments: implies --no-readme)",
    )
    p.add_argument("--no-readme", action="store_true", help="do not write the results into bench/README.md")
    p.add_argument("--workdir", help="where the output files go (default: a temporary folder, removed after)")
    args = p.parse_args(argv)
    args.argv = argv
    if args.quick:
        args.sizes, args.no_readme = "20000,100000", True
        args.repeat = args.repeat or 1
    args.size_list = sorted(int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip())
    args.options = dict(o.split("=", 1) for o in args.option)
    args.no_readme = args.no_readme or bool(args.options)
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    large = {m.strip() for m in args.large_methods.split(",")}
    args.large_list = [m for m in args.method_list if args.large_methods == "all" or m in large]
    for method in args.method_list:
        if not (method in BASELINES or (is_ours(method) and method[len(OURS) :].isdigit())):
            p.error(f"unknown method {method!r}")
    if not args.size_list or min(args.size_list) <= 0 or (args.repeat is not None and args.repeat < 1):
        p.error("--sizes needs positive record counts and --repeat at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.load_before = os.getloadavg()[0]
    # HttpOperator opens a new session per page and keeps every response (and so its socket).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard)
            )
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="aos-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    results: list[Result] = []
    try:
        for size in args.size_list:
            print(f"== {size:,} records", flush=True)
            repeat = args.repeat or 5
            methods = args.method_list if size <= SMALL else args.large_list
            results.extend(bench_size(size, repeat, methods, workdir, args.options))
    except BenchError as exc:
        print(f"\nBENCHMARK FAILED: {exc}\n(workdir kept: {workdir})", file=sys.stderr)
        return 1
    elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()
    text, ok = report(results, args, elapsed)
    print("\n" + text)
    if not args.no_readme:
        update_readme(text)
        print(f"\nWrote the results into {README}")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nExpectations " + ("hold." if ok else "do NOT all hold (see above)."))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
