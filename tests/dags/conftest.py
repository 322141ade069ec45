"""
Real DAG runs: ``airflow dags test`` in a subprocess, on a SQLite metadata DB migrated once per session.

The emulator runs in the test process; the DAG run reaches it over loopback HTTP, so tests can look
at what the emulator saw (tokens, requests) and at what Airflow stored (XCom, rendered fields, logs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.dags.support import DagRunResult


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return home


@pytest.fixture
def run_dag(airflow_home: Path) -> Callable[..., DagRunResult]:
    """``run_dag(dag_id, logical_date, dags_folder, env={...})`` runs ``airflow dags test``."""

    def run(
        dag_id: str, logical_date: str, dags_folder: Path, env: dict[str, str] | None = None
    ) -> DagRunResult:
        full_env = {
            **os.environ,
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            **(env or {}),
        }
        done = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", dag_id, logical_date],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        return DagRunResult(done.returncode, done.stdout + done.stderr, airflow_home)

    return run
