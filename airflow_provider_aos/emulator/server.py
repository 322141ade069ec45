"""HTTP front of the emulator: identity service, Graph routes and admin endpoints on one port.

Layout under ``root_url``: ``/identity`` (discovery, ``/connect/token``), ``/graph`` (the routes of
the service modules: audit.py, jobs.py, opus.py) and ``/_emulator`` (admin, for subprocess users). This module owns
the routing table, the bearer-token and scope check, faults, latency, the concurrency cap
(``max_concurrent``) and counters; the service modules only turn a parsed request into an answer
(audit.py also sleeps ``latency_per_record``, as only it knows a page's size). Standard library only, besides PyJWT and
cryptography in identity.py, so it starts fast and never imports Airflow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .audit import AUDIT_SCOPE, MAX_WINDOW, AuditQuery, AuditService, canonical_values, parse_audit_query
from .config import RANDOM_FAULT_KINDS, RUNTIME_SETTINGS, EmulatorConfig, validated_settings
from .data import GEO_LOCATIONS, PRODUCT_TYPES, AuditData, AuditFilter, to_epoch_us, to_utc
from .identity import ALL_SCOPES, IdentityService, TokenError, make_client
from .jobs import SERVICES, JobsService, JobStore, StateValue
from .opus import (
    OPUS_FAULT_GROUPS,
    OPUS_ROUTES,
    OPUS_STAT_KEYS,
    OpusService,
    OpusStore,
    RowPredicate,
    TimeLike,
)
from .opus import admin as opus_admin
from .routing import Reply, Request, Route, graph_error

__all__ = [
    "AUDIT_SCOPE", "FAULT_TARGETS", "INJECTABLE_FAULTS", "MAX_WINDOW", "RANDOM_FAULT_KINDS",
    "RUNTIME_SETTINGS", "STAT_KEYS", "AosEmulator", "AuditQuery", "EmulatorConfig", "iso_utc",
    "parse_audit_query",
]  # fmt: skip

# "drop_after": a Graph request is processed (e.g. records stored), then the connection drops unanswered.
INJECTABLE_FAULTS: frozenset[str] = frozenset({"429", "500", "503", "400", "401", "drop", "drop_after", "ok"})
# Per-route counters (and fault targets) of the job endpoints, see jobs.py.
JOB_ROUTES: tuple[str, ...] = (
    "jobs_m365", "jobs_m365_detail", "jobs_iaas_paas", "jobs_dynamics365", "jobs_google_workspace",
    "jobs_salesforce", "jobs_aos_scan", "restore_post",
)  # fmt: skip
# "jobs" reaches every job GET route, "restore" the restore POST; a route's own name only that route
# (its queue is consulted first).
# Opus (opus.py): "opus" reaches all ten Opus routes, "opus_connector" the three
# /records/connector/records routes, "opus_restore" the seven /api/restore routes.
FAULT_TARGETS: tuple[str, ...] = (
    "token", "audit", "jobs", "restore", *JOB_ROUTES, *OPUS_FAULT_GROUPS, *OPUS_ROUTES,
)  # fmt: skip
STAT_KEYS: tuple[str, ...] = (
    "discovery", "token", "token_error", "audit", "audit_error", "unauthorized", "forbidden",
    "fault_429", "fault_500", "fault_503", "fault_drop", "requests",
    *JOB_ROUTES, "jobs_error", "restore_error", "restore_throttled", *OPUS_STAT_KEYS,
    "max_concurrent_seen", "throttled_concurrency", "max_concurrent_after_throttle",
)  # fmt: skip

_JSON = "application/json; charset=utf-8"


def iso_utc(value: datetime) -> str:
    return to_utc(value).isoformat().replace("+00:00", "Z")


def _query_params(query: str) -> dict[str, list[str]]:
    # ASP.NET-style binding: parameter names are case-insensitive.
    params: dict[str, list[str]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(key.lower(), []).append(value)
    return params


class AosEmulator:
    """The AOS identity service and Graph audit endpoint, served on loopback in a thread.

    :param config: settings; defaults to ``EmulatorConfig()``. The emulator keeps its own copy.
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        cfg = config or EmulatorConfig()
        # Own, normalised copy; configure() swaps in a new one rather than mutating it.
        cfg = dataclasses.replace(
            cfg,
            data_start=to_utc(cfg.data_start),
            data_end=to_utc(cfg.data_end),
            **validated_settings({k: getattr(cfg, k) for k in RUNTIME_SETTINGS}),
        )
        self._config = cfg
        self._lock = threading.Lock()
        self._data = AuditData(cfg.seed, cfg.records, cfg.data_start, cfg.data_end)
        self._audit = AuditService(self._data)
        self._jobs = JobStore(cfg.seed, cfg.jobs_per_service, cfg.data_start, cfg.data_end)
        self._opus = OpusStore(cfg.opus_archives)
        self._routes: list[Route] = [
            *self._audit.routes(), *JobsService(self._jobs).routes(), *OpusService(self._opus).routes(),
        ]  # fmt: skip
        self._identity = IdentityService()
        self._stats = dict.fromkeys(STAT_KEYS, 0)
        self._in_flight = 0  # Graph requests between arrival and answer (see _arrive, _depart)
        self._throttle_answered = False  # a max_concurrent 429 went out since the last reset
        self._faults: dict[str, deque[str]] = {k: deque() for k in FAULT_TARGETS}
        self._rng = random.Random(cfg.seed)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None  # kept after stop(), so URLs stay printable in teardown
        self._connections: set[socket.socket] = set()
        self.register_client(cfg.client_id, secret=cfg.client_secret)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> AosEmulator:
        """Bind and serve in a daemon thread; returns self so ``AosEmulator().start()`` chains."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        server_cls = _Server6 if ":" in self._config.host else _Server
        self._server = server_cls((self._config.host, self._config.port), _Handler, self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"aos-emulator-{self._port}", daemon=True,
        )  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close open keep-alive connections; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        # Keep-alive connections would otherwise go on being served by their daemon threads.
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> AosEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------

    @property
    def config(self) -> EmulatorConfig:
        """The current settings (a snapshot; change them with configure())."""
        return self._config

    @property
    def root_url(self) -> str:
        if self._port is None:
            raise RuntimeError("emulator not started")
        host, port = self._config.host, self._port
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def graph_url(self) -> str:
        return f"{self.root_url}/graph"

    @property
    def identity_url(self) -> str:
        return f"{self.root_url}/identity"

    @property
    def token_url(self) -> str:
        return f"{self.identity_url}/connect/token"

    @property
    def admin_url(self) -> str:
        return f"{self.root_url}/_emulator"

    def ready_info(self) -> dict[str, object]:
        """The CLI's ready line: URLs, default credentials and data set shape."""
        cfg = self._config
        return {
            "event": "ready",
            "root_url": self.root_url,
            "graph_url": self.graph_url,
            "identity_url": self.identity_url,
            "token_url": self.token_url,
            "admin_url": self.admin_url,
            "client_id": cfg.client_id,
            "client_secret": cfg.client_secret,
            "scopes": list(ALL_SCOPES),
            "records": cfg.records,
            "data_start": iso_utc(cfg.data_start),
            "data_end": iso_utc(cfg.data_end),
            "page_size": cfg.page_size,
            "token_ttl": cfg.token_ttl,
            "jobs_per_service": cfg.jobs_per_service,
            "job_services": list(SERVICES),
            "opus_archives": [{"kind": a["kind"], "scope": a["scope"]} for a in self._opus.archives()],
            "pid": os.getpid(),
        }

    # -- control ---------------------------------------------------------------------------

    def register_client(
        self,
        client_id: str,
        *,
        secret: str | None = None,
        certificate_pem: str | bytes | None = None,
        scopes: Iterable[str] = ALL_SCOPES,
    ) -> None:
        """Add or replace a client (secret and/or certificate).

        :param client_id: the app id; ``iss``/``sub`` of its assertions.
        :param secret: client secret, or None for a certificate-only app.
        :param certificate_pem: the app's X.509 certificate (PEM, or DER bytes), RSA key.
        :param scopes: scopes the client may request; the default is every AOS scope.
        """
        self._identity.register(
            make_client(client_id, secret=secret, certificate_pem=certificate_pem, scopes=scopes)
        )

    def configure(self, **changes: object) -> None:
        """Change runtime settings: latency, latency_per_record, max_concurrent, fault_rate,
        fault_kinds, retry_after, token_ttl, page_size, discovery, spelling, first_page_index,
        scan_skip, restore_seconds, restore_outcome and the ``opus_*`` settings (see
        EmulatorConfig). Requests in flight keep the settings they started with."""
        settings = validated_settings(changes)
        with self._lock:
            self._config = dataclasses.replace(self._config, **settings)

    def inject_faults(self, kind: str, faults: Iterable[int | str]) -> None:
        """Queue forced answers for the next requests of `kind`, consumed in order.

        :param kind: "token", "audit", "jobs" (every job GET route), "restore" (the M365 restore
            POST), "opus" (every Opus route), "opus_connector" (the connector records routes),
            "opus_restore" (the Opus /api/restore routes), or one route's counter name (e.g.
            "jobs_m365", "restore_post", "opus_submit"; see JOB_ROUTES and opus.OPUS_ROUTES).
        :param faults: each one of 429, 500, 503, 400, 401 (ints or strings), "drop", "drop_after"
            (Graph routes: handle the request, then close the connection without an answer; on the
            token endpoint the same as "drop"), or "ok" (answer normally: ``["ok", "ok", 400]`` fails
            the third request only).
        """
        if kind not in FAULT_TARGETS:
            raise ValueError(f"kind must be one of {FAULT_TARGETS}")
        queued = [str(f).lower() for f in faults]
        bad = [f for f in queued if f not in INJECTABLE_FAULTS]
        if bad:
            raise ValueError(f"unknown faults {bad}; use {sorted(INJECTABLE_FAULTS)}")
        with self._lock:
            self._faults[kind].extend(queued)

    def revoke_tokens(self) -> None:
        """Invalidate every token issued so far (the Graph side then answers 401)."""
        self._identity.revoke_all()

    def stats(self) -> dict[str, int]:
        """A copy of the counters (see STAT_KEYS).

        A response can count twice: a 401 from the token endpoint is both ``token_error`` and
        ``unauthorized``. ``discovery`` counts attempts, including 404s when it is disabled.

        Three keys watch Graph concurrency (requests counted from arrival until just before their
        answer is written; a request turned away counts at its own arrival too):
        ``max_concurrent_seen`` is the most in flight at any arrival, ``throttled_concurrency``
        the 429s answered for ``max_concurrent``, and ``max_concurrent_after_throttle`` the most in
        flight at any arrival after the first such 429 (0 while there was none): what a client
        that backs off on 429 still sends.
        """
        with self._lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        """Zero every counter, and forget that a max_concurrent 429 was answered."""
        with self._lock:
            self._stats = dict.fromkeys(STAT_KEYS, 0)
            self._throttle_answered = False

    def issued_tokens(self) -> list[str]:
        return self._identity.issued_tokens()

    def received_assertions(self) -> list[str]:
        return self._identity.received_assertions()

    def received_token_requests(self) -> list[dict[str, str]]:
        return self._identity.received_forms()

    # -- jobs ------------------------------------------------------------------------------

    def add_job(
        self,
        service: str,
        outcome: str = "succeeded",
        run_seconds: float = 2.0,
        start: datetime | str | float | None = None,
        errors: Iterable[object] | None = None,
        *,
        job_type: int | None = None,
        final_state: StateValue | None = None,
        running_state: StateValue | None = None,
    ) -> str:
        """Add a job that runs from `start` for `run_seconds`, then ends as `outcome`; its ID.

        :param service: one of m365, iaas_paas, dynamics365, google_workspace, salesforce, aos_scan.
        :param outcome: succeeded, failed, partial, stopped or skipped (stopped/skipped only where
            the service has them: IaaS + PaaS, Salesforce, AOS scan).
        :param run_seconds: how long it shows the service's running state.
        :param start: datetime, ISO 8601 string or epoch seconds; None = now.
        :param errors: messages (or M365 jobErrors dicts) for a failed/partial job: M365
            ``jobErrors``, IaaS ``comments``; None = a default message.
        :param job_type: the service's job type code (default: its backup/scan type).
        :param final_state: an exact terminal wire value instead of the outcome's default (e.g.
            "Partially Finished" for M365); overrides `outcome`.
        :param running_state: an exact running wire value (e.g. IaaS 32 Waiting, Salesforce 5 Paused).
        """
        return self._jobs.add(
            service, outcome=outcome, run_seconds=run_seconds, start=_epoch(start),
            errors=None if errors is None else list(errors), job_type=job_type,
            final_state=final_state, running_state=running_state,
        ).job_id  # fmt: skip

    def job_status(self, service: str, job_id: str) -> dict[str, object]:
        """A job's state now: {service, jobId, jobType, state, stateClass, running, finalState,
        startTime, endTime}; KeyError if there is no such job."""
        if service not in SERVICES:
            raise ValueError(f"service must be one of {SERVICES}")
        job = self._jobs.get(service, job_id)
        if job is None:
            raise KeyError(f"no {service} job {job_id}")
        return job.status(time.time())

    def list_jobs(self, service: str) -> list[dict[str, object]]:
        """``job_status`` of every job of a service, newest first (the order the lists use)."""
        if service not in SERVICES:
            raise ValueError(f"service must be one of {SERVICES}")
        now = time.time()
        return [job.status(now) for job in self._jobs.newest_first(service)]

    # -- Opus (opus.py) ---------------------------------------------------------------------

    @property
    def opus(self) -> OpusStore:
        """The Opus store itself (records, failure rules, archives, restore jobs)."""
        return self._opus

    def opus_records(
        self, connection_id: str, *, include_destroyed: bool = False
    ) -> dict[str, dict[str, Any]]:
        """rowKey -> record (as submitted) stored in an Opus connection; destroyed ones only if asked."""
        return self._opus.records(connection_id, include_destroyed=include_destroyed)

    def opus_destroyed(self, connection_id: str | None = None) -> list[str]:
        """Sorted rowKeys marked Destroyed (in one connection, or in all)."""
        return self._opus.destroyed(connection_id)

    def opus_add_records(
        self,
        connection_id: str,
        records: Iterable[Mapping[str, Any]],
        *,
        disposal_due: TimeLike | None = None,
    ) -> int:
        """Store records directly (as Overwrite would), all with disposal due date `disposal_due`
        (None: derived from ``opus_retention_days``, if set); their count."""
        return self._opus.add_records(connection_id, records, disposal_due=disposal_due)

    def opus_set_disposal_due(self, connection_id: str, due: Mapping[str, TimeLike | None]) -> None:
        """rowKey -> disposal due date (datetime, ISO string or epoch; None clears it)."""
        self._opus.set_disposal_due(connection_id, due)

    def opus_due_count(self, connection_id: str, before: TimeLike) -> int:
        """How many records GET /records/connector/records returns for ``disposalDueDate=before``."""
        return len(self._opus.due(connection_id, before, self._config.opus_retention_days))

    def opus_fail_rows(
        self,
        connection_id: str | None,
        rows: Mapping[str, str] | RowPredicate,
        *,
        times: int | None = None,
    ) -> None:
        """Make submissions of chosen records fail (418 ``failedItems``, not stored).

        :param connection_id: the Opus connection GUID, or None for every connection.
        :param rows: rowKey -> reason, or a function(record) returning a reason or None.
        :param times: how many submissions fail (per row; per rule for a function); None = always.
        """
        self._opus.fail_rows(connection_id, rows, times=times)

    def opus_fail_destroy(self, ids: Mapping[str, str], *, times: int | None = None) -> None:
        """Make destroying chosen rowKeys fail (418 ``failedItems``): id -> reason."""
        self._opus.fail_destroy(ids, times=times)

    def opus_clear(self, connection_id: str | None = None) -> None:
        """Forget stored records (one connection, or all) and every Opus row/destroy failure rule."""
        self._opus.clear(connection_id)

    def opus_add_archive(
        self, kind: str, scope: str, *, outcome: str | int | None = None, run_seconds: float | None = None
    ) -> None:
        """Give a scope archived data. kind: "site_collection" (site URL) or "teams_group" (group
        email); restores of it end as `outcome` after `run_seconds` (None: the config's)."""
        self._opus.add_archive(kind, scope, outcome=outcome, run_seconds=run_seconds)

    def opus_add_restore_job(
        self,
        kind: str = "site_collection",
        scope: str = "https://contoso.sharepoint.com/sites/ArchivedProjects",
        *,
        outcome: str | int = "finished",
        run_seconds: float = 2.0,
        start: TimeLike | None = None,
        phases: Iterable[tuple[int, float]] | None = None,
    ) -> str:
        """Add an Opus restore job directly (see ``OpusStore.add_restore_job``); its id."""
        return self._opus.add_restore_job(
            kind, scope, outcome=outcome, run_seconds=run_seconds, start=start,
            phases=None if phases is None else list(phases),
        )  # fmt: skip

    def opus_restore_job(self, job_id: str) -> dict[str, object]:
        """An Opus restore job now: {kind, scope, id, status, progress, startTime, finishTime,
        statusLabel, running, finalStatus, endTime, request}; KeyError if there is none."""
        job = self._opus.restore_job(job_id)
        if job is None:
            raise KeyError(f"no Opus restore job {job_id}")
        return job.admin(time.time())

    def opus_restore_jobs(self) -> list[dict[str, object]]:
        """``opus_restore_job`` of every Opus restore job, oldest first."""
        return self._opus.restore_jobs()

    # -- data access for tests -------------------------------------------------------------

    def _window(
        self,
        start: datetime,
        end: datetime,
        product_types: Iterable[str] | None,
        geo_locations: Iterable[str] | None,
        end_inclusive: bool,
    ) -> tuple[int, int, AuditFilter | None]:
        products = canonical_values("productTypes", product_types, PRODUCT_TYPES)
        geos = canonical_values("geoLocations", geo_locations, GEO_LOCATIONS)
        lo, hi = self._data.index_range(to_epoch_us(start), to_epoch_us(end), end_inclusive=end_inclusive)
        return lo, hi, AuditFilter.build(products, geos)

    def count_audit(
        self,
        start: datetime,
        end: datetime,
        product_types: Iterable[str] | None = None,
        geo_locations: Iterable[str] | None = None,
        *,
        end_inclusive: bool = False,
    ) -> int:
        """Seeded records in [start, end) (or [start, end]) matching the filters.

        :param product_types: ``productTypes`` API values (e.g. "Portal"); None = all.
        :param geo_locations: ``geoLocations`` values; None = all.
        :param end_inclusive: count a record exactly at `end`, as ``/aos/audit`` does.
        """
        lo, hi, flt = self._window(start, end, product_types, geo_locations, end_inclusive)
        return self._data.count(lo, hi, flt)

    def iter_audit(
        self,
        start: datetime,
        end: datetime,
        product_types: Iterable[str] | None = None,
        geo_locations: Iterable[str] | None = None,
        *,
        end_inclusive: bool = False,
    ) -> Iterator[dict[str, object]]:
        """The records ``count_audit`` counts, as the dicts the API serves, in time order."""
        lo, hi, flt = self._window(start, end, product_types, geo_locations, end_inclusive)
        return self._data.iter_records(lo, hi, flt)

    # -- internals used by the handler -----------------------------------------------------

    def _bump(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._stats[key] += 1

    def _add(self, counts: Mapping[str, int]) -> None:
        with self._lock:
            for key, value in counts.items():
                self._stats[key] += value

    def _arrive(self, cap: int | None) -> bool:
        """Count a Graph request in flight from now on; True when that makes more than `cap`."""
        with self._lock:
            self._in_flight += 1
            now, stats = self._in_flight, self._stats
            stats["max_concurrent_seen"] = max(stats["max_concurrent_seen"], now)
            if self._throttle_answered:
                stats["max_concurrent_after_throttle"] = max(stats["max_concurrent_after_throttle"], now)
            over = cap is not None and now > cap
            if over:
                stats["throttled_concurrency"] += 1
            return over

    def _depart(self, throttled: bool) -> None:
        """A Graph request stops counting, just before its answer is written: a client that has
        read an answer is never counted twice, nor missed by ``max_concurrent_after_throttle``."""
        with self._lock:
            self._in_flight -= 1
            if throttled:
                self._throttle_answered = True

    def _next_fault(self, *kinds: str, allow_random: bool) -> str | None:
        """Injected faults first (the first of `kinds` with a queued one); then a random one at
        `fault_rate` (Graph only)."""
        with self._lock:
            for kind in kinds:
                queue = self._faults[kind]
                if queue:
                    fault = queue.popleft()
                    return None if fault == "ok" else fault
            cfg = self._config
            if allow_random and cfg.fault_rate > 0 and self._rng.random() < cfg.fault_rate:
                return self._rng.choice(cfg.fault_kinds)
        return None

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], Route | None]:
        """(route, its path arguments, a route of that path for another method: 405)."""
        other = None
        for route in self._routes:
            m = route.pattern.fullmatch(path)
            if m is None:
                continue
            if route.method == method:
                return route, {k: unquote(v) for k, v in m.groupdict().items()}, None
            other = other or route
        return None, {}, other

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # never block shutdown on idle keep-alive connections
    request_queue_size = 128  # the default 5 drops bursts of parallel clients into SYN retries

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], emulator: AosEmulator
    ) -> None:
        self.emulator = emulator
        super().__init__(address, handler)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    disable_nagle_algorithm = True  # headers and body are separate writes; avoid ACK stalls
    server: _Server
    _counted = False  # this request is in the Graph in-flight count until _release()

    @property
    def emu(self) -> AosEmulator:
        return self.server.emulator

    def setup(self) -> None:
        super().setup()
        self.emu._track(self.connection, True)

    def finish(self) -> None:
        self.emu._track(self.connection, False)
        with contextlib.suppress(OSError):  # the peer (or stop()) already closed the socket
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        if self.emu.config.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:  # http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # -- plumbing --------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        self._counted = False  # the handler serves every request of a keep-alive connection
        try:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""  # keep-alive needs it drained
            path = url.path.rstrip("/") or "/"
            if path.startswith("/_emulator/"):
                self._admin(method, path, url.query, body)
                return
            emu = self.emu
            emu._bump("requests")
            cfg = emu.config
            if path.startswith("/graph/"):
                over = emu._arrive(cfg.max_concurrent)
                self._counted = True
                if over:
                    self._throttle(method, path[len("/graph") :], cfg.retry_after)
                    return
            if cfg.latency > 0:
                time.sleep(cfg.latency)
            if path == "/identity/.well-known/openid-configuration" and method == "GET":
                self._discovery(cfg.discovery)
            elif path == "/identity/connect/token":
                self._token(method, body)
            elif path.startswith("/graph/"):
                self._graph(method, path[len("/graph") :], url.query, body, cfg)
            else:
                self._json(404, {"error": "not found"})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away; nothing to answer
        except Exception:  # a bug in the emulator: show it, and answer like the service would
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._error(500, "emulator internal error")
        finally:
            self._release()  # no-op unless the answer was never written (client gone, no answer)

    def _release(self, throttled: bool = False) -> None:
        """Leave the Graph in-flight count; called just before an answer's first byte is written."""
        if self._counted:
            self._counted = False
            self.emu._depart(throttled)

    def _json(self, status: int, payload: object, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        self._release()
        self.send_response(status)
        self.send_header("Content-Type", _JSON)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        """The Graph ErrorResponse: {traceId, error, statusCode}, traceId also as a header."""
        trace_id = str(uuid.uuid4())
        self._json(
            status,
            {"traceId": trace_id, "error": message, "statusCode": status},
            {"x-trace-id": trace_id, **(headers or {})},
        )

    def _drop(self) -> None:
        # No status line at all: the client sees the connection close mid-request.
        self.close_connection = True
        self._release()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _reply(self, reply: Reply) -> None:
        if reply.status == 204:  # no body, and (RFC 9110) no Content-Length either
            self._release()
            self.send_response(204)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            return
        self._json(reply.status, reply.payload, reply.headers)

    def _throttle(self, method: str, path: str, retry_after: int) -> None:
        """Turn away a Graph request over ``max_concurrent``: 429 at once (no latency), with
        Retry-After, in the error shape of the endpoint it asked for."""
        route, _, other = self.emu._match(method, path)
        found, text = route or other, "Too many requests (emulated concurrency limit)"
        reply = found.error(429, text, ()) if found else graph_error(429, text)
        reply.headers["Retry-After"] = str(retry_after)
        self._release(throttled=True)
        self._reply(reply)

    def _fault(self, target: str, fault: str, route: Route | None = None) -> None:
        """Answer with a forced fault, in the error shape of the endpoint (`route`; None = token)."""
        emu, retry = self.emu, {"Retry-After": str(self.emu.config.retry_after)}
        if fault in ("drop", "drop_after"):
            emu._bump("fault_drop")
            self._drop()
        elif route is None:
            if fault in ("429", "503"):
                emu._bump(f"fault_{fault}")
                text = "Too many requests" if fault == "429" else "Service unavailable"
                self._error(int(fault), f"{text} (emulated fault)", retry)
            elif fault == "500":
                emu._bump("fault_500")
                self._error(500, "Internal server error (emulated fault)")
            else:
                unauthorized = fault == "401"
                emu._bump("token_error", *(("unauthorized",) if unauthorized else ()))
                error = "invalid_client" if unauthorized else "invalid_request"
                self._json(int(fault), TokenError(error, "emulated fault").body())
        else:
            text, headers, stat = {
                "429": ("Too many requests", retry, "fault_429"),
                "503": ("Service unavailable", retry, "fault_503"),
                "500": ("Internal server error", {}, "fault_500"),
                "401": ("Unauthorized", _BEARER_CHALLENGE, "unauthorized"),
                "400": ("Bad request", {}, route.error_stat),
            }[fault]
            emu._bump(stat)
            reply = route.error(int(fault), f"{text} (emulated fault)", ())
            reply.headers.update(headers)
            self._reply(reply)

    # -- identity --------------------------------------------------------------------------

    def _discovery(self, enabled: bool) -> None:
        emu = self.emu
        emu._bump("discovery")  # counts attempts, so tests can see a fallback after a 404
        if not enabled:
            self._json(404, {"error": "not found"})
            return
        self._json(
            200,
            {
                "issuer": emu.identity_url,
                "token_endpoint": emu.token_url,
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post", "client_secret_basic", "private_key_jwt",
                ],
                "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
            },
        )  # fmt: skip

    def _token(self, method: str, body: bytes) -> None:
        emu = self.emu
        try:
            if method != "POST":
                raise TokenError("invalid_request", "use POST", status=405)
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/x-www-form-urlencoded":
                raise TokenError("invalid_request", "Content-Type must be application/x-www-form-urlencoded")
            pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
            form = dict(pairs)
            emu._identity.record_request(form)
            if len(form) != len(pairs):  # RFC 6749 §3.2: no repeated parameters
                raise TokenError("invalid_request", "repeated form parameter")
        except TokenError as exc:
            emu._bump("token_error")
            self._json(exc.status, exc.body())
            return
        fault = emu._next_fault("token", allow_random=False)
        if fault is not None:
            self._fault("token", fault)
            return
        try:
            answer = emu._identity.issue(
                form, self.headers.get("Authorization"), emu.token_url, emu.config.token_ttl
            )
        except TokenError as exc:
            emu._bump("token_error")
            self._json(exc.status, exc.body())
            return
        emu._bump("token")
        self._json(200, answer, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    # -- Graph -----------------------------------------------------------------------------

    def _graph(self, method: str, path: str, query: str, body: bytes, cfg: EmulatorConfig) -> None:
        """Route a Graph request: method, bearer token, scope, fault, then the service's handler."""
        emu = self.emu
        route, args, allowed = emu._match(method, path)
        if route is None:
            if allowed is None:
                self._error(404, f"no such Graph resource: {path}")
            else:
                self._reply(allowed.error(405, f"{method} is not supported on {path}", ()))
            return
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        info = emu._identity.lookup(token.strip()) if scheme.lower() == "bearer" else None
        if info is None:
            emu._bump("unauthorized")
            reply = route.error(401, "Unauthorized: missing, invalid or expired token", ())
            reply.headers.update(_BEARER_CHALLENGE)
            self._reply(reply)
            return
        if route.scope.lower() not in info.scopes:
            emu._bump("forbidden")
            self._reply(route.error(403, f"Forbidden: the token lacks scope {route.scope}", ()))
            return
        fault = emu._next_fault(route.name, *route.faults, allow_random=True)
        if fault is not None and fault != "drop_after":
            self._fault(route.name, fault, route)
            return
        request = Request(
            method=method, path=path, params=_query_params(query), body=body, path_args=args,
            config=emu.config, graph_url=emu.graph_url, now=time.time(),
        )  # fmt: skip
        reply = route.handler(request)
        if reply.stat is not None:
            emu._bump(reply.stat)
        elif 200 <= reply.status < 300:
            emu._bump(route.name)
        if reply.counts:
            emu._add(reply.counts)
        if fault == "drop_after":
            self._fault(route.name, fault, route)
            return
        self._reply(reply)

    # -- admin -----------------------------------------------------------------------------

    def _admin(self, method: str, path: str, query: str, body: bytes) -> None:
        emu = self.emu
        route = (method, path[len("/_emulator") :])
        try:
            payload = json.loads(body) if body else {}
            if route == ("GET", "/stats"):
                self._json(200, emu.stats())
                return
            if route == ("GET", "/jobs"):
                service = _query_params(query).get("service", [""])[0]
                self._json(200, {"jobs": emu.list_jobs(service)})
                return
            if method == "GET" and route[1].startswith("/jobs/"):
                parts = route[1].split("/")  # "", "jobs", service, job id
                if len(parts) != 4:
                    raise ValueError("use GET /_emulator/jobs/{service}/{jobId}")
                try:
                    self._json(200, emu.job_status(parts[2], unquote(parts[3])))
                except KeyError as exc:
                    self._json(404, {"error": str(exc.args[0])})
                return
            if route[1].startswith("/opus/"):
                status, answer = opus_admin(
                    emu._opus, method, route[1][len("/opus") :], _query_params(query), payload
                )
                self._json(status, answer)
                return
            if route == ("GET", "/audit/count"):
                self._json(200, {"count": emu._audit.count(_query_params(query))})
                return
            if method != "POST":
                self._json(404, {"error": f"no admin route {method} {path}"})
                return
            if not isinstance(payload, dict):
                raise ValueError("the body must be a JSON object")
            if route[1] == "/reset":
                emu.reset_stats()
            elif route[1] == "/config":
                emu.configure(**payload)
            elif route[1] == "/clients":
                emu.register_client(
                    str(payload["client_id"]),
                    secret=payload.get("secret"),
                    certificate_pem=payload.get("certificate_pem"),
                    scopes=payload.get("scopes", ALL_SCOPES),
                )
            elif route[1] == "/faults":
                emu.inject_faults(str(payload["kind"]), payload["faults"])
            elif route[1] == "/revoke":
                emu.revoke_tokens()
            elif route[1] == "/jobs":
                allowed = {"service", "outcome", "run_seconds", "start", "errors", "job_type",
                           "final_state", "running_state"}  # fmt: skip
                unknown = set(payload) - allowed
                if unknown:
                    raise ValueError(f"unknown fields {sorted(unknown)}; use {sorted(allowed)}")
                job_id = emu.add_job(**payload)
                self._json(200, {"jobId": job_id})
                return
            else:
                self._json(404, {"error": f"no admin route {method} {path}"})
                return
            self._json(200, {"ok": True})
        except (ValueError, KeyError, TypeError) as exc:
            self._json(400, {"error": f"{type(exc).__name__}: {exc}"})


_BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def _epoch(value: datetime | str | float | None) -> float:
    """A job start: None = now; naive datetimes and zone-less strings are UTC."""
    if value is None:
        return time.time()
    if isinstance(value, datetime):
        return to_utc(value).timestamp()
    if isinstance(value, str):
        return to_utc(datetime.fromisoformat(value.strip())).timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("start must be a datetime, an ISO 8601 string or epoch seconds")
    return float(value)
