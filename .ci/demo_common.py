"""
What the demo scripts share: the emulator as a subprocess, its admin endpoints, an Airflow
environment pointing ``aos_default`` at it, one ``airflow dags test`` run on a fresh SQLite DB, and
reading the run's outcome back from that DB.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def start_emulator(demo: str, *flags: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start ``python -m airflow_provider_aos.emulator`` on a free port; its ready line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_aos.emulator", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the emulator prints one JSON line when it is ready
    if not line:
        proc.kill()
        sys.exit(f"{demo}: the AOS emulator did not start")
    return proc, json.loads(line)


def admin(info: dict[str, Any], path: str, body: dict[str, Any] | None = None) -> Any:
    """GET (or POST ``body`` to) an admin endpoint of the emulator."""
    request = urllib.request.Request(  # noqa: S310 - the emulator on loopback
        f"{info['admin_url']}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request) as resp:  # noqa: S310 - loopback
        return json.load(resp)


def airflow_env(home: Path, info: dict[str, Any], **variables: str) -> dict[str, str]:
    """The environment of an Airflow run on the example DAGs with ``aos_default`` on the emulator."""
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_AOS_DEFAULT": json.dumps(
            {
                "conn_type": "aos",
                "host": info["graph_url"],
                "login": info["client_id"],
                "password": info["client_secret"],
                "extra": {"identity_url": info["identity_url"]},
            }
        ),
        **variables,
    }


def dags_test(env: dict[str, str], dag_id: str, logical_date: str, log: Path) -> int:
    """``airflow db migrate`` then ``airflow dags test``, output to ``log``; the test's exit code."""
    airflow = [sys.executable, "-m", "airflow"]
    with log.open("w") as out:
        print("Migrating a fresh SQLite metadata DB...", flush=True)
        subprocess.run([*airflow, "db", "migrate"], env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
        print(f"airflow dags test {dag_id} {logical_date} (log: {log})", flush=True)
        return subprocess.run(
            [*airflow, "dags", "test", dag_id, logical_date], env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode


def xcom(home: Path, dag_id: str, task_id: str, map_index: int = -1) -> Any:
    """A task's newest return value, straight from the metadata DB (None if it has none)."""
    with sqlite3.connect(home / "airflow.db") as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND map_index = ? "
            "AND key = 'return_value' ORDER BY timestamp DESC LIMIT 1",
            (dag_id, task_id, map_index),
        ).fetchone()
    if row is None:
        return None
    value = json.loads(row[0])
    return json.loads(value) if isinstance(value, str) else value  # Airflow 2.11 stores JSON text


def task_states(home: Path, dag_id: str) -> dict[tuple[str, int], str]:
    """(task id, map index) -> state of every task instance of the DAG."""
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ?", (dag_id,)
        ).fetchall()
    return {(task, index): state for task, index, state in rows}


def failed_run(demo: str, returncode: int, states: dict[tuple[str, int], str], log: Path) -> bool:
    """Whether the run failed; if so, say why (the log's tail and the tasks that did not succeed)."""
    bad = {key: state for key, state in states.items() if state != "success"}
    if returncode == 0 and not bad and states:
        return False
    print(log.read_text()[-6000:])
    print(f"{demo}: the DAG run failed (exit {returncode}; tasks not successful: {bad})")
    print(f"full log: {log}")
    return True
