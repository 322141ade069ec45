"""AdaptiveLimit: the AIMD bound on requests in flight (starts at 1, +1 per round, halves on 429/503)."""

from __future__ import annotations

import threading
import time

import pytest

from airflow_provider_aos.throttle import AdaptiveLimit, Cancelled

LIVENESS = 10.0  # seconds: a generous bound for "it did happen", never a speed claim


def _succeed(limit: AdaptiveLimit, times: int, status: int = 200) -> None:
    """``times`` requests in a row, each answered with ``status``."""
    for _ in range(times):
        limit.acquire()
        limit.release(status)


def _grow_to(limit: AdaptiveLimit, target: int) -> int:
    """Successes one at a time until the limit allows ``target`` requests; returns how many it took."""
    count = 0
    while int(limit.limit) < target:
        _succeed(limit, 1)
        count += 1
        assert count < 10 * target * target, f"the limit never reached {target}"
    return count


def test_it_starts_at_one_request() -> None:
    limit = AdaptiveLimit(8)
    assert int(limit.limit) == 1
    assert (limit.in_flight, limit.peak, limit.throttled) == (0, 0, 0)


@pytest.mark.parametrize("ceiling", [0, -1])
def test_a_ceiling_below_one_is_refused(ceiling: int) -> None:
    with pytest.raises(ValueError, match="ceiling"):
        AdaptiveLimit(ceiling)


def test_it_grows_by_one_per_round_of_successes_up_to_the_ceiling() -> None:
    limit = AdaptiveLimit(6)
    # Each success adds 1/limit: a round at n requests (n successes, or n+1 as the step shrinks
    # while the limit grows within the round) adds one whole request, never two.
    for n in range(1, 6):
        assert int(limit.limit) == n
        took = _grow_to(limit, n + 1)
        assert n <= took <= n + 1, (n, took)
        assert int(limit.limit) == n + 1
    _succeed(limit, 100)
    assert limit.limit == 6.0  # the ceiling holds however long it goes well
    assert limit.peak == 1  # one at a time here: nothing ran concurrently
    assert limit.throttled == 0


def test_a_ceiling_of_one_never_grows() -> None:
    limit = AdaptiveLimit(1)
    _succeed(limit, 50)
    assert limit.limit == 1.0


def test_fewer_successes_than_a_round_do_not_grow_it() -> None:
    limit = AdaptiveLimit(10)
    _grow_to(limit, 4)
    _succeed(limit, 3)  # three successes at 4 add less than one request
    assert int(limit.limit) == 4


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_halves_it_and_never_below_one(status: int) -> None:
    limit = AdaptiveLimit(16)
    _grow_to(limit, 8)
    before = limit.limit
    _succeed(limit, 1, status)
    assert limit.limit == pytest.approx(before / 2)
    assert int(limit.limit) == 4
    _succeed(limit, 1, status)
    assert limit.limit == pytest.approx(before / 4)
    _succeed(limit, 3, status)
    assert limit.limit == 1.0
    assert limit.throttled == 5
    # And it grows back from one.
    _succeed(limit, 1)
    assert int(limit.limit) == 2


@pytest.mark.parametrize("status", [None, 400, 401, 404, 500, 502, 504])
def test_no_answer_and_other_errors_leave_it_alone(status: int | None) -> None:
    limit = AdaptiveLimit(16)
    _grow_to(limit, 4)
    before = limit.limit
    _succeed(limit, 5, status)  # type: ignore[arg-type]
    assert limit.limit == before
    assert limit.throttled == 0
    assert limit.in_flight == 0  # the slot was given back all the same


def test_acquire_blocks_at_the_limit_until_a_release() -> None:
    limit = AdaptiveLimit(3)
    _grow_to(limit, 3)
    for _ in range(3):
        limit.acquire()
    assert (limit.in_flight, limit.peak) == (3, 3)

    got = threading.Event()

    def fourth() -> None:
        limit.acquire()
        got.set()

    waiter = threading.Thread(target=fourth, daemon=True)
    waiter.start()
    assert not got.wait(0.3)  # full: the fourth waits
    assert limit.in_flight == 3
    limit.release(None)  # neutral: the limit stays 3, one slot frees
    assert got.wait(LIVENESS)
    waiter.join(LIVENESS)
    assert limit.in_flight == 3
    assert limit.peak == 3


def test_a_halved_limit_holds_back_requests_until_enough_are_done() -> None:
    limit = AdaptiveLimit(4)
    _grow_to(limit, 4)
    _succeed(limit, 10)
    assert limit.limit == 4.0  # at the ceiling
    for _ in range(4):
        limit.acquire()
    limit.release(429)  # 3 in flight, limit 2: no slot until only one is left
    assert limit.limit == 2.0
    got = threading.Event()
    waiter = threading.Thread(target=lambda: (limit.acquire(), got.set()), daemon=True)
    waiter.start()
    limit.release(None)
    assert not got.wait(0.3)  # 2 in flight, limit 2: still full
    limit.release(None)
    assert got.wait(LIVENESS)  # 1 in flight: the waiter gets the second slot
    waiter.join(LIVENESS)
    assert limit.in_flight == 2


def test_cancel_makes_waiters_and_later_acquires_raise() -> None:
    limit = AdaptiveLimit(2)
    limit.acquire()  # the only slot at limit 1
    outcomes: list[str] = []

    def wait_for_slot() -> None:
        try:
            limit.acquire()
            outcomes.append("acquired")
        except Cancelled:
            outcomes.append("cancelled")

    waiters = [threading.Thread(target=wait_for_slot, daemon=True) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.1)
    assert outcomes == []
    limit.cancel()
    for waiter in waiters:
        waiter.join(LIVENESS)  # promptly: each re-checks at least every 0.2 s, no release needed
        assert not waiter.is_alive()
    assert outcomes == ["cancelled"] * 3
    assert limit.in_flight == 1
    with pytest.raises(Cancelled):
        limit.acquire()  # even with a free slot
    limit.release(200)  # the request in flight still hands its slot back
    with pytest.raises(Cancelled):
        limit.acquire()
    assert limit.in_flight == 0


def test_peak_is_the_most_in_flight_across_threads() -> None:
    limit = AdaptiveLimit(6)
    _grow_to(limit, 6)
    inside, top, lock = 0, 0, threading.Lock()
    start = threading.Barrier(12)

    def worker() -> None:
        nonlocal inside, top
        start.wait()
        for _ in range(20):
            limit.acquire()
            with lock:
                inside += 1
                top = max(top, inside)
            time.sleep(0.002)
            with lock:
                inside -= 1
            limit.release(200)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LIVENESS * 3)
    assert top <= 6  # never more than the ceiling at once
    assert top <= limit.peak <= 6  # peak counts from acquire to release, a superset of "inside"
    assert limit.peak >= 2
    assert limit.in_flight == 0


@pytest.mark.parametrize("cap", [1, 3, 5])
def test_against_a_server_capped_at_n_at_most_n_plus_one_are_in_flight_after_the_first_429(cap: int) -> None:
    """
    16 threads behind a limit with ceiling 32 against a fake server that answers 429 to any request
    arriving while ``cap`` are already in process. After its first 429 the server never sees more
    than ``cap + 1`` at once (the single probe that finds ``cap + 1`` too many).
    """
    limit = AdaptiveLimit(32)
    lock = threading.Lock()
    state = {"in_process": 0, "throttled": 0, "most": 0, "most_after": 0, "ok": 0}
    start = threading.Barrier(16)

    def server_arrive() -> bool:
        with lock:
            state["in_process"] += 1
            if state["throttled"]:
                state["most_after"] = max(state["most_after"], state["in_process"])
            state["most"] = max(state["most"], state["in_process"])
            admitted = state["in_process"] <= cap
            if not admitted:
                state["in_process"] -= 1  # answered at once
                state["throttled"] += 1
            return admitted

    def server_depart() -> None:
        with lock:
            state["in_process"] -= 1
            state["ok"] += 1

    def client() -> None:
        start.wait()
        done = 0
        while done < 40:
            limit.acquire()
            if server_arrive():
                time.sleep(0.001)  # the work of a request
                server_depart()
                limit.release(200)
                done += 1
            else:
                limit.release(429)

    threads = [threading.Thread(target=client) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LIVENESS * 6)
        assert not thread.is_alive()
    assert state["ok"] == 16 * 40  # every request went through in the end
    assert state["throttled"] >= 1  # the limit did find the cap (it would grow to 32 otherwise)
    assert limit.throttled == state["throttled"]
    assert state["most_after"] <= cap + 1
    assert limit.in_flight == 0
