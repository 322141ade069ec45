"""
How one AOS API call is made, written once for the sync and the async hook (sans-I/O).

Each rule of the conversation with the API lives here as a generator that *yields* what it needs
done and receives the outcome: a :class:`Call` (one HTTP attempt; the transport answers with a
:class:`Reply` or a :class:`NoReply`), a :class:`Sleep`, or a :class:`GetToken`. The sync hook drives
these generators with ``httpx.Client`` and ``time.sleep``; the async hook with ``httpx.AsyncClient``
and ``asyncio.sleep``. So the retry loop, the 401 evict-and-replay-once rule, the error mapping
(traceId, scrubbing) and OIDC discovery exist exactly once, and the two hooks cannot drift apart.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import logging
from collections.abc import Callable, Collection, Generator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict, TypeVar
from urllib.parse import urlsplit

from airflow_provider_aos.auth import AccessToken, Credential, TokenCache, parse_token_response
from airflow_provider_aos.config import AosConnectionConfig, origin
from airflow_provider_aos.exceptions import AosApiError, AosAuthError, AosConfigError, AosPaginationError
from airflow_provider_aos.pagination import Params, QueryParams, to_params
from airflow_provider_aos.redact import scrub, scrub_and_cut
from airflow_provider_aos.retry import Failure, RetryPolicy

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a TCP/TLS connection."""
DEFAULT_READ_TIMEOUT = 60.0
"""Seconds to wait for any byte of a response."""
DEFAULT_ATTEMPT_TIMEOUT = 300.0
"""Seconds one attempt may take in all, body included: a server trickling bytes cannot hold a task."""

T = TypeVar("T")


class RequestOptions(TypedDict, total=False):
    """
    Options of one API request, for both hooks.

    :param params: query parameters; list values are sent as repeated parameters.
    :param json: JSON body.
    :param scope: the permission the endpoint needs (default: the connection's ``scope``).
    :param idempotent: whether retrying after a server error is safe (default: by method).
    :param ok_statuses: error statuses to return instead of raising (e.g. Opus's 418).
    """

    params: QueryParams
    json: Any
    scope: str | None
    idempotent: bool | None
    ok_statuses: Collection[int]


@dataclass(frozen=True)
class Call:
    """One HTTP attempt for the transport to make. Headers and form may hold secrets: not in ``repr``."""

    method: str
    url: str
    params: Params = ()
    json: Any = None
    form: Mapping[str, str] | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    read_timeout: float = DEFAULT_READ_TIMEOUT
    deadline: float = DEFAULT_ATTEMPT_TIMEOUT

    @property
    def path(self) -> str:
        """The URL path: what errors and logs name (a query may carry an opaque paging token)."""
        return urlsplit(self.url).path


@dataclass(frozen=True)
class Reply:
    """A complete HTTP response. ``headers`` has lower-case names."""

    status: int
    headers: Mapping[str, str]
    content: bytes = field(repr=False)  # a careless server may echo a token in its body

    @property
    def status_code(self) -> int:
        """The status, under the name ``requests`` and ``httpx`` give it."""
        return self.status

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The decoded JSON body (None for an empty body); raises ValueError when it is not JSON."""
        return jsonlib.loads(self.content) if self.content.strip() else None


@dataclass(frozen=True)
class NoReply:
    """No response: the connection failed (``CONNECT``: never sent) or broke (``TRANSPORT``)."""

    failure: Failure
    error: str


@dataclass(frozen=True)
class Sleep:
    """Wait before the next attempt."""

    seconds: float


@dataclass(frozen=True)
class GetToken:
    """A fresh token for ``scope``: the driver returns the cached one or runs :meth:`AosSession.fetch_token`."""

    scope: str


Action = Call | Sleep | GetToken
Steps = Generator[Action, Any, T]


class Stepper:
    """
    Steps a protocol generator for a driver: ``action = stepper.send(outcome)`` until it returns None,
    then the generator's result is in :attr:`value` (its exception propagates from ``send``).
    """

    def __init__(self, steps: Steps[Any]) -> None:
        self._steps = steps
        self.value: Any = None

    def send(self, outcome: Any) -> Action | None:
        try:
            return self._steps.send(outcome)
        except StopIteration as stop:
            self.value = stop.value
            return None


def error_details(reply: Reply, secrets: Iterable[str | None]) -> tuple[str | None, str | None]:
    """
    (message, traceId) from any of the API's error envelopes (endpoints.md §4), tolerantly.

    The server's text is scrubbed of ``secrets`` *before* it is shortened, so no prefix of a secret
    or token can survive the cut.
    """
    secrets = list(secrets)
    trace_id = reply.header("x-trace-id") or reply.header("request-id")
    message: str | None = None
    try:
        body = reply.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        for key in ("traceId", "requestId"):
            if isinstance(body.get(key), str) and body[key]:
                trace_id = body[key]
                break
        for key in ("error", "message", "errorMessage", "error_description"):
            value = body.get(key)
            if isinstance(value, str) and value:
                message = value
                break
            if isinstance(value, Mapping) and isinstance(value.get("message"), str):
                message = value["message"]
                break
        errors = body.get("errors")
        if isinstance(errors, list):
            details = [
                f"{e.get('field')}: {e.get('message')}" if e.get("field") else str(e.get("message"))
                for e in errors
                if isinstance(e, Mapping) and e.get("message")
            ]
            if details:
                message = "; ".join(filter(None, [message, *details]))
    elif reply.content:
        message = reply.content.decode("utf-8", "replace").strip()
    return scrub_and_cut(message, secrets, 500), scrub_and_cut(trace_id, secrets, 200)


def token_endpoint_from_discovery(identity_url: str, document: Any) -> str | None:
    """
    The token endpoint of an OIDC discovery document, if it is safe to use.

    Mirrors IdentityModel's default policy (auth.md §2): the endpoint must sit on the identity
    service's own origin, so a tampered document cannot redirect our credentials elsewhere.
    """
    endpoint = document.get("token_endpoint") if isinstance(document, Mapping) else None
    if isinstance(endpoint, str) and origin(endpoint) == origin(identity_url):
        return endpoint
    return None


@dataclass
class AosSession:
    """
    Everything one hook knows between calls (settings, credential, tokens), and the protocol steps.

    :param config: the validated connection.
    :param credential: the client secret or certificate credential.
    :param retry_policy: when to retry, and how long to wait.
    :param tokens: the token cache (per scope).
    :param read_timeout: seconds to wait for any byte of a response.
    :param attempt_timeout: seconds one attempt may take in all, body included.
    """

    config: AosConnectionConfig
    credential: Credential = field(repr=False)
    retry_policy: RetryPolicy
    tokens: TokenCache
    read_timeout: float = DEFAULT_READ_TIMEOUT
    attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT
    token_endpoint: str | None = None
    logger: Any = field(default=log, repr=False)  # the hook's logger (stdlib or Airflow's structlog)

    def secrets(self, *more: str) -> list[str]:
        """Every secret this session knows of, plus ``more`` (tokens and assertions just sent)."""
        return [*self.config.secrets(), *more]

    def call(self, method: str, url: str, **kwargs: Any) -> Call:
        return Call(method, url, read_timeout=self.read_timeout, deadline=self.attempt_timeout, **kwargs)

    # -- the retry loop ---------------------------------------------------------------------------

    def send(
        self, make_call: Call | Callable[[], Call], *, idempotent: bool | None = None
    ) -> Steps[tuple[Reply | NoReply, int]]:
        """
        Attempts of one logical request under the retry policy; returns (outcome, attempts).

        ``make_call`` may be a factory, asked for each attempt, so a token request can carry a fresh
        assertion.
        """
        state = self.retry_policy.start()
        while True:
            call = make_call if isinstance(make_call, Call) else make_call()
            outcome = yield call
            if isinstance(outcome, NoReply):
                delay = state.next_delay(outcome.failure, call.method, idempotent=idempotent)
                if delay is None:
                    return outcome, state.attempts
                self.logger.warning(
                    "AOS %s %s: %s; retry %d in %.1fs",
                    call.method,
                    call.path,
                    outcome.error,
                    state.attempts,
                    delay,
                )
            elif outcome.status in self.retry_policy.retry_statuses:
                retry_after = outcome.header("Retry-After")
                delay = state.next_delay(
                    Failure.STATUS,
                    call.method,
                    status=outcome.status,
                    idempotent=idempotent,
                    retry_after=retry_after,
                )
                if delay is None:
                    return outcome, state.attempts
                _, trace_id = error_details(outcome, self.secrets())
                self.logger.warning(
                    "AOS %s %s: HTTP %d (traceId %s); retry %d in %.1fs",
                    call.method, call.path, outcome.status, trace_id, state.attempts, delay,
                )  # fmt: skip
            else:
                state.attempts += 1
                return outcome, state.attempts
            yield Sleep(delay)

    # -- tokens -----------------------------------------------------------------------------------

    def discover_token_endpoint(self) -> Steps[str]:
        """The token endpoint: from OIDC discovery of the identity service, else ``{identity}/connect/token``."""
        if self.token_endpoint is None:
            identity = self.config.identity_url
            outcome = yield replace(
                self.call("GET", f"{identity}/.well-known/openid-configuration"), read_timeout=30.0
            )
            endpoint = None
            if isinstance(outcome, Reply) and outcome.status == 200:
                with contextlib.suppress(ValueError):
                    endpoint = token_endpoint_from_discovery(identity, outcome.json())
            if endpoint is None:
                endpoint = f"{identity}/connect/token"
                self.logger.info(
                    "OIDC discovery of %s gave no usable token endpoint; using %s", identity, endpoint
                )
            self.token_endpoint = endpoint
        return self.token_endpoint

    def resolve_scope(self, scope: str | None) -> str:
        resolved = " ".join((scope or self.config.scope or "").split())
        if not resolved:
            raise AosConfigError(
                "extra.scope",
                "no scope was requested and the connection has no default scope; set extra.scope "
                "(e.g. audit.read.all) or pass scope=",
            )
        return resolved

    def fetch_token(self, scope: str | None) -> Steps[AccessToken]:
        """Ask the identity service for a new token (no cache)."""
        endpoint = yield from self.discover_token_endpoint()
        sent: list[str] = []

        def form_call() -> Call:
            form = self.credential.token_form(
                scope=scope, token_endpoint=endpoint, username=self.config.username
            )
            sent.extend(v for k, v in form.items() if k in ("client_secret", "client_assertion"))
            return self.call("POST", endpoint, form=form)

        outcome, attempts = yield from self.send(form_call, idempotent=True)
        if isinstance(outcome, NoReply):
            raise AosAuthError(
                f"the identity service at {endpoint} could not be reached ({outcome.error}, "
                f"{attempts} attempt(s)). Check extra.identity_url / extra.data_center, and the worker's "
                "network and proxy settings."
            )
        token = parse_token_response(
            outcome.status,
            outcome.content,
            scope=scope,
            token_url=endpoint,
            secrets=self.secrets(*sent),
            now=self.tokens.now(),
        )
        self.logger.info(
            "Obtained an AOS access token (%s auth, scope %s, valid %ds)",
            self.config.auth_method, token.scope or "-", int(token.lifetime),
        )  # fmt: skip
        return token

    # -- API calls --------------------------------------------------------------------------------

    def url_for(self, path_or_url: str) -> str:
        """
        The absolute URL of an API path. An absolute URL must be on the configured API host: the
        bearer token is never sent anywhere else (a tampered next link cannot exfiltrate it).
        """
        api_url = self.config.api_url
        if path_or_url.lower().startswith(("http://", "https://")):
            if origin(path_or_url) != origin(api_url):
                host = urlsplit(path_or_url).netloc.rpartition("@")[2]
                raise AosPaginationError(
                    f"refusing to follow a link to {host!r}: the access token is only sent to the configured "
                    f"API host {urlsplit(api_url).netloc!r}"
                )
            return path_or_url
        return f"{api_url}/{path_or_url.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams = None,
        json: Any = None,
        scope: str | None = None,
        idempotent: bool | None = None,
        ok_statuses: Collection[int] = (),
    ) -> Steps[Reply]:
        """
        One authenticated request; raises :class:`AosApiError` on an error status.

        A 401 evicts the cached token and replays the request once with a new one (a 401 means the
        server did not act, so this is safe for any method).
        """
        url = self.url_for(path)
        resolved = self.resolve_scope(scope)
        query = to_params(params)
        attempts = 0
        used: list[str] = []  # tokens sent, scrubbed from any error text the server echoes back
        for replay in (False, True):
            token: AccessToken = yield GetToken(resolved)
            used.append(token.value)
            headers = {"Authorization": f"Bearer {token.value}", "Accept": "application/json"}
            call = self.call(method, url, params=query, json=json, headers=headers)
            outcome, n = yield from self.send(call, idempotent=idempotent)
            attempts += n
            if isinstance(outcome, NoReply):
                raise AosApiError(
                    method=method, path=call.path, status=None, attempts=attempts,
                    error=f"{outcome.error}: {urlsplit(url).hostname} could not be reached",
                )  # fmt: skip
            reply = outcome
            if reply.status == 401 and not replay:
                self.tokens.evict(resolved, token.value)
                self.logger.info(
                    "AOS %s %s: HTTP 401; getting a new token and replaying once", method, call.path
                )
                continue
            break
        if reply.status >= 300 and reply.status not in ok_statuses:
            message, trace_id = error_details(reply, self.secrets(*used))
            if reply.status == 401:
                message = (message + ". " if message else "") + (
                    "A fresh token was rejected too: check that the connection's data center / host is the "
                    "one of your AOS tenant"
                )
            elif reply.status == 403:
                message = (message + ". " if message else "") + (
                    f"Check that the app registration is granted {resolved!r}"
                )
            elif reply.status < 400:
                location = scrub(reply.header("Location") or "", self.secrets(*used))
                message = f"unexpected redirect to {location.split('?', 1)[0]!r} (not followed)"
            raise AosApiError(
                method=method, path=call.path, status=reply.status,
                error=message, trace_id=trace_id, attempts=attempts,
            )  # fmt: skip
        return reply

    def request_json(
        self, method: str, path: str, *, decode: Callable[[bytes], Any] | None = None, **kwargs: Any
    ) -> Steps[Any]:
        """
        :meth:`request`, returning the decoded JSON body (None for an empty body).

        :param decode: turns the body's bytes into the result (default: :meth:`Reply.json`); raises
            ValueError for a body that is not JSON.
        """
        reply = yield from self.request(method, path, **kwargs)
        try:
            return reply.json() if decode is None else decode(reply.content)
        except ValueError:
            raise AosApiError(
                method=method, path=urlsplit(self.url_for(path)).path, status=reply.status,
                error="the response is not JSON",
            ) from None  # fmt: skip
