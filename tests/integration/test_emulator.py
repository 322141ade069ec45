"""Smoke tests of the local AOS emulator itself, over real HTTP on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from airflow_provider_aos.emulator import AosEmulator, EmulatorConfig

START = datetime(2026, 10, 1, tzinfo=UTC)
WEEK_END = START + timedelta(days=7)
REPO_ROOT = Path(__file__).resolve().parents[2]


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


@pytest.fixture
def emu() -> Iterator[AosEmulator]:
    with AosEmulator(EmulatorConfig(records=5000, page_size=100)) as emulator:
        yield emulator


def _token(emu: AosEmulator, **form: str) -> requests.Response:
    data = {
        "grant_type": "client_credentials",
        "client_id": emu.config.client_id,
        "client_secret": emu.config.client_secret,
        **form,
    }
    return requests.post(emu.token_url, data=data, timeout=10)


def _session(emu: AosEmulator) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + _token(emu).json()["access_token"]
    return session


def _page_all(session: requests.Session, url: str, params: dict[str, object]) -> list[dict]:
    """Follow nextLink to the end, checking no page is empty (no empty trailing page)."""
    first = session.get(url, params=params, timeout=10)
    first.raise_for_status()
    body = first.json()
    records = list(body["data"])
    while body["nextLink"]:
        body = session.get(body["nextLink"], timeout=10).json()
        assert body["data"], "the emulator must not emit an empty trailing page"
        records.extend(body["data"])
    return records


def test_same_seed_serves_identical_records() -> None:
    params = {"startTime": _iso(START), "endTime": _iso(START + timedelta(days=3))}
    pages = []
    for seed in (7, 7, 8):
        config = EmulatorConfig(records=3000, page_size=250, seed=seed)
        with AosEmulator(config) as emulator:
            pages.append(_page_all(_session(emulator), f"{emulator.graph_url}/aos/audit", params))
    assert pages[0] == pages[1]
    assert pages[0] != pages[2]
    times = [r["actionTime"] for r in pages[0]]
    assert times == sorted(times)
    assert len({(r["actionTime"], r["objectName"]) for r in pages[0]}) == len(pages[0])


def test_count_matches_paging_and_window_is_inclusive(emu: AosEmulator) -> None:
    session = _session(emu)
    # Put the window end exactly on a record so the inclusive end is exercised.
    boundary_record = list(emu.iter_audit(START, WEEK_END))[250]
    end = datetime.fromisoformat(boundary_record["actionTime"])
    params = {"startTime": _iso(START), "endTime": boundary_record["actionTime"]}
    served = _page_all(session, f"{emu.graph_url}/aos/audit", params)
    assert served[-1]["actionTime"] == boundary_record["actionTime"]
    assert len(served) == emu.count_audit(START, end, end_inclusive=True)
    assert emu.count_audit(START, end) < len(served)  # half-open excludes the boundary record
    assert served == list(emu.iter_audit(START, end, end_inclusive=True))

    # Filters: comma list and repeated parameter, any name casing.
    filtered = {
        "StartTime": _iso(START),
        "ENDTIME": _iso(WEEK_END),
        "productTypes": "Portal,SMP",
        "geolocations": ["NAM", "EUR"],
    }
    served = _page_all(session, f"{emu.graph_url}/aos/audit", filtered)
    assert served
    assert {r["product"] for r in served} <= {"AvePoint Online Services", "EnPower"}
    assert {r["geoLocation"] for r in served} <= {"NAM", "EUR"}
    expected = emu.count_audit(START, WEEK_END, ["Portal", "SMP"], ["NAM", "EUR"], end_inclusive=True)
    assert len(served) == expected

    # A page that is exactly full and ends the window carries nextLink null.
    emu.configure(page_size=expected)
    body = session.get(f"{emu.graph_url}/aos/audit", params=filtered, timeout=10).json()
    assert len(body["data"]) == expected
    assert body["nextLink"] is None

    count = requests.get(
        f"{emu.admin_url}/audit/count",
        params={"startTime": _iso(START), "endTime": _iso(end), "endInclusive": "true"},
        timeout=10,
    ).json()
    assert count == {"count": emu.count_audit(START, end, end_inclusive=True)}


def test_audit_parameter_errors(emu: AosEmulator) -> None:
    session = _session(emu)
    url = f"{emu.graph_url}/aos/audit"
    too_long = session.get(
        url,
        params={"startTime": _iso(START), "endTime": _iso(START + timedelta(days=7, seconds=1))},
    )
    assert too_long.status_code == 400
    body = too_long.json()
    assert "7 days" in body["error"]
    assert body["statusCode"] == 400
    assert body["traceId"]
    assert too_long.headers["x-trace-id"] == body["traceId"]

    window = {"startTime": _iso(START), "endTime": _iso(WEEK_END)}
    unknown = session.get(url, params={**window, "productTypes": "Portal,Nope"})
    assert unknown.status_code == 400
    assert "Nope" in unknown.json()["error"]
    bad_skip = session.get(url, params={**window, "skipToken": "garbage"})
    assert bad_skip.status_code == 400
    assert session.get(url, params={"startTime": _iso(START)}).status_code == 400
    assert emu.stats()["audit_error"] == 4


def test_token_with_secret_post_and_basic(emu: AosEmulator) -> None:
    posted = _token(emu, scope="audit.read.all")
    assert posted.status_code == 200
    body = posted.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "audit.read.all"
    basic = requests.post(
        emu.token_url,
        data={"grant_type": "client_credentials", "scope": "AUDIT.READ.ALL"},
        auth=(emu.config.client_id, emu.config.client_secret),
        timeout=10,
    )
    assert basic.status_code == 200
    assert basic.json()["scope"] == "audit.read.all"
    assert emu.issued_tokens() == [body["access_token"], basic.json()["access_token"]]
    assert emu.received_token_requests()[0]["client_secret"] == emu.config.client_secret
    assert emu.stats()["token"] == 2


def test_bad_secret_and_invalid_scope(emu: AosEmulator) -> None:
    wrong = _token(emu, client_secret="not-the-secret")
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_client"
    assert "not-the-secret" not in wrong.text
    scoped = _token(emu, scope="audit.read.all no.such.scope")
    assert scoped.status_code == 400
    assert scoped.json()["error"] == "invalid_scope"
    grant = _token(emu, grant_type="password")
    assert grant.json()["error"] == "unsupported_grant_type"
    assert emu.stats()["token_error"] == 3


def test_graph_auth_errors(emu: AosEmulator) -> None:
    url = f"{emu.graph_url}/aos/audit"
    params = {"startTime": _iso(START), "endTime": _iso(WEEK_END)}
    missing = requests.get(url, params=params, timeout=10)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert missing.json()["traceId"]

    other_scope = _token(emu, scope="records.readwrite.all").json()["access_token"]
    forbidden = requests.get(
        url, params=params, headers={"Authorization": f"Bearer {other_scope}"}, timeout=10
    )
    assert forbidden.status_code == 403

    session = _session(emu)
    assert session.get(url, params=params).status_code == 200
    emu.revoke_tokens()
    assert session.get(url, params=params).status_code == 401
    stats = emu.stats()
    assert (stats["unauthorized"], stats["forbidden"], stats["audit"]) == (2, 1, 1)


def test_injected_faults_are_served_in_order(emu: AosEmulator) -> None:
    session = _session(emu)
    url = f"{emu.graph_url}/aos/audit"
    params = {"startTime": _iso(START), "endTime": _iso(WEEK_END)}
    emu.configure(retry_after=7)
    emu.inject_faults("audit", [429, "500", "drop", 503])
    first = session.get(url, params=params)
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "7"
    assert first.json()["traceId"]
    assert session.get(url, params=params).status_code == 500
    with pytest.raises(requests.ConnectionError):
        session.get(url, params=params)
    assert session.get(url, params=params).status_code == 503
    assert session.get(url, params=params).status_code == 200

    emu.inject_faults("token", [401])
    assert _token(emu).status_code == 401
    assert _token(emu).status_code == 200
    stats = emu.stats()
    assert [stats[f"fault_{k}"] for k in ("429", "500", "503", "drop")] == [1, 1, 1, 1]


def test_cli_prints_ready_line_and_exits_cleanly(tmp_path: Path) -> None:
    ready_file = tmp_path / "ready.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_aos.emulator", "--port", "0",
         "--records", "1000", "--ready-file", str(ready_file)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["event"] == "ready"
        assert info["records"] == 1000
        assert info["token_url"] == info["identity_url"] + "/connect/token"
        assert json.loads(ready_file.read_text()) == info
        stats = requests.get(f"{info['admin_url']}/stats", timeout=10).json()
        assert stats["requests"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    assert code == 0


def test_cli_help_explains_every_flag() -> None:
    """``aos-emulator --help`` gives every option a sentence, as the running CLI prints it."""
    import argparse

    from airflow_provider_aos.emulator.__main__ import build_parser

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_aos.emulator", "--help"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    # argparse wraps lines (even inside "--data-start"), so compare without any whitespace.
    printed = "".join(result.stdout.split())
    options = [a for a in build_parser()._actions if not isinstance(a, argparse._HelpAction)]
    assert options
    undocumented = [a.option_strings[0] for a in options if not (a.help or "").strip()]
    assert undocumented == []
    for action in options:
        assert action.option_strings[0] in result.stdout
        expanded = (action.help or "") % {**vars(action), "prog": "aos-emulator"}
        assert "".join(expanded.split()) in printed, action.option_strings[0]
