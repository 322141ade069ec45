"""Helpers for real DAG runs (see conftest.py)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DagRunResult:
    returncode: int
    output: str
    home: Path

    def xcom(self, dag_id: str, task_id: str) -> Any:
        """The newest return value of a task, read straight from the metadata DB."""
        with sqlite3.connect(self.home / "airflow.db") as db:
            row = db.execute(
                "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value' "
                "ORDER BY timestamp DESC LIMIT 1",
                (dag_id, task_id),
            ).fetchone()
        assert row is not None, f"no XCom for {dag_id}.{task_id}"
        value = json.loads(row[0])
        return json.loads(value) if isinstance(value, str) else value

    def task_states(self, dag_id: str) -> dict[str, str]:
        with sqlite3.connect(self.home / "airflow.db") as db:
            rows = db.execute(
                "SELECT task_id, state FROM task_instance WHERE dag_id = ?", (dag_id,)
            ).fetchall()
        return dict(rows)


def connection_env(conn_id: str, **conn: Any) -> dict[str, str]:
    """The AIRFLOW_CONN_* variable of an ``aos`` connection."""
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps({"conn_type": "aos", **conn})}
