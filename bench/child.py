"""
One export, in its own process, so its peak RSS is its own. Started by ``bench/run.py``.

    python bench/child.py METHOD JOB_JSON

``METHOD`` is ``ours`` (AosAuditExportOperator), ``naive`` (a requests loop that collects every
record, then writes) or ``httpop`` (HttpOperator with a ``pagination_function``). ``JOB_JSON`` holds
the emulator's ready info (``graph_url``, ``identity_url``, ``token_url``, ``client_id``,
``client_secret``), the window (``start``, ``end``), the output file (``out``) and where to write the
result (``result``). The result is JSON: records written, pages, wall seconds, baseline and peak RSS.

Every method writes the same bytes: one record per line, ``json.dumps(record, ensure_ascii=False,
separators=(",", ":"))``, uncompressed, in API order (the operator's own serialization).
"""

from __future__ import annotations

import json
import os
import resource
import sys
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


def peak_rss_mib() -> float:
    """Peak RSS of this process over its whole life (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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


def prepare_ours(job: Job) -> Exporter:
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
        )
        manifest = operator.execute(context={})  # a window is given: no context needed
        return int(manifest["records"]), int(manifest["pages"])

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
    "ours": prepare_ours,
    "naive": prepare_naive,
    "httpop": prepare_httpop,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in METHODS:
        print(f"usage: child.py {{{','.join(METHODS)}}} JOB_JSON", file=sys.stderr)
        return 2
    method, job = argv[0], json.loads(argv[1])
    exporter = METHODS[method](job)  # imports happen here, outside the timed part
    baseline_rss, baseline_hwm = rss_mib()
    cpu_before = cpu_seconds()
    start = time.perf_counter()
    records, pages = exporter(job)
    wall = time.perf_counter() - start
    cpu = cpu_seconds() - cpu_before
    result = {
        "method": method,
        "records": records,
        "pages": pages,
        "wall_s": wall,
        "cpu_s": cpu,
        "baseline_rss_mib": baseline_rss,
        "baseline_hwm_mib": baseline_hwm,
        "peak_rss_mib": peak_rss_mib(),
        "bytes": Path(job["out"]).stat().st_size,
    }
    Path(job["result"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
