"""
One export, in its own process, so its peak RSS is its own. Started by ``bench/run.py``.

    python bench/child.py METHOD JOB_JSON

``METHOD`` is ``ours-cN`` (AosAuditExportOperator with ``max_concurrency=N``), ``raw`` (an httpx
loop that follows ``nextLink`` by a byte search and writes nothing: the floor), ``naive`` (a
requests loop that collects every record, then writes) or ``httpop`` (HttpOperator with a
``pagination_function``). ``JOB_JSON`` holds the emulator's ready info (``graph_url``,
``identity_url``, ``token_url``, ``client_id``, ``client_secret``), its ``emulator_pid``, the window
(``start``, ``end``), the output file (``out``) and where to write the result (``result``).

Optional switches of the job, for experiments (``run.py --option KEY=VALUE``), never the product:

- ``counters``: time a few product functions (each call's thread CPU and wall time, summed:
  :func:`install_counters`), cheap enough to keep the timing honest;
- ``profile``: a path for cProfile stats of every thread of the export (slow: not for timing), and
  ``profile_clock``: ``wall`` (default) or ``cpu`` (each thread's own CPU time);
- ``switch_interval``: seconds for :func:`sys.setswitchinterval` (default 0.005);
- ``full_limit``: start the adaptive limit at ``max_concurrency`` instead of 1.

The result is JSON: records written, pages, bytes, wall and CPU seconds, baseline and peak RSS.

Ours writes each record's bytes as the API sent them (compact JSON, one per line). The naive and
HttpOperator baselines write ``json.dumps(record, ensure_ascii=False, separators=(",", ":"))``: the
same bytes for ASCII records, the same records in any case (``run.py`` compares them line by line,
parsed where the bytes differ). ``raw`` writes nothing and reports the body bytes it received.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import resource
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

Job = dict[str, Any]
Exporter = Callable[[Job], tuple[int, int]]
"""Runs one export; returns (records written, pages fetched)."""

AOS_CONN_ID = "aos_bench"
HTTP_CONN_ID = "aos_bench_http"
SCOPE = "audit.read.all"
MANIFEST_KEYS = ("slices", "max_concurrency", "max_concurrency_used", "throttled_requests", "bytes")

dumps = partial(json.dumps, ensure_ascii=False, separators=(",", ":"))


def rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS so far) of this process, in MiB, from /proc (Linux)."""
    fields: dict[str, float] = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024  # kB
    return fields["VmRSS"], fields["VmHWM"]


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine have used since boot, summed over cores (/proc/stat)."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process (the emulator), from /proc; NaN if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fetch_token(job: Job, session: Any) -> str:
    """A client-credentials bearer token from the emulator's identity service."""
    response = session.post(
        job["token_url"],
        data={
            "grant_type": "client_credentials",
            "client_id": job["client_id"],
            "client_secret": job["client_secret"],
            "scope": SCOPE,
        },
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


# -- the operator under test -------------------------------------------------------------------


def prepare_ours(job: Job, concurrency: int) -> Exporter:
    os.environ[f"AIRFLOW_CONN_{AOS_CONN_ID.upper()}"] = json.dumps(
        {
            "conn_type": "aos",
            "host": job["graph_url"],
            "login": job["client_id"],
            "password": job["client_secret"],
            "extra": {"identity_url": job["identity_url"]},
        }
    )
    from airflow_provider_aos.operators.audit import AosAuditExportOperator

    def run(job: Job) -> tuple[int, int]:
        operator = AosAuditExportOperator(
            task_id="bench_export",
            aos_conn_id=AOS_CONN_ID,
            destination=job["out"],
            start_time=job["start"],
            end_time=job["end"],
            compression=None,
            max_concurrency=concurrency,
        )
        manifest = operator.execute(context={})  # a window is given: no context needed
        job["manifest"] = {k: manifest.get(k) for k in MANIFEST_KEYS}
        return int(manifest["records"]), int(manifest["pages"])

    return run


# -- timing counters for ours ------------------------------------------------------------------

COUNTERS: dict[str, list[float]] = {}
"""name -> [calls, thread CPU seconds, wall seconds], summed over every thread."""


_COUNTERS_LOCK = threading.Lock()


def _counted(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    entry = COUNTERS.setdefault(name, [0, 0.0, 0.0])

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            with _COUNTERS_LOCK:
                entry[0] += 1
                entry[1] += cpu
                entry[2] += wall

    return wrapper


def install_counters() -> None:
    """
    Wrap the export's steps with counters (the names are where the time goes):

    - ``http attempt``: ``AosHook._attempt``, one HTTP request with the body read (fetch thread);
    - ``decode page``: ``decode_records_raw``, the page body into raw records (fetch thread);
    - ``wait for page``: ``Future.result`` in ``PageIterator._walk``, the slice thread waiting for
      the prefetched page (wall only: its CPU is ~0);
    - ``next request``: ``PageWalk.advance``, reading the page's links and checks (slice thread);
    - ``encode page``: ``slices.encode_page``, window check and JSON Lines of a page (slice thread);
    - ``spool write``: the slice thread's writes of a page to its spool file;
    - ``append spools``: ``shutil.copyfileobj`` of the spools into the output (main thread);
    - ``finish file``: ``AtomicDestination.__exit__`` (close, rename into place).
    """
    import concurrent.futures
    import shutil

    from airflow_provider_aos import pagination, slices, storage
    from airflow_provider_aos.hooks.aos import AosHook
    from airflow_provider_aos.operators import audit

    AosHook._attempt = _counted("http attempt", AosHook._attempt)  # type: ignore[method-assign]
    audit.decode_records_raw = _counted("decode page", audit.decode_records_raw)
    audit.encode_page = _counted("encode page", audit.encode_page)
    pagination.PageWalk.advance = _counted("next request", pagination.PageWalk.advance)  # type: ignore[method-assign]
    storage.AtomicDestination.__exit__ = _counted("finish file", storage.AtomicDestination.__exit__)  # type: ignore[method-assign]
    slices.shutil = type(shutil)("shutil_counted")  # a module copy: only slices.py sees the wrapper
    slices.shutil.__dict__.update(shutil.__dict__)
    slices.shutil.copyfileobj = _counted("append spools", shutil.copyfileobj)
    waited = _counted("wait for page", concurrent.futures.Future.result)
    concurrent.futures.Future.result = waited  # type: ignore[method-assign]
    spool_write = "spool write"

    class Spool:
        """The slice's spool file, its writes counted (a file object takes no new attributes)."""

        def __init__(self, raw: Any) -> None:
            self.write = _counted(spool_write, raw.write)

    class CountedRun(slices.SliceRun):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            inner = self.walk
            self.walk = lambda piece, spool, fetcher: inner(piece, Spool(spool), fetcher)

    audit.SliceRun = CountedRun  # type: ignore[misc]


# -- baseline 0: the raw loop, the floor: fetch every page, parse nothing, write nothing ----------

NEXT_LINK = b'"nextLink":"'


def prepare_raw(job: Job) -> Exporter:
    import httpx

    def run(job: Job) -> tuple[int, int]:
        received = pages = 0
        with httpx.Client(timeout=60) as client:
            headers = {"Authorization": f"Bearer {fetch_token(job, client)}", "Accept": "application/json"}
            url: str | None = f"{job['graph_url']}/aos/audit"
            params: dict[str, str] | None = {"startTime": job["start"], "endTime": job["end"]}
            while url:
                response = client.get(url, params=params, headers=headers)
                response.raise_for_status()
                body = response.content
                received += len(body)
                pages += 1
                # The emulator writes nextLink first; a null one (the last page) does not match.
                at = body.find(NEXT_LINK)
                if at < 0:
                    url = None
                else:
                    at += len(NEXT_LINK)
                    url = body[at : body.index(b'"', at)].decode()
                params = None  # nextLink is absolute and carries the query
        job["received_bytes"] = received
        return 0, pages

    return run


# -- baseline 1: a naive requests loop ---------------------------------------------------------


def prepare_naive(job: Job) -> Exporter:
    import requests

    def run(job: Job) -> tuple[int, int]:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {fetch_token(job, session)}", "Accept": "application/json"}
        url: str | None = f"{job['graph_url']}/aos/audit"
        params: dict[str, str] | None = {"startTime": job["start"], "endTime": job["end"]}
        records: list[Any] = []
        pages = 0
        while url:  # collect every page first ...
            response = session.get(url, params=params, headers=headers, timeout=60)
            response.raise_for_status()
            body = response.json()
            records.extend(body["data"])
            pages += 1
            url, params = body.get("nextLink"), None  # nextLink is absolute and carries the query
        with open(job["out"], "wb") as fh:  # ... then write them
            for record in records:
                fh.write(dumps(record).encode() + b"\n")
        session.close()
        return len(records), pages

    return run


# -- baseline 2: HttpOperator with a pagination_function ---------------------------------------


def prepare_httpop(job: Job) -> Exporter:
    # HttpHook joins the connection's host and the endpoint; the host may carry the /graph path.
    os.environ[f"AIRFLOW_CONN_{HTTP_CONN_ID.upper()}"] = json.dumps(
        {"conn_type": "http", "host": job["graph_url"]}
    )
    from urllib.parse import parse_qsl, urlsplit

    import requests
    from airflow.providers.http.operators.http import HttpOperator

    def next_page(response: requests.Response) -> dict[str, Any] | None:
        link = response.json().get("nextLink")
        if not link:
            return None
        # HttpHook would append an absolute URL to the base URL, so pass the link's query as data
        # (merged over the first request's startTime/endTime) and keep the endpoint.
        return {"data": dict(parse_qsl(urlsplit(link).query))}

    def run(job: Job) -> tuple[int, int]:
        token = fetch_token(job, requests)
        pages = 0

        def write_all(responses: list[requests.Response]) -> int:
            nonlocal pages
            pages = len(responses)
            records = 0
            with open(job["out"], "wb") as fh:
                for response in responses:
                    lines = [dumps(record).encode() for record in response.json()["data"]]
                    if lines:
                        fh.write(b"\n".join(lines) + b"\n")
                    records += len(lines)
            return records

        operator = HttpOperator(
            task_id="bench_http_export",
            http_conn_id=HTTP_CONN_ID,
            method="GET",
            endpoint="aos/audit",
            data={"startTime": job["start"], "endTime": job["end"]},
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            pagination_function=next_page,
            response_filter=write_all,
        )
        records = operator.execute(context={})  # sync mode needs no context
        return int(records), pages

    return run


METHODS: dict[str, Callable[[Job], Exporter]] = {
    "raw": prepare_raw,
    "naive": prepare_naive,
    "httpop": prepare_httpop,
}
OURS = "ours-c"
"""``ours-c1``, ``ours-c4``, ...: the operator with that ``max_concurrency``."""


def prepare(method: str, job: Job) -> Exporter:
    if method.startswith(OURS) and method[len(OURS) :].isdigit():
        return prepare_ours(job, int(method[len(OURS) :]))
    if method in METHODS:
        return METHODS[method](job)
    raise ValueError(f"unknown method {method!r}: one of {OURS}N, {', '.join(METHODS)}")


def flag(job: Job, key: str) -> bool:
    """A switch of the job: true, 1, "1", "true" or "yes" (``--option KEY=VALUE`` gives strings)."""
    value = job.get(key)
    return value is True or str(value).lower() in ("1", "true", "yes")


class ThreadProfiles:
    """cProfile in every thread started while on (the export runs in slice and fetch threads)."""

    def __init__(self, clock: str = "wall") -> None:
        self.profiles: list[cProfile.Profile] = []
        self.timer = time.thread_time if clock == "cpu" else time.perf_counter

    def _start(self, *_: Any) -> None:
        profile = cProfile.Profile(self.timer)
        self.profiles.append(profile)
        profile.enable()  # replaces this hook for the rest of the thread

    def __enter__(self) -> ThreadProfiles:
        threading.setprofile(self._start)
        self._start()
        return self

    def __exit__(self, *_: object) -> None:
        threading.setprofile(None)  # type: ignore[arg-type]
        self.profiles[0].disable()

    def dump(self, path: str) -> None:
        stats = pstats.Stats(self.profiles[0])
        for profile in self.profiles[1:]:
            stats.add(profile)
        stats.dump_stats(path)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: child.py {{{OURS}N,{','.join(METHODS)}}} JOB_JSON", file=sys.stderr)
        return 2
    method, job = argv[0], json.loads(argv[1])
    exporter = prepare(method, job)  # imports happen here, outside the timed part
    if flag(job, "counters") and method.startswith(OURS):
        install_counters()
    if flag(job, "full_limit"):  # an experiment: no slow start, max_concurrency requests from the first
        from airflow_provider_aos import throttle

        start_full = throttle.AdaptiveLimit.__init__

        def init(self: Any, ceiling: int) -> None:
            start_full(self, ceiling)
            self.limit = float(ceiling)

        throttle.AdaptiveLimit.__init__ = init  # type: ignore[method-assign]
    if job.get("switch_interval"):  # an experiment: how much the GIL hand-over between threads costs
        sys.setswitchinterval(float(job["switch_interval"]))
    baseline_rss, baseline_hwm = rss_mib()
    profiles = ThreadProfiles(job.get("profile_clock", "wall")) if job.get("profile") else None
    emulator_pid = int(job.get("emulator_pid") or 0)
    emulator_before = process_cpu_seconds(emulator_pid) if emulator_pid else float("nan")
    busy_before = machine_busy_seconds()
    cpu_before = cpu_seconds()
    start = time.perf_counter()
    if profiles is not None:
        with profiles:
            records, pages = exporter(job)
    else:
        records, pages = exporter(job)
    wall = time.perf_counter() - start
    cpu = cpu_seconds() - cpu_before
    busy = machine_busy_seconds() - busy_before
    emulator_cpu = (process_cpu_seconds(emulator_pid) if emulator_pid else float("nan")) - emulator_before
    if profiles is not None:
        profiles.dump(job["profile"])
    out = Path(job["out"])
    result = {
        "method": method,
        "records": records,
        "pages": pages,
        "wall_s": wall,
        "cpu_s": cpu,
        "emulator_cpu_s": emulator_cpu,
        # What the rest of the machine used meanwhile (other sessions' tests slow every number).
        "others_cpu_s": busy - cpu - emulator_cpu,
        "baseline_rss_mib": baseline_rss,
        "baseline_hwm_mib": baseline_hwm,
        # VmHWM, not ru_maxrss: on Linux ru_maxrss carries the parent's peak across fork + exec.
        "peak_rss_mib": rss_mib()[1],
        "bytes": job["received_bytes"] if method == "raw" else out.stat().st_size,
        "wrote": out.exists(),
        "manifest": job.get("manifest"),
        "counters": {k: {"calls": v[0], "cpu_s": v[1], "wall_s": v[2]} for k, v in COUNTERS.items()},
    }
    Path(job["result"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
