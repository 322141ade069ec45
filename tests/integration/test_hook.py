"""
AosHook against the live in-process AOS emulator: every test makes real HTTP round trips on loopback.

Nothing in ``requests`` is mocked. Waits between retries go through ``hook.sleep``, which the tests
replace with a recorder, so they assert the exact waits without sleeping and never time anything.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest

from airflow_provider_aos.auth import CLIENT_ASSERTION_TYPE, TokenCache
from airflow_provider_aos.emulator import AosEmulator, EmulatorConfig
from airflow_provider_aos.exceptions import AosApiError, AosAuthError, AosPaginationError
from airflow_provider_aos.hooks.aos import AosHook
from airflow_provider_aos.retry import RetryPolicy

AUDIT_SCOPE = "audit.read.all"
OTHER_SCOPE = "gsuite.graph.read.all"
CERT_CLIENT = "cert-client"
# Two days of the emulator's data: ~650 records, i.e. 7 pages of 100.
EXPORT_START = datetime(2026, 10, 3, tzinfo=UTC)
EXPORT_END = datetime(2026, 10, 5, tzinfo=UTC)
# A small window for single-request tests (one page).
SMALL = {"startTime": "2026-10-03T00:00:00Z", "endTime": "2026-10-03T02:00:00Z"}


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def closed_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Made:
    """A hook and the waits it asked for (``hook.sleep`` is replaced by ``delays.append``)."""

    hook: AosHook
    delays: list[float] = field(default_factory=list)


@pytest.fixture
def make_hook() -> Iterator[Callable[..., Made]]:
    """``make_hook(conn_id, **hook_kwargs)``: an AosHook whose sleeps are recorded, closed at teardown."""
    made: list[AosHook] = []

    def make(conn_id: str, **kwargs: Any) -> Made:
        hook = AosHook(aos_conn_id=conn_id, **kwargs)
        result = Made(hook)
        hook.sleep = result.delays.append  # type: ignore[method-assign]
        made.append(hook)
        return result

    yield make
    for hook in made:
        hook.close()


@pytest.fixture
def cert_client(emulator: AosEmulator, cert_bundle: Any) -> str:
    """A certificate-only app registered with the emulator, granted audit.read.all only."""
    emulator.register_client(CERT_CLIENT, certificate_pem=cert_bundle.cert_pem, scopes=[AUDIT_SCOPE])
    return CERT_CLIENT


# -- a scripted HTTP server, for what the emulator cannot answer ---------------------------------------


class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _StubServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        stub = self.server
        with stub.lock:
            stub.seen.append((method, self.path, self.headers.get("Authorization")))
            status, payload = stub.answers.popleft() if stub.answers else (200, {"data": []})
        if payload == "drop":  # read the request, then close without any answer
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if status >= 400:
            # "echo": a careless server that quotes the credential it was sent in its error message.
            error = (
                f"invalid credential {self.headers.get('Authorization')}"
                if payload == "echo"
                else "stub error"
            )
            payload = {"traceId": f"stub-trace-{len(stub.seen)}", "error": error, "statusCode": status}
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str, str | None]] = []
        self.answers: deque[tuple[int, Any]] = deque()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def script(self, *answers: int | tuple[int, Any]) -> None:
        for answer in answers:
            self.answers.append(answer if isinstance(answer, tuple) else (answer, {"data": []}))


@pytest.fixture
def stub_factory() -> Iterator[Callable[[], _StubServer]]:
    servers: list[_StubServer] = []

    def make() -> _StubServer:
        server = _StubServer()
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


# -- 1. client secret -------------------------------------------------------------------------------


def test_token_by_client_secret(emulator: AosEmulator, aos_connection, make_hook) -> None:
    hook = make_hook(aos_connection()).hook

    token = hook.get_access_token(AUDIT_SCOPE)

    assert token in emulator.issued_tokens()
    assert emulator.received_token_requests() == [
        {
            "grant_type": "client_credentials",
            "client_id": emulator.config.client_id,
            "client_secret": emulator.config.client_secret,
            "scope": AUDIT_SCOPE,
        }
    ]
    # The token endpoint came from OIDC discovery of the identity service.
    assert emulator.stats()["discovery"] == 1
    assert hook.token_endpoint == emulator.token_url
    # And the token opens the audit endpoint.
    page = hook.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)
    assert page["data"]
    assert emulator.stats()["audit"] == 1


# -- 2. certificate ---------------------------------------------------------------------------------


def _cert_extra(variant: str, bundle: Any, tmp_path: Path) -> dict[str, str]:
    passphrase = "pfx-pass-7d1e"
    if variant == "pem_key_and_certificate":
        return {"private_key": bundle.key_pem, "certificate": bundle.cert_pem}
    if variant == "encrypted_pem_key":
        return {
            "private_key": bundle.encrypted_key_pem(passphrase),
            "certificate": bundle.cert_pem,
            "private_key_passphrase": passphrase,
        }
    if variant == "pkcs12_base64":
        return {"private_key": bundle.pfx_b64(passphrase), "private_key_passphrase": passphrase}
    assert variant == "pfx_file"
    path = tmp_path / "app.pfx"
    path.write_bytes(bundle.pfx(passphrase))
    return {"certificate_path": str(path), "private_key_passphrase": passphrase}


@pytest.mark.parametrize(
    "variant", ["pem_key_and_certificate", "encrypted_pem_key", "pkcs12_base64", "pfx_file"]
)
def test_token_by_certificate(
    variant: str, emulator: AosEmulator, aos_connection, make_hook, cert_client, cert_bundle, tmp_path
) -> None:
    conn_id = aos_connection(
        login=cert_client, password=None, extra=_cert_extra(variant, cert_bundle, tmp_path)
    )
    hook = make_hook(conn_id).hook

    token = hook.get_access_token(AUDIT_SCOPE)
    assert token in emulator.issued_tokens()
    records = list(
        hook.paginate(
            "aos/audit",
            params={"startTime": iso(EXPORT_START), "endTime": iso(EXPORT_END)},
            scope=AUDIT_SCOPE,
            max_pages=2,
        )
    )
    assert len(records) == 200

    # A second token request (cache evicted) must carry a fresh assertion.
    hook.tokens.evict(AUDIT_SCOPE)
    assert hook.get_access_token(AUDIT_SCOPE) != token
    assert emulator.stats()["token"] == 2

    forms = emulator.received_token_requests()
    assertions = emulator.received_assertions()
    assert len(forms) == 2
    assert len(assertions) == 2
    for form, assertion in zip(forms, assertions, strict=True):
        assert form["client_assertion"] == assertion
        assert form["grant_type"] == "client_credentials"
        assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
        assert form["scope"] == AUDIT_SCOPE
        assert "client_secret" not in form

        header = jwt.get_unverified_header(assertion)
        assert header["alg"] == "RS256"
        assert header["typ"] == "JWT"
        assert header["kid"] == cert_bundle.thumbprint.hex().upper()
        assert len(header["kid"]) == 40
        assert header["x5t"] == b64url(cert_bundle.thumbprint)
        # The signature verifies with the certificate's public key, for the emulator's token endpoint.
        claims = jwt.decode(
            assertion,
            cert_bundle.cert.public_key(),
            algorithms=["RS256"],
            audience=emulator.token_url,
        )
        assert claims["iss"] == claims["sub"] == cert_client
        assert claims["aud"] == emulator.token_url
        assert 0 < claims["exp"] - claims["nbf"] <= 600
    jtis = [jwt.decode(a, options={"verify_signature": False})["jti"] for a in assertions]
    assert len(set(jtis)) == 2
    assert all(jtis)


# -- 3. unknown certificate -------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["certificate_of_another_client", "unregistered_client"])
def test_unknown_certificate_is_invalid_client(
    case: str,
    emulator: AosEmulator,
    aos_connection,
    make_hook,
    cert_client,
    cert_bundle,
    other_cert_bundle,
) -> None:
    if case == "certificate_of_another_client":
        # The emulator knows other_cert_bundle, but as the certificate of a different app.
        emulator.register_client("other-client", certificate_pem=other_cert_bundle.cert_pem)
        login, bundle = cert_client, other_cert_bundle
    else:
        login, bundle = "ghost-client", cert_bundle
    conn_id = aos_connection(
        login=login, password=None, extra={"private_key": bundle.key_pem, "certificate": bundle.cert_pem}
    )
    made = make_hook(conn_id)

    with pytest.raises(AosAuthError) as info:
        made.hook.get_access_token(AUDIT_SCOPE)

    exc = info.value
    assert exc.error == "invalid_client"
    assert exc.status == 400
    message = str(exc)
    assert "Check" in message
    assert "Client ID" in message
    assert "certificate" in message
    assert emulator.stats()["token"] == 0
    assert emulator.issued_tokens() == []
    # No key material, no assertion.
    assert "PRIVATE KEY" not in message
    for line in bundle.key_pem.splitlines()[1:-1]:
        assert line not in message
    for assertion in emulator.received_assertions():
        assert assertion not in message
    assert made.delays == []  # a refused credential is not retried
    assert len(emulator.received_assertions()) == 1


# -- 4. token reuse and a long export ---------------------------------------------------------------


def test_export_reuses_one_token_and_reads_every_record(
    emulator: AosEmulator, aos_connection, make_hook
) -> None:
    hook = make_hook(aos_connection()).hook
    # End the window exactly on a record: the raw API window is inclusive at both ends.
    end_record = list(emulator.iter_audit(EXPORT_START, EXPORT_END))[620]
    end = datetime.fromisoformat(str(end_record["actionTime"]).replace("Z", "+00:00"))
    expected = list(emulator.iter_audit(EXPORT_START, end, end_inclusive=True))
    assert len(expected) == emulator.count_audit(EXPORT_START, end, end_inclusive=True)
    assert len(expected) == emulator.count_audit(EXPORT_START, end) + 1

    iterator = hook.paginate(
        "aos/audit", params={"startTime": iso(EXPORT_START), "endTime": iso(end)}, scope=AUDIT_SCOPE
    )
    records = []
    urls = []
    for page in iterator.pages:
        records.extend(page.items)
        urls.append(page.request.url)

    assert records == expected
    assert records[-1] == end_record
    stats = emulator.stats()
    assert stats["audit"] == len(urls) > 5
    assert stats["token"] == 1
    assert stats["discovery"] == 1
    assert stats["unauthorized"] == 0
    # After the first page the hook followed the emulator's absolute nextLinks on the API host.
    assert urls[0] == "aos/audit"
    assert all(url.startswith(f"{emulator.graph_url}/aos/audit?") for url in urls[1:])

    # One token per scope: a second scope costs one more token request, the first is still cached.
    other = hook.get_access_token(OTHER_SCOPE)
    assert emulator.stats()["token"] == 2
    assert hook.get_access_token(AUDIT_SCOPE) != other
    assert hook.get_access_token(OTHER_SCOPE) == other
    assert emulator.stats()["token"] == 2
    assert [f["scope"] for f in emulator.received_token_requests()] == [AUDIT_SCOPE, OTHER_SCOPE]


# -- 5. refresh before expiry -----------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_token_is_refreshed_when_it_expires(emulator: AosEmulator, aos_connection, make_hook) -> None:
    emulator.configure(token_ttl=60)
    hook = make_hook(aos_connection()).hook
    clock = FakeClock()
    hook.tokens = TokenCache(clock=clock)

    hook.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)
    first = hook.get_access_token(AUDIT_SCOPE)
    assert emulator.stats()["token"] == 1

    clock.now += 30  # well within the 60 s lifetime: reused
    hook.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)
    assert emulator.stats()["token"] == 1

    clock.now += 31  # past expires_in: a new token before the request, not after a 401
    hook.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)
    stats = emulator.stats()
    assert stats["token"] == 2
    assert stats["unauthorized"] == 0
    assert stats["audit"] == 3
    second = hook.get_access_token(AUDIT_SCOPE)
    assert second != first
    assert emulator.issued_tokens() == [first, second]


# -- 6. refresh after 401 ---------------------------------------------------------------------------


def test_revoked_token_is_replaced_after_401(emulator: AosEmulator, aos_connection, make_hook) -> None:
    made = make_hook(aos_connection())
    hook = made.hook
    hook.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)
    first = hook.get_access_token(AUDIT_SCOPE)

    emulator.revoke_tokens()
    page = hook.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)

    assert page["data"]
    stats = emulator.stats()
    assert stats["unauthorized"] == 1
    assert stats["token"] == 2
    assert stats["audit"] == 2
    assert hook.get_access_token(AUDIT_SCOPE) == emulator.issued_tokens()[-1] != first
    assert made.delays == []  # a 401 is answered by a new token, not by waiting


def test_second_401_is_raised_after_exactly_one_replay(
    emulator: AosEmulator, aos_connection, make_hook
) -> None:
    made = make_hook(aos_connection())
    # Three queued: a hook that replayed more than once would succeed on the third attempt or eat it.
    emulator.inject_faults("audit", ["401", "401", "401"])

    with pytest.raises(AosApiError) as info:
        made.hook.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)

    assert info.value.status == 401
    assert info.value.method == "GET"
    assert info.value.path == "/graph/aos/audit"
    assert info.value.trace_id
    stats = emulator.stats()
    assert stats["unauthorized"] == 2
    assert stats["token"] == 2  # the first token, and one replacement
    assert stats["audit"] == 0
    assert made.delays == []
    # The third fault was still queued, so the hook sent exactly two requests: the next call meets
    # it, replays once with a new token, and succeeds.
    assert made.hook.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)["data"]
    stats = emulator.stats()
    assert (stats["unauthorized"], stats["token"], stats["audit"]) == (3, 3, 1)


# -- 7. retries -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "retry_after"), [("429", 3), ("503", 5)])
def test_retry_after_is_a_floor(
    fault: str, retry_after: int, emulator: AosEmulator, aos_connection, make_hook
) -> None:
    emulator.configure(retry_after=retry_after)
    made = make_hook(aos_connection())
    emulator.inject_faults("audit", [fault])

    page = made.hook.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)

    assert page["data"]
    assert len(made.delays) == 1
    assert made.delays[0] >= retry_after
    stats = emulator.stats()
    assert stats[f"fault_{fault}"] == 1
    assert stats["audit"] == 1


def test_server_errors_on_get_are_retried(emulator: AosEmulator, aos_connection, make_hook) -> None:
    made = make_hook(aos_connection())
    emulator.inject_faults("audit", [500, 503])

    page = made.hook.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)

    assert page["data"]
    stats = emulator.stats()
    assert (stats["fault_500"], stats["fault_503"], stats["audit"]) == (1, 1, 1)  # 3 attempts
    assert len(made.delays) == 2
    assert all(d > 0 for d in made.delays)
    assert made.delays[1] >= 1  # the 503's Retry-After: 1
    assert stats["token"] == 1  # retries reuse the token


def test_bad_request_is_not_retried_and_carries_trace_id(
    emulator: AosEmulator, aos_connection, make_hook
) -> None:
    made = make_hook(aos_connection())
    made.hook.get_access_token(AUDIT_SCOPE)
    before = emulator.stats()["requests"]
    emulator.inject_faults("audit", [400])

    with pytest.raises(AosApiError) as info:
        made.hook.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)

    exc = info.value
    assert exc.status == 400
    assert exc.attempts == 1
    assert exc.trace_id
    assert exc.trace_id in str(exc)
    assert "Bad request" in str(exc)
    assert emulator.stats()["requests"] - before == 1
    assert emulator.stats()["audit_error"] == 1
    assert made.delays == []


def test_real_validation_error_is_reported_with_the_servers_message(
    emulator: AosEmulator, aos_connection, make_hook
) -> None:
    made = make_hook(aos_connection())
    params = {"startTime": "2026-10-01T00:00:00Z", "endTime": "2026-10-20T00:00:00Z"}  # > 7 days

    with pytest.raises(AosApiError) as info:
        made.hook.request_json("GET", "aos/audit", params=params, scope=AUDIT_SCOPE)

    assert info.value.status == 400
    assert "cannot exceed 7 days" in str(info.value)
    assert info.value.trace_id
    assert info.value.trace_id in str(info.value)
    assert emulator.stats()["audit_error"] == 1
    assert made.delays == []


def test_dropped_connection_on_get_is_retried(emulator: AosEmulator, aos_connection, make_hook) -> None:
    made = make_hook(aos_connection())
    made.hook.get_access_token(AUDIT_SCOPE)
    emulator.inject_faults("audit", ["drop"])

    page = made.hook.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)

    assert page["data"]
    stats = emulator.stats()
    assert stats["fault_drop"] == 1
    assert stats["audit"] == 1
    assert len(made.delays) == 1


def test_retries_are_exhausted(emulator: AosEmulator, aos_connection, make_hook) -> None:
    made = make_hook(aos_connection(), retry_policy=RetryPolicy(max_attempts=2))
    emulator.inject_faults("audit", [500, 500, 500])

    with pytest.raises(AosApiError) as info:
        made.hook.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)

    exc = info.value
    assert exc.status == 500
    assert exc.attempts == 2
    assert "after 2 attempts" in str(exc)
    assert exc.trace_id
    assert exc.trace_id in str(exc)
    assert emulator.stats()["fault_500"] == 2
    assert emulator.stats()["audit"] == 0
    assert len(made.delays) == 1


def test_post_is_not_retried_on_server_error(
    emulator: AosEmulator, aos_connection, make_hook, stub_factory
) -> None:
    # The emulator's /aos/audit answers 405 to any POST *before* it consults the fault queue, and its
    # token endpoint (the only POST it accepts) is always called with idempotent=True. So the API host
    # here is a scripted loopback server that answers 500 to a POST; the identity service is still
    # the emulator. Real HTTP on both sides, nothing mocked.
    api = stub_factory()
    made = make_hook(aos_connection(host=api.url))

    api.script(500, 200)
    with pytest.raises(AosApiError) as info:
        made.hook.request("POST", "aos/jobs", json={"name": "x"}, scope=AUDIT_SCOPE)
    assert info.value.status == 500
    assert info.value.attempts == 1
    assert [m for m, _, _ in api.seen] == ["POST"]
    assert made.delays == []
    # The bearer token sent to the API host is the emulator's.
    assert api.seen[0][2] == f"Bearer {emulator.issued_tokens()[0]}"

    # Same 500 for a POST the caller declares idempotent: retried.
    api.answers.clear()
    api.script(500, 200)
    response = made.hook.request("POST", "aos/jobs", json={"name": "x"}, scope=AUDIT_SCOPE, idempotent=True)
    assert response.status_code == 200
    assert [m for m, _, _ in api.seen] == ["POST", "POST", "POST"]
    assert len(made.delays) == 1

    # A 429 means the server did not act: even a plain POST is retried.
    api.answers.clear()
    api.script(429, 200)
    response = made.hook.request("POST", "aos/jobs", json={"name": "x"}, scope=AUDIT_SCOPE)
    assert response.status_code == 200
    assert len(api.seen) == 5
    assert len(made.delays) == 2
    assert emulator.stats()["token"] == 1


def test_post_is_replayed_only_when_it_was_never_sent(
    emulator: AosEmulator, aos_connection, make_hook, stub_factory
) -> None:
    # A connection dropped after the POST was sent: the server may have acted, so no replay.
    api = stub_factory()
    api.script((200, "drop"), 200)
    made = make_hook(aos_connection(host=api.url), retry_policy=RetryPolicy(max_attempts=3))
    with pytest.raises(AosApiError) as info:
        made.hook.request("POST", "aos/jobs", json={"name": "x"}, scope=AUDIT_SCOPE)
    assert info.value.status is None
    assert info.value.attempts == 1
    assert len(api.seen) == 1
    assert made.delays == []

    # No connection could be made at all: nothing was sent, so even a POST is tried again.
    down = make_hook(
        aos_connection("aos_api_down", host=f"http://127.0.0.1:{closed_port()}"),
        retry_policy=RetryPolicy(max_attempts=3),
    )
    with pytest.raises(AosApiError) as info:
        down.hook.request("POST", "aos/jobs", json={"name": "x"}, scope=AUDIT_SCOPE)
    assert info.value.status is None
    assert info.value.attempts == 3
    assert "could not be reached" in str(info.value)
    assert len(down.delays) == 2


# -- 8. token endpoint faults -----------------------------------------------------------------------


def test_token_request_is_retried_on_503(emulator: AosEmulator, aos_connection, make_hook) -> None:
    made = make_hook(aos_connection())
    emulator.inject_faults("token", [503])

    token = made.hook.get_access_token(AUDIT_SCOPE)

    assert token in emulator.issued_tokens()
    stats = emulator.stats()
    assert stats["fault_503"] == 1
    assert stats["token"] == 1
    assert len(made.delays) == 1
    assert made.delays[0] >= 1  # Retry-After: 1
    # Both attempts carried the full form (the factory builds it again for each attempt).
    forms = emulator.received_token_requests()
    assert len(forms) == 2
    assert forms[0] == forms[1]


def test_unreachable_identity_service(emulator: AosEmulator, aos_connection, make_hook) -> None:
    identity = f"http://127.0.0.1:{closed_port()}/identity"
    conn_id = aos_connection(extra={"identity_url": identity})
    made = make_hook(conn_id, retry_policy=RetryPolicy(max_attempts=2))

    with pytest.raises(AosAuthError) as info:
        made.hook.get_access_token(AUDIT_SCOPE)

    message = str(info.value)
    assert identity in message
    assert "extra.identity_url" in message
    assert "Check" in message
    assert "2 attempt" in message
    assert emulator.config.client_secret not in message
    assert len(made.delays) == 1  # connection refused is retried (nothing was sent), once here
    assert emulator.stats()["requests"] == 0


# -- 9. OIDC discovery ------------------------------------------------------------------------------


def test_token_endpoint_falls_back_without_discovery(monkeypatch: pytest.MonkeyPatch, make_hook) -> None:
    with AosEmulator(EmulatorConfig(records=500, page_size=100, discovery=False)) as emu:
        conn = {
            "conn_type": "aos",
            "host": emu.graph_url,
            "login": emu.config.client_id,
            "password": emu.config.client_secret,
            "extra": {"identity_url": emu.identity_url},
        }
        monkeypatch.setenv("AIRFLOW_CONN_AOS_NO_DISCOVERY", json.dumps(conn))
        hook = make_hook("aos_no_discovery").hook

        token = hook.get_access_token(AUDIT_SCOPE)

        assert token in emu.issued_tokens()
        assert hook.token_endpoint == f"{emu.identity_url}/connect/token"
        stats = emu.stats()
        assert stats["discovery"] == 1  # asked, got 404, fell back
        assert stats["token"] == 1
        assert stats["token_error"] == 0
        page = hook.request_json(
            "GET",
            "aos/audit",
            params={"startTime": "2026-10-01T00:00:00Z", "endTime": "2026-10-08T00:00:00Z"},
            scope=AUDIT_SCOPE,
        )
        assert page["data"]
        hook.close()


def test_discovered_token_endpoint_is_used(aos_connection, make_hook, stub_factory, emulator) -> None:
    # The emulator's discovery names {identity}/connect/token, the same URL as the fallback; a scripted
    # identity service naming another path shows that the hook really uses the discovered endpoint.
    idp = stub_factory()
    idp.script(
        (200, {"issuer": f"{idp.url}/identity", "token_endpoint": f"{idp.url}/identity/oauth2/v2/token"}),
        (200, {"access_token": "stub-token-1", "token_type": "Bearer", "expires_in": 3600}),
    )
    hook = make_hook(aos_connection(extra={"identity_url": f"{idp.url}/identity"})).hook

    assert hook.get_access_token(AUDIT_SCOPE) == "stub-token-1"

    assert [(m, p) for m, p, _ in idp.seen] == [
        ("GET", "/identity/.well-known/openid-configuration"),
        ("POST", "/identity/oauth2/v2/token"),
    ]
    assert hook.token_endpoint == f"{idp.url}/identity/oauth2/v2/token"
    assert emulator.stats()["requests"] == 0


def test_discovered_endpoint_on_another_origin_is_ignored(
    aos_connection, make_hook, stub_factory, emulator
) -> None:
    # A tampered discovery document must not send the client secret to another host.
    idp = stub_factory()
    idp.script(
        (200, {"issuer": f"{idp.url}/identity", "token_endpoint": emulator.token_url}),
        (200, {"access_token": "stub-token-2", "token_type": "Bearer", "expires_in": 3600}),
    )
    hook = make_hook(aos_connection(extra={"identity_url": f"{idp.url}/identity"})).hook

    assert hook.get_access_token(AUDIT_SCOPE) == "stub-token-2"

    assert [(m, p) for m, p, _ in idp.seen] == [
        ("GET", "/identity/.well-known/openid-configuration"),
        ("POST", "/identity/connect/token"),
    ]
    assert emulator.received_token_requests() == []
    assert emulator.stats()["requests"] == 0


# -- 10. test_connection ----------------------------------------------------------------------------


def test_test_connection_ok(emulator: AosEmulator, aos_connection, make_hook) -> None:
    hook = make_hook(aos_connection()).hook

    ok, message = hook.test_connection()

    assert ok is True, message
    assert "Connected" in message
    assert emulator.token_url in message
    assert emulator.config.client_id in message
    assert emulator.config.client_secret not in message
    assert emulator.issued_tokens()
    for token in emulator.issued_tokens():
        assert token not in message


def test_test_connection_ok_with_default_scope(emulator: AosEmulator, aos_connection, make_hook) -> None:
    hook = make_hook(aos_connection(extra={"scope": AUDIT_SCOPE})).hook

    ok, message = hook.test_connection()

    assert ok is True, message
    assert AUDIT_SCOPE in message
    assert emulator.received_token_requests()[-1]["scope"] == AUDIT_SCOPE
    for token in emulator.issued_tokens():
        assert token not in message


def test_test_connection_wrong_secret(emulator: AosEmulator, aos_connection, make_hook) -> None:
    wrong = "wrong-secret-0a9c41"
    hook = make_hook(aos_connection(password=wrong)).hook

    ok, reason = hook.test_connection()

    assert ok is False
    assert "invalid_client" in reason
    assert "Check" in reason
    assert wrong not in reason
    assert emulator.config.client_secret not in reason
    assert emulator.issued_tokens() == []


def test_test_connection_without_login(emulator: AosEmulator, aos_connection, make_hook) -> None:
    hook = make_hook(aos_connection(login=None)).hook

    ok, reason = hook.test_connection()

    assert ok is False
    assert "login" in reason
    assert "client ID" in reason
    assert emulator.config.client_secret not in reason
    assert emulator.stats()["requests"] == 0


# -- 11. secrets never leak -------------------------------------------------------------------------

CANARY_SECRET = "canary-secret-5f2b9c"
CANARY_WRONG = "canary-wrong-secret-e81d07"
CANARY_PASSPHRASE = "canary-passphrase-3c6a1f"


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="airflow")
    caplog.set_level(logging.DEBUG, logger="airflow_provider_aos")
    caplog.set_level(logging.DEBUG, logger="urllib3")
    return caplog


def _log_text(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> str:
    """
    Everything logged so far. On Airflow 2.11 the hook logs through stdlib logging (caplog sees it); on
    Airflow 3 ``self.log`` is structlog writing straight to stdout, which only capfd sees. Take both.
    """
    captured = capfd.readouterr()
    records = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
    return "\n".join([caplog.text, records, captured.out, captured.err])


def _assert_no_leak(texts: dict[str, str], forbidden: list[str]) -> None:
    # Report which value leaked by its index only: pytest's assertion rewriting would print it.
    for where, text in texts.items():
        leaked = [index for index, secret in enumerate(forbidden) if secret in text]
        if leaked:
            pytest.fail(f"forbidden value(s) #{leaked} leaked into {where}", pytrace=False)


def _exercise(hook: AosHook, emulator: AosEmulator) -> list[str]:
    """A successful export with a retry and a 401 replay, then a 400: return the error strings."""
    errors: list[str] = []
    emulator.inject_faults("audit", [429])
    records = list(
        hook.paginate(
            "aos/audit",
            params={"startTime": iso(EXPORT_START), "endTime": iso(EXPORT_END)},
            scope=AUDIT_SCOPE,
            max_pages=3,
        )
    )
    assert len(records) == 300
    emulator.revoke_tokens()
    hook.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)
    emulator.inject_faults("audit", [400])
    with pytest.raises(AosApiError) as info:
        hook.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)
    errors += [str(info.value), repr(info.value), repr(info.value.args)]
    return errors


def test_client_secret_never_leaks(
    emulator: AosEmulator, aos_connection, make_hook, debug_logs, capfd
) -> None:
    emulator.register_client("canary-client", secret=CANARY_SECRET)
    good = make_hook(aos_connection("aos_canary", login="canary-client", password=CANARY_SECRET))
    errors = _exercise(good.hook, emulator)
    assert len(good.delays) == 1  # the 429 was retried (and logged)

    bad = make_hook(aos_connection("aos_canary_bad", login="canary-client", password=CANARY_WRONG)).hook
    with pytest.raises(AosAuthError) as info:
        bad.get_access_token(AUDIT_SCOPE)
    assert info.value.error == "invalid_client"
    errors += [str(info.value), repr(info.value)]
    ok, reason = bad.test_connection()
    assert ok is False
    ok_good, message = good.hook.test_connection()
    assert ok_good is True

    logs = _log_text(debug_logs, capfd)
    # The hook's own log lines were captured (else this test would prove nothing about logs).
    assert "Obtained an AOS access token" in logs
    assert "HTTP 429" in logs
    tokens = emulator.issued_tokens()
    assert len(tokens) >= 3
    forbidden = [CANARY_SECRET, CANARY_WRONG, *tokens]
    texts = {
        "repr(hook)": repr(good.hook),
        "repr(hook.config)": repr(good.hook.config),
        "repr(hook.credential)": repr(good.hook.credential),
        "repr(bad hook.config)": repr(bad.config),
        "repr(bad hook.credential)": repr(bad.credential),
        "repr(token cache)": repr(list(good.hook.tokens._tokens.values())),
        "test_connection": reason + message,
        "exceptions": "\n".join(errors),
        "logs": logs,
    }
    _assert_no_leak(texts, forbidden)


def test_certificate_material_never_leaks(
    emulator: AosEmulator, aos_connection, make_hook, cert_client, cert_bundle, debug_logs, capfd
) -> None:
    key_pem = cert_bundle.encrypted_key_pem(CANARY_PASSPHRASE)
    extra = {
        "private_key": key_pem,
        "certificate": cert_bundle.cert_pem,
        "private_key_passphrase": CANARY_PASSPHRASE,
    }
    good = make_hook(aos_connection("aos_canary_cert", login=cert_client, password=None, extra=extra))
    errors = _exercise(good.hook, emulator)

    # An assertion the server refuses (the client is not registered): the error must not quote it.
    bad = make_hook(aos_connection("aos_canary_cert_bad", login="ghost", password=None, extra=extra)).hook
    with pytest.raises(AosAuthError) as info:
        bad.get_access_token(AUDIT_SCOPE)
    errors += [str(info.value), repr(info.value)]
    ok, reason = bad.test_connection()
    assert ok is False

    logs = _log_text(debug_logs, capfd)
    assert "Obtained an AOS access token" in logs
    assertions = emulator.received_assertions()
    assert len(assertions) >= 4
    key_lines = [line for line in key_pem.splitlines()[1:-1] if len(line) > 16]
    clear_key_lines = [line for line in cert_bundle.key_pem.splitlines()[1:-1] if len(line) > 16]
    forbidden = [CANARY_PASSPHRASE, *emulator.issued_tokens(), *assertions, *key_lines, *clear_key_lines]
    texts = {
        "repr(hook)": repr(good.hook),
        "repr(hook.config)": repr(good.hook.config),
        "repr(hook.credential)": repr(good.hook.credential),
        "repr(bad hook.credential)": repr(bad.credential),
        "test_connection": reason,
        "exceptions": "\n".join(errors),
        "logs": logs,
    }
    _assert_no_leak(texts, forbidden)


@pytest.mark.parametrize("status", [400, 401])
def test_token_echoed_by_the_server_is_not_repeated_in_errors(
    status: int, aos_connection, make_hook, stub_factory, emulator
) -> None:
    # exceptions.py: "No message ever contains a secret, a token or an assertion". The hook scrubs
    # server text of the connection's secrets; the bearer token it just sent must be scrubbed too.
    api = stub_factory()
    api.script((status, "echo"), (status, "echo"))
    hook = make_hook(aos_connection(host=api.url)).hook

    with pytest.raises(AosApiError) as info:
        hook.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)

    assert info.value.status == status
    assert "invalid credential" in str(info.value)  # the server's message is still reported
    tokens = emulator.issued_tokens()
    assert tokens
    assert {auth for _, _, auth in api.seen} <= {f"Bearer {t}" for t in tokens}
    _assert_no_leak({"str(exc)": str(info.value), "exc.error": info.value.error or ""}, tokens)


# -- 12. the bearer token only goes to the API host -------------------------------------------------


def test_absolute_url_to_another_host_is_refused_before_anything_is_sent(
    emulator: AosEmulator, aos_connection, make_hook, stub_factory
) -> None:
    foreign = stub_factory()
    hook = make_hook(aos_connection()).hook
    port = emulator.graph_url.rsplit(":", 1)[1].split("/")[0]

    for url in (
        f"{foreign.url}/graph/aos/audit",  # another port on the same loopback address
        f"http://localhost:{port}/graph/aos/audit",  # the same port under another host name
        f"https://127.0.0.1:{port}/graph/aos/audit",  # another scheme
        f"http://127.0.0.1:{port}@{foreign.url[len('http://') :]}/x",  # userinfo trick
    ):
        with pytest.raises(AosPaginationError, match="refusing to follow"):
            hook.request_json("GET", url, params=SMALL, scope=AUDIT_SCOPE)

    assert foreign.seen == []
    assert emulator.stats()["requests"] == 0  # not even a token was requested
    assert emulator.received_token_requests() == []
    # An absolute URL on the API host itself is fine.
    page = hook.request_json("GET", f"{emulator.graph_url}/aos/audit", params=SMALL, scope=AUDIT_SCOPE)
    assert page["data"]


def test_tampered_next_link_is_not_followed(aos_connection, make_hook, stub_factory, emulator) -> None:
    api = stub_factory()
    foreign = stub_factory()
    api.script((200, {"data": [{"n": 1}], "nextLink": f"{foreign.url}/steal?skipToken=x"}))
    hook = make_hook(aos_connection(host=api.url)).hook

    iterator = hook.paginate("aos/audit", params=SMALL, scope=AUDIT_SCOPE)
    seen = []
    with pytest.raises(AosPaginationError, match="refusing to follow"):  # noqa: PT012
        for record in iterator:
            seen.append(record)

    assert seen == [{"n": 1}]  # the first page was served
    assert len(api.seen) == 1
    assert foreign.seen == []  # the token never left for the foreign host
