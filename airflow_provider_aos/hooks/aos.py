"""AosHook: the one place that talks HTTP to AvePoint Online Services."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

import requests
from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_aos.auth import (
    AccessToken,
    Credential,
    TokenCache,
    credential_for,
    parse_token_response,

)
from airflow_provider_aos.config import AosConnectionConfig, origin
from airflow_provider_aos.exceptions import AosApiError, AosAuthError, AosConfigError, AosPaginationError
from airflow_provider_aos.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_provider_aos.redact import scrub
from airflow_provider_aos.pagination import NextLinkPaging, PageIterator, PageRequest, PagingStyle, to_params
from airflow_provider_aos.retry import Failure, RetryPolicy

CONNECT_TIMEOUT = 10.0


def mask(value: str) -> None:
    """Register a value we minted (token, assertion) with Airflow's secret masker."""
    from airflow.providers.common.compat.sdk import mask_secret

    # Outside a task (API server, tests) there may be no masker to talk to; never fail a call for that.
    with contextlib.suppress(Exception):
        mask_secret(value)


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


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the connection was never made, so the server cannot have acted on the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        seen: set[int] = set()
        stack: list[BaseException] = [exc]
        while stack:
            err = stack.pop()
            if id(err) in seen:
                continue
            seen.add(id(err))
            if type(err).__name__ in ("NewConnectionError", "NameResolutionError", "ConnectionRefusedError"):
                return True
            stack.extend(a for a in getattr(err, "args", ()) if isinstance(a, BaseException))
            stack.extend(
                e for e in (err.__cause__, err.__context__, getattr(err, "reason", None)) if e is not None
            )
    return False


def _error_details(response: requests.Response) -> tuple[str | None, str | None]:
    """(message, traceId) from any of the API's error envelopes (endpoints.md §4), tolerantly."""
    trace_id = response.headers.get("x-trace-id") or response.headers.get("request-id")
    message: str | None = None
    try:
        body = response.json()
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
    elif response.text:
        message = response.text.strip()[:200]
    return (message[:500] if message else None), trace_id


class AosHook(BaseHook):
    """
    Interact with the AvePoint Online Services (AOS) Graph API.

    Obtains OAuth2 client-credentials tokens (client secret, or a certificate-signed JWT assertion),
    caches them per scope, retries transient failures with backoff, and pages through list endpoints
    without holding more than one page.

    :param aos_conn_id: the Airflow connection (type ``aos``) to use.
    :param timeout: seconds to wait for a response to one request.
    :param retry_policy: retry rules; the default retries 429 and 5xx (idempotent requests only),
        honours ``Retry-After``, and gives up after 6 attempts or 10 minutes.
    """

    conn_name_attr = "aos_conn_id"
    default_conn_name = "aos_default"
    conn_type = "aos"
    hook_name = "AvePoint Online Services"

    # How the hook waits between attempts; tests replace it to observe the waits without sleeping.
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    def __init__(
        self,
        aos_conn_id: str = default_conn_name,
        *,
        timeout: float = 60.0,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aos_conn_id = aos_conn_id
        self.timeout = timeout
        self.retry_policy = retry_policy or RetryPolicy()
        self.tokens = TokenCache()
        self._token_endpoint: str | None = None

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
    def session(self) -> requests.Session:
        """One pooled HTTP session for every request of this hook."""
        session = requests.Session()
        session.headers["User-Agent"] = "airflow-provider-aos"
        session.verify = True  # TLS verification stays on; REQUESTS_CA_BUNDLE still applies
        return session

    def close(self) -> None:
        """Close the pooled connections."""
        if "session" in self.__dict__:
            self.session.close()
            del self.__dict__["session"]

    # -- transport --------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        *,
        params: Iterable[tuple[str, str]] = (),
        json: Any = None,
        data: Callable[[], Mapping[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> tuple[requests.Response | None, BaseException | None, int]:
        """
        Send with retries. Returns (response, None, attempts), or (None, error, attempts) when no
        response could be had. ``data`` is a factory so each attempt can carry a fresh assertion.
        """
        state = self.retry_policy.start()
        path = urlsplit(url).path
        while True:
            try:
                response = self.session.request(
                    method,
                    url,
                    params=list(params) or None,
                    json=json,
                    data=data() if data else None,
                    headers=headers,
                    timeout=(CONNECT_TIMEOUT, self.timeout),
                    allow_redirects=False,  # a redirect must not carry the bearer token anywhere
                )
            except requests.RequestException as exc:
                failure = Failure.CONNECT if _never_sent(exc) else Failure.TRANSPORT
                delay = state.next_delay(failure, method, idempotent=idempotent)
                if delay is None:
                    return None, exc, state.attempts
                self.log.warning(
                    "AOS %s %s: %s; retry %d in %.1fs",
                    method,
                    path,
                    type(exc).__name__,
                    state.attempts,
                    delay,
                )
                self.sleep(delay)
                continue
            if response.status_code in self.retry_policy.retry_statuses:
                delay = state.next_delay(
                    Failure.STATUS,
                    method,
                    status=response.status_code,
                    idempotent=idempotent,
                    retry_after=response.headers.get("Retry-After"),
                )
                if delay is not None:
                    _, trace_id = _error_details(response)
                    self.log.warning(
                        "AOS %s %s: HTTP %d (traceId %s); retry %d in %.1fs",
                        method, path, response.status_code, trace_id, state.attempts, delay,
                    )  # fmt: skip
                    response.close()
                    self.sleep(delay)
                    continue
            else:
                state.attempts += 1
            return response, None, state.attempts

    # -- tokens -----------------------------------------------------------------------------------

    @property
    def token_endpoint(self) -> str:
        """The token endpoint: from OIDC discovery of the identity service, else ``{identity}/connect/token``."""
        if self._token_endpoint is None:
            identity = self.config.identity_url
            endpoint = None
            try:
                response = self.session.get(
                    f"{identity}/.well-known/openid-configuration",
                    timeout=(CONNECT_TIMEOUT, 30),
                    allow_redirects=False,
                )
                if response.status_code == 200:
                    endpoint = token_endpoint_from_discovery(identity, response.json())
            except (requests.RequestException, ValueError):
                pass
            if endpoint is None:
                endpoint = f"{identity}/connect/token"
                self.log.info(
                    "OIDC discovery of %s gave no usable token endpoint; using %s", identity, endpoint
                )
            self._token_endpoint = endpoint
        return self._token_endpoint

    def _scope(self, scope: str | None) -> str:
        resolved = " ".join((scope or self.config.scope or "").split())
        if not resolved:
            raise AosConfigError(
                "extra.scope",
                "no scope was requested and the connection has no default scope; set extra.scope "
                "(e.g. audit.read.all) or pass scope=",
            )
        return resolved

    def _fetch_token(self, scope: str | None) -> AccessToken:
        endpoint = self.token_endpoint
        config = self.config
        credential = self.credential
        sent: list[str] = []

        def form() -> dict[str, str]:
            fields = credential.token_form(scope=scope, token_endpoint=endpoint, username=config.username)
            sent.extend(v for k, v in fields.items() if k in ("client_secret", "client_assertion"))
            return fields

        response, error, attempts = self._send("POST", endpoint, data=form, idempotent=True)
        if response is None:
            raise AosAuthError(
                f"the identity service at {endpoint} could not be reached ({type(error).__name__}, "
                f"{attempts} attempt(s)). Check extra.identity_url / extra.data_center, and the worker's "
                "network and proxy settings."
            )
        with response:
            token = parse_token_response(
                response.status_code,
                response.content,
                scope=scope,
                token_url=endpoint,
                secrets=[*config.secrets(), *sent],
                now=self.tokens.now(),
            )
        mask(token.value)
        self.log.info(
            "Obtained an AOS access token (%s auth, scope %s, valid %ds)",
            config.auth_method, token.scope or "-", int(token.lifetime),
        )  # fmt: skip
        return token

    def get_access_token(self, scope: str | None = None) -> str:
        """
        A bearer token for ``scope`` (default: the connection's ``scope``), from the cache when still fresh.

        :param scope: space-separated permission(s), e.g. ``audit.read.all``.
        """
        return self._token(self._scope(scope)).value

    def _token(self, scope: str) -> AccessToken:
        with self.tokens.lock:
            token = self.tokens.get(scope)
            if token is None:
                token = self._fetch_token(scope)
                self.tokens.put(scope, token)
            return token

    # -- API --------------------------------------------------------------------------------------

    def url_for(self, path_or_url: str) -> str:
        """
        The absolute URL of an API path. An absolute URL must be on the configured API host: the
        bearer token is never sent anywhere else (a tampered next link cannot exfiltrate it).
        """
        api_url = self.config.api_url
        if path_or_url.lower().startswith(("http://", "https://")):
            if origin(path_or_url) != origin(api_url):
                host = urlsplit(path_or_url).netloc
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
        params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        json: Any = None,
        scope: str | None = None,
        idempotent: bool | None = None,
        ok_statuses: Collection[int] = (),
    ) -> requests.Response:
        """
        Send one authenticated request; raise :class:`AosApiError` on an error status.

        A 401 evicts the cached token and replays the request once with a new one (a 401 means the
        server did not act, so this is safe for any method).

        :param method: HTTP method.
        :param path: API path (``aos/audit``) or an absolute URL on the API host.
        :param params: query parameters; list values are sent as repeated parameters.
        :param json: JSON body.
        :param scope: the permission the endpoint needs (default: the connection's ``scope``).
        :param idempotent: whether retrying after a server error is safe (default: by method).
        :param ok_statuses: error statuses to return instead of raising (e.g. Opus's 418).
        """
        url = self.url_for(path)
        resolved = self._scope(scope)
        query = to_params(params)
        attempts = 0
        response: requests.Response | None = None
        used: list[str] = []  # tokens sent, scrubbed from any error text the server echoes back
        for replay in (False, True):
            token = self._token(resolved)
            used.append(token.value)
            headers = {"Authorization": f"Bearer {token.value}", "Accept": "application/json"}
            response, error, n = self._send(
                method, url, params=query, json=json, headers=headers, idempotent=idempotent
            )
            attempts += n
            if response is None:
                raise AosApiError(
                    method=method, path=urlsplit(url).path, status=None,
                    error=f"{type(error).__name__}: {urlsplit(url).netloc} could not be reached", attempts=attempts,
                )  # fmt: skip
            if response.status_code == 401 and not replay:
                self.tokens.evict(resolved, token.value)
                response.close()
                self.log.info(
                    "AOS %s %s: HTTP 401; getting a new token and replaying once", method, urlsplit(url).path
                )
                continue
            break
        assert response is not None
        if response.status_code >= 300 and response.status_code not in ok_statuses:
            message, trace_id = _error_details(response)
            message = scrub(message, [*self.config.secrets(), *used]) if message else None
            if response.status_code == 401:
                message = (message + ". " if message else "") + (
                    "A fresh token was rejected too: check that the connection's data center / host is the "
                    "one of your AOS tenant"
                )
            elif response.status_code == 403:
                message = (message + ". " if message else "") + (
                    f"Check that the app registration is granted {resolved!r}"
                )
            elif 300 <= response.status_code < 400:
                message = f"unexpected redirect to {response.headers.get('Location')!r} (not followed)"
            response.close()
            raise AosApiError(
                method=method, path=urlsplit(url).path, status=response.status_code,
                error=message, trace_id=trace_id, attempts=attempts,
            )  # fmt: skip
        return response

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """:meth:`request`, returning the decoded JSON body (None for an empty body)."""
        with self.request(method, path, **kwargs) as response:
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise AosApiError(
                    method=method, path=urlsplit(response.url).path, status=response.status_code,
                    error="the response is not JSON",
                ) from None  # fmt: skip

    def paginate(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        scope: str | None = None,
        style: PagingStyle | None = None,
        method: str = "GET",
        json: Any = None,
        max_pages: int | None = None,
    ) -> PageIterator:
        """
        Walk a list endpoint lazily. Iterate the result for records, or ``.pages`` for pages.

        :param path: API path of the list endpoint.
        :param params: query parameters of the first page.
        :param scope: the permission the endpoint needs.
        :param style: the endpoint's paging style (default: ``nextLink`` with ``skipToken``).
        :param method: ``GET``, or ``POST`` for endpoints that page through a JSON body.
        :param json: JSON body of the first page (POST paging).
        :param max_pages: stop after this many pages.
        """

        def fetch(request: PageRequest) -> Any:
            # Paging reads data, so a POST here is as safe to retry as a GET.
            return self.request_json(
                request.method,
                request.url,
                params=request.params,
                json=request.json,
                scope=scope,
                idempotent=True,
            )

        first = PageRequest(url=path, params=to_params(params), method=method, json=json)
        return PageIterator(fetch, first, style or NextLinkPaging(), max_pages=max_pages)

    # -- Airflow integration ----------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Obtain a token (the connection's scope, if any). Returns (ok, message); never a secret."""
        try:
            config = self.config
            scope = config.scope
            token = self._fetch_token(scope) if scope is None else self._token(scope)
            scopes = token.scope.split()
            granted = f"scope {token.scope!r}" if len(scopes) <= 3 else f"{len(scopes)} granted scopes"
            return True, (
                f"Connected: {config.auth_method.replace('_', ' ')} auth accepted by {self.token_endpoint} "
                f"for client {config.client_id} ({granted}); Graph API {config.api_url}"
            )
        except Exception as exc:
            secrets: list[str] = []
            with contextlib.suppress(Exception):
                secrets = self.config.secrets()
            return False, scrub(f"{type(exc).__name__}: {exc}", secrets)

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
