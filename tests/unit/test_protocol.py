"""The sans-I/O protocol: error mapping and scrubbing, driven without any transport."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_aos.auth import AccessToken, ClientSecretCredential, TokenCache
from airflow_provider_aos.config import AosConnectionConfig
from airflow_provider_aos.exceptions import AosApiError
from airflow_provider_aos.protocol import (
    AosSession,
    Call,
    GetToken,
    NoReply,
    Reply,
    Sleep,
    Stepper,
    error_details,
)
from airflow_provider_aos.redact import FRAGMENT
from airflow_provider_aos.retry import Failure, RetryPolicy

TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.payload-Qx81aZt5Lr2Nv7Wc0Pk3Hs9Gd4Jb6Mf.sig-Ty5Ue8Ri1Oa4"
SECRET = "client-secret-Vb6Nm2Qw9Er4Ty7U"


def _fragments(value: str) -> Iterator[str]:
    return (value[i : i + FRAGMENT] for i in range(len(value) - FRAGMENT + 1))


def assert_no_fragment(text: str, *values: str) -> None:
    leaked = [f for v in values for f in _fragments(v) if f in text]
    assert leaked == [], f"fragments of a secret survived: {leaked[:3]}"


def _reply(status: int, body: Any) -> Reply:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Reply(status=status, headers={"content-type": "application/json"}, content=content)


@pytest.mark.parametrize("offset", [0, 1, 7, 150, 199, 470, 490, 496, 499, 520])
@pytest.mark.parametrize("key", ["error", "message", "errorMessage", "error_description", None])
def test_echoed_token_leaves_no_fragment_at_any_offset(offset: int, key: str | None) -> None:
    # A careless server quotes what it was sent, at any place in a message that will be cut short.
    text = "x" * offset + f"Bearer {TOKEN} and secret {SECRET} " + "y" * 300
    reply = _reply(400, {key: text, "traceId": "t-1"}) if key else _reply(400, text.encode())

    message, trace_id = error_details(reply, [TOKEN, SECRET])

    assert message is not None
    assert_no_fragment(message, TOKEN, SECRET)
    assert len(message) <= 500
    if key:
        assert trace_id == "t-1"


def test_echoed_token_in_trace_id_and_errors_list_is_scrubbed() -> None:
    reply = _reply(
        400,
        {"traceId": f"trace-{TOKEN[5:40]}", "errors": [{"field": "x", "message": f"bad {TOKEN[10:]}"}]},
    )
    message, trace_id = error_details(reply, [TOKEN])
    assert message is not None
    assert trace_id is not None
    assert_no_fragment(message + trace_id, TOKEN)
    assert message.startswith("x: bad ***")


def _session(policy: RetryPolicy | None = None) -> AosSession:
    config = AosConnectionConfig(
        conn_id="c", client_id="app", api_url="https://graph-us.avepointonlineservices.com",
        identity_url="https://identity.avepointonlineservices.com", client_secret=SECRET,
    )  # fmt: skip
    return AosSession(
        config=config,
        credential=ClientSecretCredential("app", SECRET),
        retry_policy=policy or RetryPolicy(),
        tokens=TokenCache(),
    )


def _drive(steps: Any, answers: list[Any]) -> tuple[Any, list[Any]]:
    """Drive a protocol generator with scripted outcomes; return (result, actions seen)."""
    seen: list[Any] = []
    stepper = Stepper(steps)
    action = stepper.send(None)
    while action is not None:
        seen.append(action)
        if isinstance(action, GetToken):
            outcome: Any = AccessToken(value=TOKEN, scope=action.scope, expires_at=1e12, lifetime=3600)
        elif isinstance(action, Sleep):
            outcome = None
        else:
            outcome = answers.pop(0)
        action = stepper.send(outcome)
    return stepper.value, seen


def test_api_error_echoing_the_bearer_token_is_scrubbed_before_it_is_cut() -> None:
    echo = {"error": "z" * 480 + f"invalid credential Bearer {TOKEN}", "traceId": "t-9"}
    with pytest.raises(AosApiError) as info:
        _drive(_session().request("GET", "aos/audit", scope="audit.read.all"), [_reply(400, echo)])
    assert_no_fragment(str(info.value), TOKEN, SECRET)
    assert "t-9" in str(info.value)


def test_redirect_location_is_named_without_its_query() -> None:
    reply = Reply(status=302, headers={"location": f"https://elsewhere.example/x?code={TOKEN}"}, content=b"")
    with pytest.raises(AosApiError) as info:
        _drive(_session().request("GET", "aos/audit", scope="audit.read.all"), [reply])
    assert "https://elsewhere.example/x" in str(info.value)
    assert_no_fragment(str(info.value), TOKEN)


def test_attempt_overrun_is_retried_like_a_broken_connection_for_a_get() -> None:
    policy = RetryPolicy(max_attempts=3)
    overrun = NoReply(Failure.TRANSPORT, "no complete response within 1s")
    reply, seen = _drive(
        _session(policy).request("GET", "aos/audit", scope="audit.read.all"),
        [overrun, _reply(200, {"data": []})],
    )
    assert reply.status == 200
    calls = [a for a in seen if isinstance(a, Call)]
    assert len(calls) == 2
    assert any(isinstance(a, Sleep) for a in seen)
    assert all(c.deadline == _session().attempt_timeout for c in calls)


def test_attempt_overrun_of_a_post_is_not_replayed() -> None:
    overrun = NoReply(Failure.TRANSPORT, "no complete response within 1s")
    with pytest.raises(AosApiError) as info:
        _drive(_session().request("POST", "backup/m365/restore/jobs", scope="s", json={}), [overrun])
    assert info.value.status is None
    assert "no complete response" in str(info.value)


def test_call_repr_holds_no_header_or_form() -> None:
    call = Call("POST", "https://x/connect/token", form={"client_secret": SECRET}, headers={"A": TOKEN})
    assert_no_fragment(repr(call), TOKEN, SECRET)


def test_reply_repr_holds_no_body() -> None:
    # A server may echo the bearer token in its body; a Reply in a traceback must not show it.
    assert_no_fragment(repr(_reply(400, {"error": f"bad token {TOKEN}"})), TOKEN)
