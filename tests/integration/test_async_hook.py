"""
AosAsyncHook against the emulator over real HTTP, and what both hooks must share: the same retries,
the same errors, the same token rules, a deadline per attempt, and no fragment of a token in errors.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_provider_aos.emulator import AosEmulator
from airflow_provider_aos.exceptions import AosApiError, AosAuthError
from airflow_provider_aos.hooks.aos import AosAsyncHook, AosHook
from airflow_provider_aos.retry import RetryPolicy
from tests.unit.test_protocol import assert_no_fragment

AUDIT_SCOPE = "audit.read.all"
SMALL = {"startTime": "2026-11-01T00:00:00Z", "endTime": "2026-11-01T06:00:00Z"}
FAST = RetryPolicy(max_attempts=3, backoff=0.01, max_backoff=0.05)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _with(hook: AosAsyncHook, fn: Callable[[AosAsyncHook], Any]) -> Any:
    async with hook:
        return await fn(hook)


def test_async_hook_reads_a_page_with_one_token(emulator: AosEmulator, aos_connection) -> None:
    hook = AosAsyncHook(aos_connection(), retry_policy=FAST)

    async def three_pages(h: AosAsyncHook) -> list[Any]:
        return [await h.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE) for _ in range(3)]

    pages = run(_with(hook, three_pages))

    assert all(page["data"] for page in pages)
    assert [f["scope"] for f in emulator.received_token_requests()] == [AUDIT_SCOPE]


def test_async_hook_same_retry_rules_as_the_sync_hook(emulator: AosEmulator, aos_connection) -> None:
    conn_id = aos_connection()
    emulator.configure(retry_after=0)
    emulator.inject_faults("audit", [429, 503, "drop"])
    page = run(
        _with(AosAsyncHook(conn_id, retry_policy=RetryPolicy(max_attempts=4, backoff=0.01)),
              lambda h: h.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE))
    )  # fmt: skip
    assert page["data"]
    stats = emulator.stats()
    assert stats["fault_429"] == stats["fault_503"] == stats["fault_drop"] == 1

    emulator.inject_faults("audit", [400])
    with pytest.raises(AosApiError) as info:
        run(
            _with(
                AosAsyncHook(conn_id),
                lambda h: h.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE),
            )
        )
    assert info.value.status == 400
    assert info.value.attempts == 1
    assert info.value.trace_id


def test_async_hook_replays_a_401_once_with_a_new_token(emulator: AosEmulator, aos_connection) -> None:
    emulator.inject_faults("audit", ["401"])
    page = run(
        _with(
            AosAsyncHook(aos_connection()),
            lambda h: h.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE),
        )
    )
    assert page["data"]
    assert len(emulator.received_token_requests()) == 2


def test_async_hook_wrong_secret_gives_the_same_auth_error(emulator: AosEmulator, aos_connection) -> None:
    conn_id = aos_connection(password="not-the-secret-Kq3Lw8")
    with pytest.raises(AosAuthError) as async_error:
        run(_with(AosAsyncHook(conn_id), lambda h: h.get_access_token(AUDIT_SCOPE)))
    with pytest.raises(AosAuthError) as sync_error:
        AosHook(conn_id).get_access_token(AUDIT_SCOPE)
    assert str(async_error.value) == str(sync_error.value)
    assert "invalid_client" in str(async_error.value)


# -- servers that misbehave ------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _MisbehavingServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits += 1
        mode = self.server.mode
        if mode == "trickle":  # a complete header, then a byte at a time, never fast enough
            body = json.dumps({"data": [{"id": i} for i in range(200)]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for byte in body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.02)
                    if self.server.stopping.is_set():
                        return
            except OSError:
                return
            return
        # "echo": quote the bearer token at a chosen offset of a long message
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        message = "m" * self.server.offset + f"invalid token {token} " + "n" * 400
        body = json.dumps({"statusCode": 400, "message": message, "traceId": "echo-trace"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _MisbehavingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = mode
        self.offset = 0
        self.hits = 0
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def misbehaving() -> Iterator[Callable[[str], _MisbehavingServer]]:
    servers: list[_MisbehavingServer] = []

    def make(mode: str) -> _MisbehavingServer:
        server = _MisbehavingServer(mode)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stopping.set()
        server.shutdown()
        server.server_close()


def test_sync_hook_bounds_each_attempt_body_included(aos_connection, misbehaving) -> None:
    api = misbehaving("trickle")
    hook = AosHook(
        aos_connection(host=api.url), attempt_timeout=0.5, retry_policy=RetryPolicy(max_attempts=2)
    )
    hook.sleep = lambda _: None  # type: ignore[method-assign]
    with pytest.raises(AosApiError) as info:
        hook.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)
    hook.close()
    # The trickle would take ~8 s per attempt; each attempt was cut at 0.5 s and retried once.
    assert info.value.status is None
    assert info.value.attempts == 2
    assert "no complete response within 0.5s" in str(info.value)
    assert api.hits == 2


def test_async_hook_bounds_each_attempt_body_included(aos_connection, misbehaving) -> None:
    api = misbehaving("trickle")
    hook = AosAsyncHook(
        aos_connection(host=api.url),
        attempt_timeout=0.5,
        retry_policy=RetryPolicy(max_attempts=2, backoff=0.01),
    )
    with pytest.raises(AosApiError) as info:
        run(_with(hook, lambda h: h.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)))
    assert info.value.status is None
    assert info.value.attempts == 2
    assert "no complete response within 0.5s" in str(info.value)


@pytest.mark.parametrize("offset", [0, 30, 470, 485, 495])
def test_echoed_bearer_token_leaves_no_fragment_in_either_hook(
    emulator: AosEmulator, aos_connection, misbehaving, offset: int
) -> None:
    api = misbehaving("echo")
    api.offset = offset
    conn_id = aos_connection(host=api.url)
    with pytest.raises(AosApiError) as sync_error:
        AosHook(conn_id).request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)
    with pytest.raises(AosApiError) as async_error:
        run(
            _with(
                AosAsyncHook(conn_id),
                lambda h: h.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE),
            )
        )
    tokens = emulator.issued_tokens()
    assert len(tokens) == 2
    for error in (sync_error.value, async_error.value):
        assert error.trace_id == "echo-trace"
        assert_no_fragment(str(error), *tokens)
        assert_no_fragment(repr(error.args), *tokens)


def test_the_async_hook_never_looks_a_connection_up_on_the_event_loop(aos_connection, monkeypatch) -> None:
    from airflow.providers.common.compat.sdk import BaseHook

    conn_id = aos_connection()
    original = BaseHook.get_connection.__func__  # type: ignore[attr-defined]
    on_loop: list[str] = []

    def guarded(cls: Any, *args: Any, **kwargs: Any) -> Any:
        # Airflow 2 looks connections up synchronously in a worker thread: fine. On the loop: a stall.
        try:
            asyncio.get_running_loop()
            on_loop.append(threading.current_thread().name)
        except RuntimeError:
            pass
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(guarded))
    token = run(_with(AosAsyncHook(conn_id), lambda h: h.get_access_token(AUDIT_SCOPE)))
    assert token
    assert on_loop == []
    # The guard does catch a lookup made on the loop.
    run(_call_on_loop(conn_id))
    assert on_loop


async def _call_on_loop(conn_id: str) -> None:
    AosHook(conn_id).config  # noqa: B018 - a sync lookup, deliberately on the loop


def test_connection_refused_is_retried_then_reported(aos_connection) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn_id = aos_connection(host=f"http://127.0.0.1:{port}")
    hook = AosAsyncHook(conn_id, retry_policy=RetryPolicy(max_attempts=2, backoff=0.01))
    with pytest.raises(AosApiError) as info:
        run(_with(hook, lambda h: h.request_json("GET", "aos/audit", params=SMALL, scope=AUDIT_SCOPE)))
    assert info.value.attempts == 2
    assert "ConnectError" in str(info.value)


def test_async_pagination_walks_the_same_pages_as_the_sync_hook(
    emulator: AosEmulator, aos_connection
) -> None:
    conn_id = aos_connection()
    window = {"startTime": "2026-11-01T00:00:00Z", "endTime": "2026-11-02T00:00:00Z"}
    sync_pages = [
        [json.dumps(r, sort_keys=True) for r in page.items]
        for page in AosHook(conn_id).paginate("aos/audit", params=window, scope=AUDIT_SCOPE).pages
    ]

    async def walk(h: AosAsyncHook) -> list[list[Any]]:
        return [
            [json.dumps(r, sort_keys=True) for r in page.items]
            async for page in h.paginate("aos/audit", params=window, scope=AUDIT_SCOPE)
        ]

    async_pages = run(_with(AosAsyncHook(conn_id), walk))

    assert len(sync_pages) > 2
    assert async_pages == sync_pages


def test_test_connection_warns_about_an_expired_certificate(emulator: AosEmulator, aos_connection) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aos-expired")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=400)).not_valid_after(now - dt.timedelta(days=35))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    emulator.register_client("expired-cert-app", certificate_pem=cert_pem, scopes=[AUDIT_SCOPE])
    conn_id = aos_connection(
        login="expired-cert-app", password=None, extra={"private_key": key_pem, "certificate": cert_pem}
    )

    ok, message = AosHook(conn_id).test_connection()

    # This emulator does not check validity dates; the real identity service likely does: say so.
    assert ok, message
    assert "Warning:" in message
    assert "expired" in message


def test_async_hooks_of_one_connection_on_one_loop_share_one_token(
    emulator: AosEmulator, aos_connection
) -> None:
    # A triggerer runs hundreds of triggers of one connection on one event loop: one token request
    # per scope for all of them (and one secret-masker registration), not one per trigger.
    conn_id = aos_connection()

    async def many() -> list[str]:
        hooks = [AosAsyncHook(conn_id) for _ in range(20)]
        try:
            return list(await asyncio.gather(*(h.get_access_token(AUDIT_SCOPE) for h in hooks)))
        finally:
            await asyncio.gather(*(h.aclose() for h in hooks))

    tokens = run(many())
    assert len(set(tokens)) == 1
    assert len(emulator.received_token_requests()) == 1
    # Another connection (here: other credentials) never gets that token.
    other = aos_connection("aos_other", login="other-client", password="other-secret-Zx81")
    emulator.register_client("other-client", secret="other-secret-Zx81", scopes=[AUDIT_SCOPE])
    assert run(_with(AosAsyncHook(other), lambda h: h.get_access_token(AUDIT_SCOPE))) not in tokens
    assert len(emulator.received_token_requests()) == 2
