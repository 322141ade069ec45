"""
AosJobTrigger against the emulator over real HTTP: what a deferred job wait must do (issue 6).

Every wait here is a real ``trigger.run()`` on an event loop (``asyncio.run``), polling the
emulator's job endpoints through AosAsyncHook; the sync comparisons drive the same poll loop
(``jobs_api.wait_for_job``) with AosHook.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import requests
from airflow.triggers.base import TriggerEvent

from airflow_provider_aos.emulator import AosEmulator
from airflow_provider_aos.hooks.aos import AosHook
from airflow_provider_aos.jobs_api import JobQuery, wait_for_job
from airflow_provider_aos.retry import RetryPolicy
from airflow_provider_aos.triggers.jobs import AosJobTrigger
from tests.unit.test_protocol import assert_no_fragment

FAST = 0.05  # poll interval of the tests' waits, seconds
CANARY = "canary-secret-Vq7Xw2Lp9Rz4"
ROUTE = {  # the emulator's counter of the route each kind polls
    "m365": "jobs_m365_detail",
    "iaas_paas": "jobs_iaas_paas",
    "aos_scan": "jobs_aos_scan",
    "dynamics365": "jobs_dynamics365",
    "google_workspace": "jobs_google_workspace",
    "salesforce": "jobs_salesforce",
}


# -- helpers --------------------------------------------------------------------------------------


def window() -> tuple[datetime, datetime]:
    """A window around now: the jobs the tests add start in it, the emulator's seeded ones do not."""
    now = datetime.now(UTC)
    return now - timedelta(minutes=10), now + timedelta(hours=1)


def query(kind: str, job_id: str | None = None, **filters: Any) -> dict[str, Any]:
    start, end = window()
    return JobQuery(kind=kind, job_id=job_id, filters=filters, start=start, end=end).to_dict()


def make_trigger(conn_id: str, q: dict[str, Any], **kwargs: Any) -> AosJobTrigger:
    kwargs.setdefault("poll_interval", FAST)
    return AosJobTrigger(query=q, aos_conn_id=conn_id, **kwargs)


async def collect(trigger: AosJobTrigger, limit: float = 60.0) -> list[TriggerEvent]:
    """Every event the trigger yields until its generator ends (a safety limit, not an assertion)."""

    async def drain() -> list[TriggerEvent]:
        return [event async for event in trigger.run()]

    return await asyncio.wait_for(drain(), limit)


def run_trigger(trigger: AosJobTrigger) -> dict[str, Any]:
    """Run the trigger on a fresh event loop; it must yield exactly one event and end."""
    events = asyncio.run(collect(trigger))
    assert len(events) == 1, events
    payload = events[0].payload
    json.dumps(payload)  # an event is a DB row: JSON primitives only
    return payload  # type: ignore[no-any-return]


def polls(emulator: AosEmulator, kind: str) -> int:
    return emulator.stats()[ROUTE[kind]]


# -- 1. serialization -----------------------------------------------------------------------------


def _through_the_metadata_db(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Encode the kwargs the way the Trigger row stores them (serde on 3.x, BaseSerialization on 2.x)."""
    from airflow.models.trigger import Trigger

    encrypt = getattr(Trigger, "encrypt_kwargs", None) or Trigger._encrypt_kwargs
    return Trigger._decrypt_kwargs(encrypt(kwargs))  # type: ignore[no-any-return]


def test_serialize_round_trip_is_primitive_and_holds_no_secret(emulator: AosEmulator, aos_connection) -> None:
    emulator.register_client("canary-app", secret=CANARY)
    conn_id = aos_connection(login="canary-app", password=CANARY)
    job_id = emulator.add_job("m365", outcome="succeeded", run_seconds=0.3)
    trigger = make_trigger(conn_id, query("m365", job_id), deadline=time.time() + 300, retry_attempts=2)

    classpath, kwargs = trigger.serialize()
    text = json.dumps(kwargs)  # JSON primitives only
    assert json.loads(text) == kwargs
    assert _through_the_metadata_db(kwargs) == kwargs
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)

    # The connection is named, never carried: nothing of its secret in the kwargs or the repr that
    # the triggerer logs, before or after a run; nor any token in the event.
    event = run_trigger(rebuilt)
    assert event["status"] == "terminal"
    tokens = emulator.issued_tokens()
    assert tokens
    for shown in (text, repr(trigger), repr(rebuilt), json.dumps(event)):
        assert_no_fragment(shown, CANARY, *tokens)
    assert kwargs["aos_conn_id"] == conn_id


# -- 2. a real run for every kind -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "outcome", "state"),
    [
        ("m365", "succeeded", "SUCCEEDED"),  # detail endpoint
        ("m365", "failed", "FAILED"),
        ("iaas_paas", "partial", "PARTIAL"),  # id search
        ("iaas_paas", "failed", "FAILED"),
        ("aos_scan", "failed", "FAILED"),
        ("dynamics365", "succeeded", "SUCCEEDED"),  # found in the window's list
        ("google_workspace", "partial", "PARTIAL"),
        ("salesforce", "failed", "FAILED"),
    ],
)
def test_trigger_waits_for_the_job_and_yields_one_event(
    emulator: AosEmulator, aos_connection, kind: str, outcome: str, state: str
) -> None:
    conn_id = aos_connection()
    errors = [f"{kind} disk quota exceeded"] if kind in ("m365", "iaas_paas") else None
    job_id = emulator.add_job(kind, outcome=outcome, run_seconds=1.5, errors=errors)

    event = run_trigger(make_trigger(conn_id, query(kind, job_id)))

    assert event["status"] == "terminal", event
    job = event["job"]
    assert (job["kind"], job["id"], job["state"]) == (kind, job_id, state)
    assert emulator.job_status(kind, job_id)["running"] is False  # no false terminal
    assert polls(emulator, kind) >= 3  # it saw the job running and kept polling
    if errors and outcome != "succeeded":
        assert any(errors[0] in e for e in job["errors"]), job["errors"]
    assert job_id in event["message"]
    assert state in event["message"]


def test_without_a_job_id_the_newest_matching_job_in_the_window(
    emulator: AosEmulator, aos_connection
) -> None:
    conn_id = aos_connection()
    now = time.time()
    emulator.add_job("m365", outcome="succeeded", run_seconds=1, start=now - 120)  # older backup, done
    newest_backup = emulator.add_job("m365", outcome="failed", run_seconds=1.5, start=now - 1)
    emulator.add_job("m365", outcome="succeeded", run_seconds=0.1, start=now, job_type=2)  # a restore

    event = run_trigger(make_trigger(conn_id, query("m365", job_type="Backup")))

    assert event["status"] == "terminal", event
    assert (event["job"]["id"], event["job"]["state"]) == (newest_backup, "FAILED")
    # Found through the list, never a detail read (how many polls depends on the machine's speed).
    stats = emulator.stats()
    assert stats["jobs_m365"] >= 1
    assert stats.get("jobs_m365_detail", 0) == 0


def test_no_matching_job_in_an_ended_window_ends_the_wait(emulator: AosEmulator, aos_connection) -> None:
    # Without a job id, a window that ended (plus the grace for late listing) with no matching job
    # will never have one: one clear event, not a wait until the deadline. The same rule the sensor
    # applies before deferring, in the one poll loop both use.
    conn_id = aos_connection()
    end = datetime.now(UTC) - timedelta(hours=2)
    q = JobQuery(kind="m365", filters={"job_type": "Restore"}, start=end - timedelta(hours=1), end=end)

    event = run_trigger(make_trigger(conn_id, q.to_dict(), deadline=time.time() + 3600))

    assert event["status"] == "not_found", event
    assert "no job found" in event["message"]
    assert emulator.stats()["jobs_m365"] == 1  # one look at the list, then it stopped

    # A window that has not ended yet keeps waiting (here: until a near deadline).
    open_q = JobQuery(
        kind="m365", filters={"job_type": "Restore"}, start=end, end=datetime.now(UTC) + timedelta(hours=1)
    )
    assert (
        run_trigger(make_trigger(conn_id, open_q.to_dict(), deadline=time.time() + 0.3))["status"]
        == "timeout"
    )


# -- 3. errors ------------------------------------------------------------------------------------


def test_transient_failures_do_not_end_the_wait(emulator: AosEmulator, aos_connection) -> None:
    conn_id = aos_connection()
    emulator.configure(retry_after=0)
    job_id = emulator.add_job("m365", outcome="succeeded", run_seconds=0.5)
    # Two attempts per poll (the trigger's retry_attempts): four polls in a row fail after the
    # hook's own retries; the fifth would end the wait.
    faults: list[int | str] = [503, 429, "drop", 500, 503, "drop", 429, 503]
    emulator.inject_faults("jobs", faults)

    event = run_trigger(
        make_trigger(conn_id, query("m365", job_id), retry_attempts=2, max_consecutive_errors=5)
    )

    assert event["status"] == "terminal", event
    assert event["job"]["state"] == "SUCCEEDED"
    stats = emulator.stats()
    assert stats["fault_503"] + stats["fault_429"] + stats["fault_500"] + stats["fault_drop"] == len(faults)


def test_too_many_failures_in_a_row_end_with_one_clear_error(emulator: AosEmulator, aos_connection) -> None:
    conn_id = aos_connection()
    emulator.configure(retry_after=0)
    job_id = emulator.add_job("m365", outcome="succeeded", run_seconds=30)
    emulator.inject_faults("jobs", ["ok", *[503] * 6])  # seen running once, then 3 polls x 2 attempts fail

    event = run_trigger(
        make_trigger(conn_id, query("m365", job_id), retry_attempts=2, max_consecutive_errors=3)
    )

    assert event["status"] == "error", event
    assert (event["job"]["id"], event["job"]["state"]) == (job_id, "RUNNING")  # the last seen job
    message = event["message"]
    assert job_id in message
    assert "3 times in a row" in message
    assert "HTTP 503" in message
    assert emulator.stats()["fault_503"] == 6
    assert_no_fragment(json.dumps(event), emulator.config.client_secret, *emulator.issued_tokens())


def test_a_bad_request_ends_the_wait_at_once(emulator: AosEmulator, aos_connection) -> None:
    conn_id = aos_connection()
    job_id = emulator.add_job("iaas_paas", outcome="succeeded", run_seconds=30)
    emulator.inject_faults("jobs", [400])

    event = run_trigger(make_trigger(conn_id, query("iaas_paas", job_id), max_consecutive_errors=5))

    assert event["status"] == "error", event
    assert job_id in event["message"]
    assert "HTTP 400" in event["message"]
    assert emulator.stats()["requests"] == 3  # discovery, token, one poll: not retried


def test_a_scope_the_app_lacks_ends_the_wait_at_once(emulator: AosEmulator, aos_connection) -> None:
    emulator.register_client("audit-only", secret=CANARY, scopes=["audit.read.all"])
    conn_id = aos_connection(login="audit-only", password=CANARY)
    job_id = emulator.add_job("m365", run_seconds=30)

    event = run_trigger(make_trigger(conn_id, query("m365", job_id), max_consecutive_errors=5))

    assert event["status"] == "error", event
    assert job_id in event["message"]
    assert "invalid_scope" in event["message"]
    assert len(emulator.received_token_requests()) == 1
    assert polls(emulator, "m365") == 0
    assert_no_fragment(json.dumps(event), CANARY)


def test_a_query_that_cannot_be_read_ends_with_an_error_event(emulator: AosEmulator, aos_connection) -> None:
    conn_id = aos_connection()
    event = run_trigger(make_trigger(conn_id, {"kind": "no_such_kind", "job_id": "J1"}))
    assert event["status"] == "error", event
    assert "no_such_kind" in event["message"]
    event = run_trigger(make_trigger("aos_missing", query("m365", "J1")))
    assert event["status"] == "error", event
    assert "aos_missing" in event["message"]


def test_a_token_revoked_during_the_wait_is_replaced(emulator: AosEmulator, aos_connection) -> None:
    conn_id = aos_connection()
    job_id = emulator.add_job("m365", outcome="succeeded", run_seconds=1.5)

    async def revoke_after_the_first_poll() -> None:
        while polls(emulator, "m365") == 0:
            await asyncio.sleep(0.01)
        emulator.revoke_tokens()

    async def wait_and_revoke() -> list[TriggerEvent]:
        revoker = asyncio.create_task(revoke_after_the_first_poll())
        events = await collect(make_trigger(conn_id, query("m365", job_id)))
        await revoker
        return events

    (event,) = asyncio.run(wait_and_revoke())

    assert event.payload["status"] == "terminal", event.payload
    assert emulator.stats()["unauthorized"] == 1
    assert len(emulator.received_token_requests()) == 2


def test_failed_polls_back_off_from_the_poll_interval(emulator: AosEmulator, aos_connection) -> None:
    """After a failed poll the next one never comes sooner than a healthy one would: a rate-limited
    (429) wait slows down instead of hammering the API."""
    hook = AosHook(aos_connection(), retry_policy=RetryPolicy(max_attempts=1))
    slept: list[float] = []
    hook.sleep = slept.append  # type: ignore[method-assign,assignment]
    job_id = emulator.add_job("m365", outcome="succeeded", run_seconds=0)
    emulator.inject_faults("jobs", [429, 503, 429])
    q = JobQuery.from_dict(query("m365", job_id))

    event = hook.drive(lambda s: wait_for_job(s, q, poll_interval=10, max_consecutive_errors=5))

    assert event["status"] == "terminal"
    assert len(slept) == 3
    assert all(wait >= 10 for wait in slept), slept
    assert slept == sorted(slept), slept
    assert slept[-1] > slept[0], slept


# -- 4. the deadline ------------------------------------------------------------------------------


def test_a_past_deadline_times_out_with_the_last_seen_job(emulator: AosEmulator, aos_connection) -> None:
    conn_id = aos_connection()
    job_id = emulator.add_job("m365", run_seconds=60)

    event = run_trigger(make_trigger(conn_id, query("m365", job_id), deadline=time.time() - 1))

    assert event["status"] == "timeout", event
    assert (event["job"]["id"], event["job"]["state"]) == (job_id, "RUNNING")
    assert polls(emulator, "m365") == 1


def test_the_deadline_is_not_recomputed_after_a_restart(emulator: AosEmulator, aos_connection) -> None:
    conn_id = aos_connection()
    job_id = emulator.add_job("m365", run_seconds=60)
    deadline = time.time() + 1.0
    trigger = make_trigger(conn_id, query("m365", job_id), deadline=deadline, poll_interval=0.1)

    first = run_trigger(trigger)
    assert first["status"] == "timeout", first
    assert time.time() >= deadline
    assert polls(emulator, "m365") > 2

    # A triggerer restart rebuilds the trigger from its serialized form: the same absolute deadline,
    # already past, so one look at the job and the same timeout (not another second of polling).
    emulator.reset_stats()
    _, kwargs = trigger.serialize()
    second = run_trigger(AosJobTrigger(**json.loads(json.dumps(kwargs))))
    assert second["status"] == "timeout", second
    assert second["job"]["id"] == job_id
    assert polls(emulator, "m365") == 1


# -- 5. nothing blocks the event loop -------------------------------------------------------------


class LoopGuard:
    """
    Records every call of a blocking function made on a thread that is running an event loop.

    Worker threads (``asyncio.to_thread``, Airflow 2's ``sync_to_async`` connection lookup) have no
    running loop and are not counted.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        from airflow.providers.common.compat.sdk import BaseHook

        self._wrap(monkeypatch, requests.Session, "send")
        self._wrap(monkeypatch, httpx.Client, "send")
        self._wrap(monkeypatch, socket, "create_connection")
        self._wrap(monkeypatch, time, "sleep")
        get_connection = BaseHook.get_connection.__func__  # type: ignore[attr-defined]
        monkeypatch.setattr(
            BaseHook, "get_connection", classmethod(self._guarded("BaseHook.get_connection", get_connection))
        )
        config = AosHook.__dict__["config"].func
        monkeypatch.setattr(AosHook, "config", property(self._guarded("AosHook.config", config)))

    def _guarded(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop()
                self.calls.append(f"{name} on {threading.current_thread().name}")
            return original(*args, **kwargs)

        return guarded

    def _wrap(self, monkeypatch: pytest.MonkeyPatch, owner: Any, attr: str) -> None:
        name = f"{getattr(owner, '__name__', owner)}.{attr}"
        monkeypatch.setattr(owner, attr, self._guarded(name, getattr(owner, attr)))


@pytest.fixture
def loop_guard(monkeypatch: pytest.MonkeyPatch) -> LoopGuard:
    return LoopGuard(monkeypatch)


def test_nothing_blocking_runs_on_the_event_loop(emulator: AosEmulator, aos_connection, loop_guard) -> None:
    conn_id = aos_connection()
    job_id = emulator.add_job("m365", outcome="failed", run_seconds=1.0)
    emulator.inject_faults("jobs", [503])  # a retry's backoff must be an asyncio sleep too

    event = run_trigger(make_trigger(conn_id, query("m365", job_id), retry_attempts=2))

    assert event["status"] == "terminal", event
    assert emulator.stats()["fault_503"] == 1
    assert loop_guard.calls == []


def test_the_loop_guard_catches_a_blocking_trigger(emulator: AosEmulator, aos_connection, loop_guard) -> None:
    conn_id = aos_connection()

    async def blocking() -> None:
        AosHook(conn_id).get_access_token("audit.read.all")  # the sync hook, deliberately on the loop
        time.sleep(0)

    asyncio.run(blocking())

    caught = {call.partition(" on ")[0] for call in loop_guard.calls}
    assert {"BaseHook.get_connection", "AosHook.config", "Client.send", "time.sleep"} <= caught, caught


# -- 6. one token per scope over a whole wait -----------------------------------------------------


def test_one_token_request_over_a_whole_deferred_wait(emulator: AosEmulator, aos_connection) -> None:
    conn_id = aos_connection()
    job_id = emulator.add_job("m365", outcome="succeeded", run_seconds=1.0)

    event = run_trigger(make_trigger(conn_id, query("m365", job_id)))

    assert event["status"] == "terminal"
    assert polls(emulator, "m365") >= 10
    assert [f["scope"] for f in emulator.received_token_requests()] == ["microsoft365backup.jobInfo.read.all"]


def test_one_token_request_over_a_whole_sync_wait(emulator: AosEmulator, aos_connection) -> None:
    conn_id = aos_connection()
    job_id = emulator.add_job("m365", outcome="succeeded", run_seconds=1.0)
    q = JobQuery.from_dict(query("m365", job_id))
    hook = AosHook(conn_id)

    event = hook.drive(lambda s: wait_for_job(s, q, poll_interval=FAST))
    hook.close()

    assert event["status"] == "terminal"
    assert polls(emulator, "m365") >= 10
    assert [f["scope"] for f in emulator.received_token_requests()] == ["microsoft365backup.jobInfo.read.all"]
