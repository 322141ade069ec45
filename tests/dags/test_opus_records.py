"""
The Opus records operators in a real DAG run (``airflow dags test``) against the emulator.

One run holds the cases, each on its own Opus connection (GUID) so their records never mix:

- ``submit_fail``: 47 records, rows 3 and 20 rejected by the server (once): the task fails, its
  manifest (XCom key ``manifest``) names exactly those two, the failed file holds exactly those two.
- ``resubmit``: the failed file fed back unchanged as ``source``: only those two go out, and the
  emulator then holds all 47 exactly once.
- ``submit_warn``: the same input in warn mode: the task succeeds, same failures reported.
- ``submit_retry``: with ``retries=1``: the retry of the same task instance resubmits only the two.
- ``due`` -> ``destroy``: due records written to a file, then destroyed from it, one id failing.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_aos.emulator import AosEmulator, EmulatorConfig
from tests.dags.support import DagRunResult, connection_env

DAG_ID = "aos_opus_records_cases"
CONN = {
    "fail": "11111111-1111-4111-8111-111111111111",
    "warn": "22222222-2222-4222-8222-222222222222",
    "retry": "33333333-3333-4333-8333-333333333333",
    "due": "44444444-4444-4444-8444-444444444444",
}
REJECTED = {"doc-003": "Term Connector/Set/Term was not found.", "doc-020": "User jack.smith is unknown."}

DAG_FILE = """
from datetime import datetime, timedelta, timezone

from airflow_provider_aos.operators.opus import (
    AosOpusDestroyRecordsOperator, AosOpusDueRecordsOperator, AosOpusSubmitRecordsOperator,
)

try:
    from airflow.sdk import DAG
except ImportError:
    from airflow.models.dag import DAG

DATA = {data!r}
CONN = {conn!r}

with DAG("{dag_id}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False,
         default_args={{"retries": 0, "trigger_rule": "all_done"}}):
    fail = AosOpusSubmitRecordsOperator(
        task_id="submit_fail", opus_connection_id=CONN["fail"], source=DATA + "/fail/docs.jsonl")
    resubmit = AosOpusSubmitRecordsOperator(
        task_id="resubmit", opus_connection_id=CONN["fail"], source=DATA + "/fail/docs.failed.jsonl")
    warn = AosOpusSubmitRecordsOperator(
        task_id="submit_warn", opus_connection_id=CONN["warn"], source=DATA + "/warn/docs.jsonl",
        on_failure="warn")
    retry = AosOpusSubmitRecordsOperator(
        task_id="submit_retry", opus_connection_id=CONN["retry"], source=DATA + "/retry/docs.jsonl",
        retries=1, retry_delay=timedelta(seconds=0))
    due = AosOpusDueRecordsOperator(
        task_id="due", opus_connection_id=CONN["due"], destination=DATA + "/due/due.jsonl",
        disposal_due_date="2026-12-01T00:00:00Z", items_per_page=10)
    destroy = AosOpusDestroyRecordsOperator(
        task_id="destroy", opus_connection_id=CONN["due"], source=DATA + "/due/due.jsonl")
    fail >> resubmit >> warn >> retry >> due >> destroy
"""


def rec(i: int) -> dict[str, Any]:
    return {
        "rowKey": f"doc-{i:03d}", "leafName": f"Document {i}", "termFullPath": "Connector/Set/Term",
        "timeCreated": "2024-12-19T18:15:00Z", "timeModified": "2024-12-19 18:15:00 ",
        "createdBy": "jack.smith", "modifiedBy": "jack.smith",
    }  # fmt: skip


FORTY_SEVEN = [rec(i) for i in range(1, 48)]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class OpusRun:
    def __init__(self, emulator: AosEmulator, result: DagRunResult, data: Path) -> None:
        self.emulator = emulator
        self.result = result
        self.data = data
        self.states = result.task_states(DAG_ID)

    def xcom(self, task_id: str, key: str = "manifest") -> Any:
        with sqlite3.connect(self.result.home / "airflow.db") as db:
            row = db.execute(
                "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = ? ORDER BY timestamp DESC LIMIT 1",
                (DAG_ID, task_id, key),
            ).fetchone()
        assert row is not None, f"no XCom {key} for {task_id}"
        value = json.loads(row[0])
        if isinstance(value, str):  # Airflow 2.11 stores JSON text; Airflow 3 the value itself
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        return value


@pytest.fixture(scope="module")
def opus_run(airflow_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpusRun]:
    import os
    import subprocess
    import sys

    with AosEmulator(EmulatorConfig(records=100)) as emulator:
        data = tmp_path_factory.mktemp("opus-data")
        for case in ("fail", "warn", "retry"):
            (data / case).mkdir()
            (data / case / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in FORTY_SEVEN))
            emulator.opus_fail_rows(CONN[case], REJECTED, times=1)
        (data / "due").mkdir()
        emulator.opus_add_records(
            CONN["due"], [rec(i) for i in range(1, 36)], disposal_due="2026-11-15T00:00:00Z"
        )
        emulator.opus_add_records(
            CONN["due"], [rec(i) for i in range(36, 41)], disposal_due="2027-02-01T00:00:00Z"
        )
        emulator.opus_fail_destroy({"doc-017": "Awaiting approval."})
        dags = tmp_path_factory.mktemp("opus-dags")
        (dags / "opus_records_cases.py").write_text(
            textwrap.dedent(DAG_FILE.format(dag_id=DAG_ID, data=str(data), conn=CONN))
        )
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            **connection_env(
                "aos_default",
                host=emulator.graph_url,
                login=emulator.config.client_id,
                password=emulator.config.client_secret,
                extra={"identity_url": emulator.identity_url},
            ),
        }
        done = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", DAG_ID, "2026-12-01"],
            env=env, capture_output=True, text=True, timeout=280, check=False,
        )  # fmt: skip
        yield OpusRun(emulator, DagRunResult(done.returncode, done.stdout + done.stderr, airflow_home), data)


def test_every_task_ends_in_its_state(opus_run: OpusRun):
    expected = {
        "submit_fail": "failed", "resubmit": "success", "submit_warn": "success", "submit_retry": "success",
        "due": "success", "destroy": "failed",
    }  # fmt: skip
    assert {t: opus_run.states.get(t) for t in expected} == expected, opus_run.result.output[-8000:]


def test_47_records_two_rejected_the_task_fails_naming_exactly_those_two(opus_run: OpusRun):
    manifest = opus_run.xcom("submit_fail")
    assert {k: v["reason"] for k, v in manifest["reasons"].items()} == REJECTED
    assert (manifest["records"], manifest["submitted"], manifest["batches"]) == (47, 47, 4)
    assert (manifest["succeeded"], manifest["failed"], manifest["invalid"]) == (45, 2, 0)
    failed = read_jsonl(opus_run.data / "fail" / "docs.failed.jsonl")
    assert [r["rowKey"] for r in failed] == ["doc-003", "doc-020"]
    assert "2 of 47 record(s) did not succeed" in opus_run.result.output


def test_the_failed_file_fed_back_submits_only_those_two(opus_run: OpusRun):
    manifest = opus_run.xcom("resubmit")
    assert opus_run.xcom("resubmit", "return_value") == manifest
    assert (manifest["records"], manifest["submitted"], manifest["succeeded"], manifest["failed"]) == (
        2,
        2,
        2,
        0,
    )
    assert opus_run.emulator.opus_records(CONN["fail"]) == {r["rowKey"]: r for r in FORTY_SEVEN}


def test_warn_mode_succeeds_and_reports_the_same_two(opus_run: OpusRun):
    manifest = opus_run.xcom("submit_warn", "return_value")
    assert set(manifest["reasons"]) == set(REJECTED)
    assert [r["rowKey"] for r in read_jsonl(opus_run.data / "warn" / "docs.failed.jsonl")] == [
        "doc-003",
        "doc-020",
    ]


def test_a_task_retry_resubmits_only_what_did_not_succeed(opus_run: OpusRun):
    manifest = opus_run.xcom("submit_retry", "return_value")
    assert (manifest["submitted"], manifest["succeeded"], manifest["succeeded_in_earlier_tries"]) == (
        2,
        47,
        45,
    )
    assert opus_run.emulator.opus_records(CONN["retry"]) == {r["rowKey"]: r for r in FORTY_SEVEN}
    assert read_jsonl(opus_run.data / "retry" / "docs.failed.jsonl") == []
    assert not list((opus_run.data / "retry").glob(".*"))  # no checkpoint or temporary file left


def test_due_records_then_destroy_with_a_partial_failure(opus_run: OpusRun):
    due = opus_run.xcom("due", "return_value")
    assert due["records"] == 35 == len(read_jsonl(opus_run.data / "due" / "due.jsonl"))
    assert due["pages"] == 4
    destroyed = opus_run.xcom("destroy")
    assert (destroyed["submitted"], destroyed["succeeded"], destroyed["failed"]) == (35, 34, 1)
    failed = read_jsonl(opus_run.data / "due" / "due.failed.jsonl")
    assert [(r["rowKey"], r["_aos_error"]["reason"]) for r in failed] == [("doc-017", "Awaiting approval.")]
    assert opus_run.emulator.opus_destroyed(CONN["due"]) == sorted(
        f"doc-{i:03d}" for i in range(1, 36) if i != 17
    )
