"""
The hooks: the only places that talk HTTP to AvePoint Online Services.

:class:`AosHook` (workers) and :class:`AosAsyncHook` (triggers) are two drivers of the same
protocol (:mod:`airflow_provider_aos.protocol`): the protocol decides what to send, when to retry and
what an error means; a hook only moves bytes (``httpx.Client`` or ``httpx.AsyncClient``), sleeps, and
guards its token cache. One HTTP library for both, so timeouts and errors mean the same in each.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import ssl
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypedDict, TypeVar, Unpack

import httpx
from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_aos.auth import AccessToken, Credential, TokenCache, credential_for
from airflow_provider_aos.config import AosConnectionConfig
from airflow_provider_aos.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_provider_aos.pagination import (
    DEFAULT_MAX_EMPTY_PAGES,
    NextLinkPaging,
    Page,
    PageIterator,
    PageRequest,
    PageWalk,
    PagingStyle,
    QueryParams,
    to_params,
)
from airflow_provider_aos.protocol import (
    CONNECT_TIMEOUT,
    DEFAULT_ATTEMPT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    Action,
    AosSession,
    Call,
    GetToken,
    NoReply,
    Reply,
    RequestOptions,
    Sleep,
    Stepper,
    Steps,
    token_endpoint_from_discovery,
)
from airflow_provider_aos.redact import scrub
from airflow_provider_aos.retry import Failure, RetryPolicy
from airflow_provider_aos.throttle import AdaptiveLimit

__all__ = ["AosAsyncHook", "AosHook", "token_endpoint_from_discovery"]

USER_AGENT = "airflow-provider-aos"
T = TypeVar("T")


def mask(value: str) -> None:
    """Register a value we minted (token, assertion) with Airflow's secret masker."""
    from airflow.providers.common.compat.sdk import mask_secret

    # Outside a task (API server, tests) there may be no masker to talk to; never fail a call for that.
    with contextlib.suppress(Exception):
        mask_secret(value)


async def amask(value: str) -> None:
    """:func:`mask` for the event loop: Airflow 3's masker reaches the supervisor without blocking."""
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:  # Airflow 2: the masker is in-process and does no I/O
        mask(value)
        return
    with contextlib.suppress(Exception):
        await amask_secret(value)


# -- what both transports share: httpx arguments, outcomes and timeouts ------------------------------


class AttemptTimeout(Exception):
    """One attempt ran past its overall deadline (e.g. a server trickling its body byte by byte)."""


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """
    TLS verification, always on, with one context per process: building one reads the CA bundle
    (about 20 ms of CPU), too much to repeat for each of a triggerer's hundreds of triggers. A CA
    bundle named the ``requests`` way (``REQUESTS_CA_BUNDLE``) is honoured, and ``SSL_CERT_FILE``.
    """
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        return ssl.create_default_context(cafile=bundle)
    return httpx.create_ssl_context(trust_env=True)


def _client_options() -> dict[str, Any]:
    return {
        "headers": {"User-Agent": USER_AGENT},
        "verify": _ssl_context(),
        "follow_redirects": False,  # a redirect must not carry the bearer token anywhere
        "trust_env": True,  # proxies and SSL_CERT_FILE from the environment, as for requests
    }


def _request_args(call: Call) -> dict[str, Any]:
    return {
        "method": call.method,
        "url": call.url,
        "params": list(call.params) or None,  # None keeps the query of a followed link
        "json": call.json,
        "data": call.form,
        "headers": dict(call.headers),
        "timeout": httpx.Timeout(call.read_timeout, connect=CONNECT_TIMEOUT),
    }


def _reply(response: httpx.Response, content: bytes) -> Reply:
    return Reply(
        status=response.status_code,
        headers={k.lower(): v for k, v in response.headers.items()},
        content=content,
    )


def _no_reply(exc: BaseException, call: Call) -> NoReply:
    """What a transport exception means for retrying: was the request possibly seen by the server?"""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return NoReply(Failure.CONNECT, type(exc).__name__)
    if isinstance(exc, AttemptTimeout | TimeoutError):
        return NoReply(Failure.TRANSPORT, f"no complete response within {call.deadline:g}s")
    return NoReply(Failure.TRANSPORT, type(exc).__name__)


class PageOptions(TypedDict, total=False):
    """
    Options of a page walk, for both hooks.

    :param params: query parameters of the first page.
    :param scope: the permission the endpoint needs.
    :param style: the endpoint's paging style (default: ``nextLink`` with ``skipToken``).
    :param method: ``GET``, or ``POST`` for endpoints that page through a JSON body.
    :param json: JSON body of the first page (POST paging).
    :param max_pages: stop after this many pages.
    :param max_empty_pages: fail after this many empty pages in a row that still link onwards.
    :param decode: turns a page's bytes into its body (default: JSON into Python objects); e.g.
        :func:`~airflow_provider_aos.pagination.decode_records_raw` keeps records as JSON bytes.
    """

    params: QueryParams
    scope: str | None
    style: PagingStyle | None
    method: str
    json: Any
    max_pages: int | None
    max_empty_pages: int
    decode: Callable[[bytes], Any] | None


def _first_page(path: str, options: PageOptions) -> PageRequest:
    return PageRequest(
        url=path,
        params=to_params(options.get("params")),
        method=options.get("method", "GET"),
        json=options.get("json"),
    )


def _page_request(request: PageRequest, scope: str | None) -> RequestOptions:
    # Paging reads data, so a POST here is as safe to retry as a GET.
    return {"params": request.params, "json": request.json, "scope": scope, "idempotent": True}


def _page_steps(session: AosSession, request: PageRequest, options: PageOptions) -> Steps[Any]:
    """The steps of one page's request, decoded the walk's way."""
    return session.request_json(
        request.method,
        request.url,
        decode=options.get("decode"),
        **_page_request(request, options.get("scope")),
    )


class _AosHookBase(BaseHook):
    """What the sync and the async hook share: arguments, token cache, the protocol session."""

    conn_name_attr = "aos_conn_id"
    default_conn_name = "aos_default"
    conn_type = "aos"
    hook_name = "AvePoint Online Services"

    def __init__(
        self,
        aos_conn_id: str = default_conn_name,
        *,
        timeout: float = DEFAULT_READ_TIMEOUT,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aos_conn_id = aos_conn_id
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.retry_policy = retry_policy or RetryPolicy()
        self.tokens = TokenCache()

    def _new_session(self, config: AosConnectionConfig, credential: Credential) -> AosSession:
        return AosSession(
            config=config,
            credential=credential,
            retry_policy=self.retry_policy,
            tokens=self.tokens,
            read_timeout=self.timeout,
            attempt_timeout=self.attempt_timeout,
            logger=self.log,
        )


class AosHook(_AosHookBase):
    """
    Interact with the AvePoint Online Services (AOS) Graph API.

    Obtains OAuth2 client-credentials tokens (client secret, or a certificate-signed JWT assertion),
    caches them per scope, retries transient failures with backoff, and pages through list endpoints
    without holding more than one page.

    :param aos_conn_id: the Airflow connection (type ``aos``) to use.
    :param timeout: seconds to wait for any byte of a response.
    :param attempt_timeout: seconds one attempt may take in all, body included; an overrun is a
        transient failure, retried under the retry policy where retrying is safe.
    :param retry_policy: retry rules; the default retries 429 and 5xx (idempotent requests only),
        honours ``Retry-After``, and gives up after 6 attempts or 10 minutes.
    """

    # How the hook waits between attempts; tests replace it to observe the waits without sleeping.
    sleep: Callable[[float], None] = staticmethod(time.sleep)
    limit: AdaptiveLimit | None = None
    """Bounds the HTTP attempts in flight across threads sharing this hook, adapting to throttling."""

    def __init__(self, aos_conn_id: str = _AosHookBase.default_conn_name, **kwargs: Any) -> None:
        super().__init__(aos_conn_id, **kwargs)
        self._token_lock = threading.Lock()  # one token request per scope, however many threads ask

    # -- connection -------------------------------------------------------------------------------

    @cached_property
    def config(self) -> AosConnectionConfig:
        """The validated connection settings (raises :class:`AosConfigError` naming the bad field)."""
        conn = self.get_connection(self.aos_conn_id)
        config = AosConnectionConfig.from_connection(conn, conn.extra_dejson)
        for secret in config.secrets():  # Airflow masks these already in a task; be sure elsewhere too
            mask(secret)
        return config

    @cached_property
    def credential(self) -> Credential:
        """The client secret or certificate credential of the connection."""
        return credential_for(self.config, on_assertion=mask)

    @cached_property
    def protocol(self) -> AosSession:
        """The protocol state of this hook (token endpoint, tokens, retry rules)."""
        return self._new_session(self.config, self.credential)

    @cached_property
    def client(self) -> httpx.Client:
        """One pooled HTTP client for every request of this hook (TLS verification on)."""
        return httpx.Client(**_client_options())

    def close(self) -> None:
        """Close the pooled connections."""
        client = self.__dict__.pop("client", None)
        if client is not None:
            client.close()

    # -- the driver -------------------------------------------------------------------------------

    def _run(self, steps: Steps[Any]) -> Any:
        stepper = Stepper(steps)
        action = stepper.send(None)
        while action is not None:
            action = stepper.send(self._perform(action))
        return stepper.value

    def _perform(self, action: Action) -> Any:
        if isinstance(action, Sleep):
            self.sleep(action.seconds)
            return None
        if isinstance(action, GetToken):
            return self._token(action.scope)
        return self._http(action)

    def _http(self, call: Call) -> Reply | NoReply:
        limit = self.limit
        if limit is None:
            return self._attempt(call)
        limit.acquire()
        outcome: Reply | NoReply | None = None
        try:
            outcome = self._attempt(call)
            return outcome
        finally:
            limit.release(outcome.status if isinstance(outcome, Reply) else None)

    def _attempt(self, call: Call) -> Reply | NoReply:
        # The read timeout bounds each wait for bytes; the deadline bounds the whole attempt, so
        # the body is read in chunks and the clock checked between them.
        ends = time.monotonic() + call.deadline
        try:
            with self.client.stream(**_request_args(call)) as response:
                chunks = []
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    if time.monotonic() > ends:
                        raise AttemptTimeout
                return _reply(response, b"".join(chunks))
        except (httpx.HTTPError, AttemptTimeout) as exc:
            return _no_reply(exc, call)

    def drive(self, steps_for: Callable[[AosSession], Steps[T]]) -> T:
        """
        Run protocol steps (e.g. :func:`airflow_provider_aos.jobs_api.read_job`) on this hook.

        :param steps_for: given the hook's protocol session, returns the steps to run.
        """
        result: T = self._run(steps_for(self.protocol))
        return result

    # -- tokens -----------------------------------------------------------------------------------

    @property
    def token_endpoint(self) -> str:
        """The token endpoint: from OIDC discovery of the identity service, else ``{identity}/connect/token``."""
        endpoint: str = self._run(self.protocol.discover_token_endpoint())
        return endpoint

    def _fetch_token(self, scope: str | None) -> AccessToken:
        token: AccessToken = self._run(self.protocol.fetch_token(scope))
        mask(token.value)
        return token

    def _token(self, scope: str) -> AccessToken:
        with self._token_lock:
            token = self.tokens.get(scope)
            if token is None:
                token = self._fetch_token(scope)
                self.tokens.put(scope, token)
            return token

    def get_access_token(self, scope: str | None = None) -> str:
        """
        A bearer token for ``scope`` (default: the connection's ``scope``), from the cache when still fresh.

        :param scope: space-separated permission(s), e.g. ``audit.read.all``.
        """
        return self._token(self.protocol.resolve_scope(scope)).value

    # -- API --------------------------------------------------------------------------------------

    def url_for(self, path_or_url: str) -> str:
        """The absolute URL of an API path; an absolute URL must be on the configured API host."""
        return self.protocol.url_for(path_or_url)

    def request(self, method: str, path: str, **options: Unpack[RequestOptions]) -> Reply:
        """
        Send one authenticated request; raise :class:`AosApiError` on an error status.

        A 401 evicts the cached token and replays the request once with a new one (a 401 means the
        server did not act, so this is safe for any method).

        :param method: HTTP method.
        :param path: API path (``aos/audit``) or an absolute URL on the API host.
        :param options: ``params``, ``json``, ``scope``, ``idempotent``, ``ok_statuses``
            (:class:`~airflow_provider_aos.protocol.RequestOptions`).
        """
        reply: Reply = self._run(self.protocol.request(method, path, **options))
        return reply

    def request_json(self, method: str, path: str, **options: Unpack[RequestOptions]) -> Any:
        """:meth:`request`, returning the decoded JSON body (None for an empty body)."""
        return self._run(self.protocol.request_json(method, path, **options))

    def paginate(
        self, path: str, *, prefetch: Executor | None = None, **options: Unpack[PageOptions]
    ) -> PageIterator:
        """
        Walk a list endpoint lazily. Iterate the result for records, or ``.pages`` for pages.

        :param path: API path of the list endpoint.
        :param prefetch: an executor to fetch the next page on while the caller handles the page in
            hand (one page ahead); the hook is thread-safe.
        :param options: ``params``, ``scope``, ``style``, ``method``, ``json``, ``max_pages``,
            ``max_empty_pages``, ``decode`` (:class:`PageOptions`).
        """
        first = _first_page(path, options)
        return PageIterator(
            lambda request: self._run(_page_steps(self.protocol, request, options)),
            first,
            options.get("style") or NextLinkPaging(),
            max_pages=options.get("max_pages"),
            max_empty_pages=options.get("max_empty_pages", DEFAULT_MAX_EMPTY_PAGES),
            prefetch=prefetch,
        )

    # -- Airflow integration ----------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Obtain a token (the connection's scope, if any). Returns (ok, message); never a secret."""
        try:
            config = self.config
            scope = config.scope
            # Why the identity service will likely refuse an expired or not-yet-valid certificate.
            warning = getattr(self.credential, "validity_warning", None)
            token = self._fetch_token(scope) if scope is None else self._token(scope)
            scopes = token.scope.split()
            granted = f"scope {token.scope!r}" if len(scopes) <= 3 else f"{len(scopes)} granted scopes"
            return True, (
                f"Connected: {config.auth_method.replace('_', ' ')} auth accepted by {self.token_endpoint} "
                f"for client {config.client_id} ({granted}); Graph API {config.api_url}"
                + (f". Warning: {warning}" if warning else "")
            )
        except Exception as exc:
            secrets: list[str] = []
            with contextlib.suppress(Exception):
                secrets = self.config.secrets()
            message = scrub(f"{type(exc).__name__}: {exc}", secrets)
            with contextlib.suppress(Exception):
                if warning := getattr(self.credential, "validity_warning", None):
                    message += f". Likely why: {warning}"
            return False, message

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """
        Extra fields of the Airflow 2.11 connection form, built from ``CONN_FIELDS`` (provider info).

        Airflow 2 accepts only ``StringField``, ``PasswordField``, ``IntegerField`` and
        ``BooleanField`` (exact classes) and drops the whole hook otherwise: so multiline fields are
        string fields with a text-area widget, and the data center a text field limited to its values.
        """
        from flask_appbuilder.fieldwidgets import (
            BS3PasswordFieldWidget,
            BS3TextAreaFieldWidget,
            BS3TextFieldWidget,
        )
        from flask_babel import lazy_gettext
        from wtforms import PasswordField, StringField
        from wtforms.validators import AnyOf, Optional

        widgets: dict[str, Any] = {}
        for name, spec in CONN_FIELDS.items():
            schema = spec["schema"]
            label = lazy_gettext(spec["label"])
            description = spec.get("description")
            if "enum" in schema:
                widgets[name] = StringField(
                    label,
                    widget=BS3TextFieldWidget(),
                    validators=[Optional(), AnyOf(schema["enum"])],
                    description=description,
                )
            elif schema.get("format") == "password":
                widgets[name] = PasswordField(label, widget=BS3PasswordFieldWidget(), description=description)
            elif schema.get("format") == "multiline":
                widgets[name] = StringField(label, widget=BS3TextAreaFieldWidget(), description=description)
            else:
                widgets[name] = StringField(label, widget=BS3TextFieldWidget(), description=description)
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hidden, relabelled and placeholder standard fields (Airflow 2.11); same as provider info."""
        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
            "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
            "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
        }


@dataclass
class _SharedTokens:
    """Tokens of one connection, shared by every async hook on one event loop, and their lock."""

    cache: TokenCache
    lock: asyncio.Lock


# event loop -> connection fingerprint -> tokens. Per loop, because an asyncio.Lock belongs to one.
_ASYNC_TOKENS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _SharedTokens]] = (
    weakref.WeakKeyDictionary()
)


def _shared_tokens(config: AosConnectionConfig) -> _SharedTokens:
    """
    The token cache of this connection on the running loop. A triggerer runs hundreds of triggers
    of one connection on one loop: one token request per scope for all of them, not one each (and
    one registration with the secret masker, whose cost grows with every secret it holds).
    """
    identity = "\0".join(
        [config.conn_id, config.client_id, config.api_url, config.identity_url, config.certificate_path or "",
         *config.secrets()]
    )  # fmt: skip
    key = hashlib.sha256(identity.encode()).hexdigest()  # changed credentials: another cache
    per_loop = _ASYNC_TOKENS.setdefault(asyncio.get_running_loop(), {})
    if key not in per_loop:
        per_loop[key] = _SharedTokens(TokenCache(), asyncio.Lock())
    return per_loop[key]


class AosAsyncHook(_AosHookBase):
    """
    The async twin of :class:`AosHook`, for triggers: same connection, settings, token rules, retry
    policy, paging styles and errors (both drive :mod:`airflow_provider_aos.protocol`), on
    ``httpx.AsyncClient``.

    Nothing here blocks the event loop: the connection comes through common-compat's
    ``get_async_connection`` (no sync metadata-DB or secrets-backend call), a certificate is read
    in a worker thread, and waits are ``asyncio.sleep``. Use one instance per event loop, and
    ``await hook.aclose()`` (or ``async with hook:``) when done.

    :param aos_conn_id: the Airflow connection (type ``aos``) to use.
    :param timeout: seconds to wait for any byte of a response.
    :param attempt_timeout: seconds one attempt may take in all, body included.
    :param retry_policy: retry rules, as for :class:`AosHook`.
    """

    def __init__(self, aos_conn_id: str = _AosHookBase.default_conn_name, **kwargs: Any) -> None:
        super().__init__(aos_conn_id, **kwargs)
        self._protocol: AosSession | None = None
        self._client: httpx.AsyncClient | None = None
        self._token_lock = asyncio.Lock()
        self._minted: list[str] = []  # client assertions sent, to be masked

    async def __aenter__(self) -> AosAsyncHook:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aconfig(self) -> AosConnectionConfig:
        """The validated connection settings, fetched without blocking the event loop."""
        return (await self._session()).config

    async def _session(self) -> AosSession:
        if self._protocol is None:
            from airflow.providers.common.compat.connection import (
                get_async_connection,
                get_async_extra_dejson,
            )

            conn = await get_async_connection(self.aos_conn_id)
            config = AosConnectionConfig.from_connection(conn, await get_async_extra_dejson(conn))
            for secret in config.secrets():
                await amask(secret)
            # Reading a key file and parsing a key are blocking work: off the loop.
            # Assertions are minted inside the (sync) protocol steps on the loop; they are masked
            # right after, the async way (a sync mask_secret may block on the supervisor there).
            credential = await asyncio.to_thread(credential_for, config, self._minted.append)
            shared = _shared_tokens(config)
            self.tokens, self._token_lock = shared.cache, shared.lock
            self._protocol = self._new_session(config, credential)
        return self._protocol

    async def _http_client(self) -> httpx.AsyncClient:
        if self._client is None:
            # Building the TLS context reads the CA bundle from disk: off the loop too.
            self._client = await asyncio.to_thread(lambda: httpx.AsyncClient(**_client_options()))
        return self._client

    async def aclose(self) -> None:
        """Close the pooled connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- the driver -------------------------------------------------------------------------------

    async def _run(self, steps: Steps[Any]) -> Any:
        stepper = Stepper(steps)
        action = stepper.send(None)
        while action is not None:
            action = stepper.send(await self._perform(action))
        return stepper.value

    async def _perform(self, action: Action) -> Any:
        if isinstance(action, Sleep):
            await asyncio.sleep(action.seconds)
            return None
        if isinstance(action, GetToken):
            return await self._token(action.scope)
        client = await self._http_client()
        try:
            async with asyncio.timeout(action.deadline):  # the whole attempt, body included
                response = await client.request(**_request_args(action))
        except (httpx.HTTPError, TimeoutError) as exc:
            return _no_reply(exc, action)
        return _reply(response, response.content)

    async def drive(self, steps_for: Callable[[AosSession], Steps[T]]) -> T:
        """:meth:`AosHook.drive`, awaited: the same steps, on the event loop."""
        result: T = await self._run(steps_for(await self._session()))
        return result

    async def _token(self, scope: str) -> AccessToken:
        async with self._token_lock:
            token = self.tokens.get(scope)
            if token is None:
                token = await self._run((await self._session()).fetch_token(scope))
                for value in (token.value, *self._minted):
                    await amask(value)
                self._minted.clear()
                self.tokens.put(scope, token)
            return token

    # -- API --------------------------------------------------------------------------------------

    async def get_access_token(self, scope: str | None = None) -> str:
        """A bearer token for ``scope``, from the cache when still fresh."""
        return (await self._token((await self._session()).resolve_scope(scope))).value

    async def request(self, method: str, path: str, **options: Unpack[RequestOptions]) -> Reply:
        """:meth:`AosHook.request`, awaited."""
        reply: Reply = await self._run((await self._session()).request(method, path, **options))
        return reply

    async def request_json(self, method: str, path: str, **options: Unpack[RequestOptions]) -> Any:
        """:meth:`AosHook.request_json`, awaited."""
        return await self._run((await self._session()).request_json(method, path, **options))

    async def paginate(self, path: str, **options: Unpack[PageOptions]) -> AsyncIterator[Page]:
        """
        Walk a list endpoint lazily, a page at a time (``async for page in hook.paginate(...)``).

        The same walk as :meth:`AosHook.paginate` (styles, shape checks, cycle detection); only the
        page in hand is held.
        """
        first = _first_page(path, options)
        walk = PageWalk(
            options.get("style") or NextLinkPaging(),
            max_empty_pages=options.get("max_empty_pages", DEFAULT_MAX_EMPTY_PAGES),
        )
        request: PageRequest | None = walk.first(first)
        max_pages = options.get("max_pages")
        while request is not None and (max_pages is None or walk.page_number < max_pages):
            body = await self._run(_page_steps(await self._session(), request, options))
            items, following = walk.advance(request, body)
            yield Page(walk.page_number, items, request)
            request = following
