"""
Questions about AOS jobs, asked once for every caller: protocol steps (see :mod:`.protocol`) that a
sensor drives with the sync hook and a trigger with the async hook, so a poke and a deferred poll
read a job the same way.

Drive them with ``hook.drive(lambda session: read_job(session, ...))`` (sync) or
``await hook.drive(...)`` (async).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow_provider_aos.exceptions import AosApiError, AosAuthError
from airflow_provider_aos.jobs import (
    AosJob,
    JobKind,
    find_job,
    get_job_kind,
    in_window,
    iso_utc,
    job_from_response,
    parse_api_time,
    parse_job,
)
from airflow_provider_aos.pagination import PageRequest, PageWalk
from airflow_provider_aos.protocol import AosSession, Sleep, Steps

DEFAULT_MAX_CONSECUTIVE_ERRORS = 5
NOT_FOUND_GRACE = 900.0
"""Seconds after a window's end during which a job started at its very end may still appear."""
MAX_ERROR_BACKOFF = 600.0
"""Seconds: the longest wait after failed polls (unless the poll interval itself is longer)."""
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """
    Whether a failed poll is worth polling again: the service or the network had a bad moment
    (after the hook's own retries), as opposed to a wrong request or a refused credential.
    """
    if isinstance(exc, AosApiError):
        return exc.status is None or exc.status in TRANSIENT_STATUSES
    if isinstance(exc, AosAuthError):
        return exc.status is None or exc.status >= 500
    return False


def error_backoff(poll_interval: float, errors: int) -> float:
    """
    Seconds to wait after ``errors`` failed polls in a row: the poll interval, doubled for each
    further failure, at most ``max(poll_interval, MAX_ERROR_BACKOFF)``.

    Never sooner than a healthy poll: a wait that is rate-limited (429 after the hook's own retries)
    slows down rather than speeding up, and tolerating ``max_consecutive_errors`` failures covers at
    least as long an outage as a poke-mode sensor polling every ``poll_interval`` does.
    """
    return float(min(poll_interval * 2.0 ** max(errors - 1, 0), max(poll_interval, MAX_ERROR_BACKOFF)))


def read_job(
    session: AosSession,
    kind: JobKind | str,
    job_id: str,
    *,
    location: str | None = None,
    filters: Mapping[str, Any] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Steps[AosJob | None]:
    """
    One job as it is now, or None while the API does not know it (yet).

    Through the detail endpoint or an id search where the kind has one; otherwise (Dynamics 365,
    Google Workspace, Salesforce) by walking the list of the window ``[start, end)``.
    """
    kind = get_job_kind(kind)
    if kind.poll_by is None:
        return (yield from _scan(session, kind, filters, start, end, lambda job, best: job.id == job_id))
    path, params = kind.poll_request(job_id, location=location)
    try:
        body = yield from session.request_json("GET", path, params=tuple(params), scope=kind.scope)
    except AosApiError as exc:
        if exc.status == 404:  # a job just started may not be readable yet
            return None
        raise
    if kind.poll_by == "detail":
        return job_from_response(kind, body, job_id)
    return find_job(kind, body, job_id)


def newest_job(
    session: AosSession,
    kind: JobKind | str,
    *,
    filters: Mapping[str, Any] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Steps[AosJob | None]:
    """The job matching ``filters`` that started last within ``[start, end)``, or None."""

    def newer(job: AosJob, best: AosJob | None) -> bool:
        if best is None:
            return True
        if job.start_time is None or best.start_time is None:
            return job.start_time is None and best.start_time is not None  # not started: newest of all
        return job.start_time > best.start_time

    return (yield from _scan(session, get_job_kind(kind), filters, start, end, newer))


def _scan(
    session: AosSession,
    kind: JobKind,
    filters: Mapping[str, Any] | None,
    start: datetime | None,
    end: datetime | None,
    better: Callable[[AosJob, AosJob | None], bool],
) -> Steps[AosJob | None]:
    """Walk the window's list; keep the job ``better`` prefers. Each job counts once (§8)."""
    if kind.list_path is None or kind.paging is None:
        raise AosApiError(
            method="GET", path="-", status=None, error=f"{kind.title} jobs have no list endpoint"
        )
    walk = PageWalk(kind.paging)
    request: PageRequest | None = walk.first(
        PageRequest(url=kind.list_path, params=tuple(kind.query(filters, start, end)))
    )
    best: AosJob | None = None
    seen: set[str] = set()
    while request is not None:
        body = yield from session.request_json(
            request.method, request.url, params=request.params, json=request.json, scope=kind.scope
        )
        items, request = walk.advance(request, body)
        for raw in items:
            job = parse_job(kind, raw)
            if job.id in seen or not in_window(job, start, end):
                continue
            seen.add(job.id)
            if better(job, best):
                best = job
    return best


@dataclass(frozen=True)
class JobQuery:
    """
    Which job to watch: ``job_id`` of ``kind``, or (without one) the newest job matching ``filters``
    that started in ``[start, end)``. Plain data, so a sensor pokes with it and a trigger carries it.
    """

    kind: str
    job_id: str | None = None
    filters: Mapping[str, Any] = field(default_factory=dict)
    start: datetime | None = None
    end: datetime | None = None

    def steps(self, session: AosSession) -> Steps[AosJob | None]:
        """The job as it is now (None: not found yet)."""
        if self.job_id:
            location = self.filters.get("location")
            return read_job(
                session,
                self.kind,
                self.job_id,
                location=location,
                filters=self.filters,
                start=self.start,
                end=self.end,
            )
        return newest_job(session, self.kind, filters=self.filters, start=self.start, end=self.end)

    def none_can_come(self, now: float) -> bool:
        """
        Without a job id, a window that ended (plus :data:`NOT_FOUND_GRACE` for the API to list a job
        that started at its very end) with no matching job will never have one. With a job id, a job
        not found yet may be one just started: that wait goes on.
        """
        return not self.job_id and self.end is not None and now > self.end.timestamp() + NOT_FOUND_GRACE

    def not_found_message(self) -> str:
        return (
            f"no job found: {self.describe()}, and the window ended at {iso_utc(self.end)}; "
            "check the filters and the window (start_time, end_time)"
        )

    def describe(self) -> str:
        """What is being waited for, for log lines and errors."""
        title = get_job_kind(self.kind).title
        if self.job_id:
            return f"{title} job {self.job_id}"
        window = f"{iso_utc(self.start) or '-'} to {iso_utc(self.end) or '-'}"
        return f"the newest {title} job matching {dict(self.filters) or 'no filter'} started {window}"

    def to_dict(self) -> dict[str, Any]:
        """JSON primitives only (trigger kwargs)."""
        return {
            "kind": self.kind,
            "job_id": self.job_id,
            "filters": dict(self.filters),
            "start": iso_utc(self.start),
            "end": iso_utc(self.end),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobQuery:
        return cls(
            kind=data["kind"],
            job_id=data.get("job_id"),
            filters=dict(data.get("filters") or {}),
            start=parse_api_time(data.get("start")),
            end=parse_api_time(data.get("end")),
        )


def job_event(status: str, job: AosJob | None, message: str) -> dict[str, Any]:
    """The outcome of a wait, as JSON primitives (a trigger event's payload, or a sync wait's result)."""
    return {"status": status, "job": job.to_dict() if job is not None else None, "message": message}


def wait_for_job(
    session: AosSession,
    query: JobQuery,
    *,
    poll_interval: float,
    deadline: float | None = None,
    max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
    clock: Callable[[], float] = time.time,
) -> Steps[dict[str, Any]]:
    """
    Poll until the job is terminal, the deadline (epoch seconds) passes, or polling fails for good.

    The one poll loop of the provider: a trigger drives it on the event loop, an operator that waits
    in the worker drives it with the sync hook. A transient failure (:func:`is_transient`, after
    the hook's own retries) is polled again with backoff until ``max_consecutive_errors`` polls in a
    row have failed; any other failure ends the wait at once. Returns :func:`job_event` with status
    ``terminal``, ``timeout``, ``error``, or ``not_found`` (no job id, and the window ended with no
    matching job: :meth:`JobQuery.none_can_come`).
    """
    what = query.describe()
    log = session.logger
    last: AosJob | None = None
    errors = 0
    while True:
        try:
            job = yield from query.steps(session)
        except Exception as exc:
            errors += 1
            if not is_transient(exc):
                return job_event("error", last, f"polling {what} failed: {exc}")
            if errors >= max_consecutive_errors:
                return job_event("error", last, f"polling {what} failed {errors} times in a row: {exc}")
            wait = error_backoff(poll_interval, errors)
            log.warning(
                "Polling %s failed (%s); transient, try %d of %d in %.0fs",
                what, exc, errors, max_consecutive_errors, wait,
            )  # fmt: skip
        else:
            errors = 0
            wait = poll_interval
            if job is None:
                if query.none_can_come(clock()):
                    return job_event("not_found", None, query.not_found_message())
                log.info("%s: not found yet", what)
            else:
                last = job
                if job.state.is_terminal:
                    return job_event("terminal", job, f"{what} ended {job.state.name}")
                log.info("%s is %s (%r)", what, job.state.name, job.raw_state)
        if deadline is not None:
            left = deadline - clock()
            if left <= 0:
                return job_event("timeout", last, f"{what} was not done by the deadline")
            wait = min(wait, left)
        yield Sleep(wait)
