"""Unit tests of the retry rules: what is retried, how long to wait, when to give up."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from email.utils import formatdate

import pytest

from airflow_provider_aos.retry import Failure, RetryPolicy, RetryState, parse_retry_after


class FakeClock:
    """A monotonic clock that only moves when told to (list-backed)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.times = [start]

    def __call__(self) -> float:
        return self.times[-1]

    def advance(self, seconds: float) -> None:
        self.times.append(self.times[-1] + seconds)


def state(policy: RetryPolicy | None = None, *, seed: int = 7, clock: FakeClock | None = None) -> RetryState:
    return RetryState(policy or RetryPolicy(), clock or FakeClock(), rng=random.Random(seed))


# -- what is retried ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "post", "PATCH"])
def test_429_is_retried_for_any_method(method: str) -> None:
    """A 429 was rejected before processing, so even a POST may be replayed."""
    assert state().next_delay(Failure.STATUS, method, status=429) is not None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_for_get(status: int) -> None:
    assert state().next_delay(Failure.STATUS, "GET", status=status) is not None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_server_errors_are_not_retried_for_non_idempotent_methods(status: int, method: str) -> None:
    assert state().next_delay(Failure.STATUS, method, status=status) is None


@pytest.mark.parametrize("status", [500, 503])
def test_idempotent_flag_allows_retrying_a_post(status: int) -> None:
    assert state().next_delay(Failure.STATUS, "POST", status=status, idempotent=True) is not None


def test_idempotent_false_forbids_retrying_a_get_after_a_server_error() -> None:
    assert state().next_delay(Failure.STATUS, "GET", status=503, idempotent=False) is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 418])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_client_errors_are_never_retried(status: int, method: str) -> None:
    assert state().next_delay(Failure.STATUS, method, status=status, idempotent=True) is None


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_connect_failure_is_retried_for_any_method(method: str) -> None:
    """No connection was made: the server cannot have acted on the request."""
    assert state().next_delay(Failure.CONNECT, method, idempotent=False) is not None


@pytest.mark.parametrize(
    ("method", "idempotent", "retried"),
    [
        ("GET", None, True),
        ("DELETE", None, True),
        ("POST", None, False),
        ("POST", True, True),
        ("GET", False, False),
    ],
)
def test_transport_failure_is_retried_only_when_idempotent(
    method: str, idempotent: bool | None, retried: bool
) -> None:
    delay = state().next_delay(Failure.TRANSPORT, method, idempotent=idempotent)
    assert (delay is not None) is retried


# -- how long to wait --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_backoff_grows_exponentially_within_jitter_bounds(seed: int) -> None:
    """Equal jitter: the n-th delay lies in [ceiling/2, ceiling] with ceiling = backoff * 2**(n-1)."""
    retry = state(RetryPolicy(max_attempts=10, backoff=0.5, max_backoff=1000, deadline=10_000), seed=seed)

    for attempt in range(1, 9):
        ceiling = 0.5 * 2 ** (attempt - 1)
        delay = retry.next_delay(Failure.STATUS, "GET", status=503)
        assert delay is not None
        assert ceiling / 2 <= delay <= ceiling


def test_jitter_differs_between_clients() -> None:
    """Two clients that fail together do not retry in step."""
    delays = {state(seed=seed).next_delay(Failure.STATUS, "GET", status=503) for seed in range(5)}
    assert len(delays) > 1


def test_max_backoff_caps_one_delay() -> None:
    retry = state(RetryPolicy(max_attempts=20, backoff=1, max_backoff=5, deadline=10_000))
    delays = [retry.next_delay(Failure.STATUS, "GET", status=503) for _ in range(10)]

    assert all(d is not None and d <= 5 for d in delays)
    assert all(d is not None and d >= 2.5 for d in delays[3:])  # the cap, not the exponent, sets the floor


@pytest.mark.parametrize("max_attempts", [1, 2, 4])
def test_max_attempts_counts_the_first_attempt(max_attempts: int) -> None:
    retry = state(RetryPolicy(max_attempts=max_attempts))
    delays = [retry.next_delay(Failure.STATUS, "GET", status=503) for _ in range(max_attempts)]

    assert all(d is not None for d in delays[:-1])
    assert delays[-1] is None
    assert retry.attempts == max_attempts


def test_retry_after_seconds_is_the_delay_for_429() -> None:
    """429: the server's Retry-After is the wait, shorter or longer than the backoff."""
    retry = state(RetryPolicy(backoff=10, max_backoff=60))
    assert retry.next_delay(Failure.STATUS, "POST", status=429, retry_after="2") == 2.0
    assert retry.next_delay(Failure.STATUS, "POST", status=429, retry_after="45") == 45.0


def test_retry_after_longer_than_max_backoff_is_honoured() -> None:
    retry = state(RetryPolicy(backoff=1, max_backoff=5, deadline=600))
    assert retry.next_delay(Failure.STATUS, "GET", status=429, retry_after="120") == 120.0


def test_retry_after_is_a_floor_for_503() -> None:
    """503: wait the longer of the backoff and Retry-After."""
    assert (
        state(RetryPolicy(backoff=1)).next_delay(Failure.STATUS, "GET", status=503, retry_after="30") == 30.0
    )

    delay = state(RetryPolicy(backoff=20)).next_delay(Failure.STATUS, "GET", status=503, retry_after="1")
    assert delay is not None
    assert 10 <= delay <= 20


def test_retry_after_http_date_is_honoured() -> None:
    header = formatdate(time.time() + 30, usegmt=True)

    delay = state(RetryPolicy(backoff=1)).next_delay(Failure.STATUS, "GET", status=429, retry_after=header)

    assert delay is not None
    assert 28 <= delay <= 30


@pytest.mark.parametrize("header", ["soon", "", "Mon, 99 Foo 2026", None])
def test_unusable_retry_after_falls_back_to_backoff(header: str | None) -> None:
    delay = state(RetryPolicy(backoff=4)).next_delay(Failure.STATUS, "GET", status=503, retry_after=header)
    assert delay is not None
    assert 2 <= delay <= 4


# -- deadline ----------------------------------------------------------------------------------


def test_retry_after_beyond_the_deadline_gives_up() -> None:
    clock = FakeClock()
    retry = state(RetryPolicy(deadline=100), clock=clock)
    clock.advance(90)

    assert retry.next_delay(Failure.STATUS, "GET", status=429, retry_after="20") is None


def test_retry_after_within_the_deadline_is_waited() -> None:
    clock = FakeClock()
    retry = state(RetryPolicy(deadline=100), clock=clock)
    clock.advance(90)

    assert retry.next_delay(Failure.STATUS, "GET", status=429, retry_after="5") == 5.0


def test_backoff_beyond_the_deadline_gives_up() -> None:
    clock = FakeClock()
    retry = state(RetryPolicy(backoff=8, deadline=100), clock=clock)
    clock.advance(97)  # the first backoff is at least 4 seconds

    assert retry.next_delay(Failure.CONNECT, "GET") is None


def test_deadline_counts_from_the_start_of_the_request() -> None:
    clock = FakeClock()
    retry = RetryPolicy(deadline=60).start(clock)
    retry.rng = random.Random(1)
    clock.advance(30)
    assert retry.next_delay(Failure.STATUS, "GET", status=429, retry_after="20") == 20.0
    clock.advance(20)
    assert retry.next_delay(Failure.STATUS, "GET", status=429, retry_after="20") is None


# -- parse_retry_after -------------------------------------------------------------------------


def test_parse_retry_after_seconds() -> None:
    assert parse_retry_after("120", now=0) == 120.0
    assert parse_retry_after(" 7 ", now=0) == 7.0
    assert parse_retry_after("-5", now=0) == 0.0


def test_parse_retry_after_http_date() -> None:
    header = "Wed, 21 Oct 2026 07:28:00 GMT"
    at = datetime(2026, 10, 21, 7, 28, tzinfo=UTC).timestamp()
    assert parse_retry_after(header, now=at - 90) == 90.0
    assert parse_retry_after(header, now=at + 90) == 0.0  # a date in the past means now


@pytest.mark.parametrize("value", [None, "", "soon", "Wed, 99 Foo 2026 07:28:00 GMT", "12 parsecs"])
def test_parse_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, now=0) is None
