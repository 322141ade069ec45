"""What the HTTP front and the service modules (audit.py, jobs.py, opus.py) exchange.

A service module turns a parsed :class:`Request` into a :class:`Reply` and never touches the
socket; the front (server.py) owns routing, bearer/scope checks, faults, latency and counters.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .config import EmulatorConfig

ApiError = dict[str, str]  # {code, field, message}, the Backup ApiResult's error item


@dataclass(frozen=True)
class Request:
    """One Graph request as a service module sees it."""

    method: str
    path: str  # below /graph, no trailing slash
    params: Mapping[str, list[str]]  # query parameters; names lower-cased (ASP.NET-style binding)
    body: bytes
    path_args: Mapping[str, str]  # named groups of the route pattern, percent-decoded
    config: EmulatorConfig  # the settings snapshot this request runs with
    graph_url: str  # absolute base for next links (never the request's Host header)
    now: float  # time.time() when the request arrived

    def param(self, name: str) -> str | None:
        """First value of a query parameter (name in lower case), or None."""
        values = self.params.get(name)
        return values[0] if values else None


@dataclass
class Reply:
    status: int
    payload: object
    headers: dict[str, str] = field(default_factory=dict)
    stat: str | None = None  # counter to bump; None = the route's own counter on 2xx
    counts: dict[str, int] = field(default_factory=dict)  # further counters to add to (e.g. items)


# (status, message, errors) -> the error answer in the endpoint's own envelope family.
ErrorFactory = Callable[[int, str, Sequence[ApiError]], Reply]
Handler = Callable[[Request], Reply]


@dataclass(frozen=True)
class Route:
    """One Graph endpoint.

    :param name: its request counter (stats key) and its own fault-queue target.
    :param faults: further fault-queue targets consulted after ``name`` (e.g. "jobs").
    :param error_stat: counter bumped by an injected 400.
    """

    method: str
    pattern: re.Pattern[str]
    name: str
    scope: str
    handler: Handler
    error: ErrorFactory
    error_stat: str
    faults: tuple[str, ...] = ()


def trace_id() -> str:
    return str(uuid.uuid4())


def graph_error(status: int, message: str, errors: Sequence[ApiError] = ()) -> Reply:
    """The Graph ErrorResponse {traceId, error, statusCode} (``/aos/*``), traceId also as a header."""
    tid = trace_id()
    return Reply(status, {"traceId": tid, "error": message, "statusCode": status}, {"x-trace-id": tid})
