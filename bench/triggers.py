"""
Benchmark: 100 deferred job waits on one event loop, against 100 poke-mode sensors.

    python bench/triggers.py                  # 100 waits of 15 s jobs, poll every 1 s; prints a table
    python bench/triggers.py --readme         # the same, and records the table in bench/README.md
    python bench/triggers.py --waits 20 --job-seconds 5    # a quick look

One emulator subprocess (``python -m airflow_provider_aos.emulator``, 20 ms latency per request)
serves Microsoft 365 backup jobs. Each phase adds one running job per wait (admin ``POST /jobs``,
all started at once, each ending SUCCEEDED after ``--job-seconds``) and resets the emulator's
counters:

- **deferred**: ``AosJobTrigger.run()`` for every job, all on ONE asyncio event loop in this
  process, as the triggerer runs them; a heartbeat task sleeps 5 ms again and again and records by
  how much each sleep overran (the longest stall of the loop); RSS sampled by the heartbeat.
- **deferred, tracemalloc**: the same again with ``tracemalloc`` on: Python memory per trigger.
- **poke**: ``AosBackupJobSensor(mode="poke").poke()`` every ``--poll`` seconds until done, one
  thread per sensor: each thread stands for the worker slot a poke-mode sensor holds for its whole
  wait (in a real deployment each is a task process of its own, so the memory is a lower bound).

A sampler thread reads the emulator's per-route counters (``GET /_emulator/stats``) once per poll
interval, so "requests per interval" is what the API saw, not what the client meant to send.
See bench/README.md for the numbers and what they mean.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import platform
import re
import selectors
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
README = BENCH / "README.md"
MARK_START = "<!-- triggers:start -->"
MARK_END = "<!-- triggers:end -->"
CONN_ID = "aos_bench"
HEARTBEAT = 0.005
STALL_TARGET = 0.050


class BenchError(RuntimeError):
    """A wait did not end as its job did: the numbers would mean nothing."""


# -- emulator ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def emulator(latency: float, log_path: Path) -> Iterator[dict[str, Any]]:
    """An emulator subprocess with ``latency`` per request; yields its ready info."""
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_aos.emulator", "--port", "0", "--records", "1000",
         "--latency", str(latency)],
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


def admin(info: dict[str, Any], method: str, path: str, body: Any = None) -> Any:
    url = f"{info['admin_url']}{path}"  # the loopback emulator we started
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(url, method=method, data=data)  # noqa: S310
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        return json.loads(response.read())


def add_jobs(info: dict[str, Any], n: int, seconds: float) -> list[str]:
    start = time.time()
    return [
        admin(info, "POST", "/jobs", {"service": "m365", "run_seconds": seconds, "start": start})["jobId"]
        for _ in range(n)
    ]


class StatsSampler(threading.Thread):
    """Reads the emulator's counters every ``interval`` seconds (off the measured loop)."""

    def __init__(self, info: dict[str, Any], interval: float) -> None:
        super().__init__(daemon=True)
        self.info, self.interval = info, interval
        self.samples: list[dict[str, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.samples.append(admin(self.info, "GET", "/stats"))

    def stop(self) -> dict[str, int]:
        self.done.set()
        self.join()
        final: dict[str, int] = admin(self.info, "GET", "/stats")
        self.samples.append(final)
        return final

    def per_interval(self, key: str) -> list[int]:
        """Requests of ``key`` in each full interval, skipping the first (start-up) and the last."""
        counts = [s[key] for s in self.samples]
        deltas = [b - a for a, b in itertools.pairwise(counts)]
        return deltas[1:-1] or deltas


# -- memory ------------------------------------------------------------------------------------------


def rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- phases ------------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    waits: int
    wall_s: float = 0.0
    slot_seconds: float = 0.0
    polls: int = 0
    tokens: int = 0
    discovery: int = 0
    per_interval: list[int] = field(default_factory=list)
    rss_before: float = 0.0
    rss_peak: float = 0.0
    traced_per_wait_kib: float | None = None
    max_stall_ms: float | None = None
    max_stall_at_s: float = 0.0
    steady_max_stall_ms: float | None = None
    p99_stall_ms: float | None = None
    max_gc_ms: float | None = None
    max_stall_without_gc_ms: float | None = None
    beats: int = 0

    @property
    def rss_per_wait_kib(self) -> float:
        return (self.rss_peak - self.rss_before) * 1024 / self.waits


def window() -> dict[str, str]:
    now = datetime.now(UTC)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return {
        "start": (now - timedelta(minutes=10)).strftime(fmt),
        "end": (now + timedelta(hours=1)).strftime(fmt),
    }


def check_events(events: list[Any], job_ids: list[str]) -> None:
    payloads = [e.payload for e in events]
    bad = [p for p in payloads if p["status"] != "terminal" or p["job"]["state"] != "SUCCEEDED"]
    if bad or sorted(p["job"]["id"] for p in payloads) != sorted(job_ids):
        raise BenchError(f"{len(bad)} waits did not end SUCCEEDED on their own job: {bad[:2]}")


def run_deferred(info: dict[str, Any], args: argparse.Namespace, *, traced: bool) -> Phase:
    from airflow_provider_aos.triggers.jobs import AosJobTrigger

    phase = Phase("deferred, tracemalloc" if traced else "deferred", args.waits)
    job_ids = add_jobs(info, args.waits, args.job_seconds)
    admin(info, "POST", "/reset")
    triggers = [
        AosJobTrigger(
            query={"kind": "m365", "job_id": job_id, "filters": {}, **window()},
            aos_conn_id=CONN_ID,
            poll_interval=args.poll,
            deadline=time.time() + 10 * args.job_seconds,
        )
        for job_id in job_ids
    ]
    stalls: list[float] = []
    stall_times: list[float] = []
    beats: list[tuple[float, float]] = []  # (start, end) of each heartbeat's overshoot, perf_counter
    traced_peak = 0

    async def one(trigger: AosJobTrigger) -> Any:
        events = [event async for event in trigger.run()]
        if len(events) != 1:
            raise BenchError(f"a trigger yielded {len(events)} events")
        return events[0]

    async def main() -> list[Any]:
        nonlocal traced_peak
        done = asyncio.Event()

        async def heartbeat() -> None:
            nonlocal traced_peak
            loop = asyncio.get_running_loop()
            first = loop.time()
            while not done.is_set():
                before = loop.time()
                await asyncio.sleep(HEARTBEAT)
                stalls.append(loop.time() - before - HEARTBEAT)
                stall_times.append(before - first)
                beats.append((time.perf_counter() - HEARTBEAT - stalls[-1], time.perf_counter()))
                if len(stalls) % 40 == 0:  # about every 0.2 s: a small /proc read
                    phase.rss_peak = max(phase.rss_peak, rss_mib())
                    if traced:
                        traced_peak = max(traced_peak, tracemalloc.get_traced_memory()[0])

        beat = asyncio.create_task(heartbeat())
        try:
            return await asyncio.gather(*(one(t) for t in triggers))
        finally:
            done.set()
            await beat

    # Python's own garbage collector stops the loop too (a full collection walks every object of
    # Airflow loaded in the process): time its pauses, so a stall can be told from the trigger's work.
    gc_pauses: list[tuple[float, float]] = []
    gc_started = [0.0]

    def on_gc(event: str, info_: dict[str, Any]) -> None:
        if event == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_pauses.append((gc_started[0], time.perf_counter()))

    gc.callbacks.append(on_gc)
    sampler = StatsSampler(info, args.poll)
    phase.rss_before = phase.rss_peak = rss_mib()
    if traced:
        tracemalloc.start()
        traced_base = tracemalloc.get_traced_memory()[0]
    sampler.start()
    started = time.monotonic()
    try:
        events = asyncio.run(main())
    finally:
        gc.callbacks.remove(on_gc)
    phase.wall_s = time.monotonic() - started
    phase.max_gc_ms = max((b - a for a, b in gc_pauses), default=0.0) * 1000
    # The longest stall during which no garbage collection ran: what the triggers themselves cost.
    phase.max_stall_without_gc_ms = 1000 * max(
        (
            s_
            for s_, (a, b) in zip(stalls, beats, strict=True)
            if not any(ga < b and gb > a for ga, gb in gc_pauses)
        ),
        default=0.0,
    )
    if traced:
        tracemalloc.stop()
        phase.traced_per_wait_kib = (traced_peak - traced_base) / 1024 / args.waits
    stats = sampler.stop()
    check_events(events, job_ids)
    phase.polls, phase.tokens, phase.discovery = stats["jobs_m365_detail"], stats["token"], stats["discovery"]
    phase.per_interval = sampler.per_interval("jobs_m365_detail")
    if not traced:  # tracemalloc slows every allocation: its stalls are not the trigger's
        ordered = sorted(stalls)
        phase.max_stall_ms = ordered[-1] * 1000
        phase.max_stall_at_s = stall_times[stalls.index(ordered[-1])]
        # After the first poll interval every trigger has its session, client and token: steady polling.
        steady = [s for s, at in zip(stalls, stall_times, strict=True) if at >= args.poll]
        phase.steady_max_stall_ms = max(steady, default=0.0) * 1000
        phase.p99_stall_ms = ordered[int(len(ordered) * 0.99)] * 1000
        phase.beats = len(stalls)
    return phase


def run_poke(info: dict[str, Any], args: argparse.Namespace) -> Phase:
    from airflow_provider_aos.sensors.backup import AosBackupJobSensor

    phase = Phase("poke", args.waits)
    job_ids = add_jobs(info, args.waits, args.job_seconds)
    admin(info, "POST", "/reset")
    held: list[float] = []
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def slot(index: int, job_id: str) -> None:
        # One worker slot: BaseSensorOperator's poke-mode loop (poke, sleep poke_interval, ...).
        sensor = AosBackupJobSensor(
            task_id=f"wait_{index}", service="m365", job_id=job_id, aos_conn_id=CONN_ID,
            poll_interval=args.poll, mode="poke",
        )  # fmt: skip
        started = time.monotonic()
        try:
            while not (outcome := sensor.poke({})):  # type: ignore[arg-type]
                time.sleep(args.poll)
            with lock:
                results.append(outcome.xcom_value)  # type: ignore[union-attr]
        except BaseException as exc:
            with lock:
                errors.append(exc)
        finally:
            with lock:
                held.append(time.monotonic() - started)

    sampler = StatsSampler(info, args.poll)
    phase.rss_before = phase.rss_peak = rss_mib()
    threads = [threading.Thread(target=slot, args=(i, j), daemon=True) for i, j in enumerate(job_ids)]
    sampler.start()
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        phase.rss_peak = max(phase.rss_peak, rss_mib())
        time.sleep(0.2)
    phase.wall_s = time.monotonic() - started
    stats = sampler.stop()
    if errors or len(results) != args.waits or any(r["state"] != "SUCCEEDED" for r in results):
        raise BenchError(f"poke waits failed: {errors[:2]!r}")
    phase.slot_seconds = sum(held)
    phase.polls, phase.tokens, phase.discovery = stats["jobs_m365_detail"], stats["token"], stats["discovery"]
    phase.per_interval = sampler.per_interval("jobs_m365_detail")
    return phase


# -- report ------------------------------------------------------------------------------------------


def table(phases: list[Phase], args: argparse.Namespace) -> str:
    rows = [
        "| mode | waits | wall (s) | worker slots held | slot-seconds | job polls per interval: median "
        f"[min-max] (target {args.waits}: one per job) | token / discovery requests | loop stall (ms): longest "
        "[longest after the first interval] {p99} | RSS added (MiB) | per wait: RSS / Python heap (KiB) |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for p in phases:
        pi = p.per_interval
        interval = f"{statistics.median(pi):.0f} [{min(pi)}-{max(pi)}]" if pi else "-"
        stall = (
            "-"
            if p.max_stall_ms is None
            else f"{p.max_stall_ms:.0f} [{p.steady_max_stall_ms:.0f}] {{{p.p99_stall_ms:.0f}}}"
        )
        poke = p.name == "poke"
        traced = p.traced_per_wait_kib is not None
        heap = f"{p.traced_per_wait_kib:.0f}" if traced else "-"
        rss = "-" if traced else f"{p.rss_per_wait_kib:.0f}"
        rss_added = "-" if traced else f"{p.rss_peak - p.rss_before:.1f}"
        rows.append(
            f"| {p.name} | {p.waits} | {p.wall_s:.1f} | {args.waits if poke else 0} "
            f"| {f'{p.slot_seconds:.0f}' if poke else '0'} | {interval} | {p.tokens} / {p.discovery} "
            f"| {stall} | {rss_added} | {rss} / {heap} |"
        )
    return "\n".join(rows)


def summary(phases: list[Phase], args: argparse.Namespace, baseline_rss: float) -> str:
    first, second = (p for p in phases if p.name.startswith("deferred, wave"))
    poke = next(p for p in phases if p.name == "poke")
    expected = round(args.job_seconds / args.poll) + 1
    median = statistics.median(first.per_interval or [0])
    steady_ok = first.steady_max_stall_ms is not None and first.steady_max_stall_ms < STALL_TARGET * 1000
    start_ok = first.max_stall_ms is not None and first.max_stall_ms < STALL_TARGET * 1000
    return "\n".join(
        [
            f"- Requests: {args.waits} deferred waits on jobs of {args.job_seconds:g} s polled "
            f"{first.polls / args.waits:.1f} times each (~{expected} expected at {args.poll:g} s), a median of "
            f"{median:.0f} job requests per interval (target "
            f"{args.waits}: one per job: {'holds' if median == args.waits else 'NOT met'}); plus {first.tokens} token and "
            f"{first.discovery} discovery request(s) in all for the {args.waits} triggers (they share the connection's tokens). The poke-mode sensors made {poke.tokens} token and "
            f"{poke.discovery} discovery requests for {poke.polls} polls: one of each per poke.",
            f"- Event loop, steady polling (after the first interval): longest stall "
            f"{first.steady_max_stall_ms:.0f} ms (target under {STALL_TARGET * 1000:.0f} ms: "
            f"{'holds' if steady_ok else 'NOT met'}). Including the start of {args.waits} triggers at once: "
            f"{first.max_stall_ms:.0f} ms at {first.max_stall_at_s:.1f} s ({'holds' if start_ok else 'NOT met'}); "
            f"the second wave in the same process: {second.max_stall_ms:.0f} ms. Longest pause of Python's "
            f"garbage collector in the same phases: {first.max_gc_ms or 0:.0f} ms / {second.max_gc_ms or 0:.0f} ms "
            "(a full collection walks every object of the Airflow process; the triggerer has it too). "
            f"Longest stall with no collection running: {first.max_stall_without_gc_ms or 0:.0f} ms / "
            f"{second.max_stall_without_gc_ms or 0:.0f} ms (target under {STALL_TARGET * 1000:.0f} ms: "
            f"{'holds' if max(first.max_stall_without_gc_ms or 0, second.max_stall_without_gc_ms or 0) < STALL_TARGET * 1000 else 'NOT met'}).",
            f"- Worker slots: deferred 0 (the waits live in the triggerer); poke {args.waits} slots held for "
            f"{poke.slot_seconds:.0f} slot-seconds. One Python process with Airflow and this provider "
            f"imported (what each poke-mode task process costs at least): {baseline_rss:.0f} MiB RSS.",
        ]
    )


def machine() -> str:
    import airflow

    return (
        f"Machine: {os.cpu_count()} CPU cores, Linux {platform.release()}, Python {platform.python_version()}, "
        f"airflow {airflow.__version__}; load average (1 min) at the start {os.getloadavg()[0]:.2f}."
    )


def write_readme(text: str) -> None:
    content = README.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(MARK_START) + r".*?" + re.escape(MARK_END), re.S)
    if not pattern.search(content):
        raise BenchError(f"{README} has no {MARK_START} ... {MARK_END} section")
    README.write_text(pattern.sub(lambda _: f"{MARK_START}\n{text}\n{MARK_END}", content), encoding="utf-8")


# -- one phase per child process ---------------------------------------------------------------------


def child(args: argparse.Namespace) -> int:
    """Run one phase in this fresh process (its own masker, memory and imports); print JSON results."""
    info = json.loads(args.child_info)
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
        {"conn_type": "aos", "host": info["graph_url"], "login": info["client_id"],
         "password": info["client_secret"], "extra": {"identity_url": info["identity_url"]}}
    )  # fmt: skip
    out = os.dup(1)
    os.dup2(2, 1)  # the hooks' log lines (one per poll) go with stderr into the phase's log file
    import airflow_provider_aos.sensors.backup
    import airflow_provider_aos.triggers.jobs  # noqa: F401

    result: dict[str, Any] = {"baseline_rss": rss_mib(), "machine": machine(), "phases": []}
    warm = argparse.Namespace(**{**vars(args), "waits": 2, "job_seconds": 0.5})
    phases: list[Phase] = []
    if args.child == "deferred":
        run_deferred(info, warm, traced=False)  # lazy imports and first-use set-up out of the way
        for wave in (1, 2):  # the second wave: more triggers in the same (now warm) triggerer process
            phase = run_deferred(info, args, traced=False)
            phase.name = f"deferred, wave {wave}"
            phases.append(phase)
    elif args.child == "traced":
        run_deferred(info, warm, traced=False)
        phases.append(run_deferred(info, args, traced=True))
    else:
        run_poke(info, warm)
        phases.append(run_poke(info, args))
    result["phases"] = [vars(p) for p in phases]
    sys.stdout.flush()
    os.write(out, (json.dumps(result) + "\n").encode())
    return 0


def run_child(kind: str, info: dict[str, Any], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(workdir / "airflow-home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    command = [
        sys.executable, str(Path(__file__).resolve()), "--child", kind, "--child-info", json.dumps(info),
        "--waits", str(args.waits), "--job-seconds", str(args.job_seconds), "--poll", str(args.poll),
    ]  # fmt: skip
    with (workdir / f"{kind}.log").open("wb") as log:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, env=env, check=False)
    if done.returncode != 0:
        raise BenchError(f"the {kind} phase failed ({done.returncode}); see {workdir / f'{kind}.log'}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--waits", type=int, default=100, help="concurrent waits per phase (default 100)")
    parser.add_argument("--job-seconds", type=float, default=15.0, help="how long each job runs (default 15)")
    parser.add_argument("--poll", type=float, default=1.0, help="poll interval in seconds (default 1)")
    parser.add_argument(
        "--latency", type=float, default=0.02, help="emulator latency per request (default 0.02)"
    )
    parser.add_argument("--readme", action="store_true", help="record the results in bench/README.md")
    parser.add_argument("--child", choices=("deferred", "traced", "poke"), help=argparse.SUPPRESS)
    parser.add_argument("--child-info", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    workdir = Path(tempfile.mkdtemp(prefix="aos-bench-triggers-"))
    (workdir / "airflow-home").mkdir()
    began = time.monotonic()
    results: list[dict[str, Any]] = []
    with emulator(args.latency, workdir / "emulator.log") as info:
        for kind in ("deferred", "poke", "traced"):
            print(f"phase {kind} ...", flush=True)
            results.append(run_child(kind, info, args, workdir))
    took = time.monotonic() - began
    phases = [Phase(**p) for r in results for p in r["phases"]]
    command = "python bench/triggers.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    text = "\n\n".join(
        [
            f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `{command}` ({took:.0f} s in all). "
            f"{args.waits} waits per phase, jobs of {args.job_seconds:g} s, poll interval {args.poll:g} s, "
            f"emulator latency {args.latency * 1000:.0f} ms per request; each phase in a fresh process.",
            results[0]["machine"],
            table(phases, args),
            summary(phases, args, results[0]["baseline_rss"]),
        ]
    )
    print(text)
    print(f"\n(logs of the phases and the emulator: {workdir})")
    if args.readme:
        write_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
