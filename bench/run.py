"""
Benchmark: export N audit records from the emulator to a local JSON Lines file, three ways.

    python bench/run.py                      # 100k (best of 5) and 1M (best of 2); updates bench/README.md
    python bench/run.py --quick              # 20k and 100k, once; README untouched
    python bench/run.py --sizes 50000 --repeat 3 --no-readme

For each size, one emulator subprocess serves the records (spread over exactly 7 days, 1000 per
page, so one API window holds them all and every method makes the same requests). Each method runs
in a fresh subprocess (``bench/child.py``) that reports records written, wall time and peak RSS. The
outputs are checked: each holds exactly the emulator's count of records for the window, and all
methods wrote byte-identical files. See bench/README.md for what the numbers mean.
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
METHODS = ("ours", "naive", "httpop")
LABELS = {
    "ours": "AosAuditExportOperator",
    "naive": "naive requests loop",
    "httpop": "HttpOperator + pagination_function",
}
RSS_GROWTH_LIMIT = 1.25
SMALL = 200_000
"""Sizes up to this many records run 5 times by default (a few seconds each), larger ones twice."""
MARK_START = "<!-- results:start -->"
MARK_END = "<!-- results:end -->"


class BenchError(RuntimeError):
    """A run failed or wrote the wrong records: the numbers would mean nothing."""


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
    walls: tuple[float, ...] = ()
    """Wall time of every run of this method at this size, in repeat order (filled for the best run)."""
    cpus: tuple[float, ...] = ()

    @property
    def rate(self) -> float:
        return self.records / self.wall_s


# -- emulator -----------------------------------------------------------------------------------


@contextlib.contextmanager
def emulator(records: int, workdir: Path) -> Iterator[dict[str, Any]]:
    """An emulator subprocess with ``records`` records over [START, END); yields its ready info."""
    log = (workdir / f"emulator-{records}.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "airflow_provider_aos.emulator", "--port", "0",
            "--records", str(records), "--data-start", START, "--data-end", END,
            "--page-size", str(PAGE_SIZE),
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


def run_one(method: str, size: int, info: dict[str, Any], workdir: Path) -> tuple[Result, Path]:
    out = workdir / f"{method}-{size}.jsonl"
    result_file = workdir / f"{method}-{size}.result.json"
    out.unlink(missing_ok=True)
    result_file.unlink(missing_ok=True)
    job = {
        **{k: info[k] for k in ("graph_url", "identity_url", "token_url", "client_id", "client_secret")},
        "start": START,
        "end": END,
        "out": str(out),
        "result": str(result_file),
    }
    admin(info, "POST", "/reset")
    emulator_cpu = process_cpu_seconds(info["pid"])
    log = workdir / f"{method}-{size}.log"
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
            emulator_cpu_s=emulator_cpu,
            baseline_rss_mib=raw["baseline_rss_mib"],
            peak_rss_mib=raw["peak_rss_mib"],
            bytes=raw["bytes"],
        ),
        out,
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


def verify(result: Result, out: Path, expected: int, reference: tuple[str, Path, str] | None) -> str:
    """Fail loudly unless the file holds exactly ``expected`` records, identical to the reference's."""
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
    if reference is not None and sha != reference[0]:
        raise BenchError(
            f"{result.method} at {result.size} wrote different records than {reference[2]} "
            f"(sha256 {sha[:12]} vs {reference[0][:12]}); first difference at "
            f"{first_difference(reference[1], out)}"
        )
    return sha


# -- the whole benchmark ------------------------------------------------------------------------


def bench_size(size: int, repeat: int, workdir: Path) -> list[Result]:
    """Every method ``repeat`` times against one emulator; the best throughput and the highest peak RSS."""
    runs: dict[str, list[Result]] = {m: [] for m in METHODS}
    with emulator(size, workdir) as info:
        expected = admin(info, "GET", f"/audit/count?startTime={START}&endTime={END}")["count"]
        if expected != size:
            raise BenchError(f"the emulator counts {expected} records in the window, not {size}")
        reference: tuple[str, Path, str] | None = None
        for rep in range(repeat):
            order = METHODS[rep % len(METHODS) :] + METHODS[: rep % len(METHODS)]  # rotate: no fixed first
            for method in order:
                result, out = run_one(method, size, info, workdir)
                sha = verify(result, out, expected, reference)
                if reference is None:
                    reference = (sha, out, method)
                elif out != reference[1]:
                    out.unlink()
                runs[method].append(result)
                print(
                    f"  {size:>9,} {method:<7} run {rep + 1}: {result.records:,} records, {result.pages} pages "
                    f"({result.audit_requests} audit requests), {result.wall_s:6.2f} s, "
                    f"{result.rate:9,.0f} rec/s, CPU {result.cpu_s:5.2f} s (emulator {result.emulator_cpu_s:5.2f} s), "
                    f"peak RSS {result.peak_rss_mib:7.1f} MiB",
                    flush=True,
                )
        if reference is not None:
            reference[1].unlink(missing_ok=True)
    pages = {r.audit_requests for rs in runs.values() for r in rs}
    if len(pages) != 1:
        raise BenchError(f"the methods made different numbers of audit requests at {size}: {sorted(pages)}")
    best: list[Result] = []
    for method in METHODS:
        fastest = min(runs[method], key=lambda r: r.wall_s)
        highest = max(runs[method], key=lambda r: r.peak_rss_mib)
        fastest.peak_rss_mib = highest.peak_rss_mib
        fastest.baseline_rss_mib = highest.baseline_rss_mib
        fastest.walls = tuple(r.wall_s for r in runs[method])
        fastest.cpus = tuple(r.cpu_s for r in runs[method])
        best.append(fastest)
    return best


def table(results: Sequence[Result]) -> str:
    rows = [
        "| records | method | wall (s) [every run] | records/s | client CPU (s) | emulator CPU (s) "
        "| baseline RSS (MiB) | peak RSS (MiB) | peak - baseline (MiB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r.size:,} | {LABELS[r.method]} | {r.wall_s:.2f} [{', '.join(f'{w:.2f}' for w in r.walls)}] "
            f"| {r.rate:,.0f} | {r.cpu_s:.2f} "
            f"| {r.emulator_cpu_s:.2f} | {r.baseline_rss_mib:.0f} "
            f"| {r.peak_rss_mib:.0f} | {r.peak_rss_mib - r.baseline_rss_mib:.0f} |"
        )
    return "\n".join(rows)


def ratios(results: Sequence[Result]) -> tuple[list[str], bool]:
    """The two claims, as ratios within this run; and whether both hold."""
    by = {(r.size, r.method): r for r in results}
    sizes = sorted({r.size for r in results})
    lines, ok = [], True
    if len(sizes) >= 2:
        small, large = by[(sizes[0], "ours")], by[(sizes[-1], "ours")]
        growth = large.peak_rss_mib / small.peak_rss_mib
        holds = growth <= RSS_GROWTH_LIMIT
        ok &= holds
        lines.append(
            f"- Memory: ours peak RSS at {sizes[-1]:,} / at {sizes[0]:,} = {large.peak_rss_mib:.0f} / "
            f"{small.peak_rss_mib:.0f} MiB = **{growth:.2f}x** (expected ≤ {RSS_GROWTH_LIMIT}x: "
            f"{'holds' if holds else 'does NOT hold'})"
        )
    for size in sizes:
        ours, naive = by[(size, "ours")], by[(size, "naive")]
        speed = ours.rate / naive.rate
        # One round runs each method once, back to back: the spread of the rounds' ratios is the noise.
        paired = sorted(n / o for o, n in zip(ours.walls, naive.walls, strict=True))
        cpu = min(naive.cpus) / min(ours.cpus)
        if speed >= 1.0:
            verdict = "holds"
        elif paired[-1] >= 1.0:
            verdict = "not shown: within this run's run-to-run spread"
            ok = False
        else:
            verdict = "does NOT hold"
            ok = False
        spread = f"{paired[0]:.2f}x-{paired[-1]:.2f}x" if len(paired) > 1 else f"{paired[0]:.2f}x"
        lines.append(
            f"- Throughput at {size:,}: ours / naive loop = {ours.rate:,.0f} / {naive.rate:,.0f} rec/s = "
            f"**{speed:.2f}x** (expected ≥ 1.00x: {verdict}). Round by round: {spread}. "
            f"Client CPU per record, naive / ours: {cpu:.2f}x."
        )
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
    for module in ("airflow", "airflow.providers.http", "requests"):
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


def update_readme(text: str) -> None:
    readme = README.read_text(encoding="utf-8")
    if MARK_START not in readme or MARK_END not in readme:
        raise BenchError(f"{README} has no {MARK_START} ... {MARK_END} section to update")
    head, rest = readme.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    README.write_text(f"{head}{MARK_START}\n{text}\n{MARK_END}{tail}", encoding="utf-8")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000", help="comma list of record counts (default 100k,1M)")
    p.add_argument("--quick", action="store_true", help="20k and 100k, one run each, README untouched")
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help=f"runs per method and size (default: 5 up to {SMALL:,} records, else 2; 1 with --quick)",
    )
    p.add_argument("--no-readme", action="store_true", help="do not write the results into bench/README.md")
    p.add_argument("--workdir", help="where the output files go (default: a temporary folder, removed after)")
    args = p.parse_args(argv)
    args.argv = argv
    if args.quick:
        args.sizes, args.no_readme = "20000,100000", True
        args.repeat = args.repeat or 1
    args.size_list = sorted(int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip())
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
            repeat = args.repeat or (5 if size <= SMALL else 2)
            results.extend(bench_size(size, repeat, workdir))
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
