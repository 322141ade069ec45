"""The emulator's benchmark knobs over real HTTP: the Graph concurrency cap (``max_concurrent``), its
counters, and audit latency that grows with the page (``latency_per_record``)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from airflow_provider_aos.emulator import AosEmulator, EmulatorConfig, server
from airflow_provider_aos.emulator import __main__ as cli

COUNTERS = ("max_concurrent_seen", "throttled_concurrency", "max_concurrent_after_throttle")
# A week of the default data set (50,000 records over two months): far more than one page.
FULL = {"startTime": "2026-10-01T00:00:00Z", "endTime": "2026-10-08T00:00:00Z"}
EMPTY = {"startTime": "2026-09-01T00:00:00Z", "endTime": "2026-09-02T00:00:00Z"}  # before the data


def _session(emu: AosEmulator) -> requests.Session:
    form = {
        "grant_type": "client_credentials",
        "client_id": emu.config.client_id,
        "client_secret": emu.config.client_secret,
    }
    token = requests.post(emu.token_url, data=form, timeout=10).json()["access_token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def _counters(emu: AosEmulator) -> dict[str, int]:
    stats = emu.stats()
    return {key: stats[key] for key in COUNTERS}


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _in_background(
    session: requests.Session, params: dict[str, str], url: str
) -> tuple[threading.Thread, list[requests.Response]]:
    """GET in a thread; the response lands in the returned list."""
    out: list[requests.Response] = []
    thread = threading.Thread(target=lambda: out.append(session.get(url, params=params, timeout=30)))
    thread.start()
    return thread, out


@pytest.fixture
def emu() -> Iterator[AosEmulator]:
    with AosEmulator(EmulatorConfig(page_size=1000)) as emulator:
        yield emulator


def test_cap_turns_away_requests_over_the_limit(emu: AosEmulator) -> None:
    emu.configure(max_concurrent=2, latency=0.3, retry_after=3)
    sessions = [_session(emu) for _ in range(4)]
    emu.reset_stats()
    url, barrier = f"{emu.graph_url}/aos/audit", threading.Barrier(4)
    done: list[tuple[float, requests.Response]] = []

    def call(session: requests.Session) -> None:
        barrier.wait()
        response = session.get(url, params=EMPTY, timeout=30)
        done.append((time.monotonic(), response))

    threads = [threading.Thread(target=call, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    ok = [(t, r) for t, r in done if r.status_code == 200]
    throttled = [(t, r) for t, r in done if r.status_code == 429]
    assert (len(ok), len(throttled)) == (2, 2)
    for _, response in throttled:
        assert response.headers["Retry-After"] == "3"
        body = response.json()  # the Graph ErrorResponse of /aos/audit, as for an injected 429
        assert body["statusCode"] == 429
        assert body["traceId"] == response.headers["x-trace-id"]
        assert "concurrency" in body["error"]
    # Turned away at once: both 429s are answered while the admitted requests still sleep.
    assert max(t for t, _ in throttled) < min(t for t, _ in ok)
    stats = emu.stats()
    assert stats["throttled_concurrency"] == 2
    assert stats["fault_429"] == 0  # the cap has its own counter
    assert stats["audit"] == 2
    # Both turned-away requests arrived while two were in process: 3 at least, 4 if they overlapped.
    assert stats["max_concurrent_seen"] in (3, 4)
    # 3 if the second 429 arrived after the first was answered, 0 if before.
    assert stats["max_concurrent_after_throttle"] in (0, 3)


def test_after_throttle_counts_later_arrivals_and_reset_zeroes(emu: AosEmulator) -> None:
    session, other = _session(emu), _session(emu)
    url = f"{emu.graph_url}/aos/audit"
    emu.configure(max_concurrent=1, latency=1.0)
    emu.reset_stats()

    slow, out = _in_background(other, EMPTY, url)
    _wait_for(lambda: emu.stats()["max_concurrent_seen"] == 1)  # it holds the only slot now
    first = session.get(url, params=EMPTY, timeout=30)
    assert first.status_code == 429
    # It arrived before any cap 429 was answered: nothing "after" yet.
    assert _counters(emu) == {
        "max_concurrent_seen": 2, "throttled_concurrency": 1, "max_concurrent_after_throttle": 0,
    }  # fmt: skip
    # Identity and admin requests never take a slot (latency 1 s still applies to the token).
    assert _session(emu).headers["Authorization"].startswith("Bearer ")
    assert requests.get(f"{emu.admin_url}/stats", timeout=10).json()["throttled_concurrency"] == 1
    # The slow request finishes only now (the token request slept 1 s); retry once it is answered.
    slow.join()
    assert out[0].status_code == 200
    emu.configure(latency=0.0)
    assert session.get(url, params=EMPTY, timeout=30).status_code == 200
    assert _counters(emu)["max_concurrent_after_throttle"] == 1  # a client that backed off

    emu.configure(latency=1.0)
    arrived = emu.stats()["requests"] + 1
    slow, out = _in_background(other, EMPTY, url)
    _wait_for(lambda: emu.stats()["requests"] == arrived)
    time.sleep(0.05)  # from its arrival count to its slot is a few lines of code
    assert session.get(url, params=EMPTY, timeout=30).status_code == 429
    assert _counters(emu) == {
        "max_concurrent_seen": 2, "throttled_concurrency": 2, "max_concurrent_after_throttle": 2,
    }  # fmt: skip
    slow.join()

    assert requests.post(f"{emu.admin_url}/reset", json={}, timeout=10).status_code == 200
    assert _counters(emu) == dict.fromkeys(COUNTERS, 0)
    emu.configure(latency=0.0)
    assert session.get(url, params=EMPTY, timeout=30).status_code == 200
    # The reset also forgot the 429: this arrival is not "after throttle".
    assert _counters(emu) == {
        "max_concurrent_seen": 1, "throttled_concurrency": 0, "max_concurrent_after_throttle": 0,
    }  # fmt: skip


def test_clients_that_wait_for_answers_never_exceed_the_cap(emu: AosEmulator) -> None:
    """A slot is freed before the answer is written, so N clients never trip a cap of N."""
    clients, rounds = 8, 15
    auth = _session(emu).headers
    emu.configure(max_concurrent=clients)
    emu.reset_stats()
    url, statuses = f"{emu.graph_url}/aos/audit", []

    def call() -> None:
        for _ in range(rounds):  # a new connection each time: a new handler thread on the server
            statuses.append(requests.get(url, params=EMPTY, headers=auth, timeout=30).status_code)

    threads = [threading.Thread(target=call) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * clients * rounds
    stats = emu.stats()
    assert stats["throttled_concurrency"] == 0
    assert 1 <= stats["max_concurrent_seen"] <= clients


def test_a_slot_is_free_before_the_answer_is_written(
    emu: AosEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked where the bytes go out, and for answers that are errors, drops or never written."""
    session, url = _session(emu), f"{emu.graph_url}/aos/audit"
    in_flight_at_write: list[int] = []
    send_response = server._Handler.send_response

    def spy(handler: server._Handler, code: int, message: str | None = None) -> None:
        in_flight_at_write.append(handler.emu._in_flight)
        send_response(handler, code, message)

    monkeypatch.setattr(server._Handler, "send_response", spy)
    emu.configure(max_concurrent=1)
    emu.inject_faults("audit", ["500", "drop", "drop_after", "429"])
    assert session.get(url, params=EMPTY, timeout=10).status_code == 500
    for _ in ("drop", "drop_after"):  # no answer written at all
        with pytest.raises(requests.ConnectionError):
            session.get(url, params=EMPTY, timeout=10)
    assert session.get(url, params=EMPTY, timeout=10).status_code == 429  # the injected one
    assert requests.get(url, params=EMPTY, timeout=10).status_code == 401  # no token
    assert session.get(f"{emu.graph_url}/aos/nothing", timeout=10).status_code == 404
    assert session.get(url, params=EMPTY, timeout=10).status_code == 200
    assert in_flight_at_write == [0] * 5
    assert emu.stats()["throttled_concurrency"] == 0


def test_latency_per_record_slows_full_pages(emu: AosEmulator) -> None:
    session, url = _session(emu), f"{emu.graph_url}/aos/audit"
    emu.configure(latency_per_record=0.0005)  # 0.5 s for a page of 1000

    started = time.monotonic()
    full = session.get(url, params=FULL, timeout=30)
    full_seconds = time.monotonic() - started
    assert len(full.json()["data"]) == 1000
    started = time.monotonic()
    empty = session.get(url, params=EMPTY, timeout=30)
    empty_seconds = time.monotonic() - started
    assert empty.json()["data"] == []
    assert full_seconds >= 0.4 > empty_seconds

    # The sleep happens while the request holds its slot: a full page keeps others out.
    emu.configure(max_concurrent=1)
    emu.reset_stats()
    slow, out = _in_background(_session(emu), FULL, url)
    _wait_for(lambda: emu.stats()["max_concurrent_seen"] == 1)
    assert session.get(url, params=EMPTY, timeout=30).status_code == 429
    slow.join()
    assert out[0].status_code == 200
    assert len(out[0].json()["data"]) == 1000


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_concurrent", 0), ("max_concurrent", -1), ("max_concurrent", 1.5), ("max_concurrent", "2"),
        ("max_concurrent", True), ("max_concurrent", math.inf), ("latency_per_record", -0.001),
        ("latency_per_record", "0.1"), ("latency_per_record", 61), ("latency_per_record", math.nan),
        ("latency_per_record", None),
    ],
)  # fmt: skip
def test_bad_settings_name_the_setting(emu: AosEmulator, setting: str, value: object) -> None:
    with pytest.raises(ValueError, match=setting):
        emu.configure(**{setting: value})
    with pytest.raises(ValueError, match=setting):
        AosEmulator(EmulatorConfig(**{setting: value}))  # type: ignore[arg-type]


def test_settings_over_admin(emu: AosEmulator) -> None:
    config_url = f"{emu.admin_url}/config"
    answer = requests.post(config_url, json={"max_concurrent": 4, "latency_per_record": 0.0001}, timeout=10)
    assert answer.status_code == 200
    assert (emu.config.max_concurrent, emu.config.latency_per_record) == (4, 0.0001)
    assert requests.post(config_url, json={"max_concurrent": 3.0}, timeout=10).status_code == 200
    assert type(emu.config.max_concurrent) is int
    assert requests.post(config_url, json={"max_concurrent": None}, timeout=10).status_code == 200
    assert emu.config.max_concurrent is None
    bad = requests.post(config_url, json={"max_concurrent": 0}, timeout=10)
    assert bad.status_code == 400
    assert "max_concurrent" in bad.json()["error"]


def test_cli_flags_reach_the_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[EmulatorConfig] = []

    class Capture:
        def __init__(self, config: EmulatorConfig) -> None:
            seen.append(config)
            raise ValueError("captured")  # main() then exits 2 before serving

    with monkeypatch.context() as patch:
        patch.setattr(cli, "AosEmulator", Capture)
        assert cli.main(["--max-concurrent", "3", "--latency-per-record", "0.0002"]) == 2
        assert cli.main([]) == 2
    assert (seen[0].max_concurrent, seen[0].latency_per_record) == (3, 0.0002)
    assert (seen[1].max_concurrent, seen[1].latency_per_record) == (None, 0.0)
    # The real emulator validates them.
    capsys.readouterr()
    assert cli.main(["--max-concurrent", "0"]) == 2
    assert "max_concurrent" in capsys.readouterr().err
