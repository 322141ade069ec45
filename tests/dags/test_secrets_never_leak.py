"""
Canary secrets through a real DAG run: no run of 8 characters of any of them, nor of a minted token or
assertion, may appear in the task logs, exception messages, XCom, rendered template fields, or
anywhere else Airflow keeps, even when a careless server echoes the bearer token back in an error.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from airflow_provider_aos.emulator import AosEmulator
from tests.conftest import CertBundle
from tests.dags.support import connection_env

DAG_ID = "aos_secret_canary"
# Random-looking, so that any 8 characters of one can only have come from a leak.
CANARY_SECRET = "Qz7Hq2xV9pLmR4tW8nB3"
CANARY_WRONG_SECRET = "Zr81Kd0QweJx5Tc6Vy2M"
CANARY_PASSPHRASE = "Jt5Nb3Yc7uPq9Ls1Wd4F"
CANARY_WRONG_PASSPHRASE = "Ua6Hs2RpXk8Gm0Zb7Ne5"
FRAGMENT = 8
# Where a careless API server quotes the bearer token in a long error message (the hook keeps 500
# characters of it): at the start, across the cut, and just before it.
ECHO_OFFSETS = {"aos_echo_start": 0, "aos_echo_cut": 485, "aos_echo_end": 493}

DAG_FILE = """
from datetime import datetime, timezone

from airflow_provider_aos.operators.audit import AosAuditExportOperator

try:
    from airflow.sdk import DAG
except ImportError:
    from airflow.models.dag import DAG

with DAG("{dag_id}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
         catchup=False, default_args={{"retries": 0}}):
    for conn_id in {conn_ids!r}:
        AosAuditExportOperator(
            task_id=conn_id,
            aos_conn_id=conn_id,
            destination="{out}/" + conn_id + "-{{{{ ds }}}}.jsonl",
            start_time="2026-11-01T00:00:00Z",
            end_time="2026-11-02T12:00:00Z",
        )
"""

GOOD = ["aos_secret", "aos_cert_pem", "aos_cert_pfx"]
BAD = ["aos_wrong_secret", "aos_wrong_passphrase", *ECHO_OFFSETS]


class _EchoHandler(BaseHTTPRequestHandler):
    """An API host that answers 400 quoting the bearer token it was sent, at a path-chosen offset."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        offset = int(self.path.split("/")[1])
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        message = "m" * offset + f"unknown token {token}, rejected" + "n" * 300
        body = json.dumps({"statusCode": 400, "message": message, "traceId": "echo-trace"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def echo_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _grams(value: str) -> set[bytes]:
    data = value.encode()
    return {data[i : i + FRAGMENT] for i in range(len(data) - FRAGMENT + 1)}


def _leaked_fragments(data: bytes, grams: dict[bytes, str]) -> set[str]:
    """The names of the canaries any 8 bytes of which appear in ``data``."""
    return {
        grams[data[i : i + FRAGMENT]]
        for i in range(len(data) - FRAGMENT + 1)
        if data[i : i + FRAGMENT] in grams
    }


def _key_lines(pem: str) -> list[str]:
    """Distinctive lines of a PEM body (the header and footer lines are not secret)."""
    body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    return body[1:-1]


def test_no_secret_reaches_logs_xcom_or_rendered_fields(
    emulator: AosEmulator, run_dag, tmp_path: Path, cert_bundle: CertBundle, echo_server: str
):
    emulator.register_client("canary-client", secret=CANARY_SECRET, scopes=["audit.read.all"])
    emulator.register_client(
        "canary-cert-client", certificate_pem=cert_bundle.cert_pem, scopes=["audit.read.all"]
    )
    encrypted_pem = cert_bundle.encrypted_key_pem(CANARY_PASSPHRASE)
    pfx_b64 = cert_bundle.pfx_b64(CANARY_PASSPHRASE)
    base = {"host": emulator.graph_url, "extra": {"identity_url": emulator.identity_url}}
    cert_extra = {"identity_url": emulator.identity_url, "private_key_passphrase": CANARY_PASSPHRASE}
    env = {
        **connection_env("aos_secret", login="canary-client", password=CANARY_SECRET, **base),
        **connection_env(
            "aos_cert_pem",
            host=emulator.graph_url,
            login="canary-cert-client",
            extra={**cert_extra, "private_key": encrypted_pem, "certificate": cert_bundle.cert_pem},
        ),
        **connection_env(
            "aos_cert_pfx",
            host=emulator.graph_url,
            login="canary-cert-client",
            extra={**cert_extra, "private_key": pfx_b64},
        ),
        **connection_env("aos_wrong_secret", login="canary-client", password=CANARY_WRONG_SECRET, **base),
        **{
            k: v
            for conn_id, offset in ECHO_OFFSETS.items()
            for k, v in connection_env(
                conn_id,
                host=f"{echo_server}/{offset}",
                login="canary-client",
                password=CANARY_SECRET,
                extra={"identity_url": emulator.identity_url},
            ).items()
        },
        **connection_env(
            "aos_wrong_passphrase",
            host=emulator.graph_url,
            login="canary-cert-client",
            extra={
                "identity_url": emulator.identity_url,
                "private_key": encrypted_pem,
                "certificate": cert_bundle.cert_pem,
                "private_key_passphrase": CANARY_WRONG_PASSPHRASE,
            },
        ),
    }
    dags = tmp_path / "dags"
    dags.mkdir()
    out = tmp_path / "out"
    (dags / "canary_dag.py").write_text(
        textwrap.dedent(DAG_FILE.format(dag_id=DAG_ID, conn_ids=GOOD + BAD, out=out))
    )

    result = run_dag(DAG_ID, "2026-11-02", dags, env)

    states = result.task_states(DAG_ID)
    assert {task: states.get(task) for task in GOOD} == dict.fromkeys(GOOD, "success"), result.output[-5000:]
    assert {task: states.get(task) for task in BAD} == dict.fromkeys(BAD, "failed")
    # The failures are visible and explained: the scan below looks at real error output.
    assert "invalid_client" in result.output
    assert "private_key_passphrase" in result.output
    assert result.output.count("echo-trace") >= len(ECHO_OFFSETS)  # the echoing server was reached
    tokens, assertions = emulator.issued_tokens(), emulator.received_assertions()
    assert len(tokens) >= 3
    assert len(assertions) >= 2

    with sqlite3.connect(result.home / "airflow.db") as db:
        rendered = db.execute(
            "SELECT COUNT(*) FROM rendered_task_instance_fields WHERE dag_id = ?", (DAG_ID,)
        ).fetchone()
        xcoms = db.execute("SELECT COUNT(*) FROM xcom WHERE dag_id = ?", (DAG_ID,)).fetchone()
    assert rendered[0] >= len(GOOD)  # the scan covers rendered fields...
    assert xcoms[0] >= len(GOOD)  # ...and XCom

    canaries = {
        "client secret": CANARY_SECRET,
        "wrong client secret": CANARY_WRONG_SECRET,
        "passphrase": CANARY_PASSPHRASE,
        "wrong passphrase": CANARY_WRONG_PASSPHRASE,
        **{f"private key line {i}": line for i, line in enumerate(_key_lines(cert_bundle.key_pem))},
        **{f"encrypted key line {i}": line for i, line in enumerate(_key_lines(encrypted_pem))},
        "pfx": pfx_b64[40:120],
        **{f"token {i}": token for i, token in enumerate(tokens)},
        # Claims and signature: the JWT header ({"alg":"RS256",...}) is the same in every JWT.
        **{f"assertion {i}": assertion.split(".", 1)[1] for i, assertion in enumerate(assertions)},
    }
    grams = {gram: what for what, value in canaries.items() for gram in _grams(value)}
    # Everything Airflow kept: CLI output (task logs and tracebacks), log files, the metadata DB
    # (XCom, rendered template fields, serialized DAGs) and its journal.
    places = {"task output": result.output.encode()}
    places.update({str(p): p.read_bytes() for p in result.home.rglob("*") if p.is_file()})
    leaks = [
        f"{what} in {where}" for where, data in places.items() for what in _leaked_fragments(data, grams)
    ]
    assert leaks == []
    # The scan does find a fragment where there is one.
    assert _leaked_fragments(b"..." + tokens[0][5:13].encode() + b"...", grams) == {"token 0"}
