"""
Benchmark: submit a JSON Lines source of N records to the emulator's Opus connector with
``AosOpusSubmitRecordsOperator``, and compare peak memory across sizes.

    python bench/opus_submit.py                       # 10k and 100k records, each twice; prints a table
    python bench/opus_submit.py --sizes 10000,100000 --repeat 3 --readme   # and appends it to bench/README.md

For each size one emulator subprocess runs (its memory is not the client's); the source file is
written by this parent process; each submission runs in a fresh child process (this script with
``--child``) that reports its RSS after imports (baseline) and its peak RSS (``VmHWM``) at the
end. The parent verifies every run: the manifest says every record succeeded in ceil(N/15)
batches, and the emulator stored exactly N records in that connection (``/_emulator/stats``
``opus_records_stored`` and ``/_emulator/opus/records`` count). The expectation: peak RSS at the
largest size within 1.25x of the smallest (streaming: only the set of rowKeys grows with N).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import selectors
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
README = BENCH / "README.md"
GUID = "d9da492f-cc67-4920-99f9-6fbaae1f1410"
RSS_GROWTH_LIMIT = 1.25
README_SECTION = """# Benchmark: submitting Opus records

`AosOpusSubmitRecordsOperator(source=<JSON Lines file>).execute({})` against the emulator's Opus
connector: every record checked, sent in batches of 15 (one POST each), the failed-records file
written (empty). Each run is a fresh process; **baseline RSS** is after imports, **peak RSS** is
`VmHWM` at the end (not `ru_maxrss`, which on Linux inherits the parent's peak across fork + exec). Every run is verified: all N records succeeded in ceil(N/15) batches and the
emulator stored exactly N. Expectation: peak RSS at 100k within **1.25x** of 10k (the source is
streamed; only the set of seen rowKeys, for the duplicate check, grows with N). Rerun with
`python bench/opus_submit.py --sizes 10000,100000 --repeat 2 --readme` (appends here).

"""


def rss_mib(field: str = "VmRSS") -> float:
    """Current (``VmRSS``) or peak (``VmHWM``) resident memory of this process, in MiB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(job: dict[str, Any]) -> None:
    """One submission in this process; writes the result JSON to job["result"]."""
    os.environ["AIRFLOW_CONN_AOS_BENCH"] = json.dumps(
        {
            "conn_type": "aos",
            "host": job["graph_url"],
            "login": job["client_id"],
            "password": job["client_secret"],
            "extra": {"identity_url": job["identity_url"]},
        }
    )
    from airflow_provider_aos.operators.opus import AosOpusSubmitRecordsOperator

    op = AosOpusSubmitRecordsOperator(
        task_id="bench", opus_connection_id=GUID, source=job["source"], aos_conn_id="aos_bench"
    )
    baseline = rss_mib()
    started, cpu = time.monotonic(), time.process_time()
    manifest = op.execute({})  # type: ignore[arg-type]
    wall, cpu = time.monotonic() - started, time.process_time() - cpu
    # VmHWM, not ru_maxrss: Linux carries the parent's high-water mark across fork + exec into
    # ru_maxrss, so a parent that had just read 100k records back from the emulator inflated it.
    peak = rss_mib("VmHWM")
    Path(job["result"]).write_text(
        json.dumps(
            {
                "manifest": manifest,
                "wall_s": wall,
                "cpu_s": cpu,
                "baseline_rss_mib": baseline,
                "peak_rss_mib": peak,
            }
        )
    )


@contextlib.contextmanager
def emulator(workdir: Path) -> Iterator[dict[str, Any]]:
    log = (workdir / "emulator.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_aos.emulator", "--port", "0", "--records", "10"],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=60):
                raise RuntimeError("the emulator printed no ready line within 60 s")
        yield json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def admin(info: dict[str, Any], method: str, path: str) -> Any:
    request = urllib.request.Request(  # noqa: S310 - the loopback emulator we started
        f"{info['admin_url']}{path}", method=method, data=b"" if method == "POST" else None
    )
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
        return json.loads(response.read())


def write_source(path: Path, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(
                json.dumps(
                    {
                        "rowKey": f"bench-{i:07d}",
                        "leafName": f"Contract {i}.pdf",
                        "termFullPath": "Connector/Contracts/Signed",
                        "timeCreated": "2024-12-19T18:15:00Z",
                        "timeModified": "2024-12-19 18:15:00 ",
                        "createdBy": "jack.smith@contoso.com",
                        "modifiedBy": "ann.lee@contoso.com",
                        "Region": "EMEA",
                        "Approvers": "[3,7]",
                    },
                    separators=(",", ":"),
                )
                + "\n"
            )


def run(size: int, info: dict[str, Any], workdir: Path, source: Path) -> dict[str, Any]:
    admin(info, "POST", "/reset")
    result = workdir / f"result-{size}.json"
    result.unlink(missing_ok=True)
    job = {**{k: info[k] for k in ("graph_url", "identity_url", "client_id", "client_secret")},
           "source": str(source), "result": str(result)}  # fmt: skip
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(workdir / "airflow-home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    log = workdir / f"child-{size}.log"
    with log.open("wb") as fh:
        code = subprocess.call(
            [sys.executable, __file__, "--child", json.dumps(job)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    if code != 0 or not result.exists():
        raise RuntimeError(f"run at {size} failed (exit {code}):\n{log.read_text(errors='replace')[-3000:]}")
    raw = json.loads(result.read_text())
    manifest = raw["manifest"]
    stats = admin(info, "GET", "/stats")
    stored = admin(info, "GET", f"/opus/records?id={GUID}")["count"]
    expected = (size, size, size, 0, math.ceil(size / 15))
    got = (manifest["submitted"], manifest["succeeded"], stored, manifest["failed"], manifest["batches"])
    if got != expected or stats["opus_records_stored"] != size:
        raise RuntimeError(f"wrong outcome at {size}: {got} (expected {expected}), stats {stats}")
    return {"size": size, **{k: raw[k] for k in ("wall_s", "cpu_s", "baseline_rss_mib", "peak_rss_mib")}}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--readme", action="store_true", help="append the results to bench/README.md")
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.monotonic()
    results: dict[int, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="aos-opus-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "airflow-home").mkdir()
        for size in sizes:
            source = workdir / f"records-{size}.jsonl"
            write_source(source, size)
            with emulator(workdir) as info:
                for _ in range(args.repeat):
                    # A fresh emulator store per run would need a restart; Overwrite makes a rerun
                    # replace the same rowKeys, and the counters are reset, so each run is checked alone.
                    results.setdefault(size, []).append(run(size, info, workdir, source))
                    print(json.dumps(results[size][-1]), flush=True)
    small, large = min(sizes), max(sizes)
    peak = {s: max(r["peak_rss_mib"] for r in results[s]) for s in sizes}
    ratio = peak[large] / peak[small]
    lines = [
        f"Last run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, `python bench/opus_submit.py --sizes {args.sizes} "
        f"--repeat {args.repeat}` ({time.monotonic() - started:.0f} s in all); Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU cores. RSS: the highest of the runs; time: the fastest.",
        "",
        "| records | batches | wall (s) [every run] | records/s | client CPU (s) | baseline RSS (MiB) | peak RSS (MiB) "
        "| peak - baseline (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sizes:
        best = min(results[s], key=lambda r: r["wall_s"])
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in results[s])
        base = max(r["baseline_rss_mib"] for r in results[s])
        lines.append(
            f"| {s:,} | {math.ceil(s / 15):,} | {best['wall_s']:.1f} [{walls}] | {s / best['wall_s']:,.0f} | "
            f"{best['cpu_s']:.1f} | {base:.0f} | {peak[s]:.0f} | {peak[s] - base:.0f} |"
        )
    verdict = "holds" if ratio <= RSS_GROWTH_LIMIT else "DOES NOT hold"
    lines += [
        "",
        f"Peak RSS {large:,} / {small:,} records: **{ratio:.3f}x** (limit {RSS_GROWTH_LIMIT}x): {verdict}.",
    ]
    print("\n".join(lines))
    if args.readme:
        with README.open("a") as fh:
            fh.write("\n" + README_SECTION + "\n".join(lines) + "\n")
    return 0 if ratio <= RSS_GROWTH_LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
