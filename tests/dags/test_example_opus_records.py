"""
The example Opus records DAG, run for real (``airflow dags test``) on the emulator, as the demo does:
the sample documents are submitted, the records of earlier runs that are due are retrieved and
destroyed, and the emulator's demo archive of a site is restored while the task waits in the
triggerer (``dags test`` runs the trigger in line). Outcomes are checked against the emulator's store.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_aos.emulator import AosEmulator, EmulatorConfig
from tests.dags.support import ROOT, DagRunResult, connection_env

DAG_ID = "example_aos_opus_records"
EXAMPLE_DAG_FILE = ROOT / "example_dags" / "example_aos_opus_records.py"
DOCUMENTS = ROOT / "example_dags" / "data" / "opus_documents.csv"
RUN = "2026-11-02"  # a data interval ending 2026-11-02T00:00:00Z: the disposal cut-off
CUTOFF = datetime(2026, 11, 2, tzinfo=UTC)
CONNECTION = "6a1f3c52-8d4e-4b7a-9c2e-5f0d1b7e9a31"
SITE = "https://contoso.sharepoint.com/sites/ArchivedProjects"  # an emulator demo archive
RETENTION_DAYS = 2555  # seven years after timeModified


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("example_aos_opus_records", EXAMPLE_DAG_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documents() -> list[dict[str, str]]:
    """The sample CSV's rows as the operator sends them (an empty cell is no value)."""
    with DOCUMENTS.open(newline="", encoding="utf-8") as fh:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def _earlier_records() -> list[dict[str, str]]:
    """Records of earlier runs (as in .ci/demo_opus.py): modified on the 15th of each month of 2018-2020."""
    return [
        {
            "rowKey": f"CONTOSO-DMS-{500 + n:06d}", "leafName": f"Purchase Order PO-{2018 + n // 12}{n % 12 + 1:02d}.pdf",
            "termFullPath": "Records/Finance/Purchase Orders",
            "timeCreated": f"{2018 + n // 12}-{n % 12 + 1:02d}-02T08:00:00Z",
            "timeModified": f"{2018 + n // 12}-{n % 12 + 1:02d}-15T10:30:00Z",
            "createdBy": "nestor.wilke@contoso.com", "modifiedBy": "nestor.wilke@contoso.com",
        }
        for n in range(36)
    ]  # fmt: skip


def _submit_manifest(result: DagRunResult) -> Any:
    """The manifest of the last try of submit_records (XCom key ``manifest``: a failed task has no return value)."""
    with sqlite3.connect(result.home / "airflow.db") as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = 'submit_records' AND key = 'manifest' "
            "ORDER BY timestamp DESC LIMIT 1",
            (DAG_ID,),
        ).fetchone()
    assert row is not None, "no manifest XCom for submit_records"
    value = json.loads(row[0])
    return json.loads(value) if isinstance(value, str) else value  # Airflow 2.11 stores JSON text


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == [*_documents_header(), "_aos_error"]
    return rows


def _documents_header() -> list[str]:
    with DOCUMENTS.open(newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _env(emulator: AosEmulator, base: Path, **extra: str) -> dict[str, str]:
    return {
        **connection_env(
            "aos_default",
            host=emulator.graph_url,
            login=emulator.config.client_id,
            password=emulator.config.client_secret,
            extra={"identity_url": emulator.identity_url},
        ),
        "AIRFLOW_VAR_AOS_OPUS_CONNECTION_ID": CONNECTION,
        "AIRFLOW_VAR_AOS_OPUS_BASE": str(base),
        "AOS_EXAMPLE_POLL_INTERVAL": "1",
        **extra,
    }


@pytest.fixture
def opus_emulator() -> Iterator[AosEmulator]:
    config = EmulatorConfig(records=100, opus_retention_days=RETENTION_DAYS, opus_restore_seconds=6)
    with AosEmulator(config) as emu:
        emu.opus_add_records(CONNECTION, _earlier_records())
        yield emu


def test_the_example_submits_the_documents_destroys_due_records_and_restores_a_site(
    opus_emulator: AosEmulator, run_dag: Callable[..., DagRunResult], tmp_path: Path
):
    emulator = opus_emulator
    env = _env(emulator, tmp_path, AIRFLOW_VAR_AOS_OPUS_RESTORE_SITE=SITE)
    result = run_dag(DAG_ID, RUN, ROOT / "example_dags", env)
    assert result.returncode == 0, result.output[-6000:]
    states = result.task_states(DAG_ID)
    assert states == dict.fromkeys(
        ["submit_records", "due_records", "destroy_records", "restore_requested", "restore_site"], "success"
    ), result.output[-6000:]
    day = tmp_path / "2026-11-02"

    # Every document of the CSV stored exactly once, as it is in the CSV; none of them due.
    documents = _documents()
    submitted = result.xcom(DAG_ID, "submit_records")
    assert (submitted["records"], submitted["batches"], submitted["succeeded"]) == (len(documents), 3, 41)
    assert (submitted["failed"], submitted["invalid"], submitted["failed_records"]) == (0, 0, 0)
    assert submitted["failed_records_path"] == str(day / "submit-failed.csv")
    assert _read_csv(day / "submit-failed.csv") == []  # header only
    stats = emulator.stats()
    assert (stats["opus_submit"], stats["opus_records_stored"], stats["opus_records_failed"]) == (3, 41, 0)
    stored = emulator.opus_records(CONNECTION, include_destroyed=True)
    assert {key: stored[key] for key in (d["rowKey"] for d in documents)} == {
        d["rowKey"]: d for d in documents
    }
    assert len(stored) == len(documents) + len(_earlier_records())

    # The records due by the cut-off (earlier runs' records modified more than seven years before it)
    # were written to the due file and destroyed; nothing due is left, nothing else destroyed.
    expected_due = sorted(
        r["rowKey"]
        for r in _earlier_records()
        if datetime.fromisoformat(r["timeModified"]) + timedelta(days=RETENTION_DAYS) < CUTOFF
    )
    assert len(expected_due) == 22
    due = result.xcom(DAG_ID, "due_records")
    assert (due["records"], due["disposal_due_date"], due["path"]) == (
        22,
        "2026-11-02T00:00:00",
        str(day / "due.jsonl"),
    )
    assert sorted(r["rowKey"] for r in _read_jsonl(day / "due.jsonl")) == expected_due
    destroyed = result.xcom(DAG_ID, "destroy_records")
    assert (destroyed["submitted"], destroyed["succeeded"], destroyed["failed"]) == (22, 22, 0)
    assert emulator.opus_destroyed(CONNECTION) == expected_due
    assert emulator.opus_due_count(CONNECTION, CUTOFF) == 0
    assert _read_jsonl(day / "due.failed.jsonl") == []

    # One restore of the site, finished, waited for in the triggerer.
    jobs = emulator.opus_restore_jobs()
    assert [(j["scope"], j["statusLabel"]) for j in jobs] == [(SITE, "Finished")]
    restored = result.xcom(DAG_ID, "restore_site")
    assert (restored["id"], restored["state"]) == (jobs[0]["id"], "SUCCEEDED")
    assert "running trigger in line" in result.output


def test_rejected_documents_land_in_the_failed_file_and_the_other_branches_still_run(
    opus_emulator: AosEmulator, run_dag: Callable[..., DagRunResult], tmp_path: Path
):
    emulator = opus_emulator
    documents = _documents()
    rejected = {
        documents[2]["rowKey"]: "Term Records/Finance/Invoices was not found.",
        documents[19]["rowKey"]: "User lynne.robbins@contoso.com is unknown.",
    }
    emulator.opus_fail_rows(CONNECTION, rejected)
    env = _env(emulator, tmp_path, AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY="0")  # retry at once
    result = run_dag(DAG_ID, "2026-11-03", ROOT / "example_dags", env)
    assert result.returncode != 0
    states = result.task_states(DAG_ID)
    assert states == {
        "submit_records": "failed", "due_records": "success", "destroy_records": "success",
        "restore_requested": "success", "restore_site": "skipped",  # no site given: nothing restored
    }, result.output[-6000:]  # fmt: skip
    assert "2 of 41 record(s) did not succeed" in result.output
    # The retry (the example's one) sent only the two rejected rows again.
    manifest = _submit_manifest(result)
    assert (manifest["submitted"], manifest["succeeded_in_earlier_tries"], manifest["failed"]) == (2, 39, 2)
    assert set(manifest["reasons"]) == set(rejected)

    # Exactly the two rejected rows, unchanged but for the reason, ready to be fixed and fed back.
    failed = _read_csv(tmp_path / "2026-11-03" / "submit-failed.csv")
    by_key = {d["rowKey"]: d for d in documents}
    assert [r["rowKey"] for r in failed] == list(rejected)
    for row in failed:
        assert rejected[row["rowKey"]] in row.pop("_aos_error")
        assert {k: v for k, v in row.items() if v != ""} == by_key[row["rowKey"]]
    stored = emulator.opus_records(CONNECTION)
    assert sorted(set(by_key) - set(stored)) == sorted(rejected)
    assert len(emulator.opus_destroyed(CONNECTION)) == 22
    assert emulator.opus_restore_jobs() == []


# -- The cut-off and folder of a run (fast: the macro itself, no Airflow run) --------------------------


def test_the_cutoff_is_the_param_else_the_data_interval_end_else_run_after():
    opus_run = _example().opus_run
    interval = {"data_interval_start": datetime(2026, 11, 1, tzinfo=UTC), "data_interval_end": CUTOFF}
    assert opus_run(interval) == ("2026-11-02T00:00:00Z", "2026-11-02")
    param = {"params": {"disposal_due_date": "2026-12-01T06:30:00+01:00"}}
    assert opus_run({**interval, **param}) == ("2026-12-01T05:30:00Z", "20261201T053000Z")
    # Airflow 3, triggered without a logical date: no data interval; the time it was triggered.
    run = SimpleNamespace(run_after=datetime(2026, 12, 3, 7, 53, 12, 345678, tzinfo=UTC))
    assert opus_run({"dag_run": run}) == ("2026-12-03T07:53:12Z", "20261203T075312Z")
    with pytest.raises(ValueError, match=r"disposal_due_date: 2026-12-01.* has no timezone"):
        opus_run({"params": {"disposal_due_date": "2026-12-01"}})


def test_the_params_are_empty_by_default():
    params = _example().dag.params
    for name in ("opus_connection_id", "disposal_due_date", "restore_site"):
        assert params.get_param(name).value is None, name
