"""The emulator's AvePoint Opus endpoints (opus.md), over real HTTP on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_aos.emulator import AosEmulator, EmulatorConfig

CONFIG = EmulatorConfig(records=10, jobs_per_service=1)
RECORDS = "/records/connector/records"
RESTORE = "/api/restore"
CONN = "d9da492f-cc67-4920-99f9-6fbaae1f1410"
OTHER = "0b7f3c1e-2d4a-4e5f-8a9b-c0d1e2f3a4b5"
SITE = "https://contoso.sharepoint.com/sites/Legal"
GROUP = "legal-team@contoso.onmicrosoft.com"


@pytest.fixture
def emu() -> Iterator[AosEmulator]:
    with AosEmulator(CONFIG) as emulator:
        yield emulator


def _token(emu: AosEmulator, scope: str | None = None) -> str:
    form = {
        "grant_type": "client_credentials",
        "client_id": emu.config.client_id,
        "client_secret": emu.config.client_secret,
    }
    if scope:
        form["scope"] = scope
    response = requests.post(emu.token_url, data=form, timeout=10)
    response.raise_for_status()
    return str(response.json()["access_token"])


@pytest.fixture
def session(emu: AosEmulator) -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.headers["Authorization"] = "Bearer " + _token(emu, "records.readwrite.all")
        yield s


def _record(n: int, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "rowKey": f"doc-{n:04d}",
        "leafName": f"Document {n}",
        "termFullPath": "Connector/Connector-termset/Connector-term",
        "timeCreated": "2024-12-19T18:15:00",
        "timeModified": f"2024-12-{1 + n % 28:02d}T10:00:00",
        "createdBy": "jack.smith",
        "modifiedBy": "jack.smith",
        "Department": "Legal",
    }
    record.update(overrides)
    return record


def _submit(
    session: requests.Session,
    emu: AosEmulator,
    data: list[dict[str, Any]],
    option: str = "Overwrite",
    **extra: Any,
) -> requests.Response:
    body = {"id": CONN, "conflictOption": option, "data": data, **extra}
    return session.post(emu.graph_url + RECORDS, json=body, timeout=10)


def _due(session: requests.Session, emu: AosEmulator, **params: Any) -> requests.Response:
    return session.get(emu.graph_url + RECORDS, params=params, timeout=10)


def _destroy(session: requests.Session, emu: AosEmulator, ids: list[str]) -> requests.Response:
    return session.delete(emu.graph_url + RECORDS, json={"disposalIds": ids}, timeout=10)


# -- submit ----------------------------------------------------------------------------------


def test_submit_stores_records_and_answers_201(emu: AosEmulator, session: requests.Session) -> None:
    response = _submit(session, emu, [_record(n) for n in range(15)])
    assert response.status_code == 201
    assert response.json() == {"statusCode": 201, "message": None}
    stored = emu.opus_records(CONN)
    assert list(stored) == [f"doc-{n:04d}" for n in range(15)]
    assert stored["doc-0003"] == _record(3)
    assert emu.opus_records(CONN.upper()) == stored  # GUIDs compare case-insensitively
    stats = emu.stats()
    assert stats["opus_submit"] == 1
    assert stats["opus_records_stored"] == 15
    admin = requests.get(f"{emu.admin_url}/opus/records", params={"id": CONN}, timeout=10).json()
    assert admin["count"] == 15
    assert admin["records"]["doc-0000"]["leafName"] == "Document 0"


def test_submit_limit_and_body_validation(emu: AosEmulator, session: requests.Session) -> None:
    too_many = _submit(session, emu, [_record(n) for n in range(16)])
    assert too_many.status_code == 400
    assert too_many.json()["statusCode"] == 400
    assert "15" in too_many.json()["message"]
    bad = [
        {"id": "not-a-guid", "conflictOption": "Overwrite", "data": [_record(1)]},
        {"id": CONN, "data": [_record(1)]},
        {"id": CONN, "conflictOption": "Replace", "data": [_record(1)]},
        {"id": CONN, "conflictOption": "Overwrite", "data": []},
        {"id": CONN, "conflictOption": "Overwrite", "data": ["x"]},
        {"id": CONN, "conflictOption": "Overwrite", "confilictOption": "Skip", "data": [_record(1)]},
    ]
    for body in bad:
        response = session.post(emu.graph_url + RECORDS, json=body, timeout=10)
        assert response.status_code == 400, body
    assert session.post(emu.graph_url + RECORDS, data=b"{nope", timeout=10).status_code == 400
    assert emu.opus_records(CONN) == {}
    assert emu.stats()["opus_error"] == 8
    # The pre-April-2025 request spelling is accepted too.
    old = {"id": CONN, "confilictOption": "skip", "data": [_record(1)]}
    assert session.post(emu.graph_url + RECORDS, json=old, timeout=10).status_code == 201


def test_overwrite_and_skip(emu: AosEmulator, session: requests.Session) -> None:
    assert _submit(session, emu, [_record(1), _record(2)]).status_code == 201
    changed = [_record(1, leafName="Renamed"), _record(3)]
    assert _submit(session, emu, changed, "Skip").status_code == 201
    stored = emu.opus_records(CONN)
    assert stored["doc-0001"]["leafName"] == "Document 1"  # kept
    assert set(stored) == {"doc-0001", "doc-0002", "doc-0003"}
    assert emu.stats()["opus_records_skipped"] == 1
    assert _submit(session, emu, changed, "Overwrite").status_code == 201
    stored = emu.opus_records(CONN)
    assert stored["doc-0001"]["leafName"] == "Renamed"
    assert len(stored) == 3  # re-sending never duplicates


@pytest.mark.parametrize("spelling", ["conflictOption", "confilictOption"])
def test_chosen_rows_fail_with_418(emu: AosEmulator, session: requests.Session, spelling: str) -> None:
    emu.configure(opus_conflict_spelling=spelling)
    emu.opus_fail_rows(CONN, {"doc-0003": "Term not found.", "doc-0020": "Unknown user."}, times=1)
    batch = [_record(n) for n in range(15, 22)] + [_record(3)]
    response = _submit(session, emu, batch)
    assert response.status_code == 418
    body = response.json()
    assert body["statusCode"] == 418
    assert body["message"] == "Exist Failed Data Operation"
    items = {item["rowKey"]: item for item in body["failedItems"]}
    assert set(items) == {"doc-0003", "doc-0020"}
    assert items["doc-0003"]["errorMessage"] == "Term not found."
    assert items["doc-0020"][spelling] == "Overwrite"
    assert items["doc-0020"]["leafName"] == "Document 20"
    other = "confilictOption" if spelling == "conflictOption" else "conflictOption"
    assert other not in items["doc-0020"]
    assert set(emu.opus_records(CONN)) == {f"doc-{n:04d}" for n in (15, 16, 17, 18, 19, 21)}
    stats = emu.stats()
    assert (stats["opus_submit"], stats["opus_partial"], stats["opus_records_failed"]) == (1, 1, 2)
    # times=1: the resubmission goes through, and the store holds each record once.
    assert _submit(session, emu, [_record(3), _record(20)]).status_code == 201
    assert len(emu.opus_records(CONN)) == 8


def test_fail_rows_by_predicate_admin_and_list_message(emu: AosEmulator, session: requests.Session) -> None:
    emu.configure(opus_message_style="list")
    emu.opus_fail_rows(None, lambda r: "Too long." if len(r["leafName"]) > 10 else None)
    response = _submit(session, emu, [_record(1), _record(2, leafName="A very long name")])
    assert response.status_code == 418
    assert response.json()["message"] == ["doc-0002: Too long."]
    emu.opus_clear()
    rule = {"id": CONN, "rows": {"doc-0005": "Locked."}}
    assert requests.post(f"{emu.admin_url}/opus/fail_rows", json=rule, timeout=10).status_code == 200
    response = _submit(session, emu, [_record(5), _record(6)])
    assert [i["errorMessage"] for i in response.json()["failedItems"]] == ["Locked."]
    assert set(emu.opus_records(CONN)) == {"doc-0006"}


def test_missing_required_column_item_or_request(emu: AosEmulator, session: requests.Session) -> None:
    bad = _record(2)
    del bad["createdBy"]
    response = _submit(session, emu, [_record(1), bad, _record(3, rowKey="")])
    assert response.status_code == 418
    reasons = [item["errorMessage"] for item in response.json()["failedItems"]]
    assert "createdBy" in reasons[0]
    assert "rowKey" in reasons[1]
    assert set(emu.opus_records(CONN)) == {"doc-0001"}
    emu.opus_clear(CONN)
    emu.configure(opus_invalid_record="request")
    response = _submit(session, emu, [_record(1), bad])
    assert response.status_code == 400
    assert "createdBy" in response.json()["message"]
    assert emu.opus_records(CONN) == {}


# -- due records -----------------------------------------------------------------------------


def test_due_records_paging(emu: AosEmulator, session: requests.Session) -> None:
    base = datetime(2024, 12, 1, tzinfo=UTC)
    emu.opus_add_records(CONN, [_record(n) for n in range(30)])
    emu.opus_set_disposal_due(CONN, {f"doc-{n:04d}": base + timedelta(hours=n) for n in range(30)})
    emu.opus_add_records(OTHER, [_record(n) for n in range(5)], disposal_due=base)
    cutoff = "2024-12-02T01:00:00"  # records 0..24 are due before it
    assert emu.opus_due_count(CONN, cutoff) == 25
    seen: list[str] = []
    start = ""
    pages = 0
    while True:
        # The sample's lower-case spelling of itemsPerpage is accepted.
        response = _due(session, emu, id=CONN, disposalDueDate=cutoff, startIndex=start, itemsPerpage=10)
        assert response.status_code == 200
        body = response.json()
        assert body["statusCode"] == 200
        pages += 1
        seen += [item["rowKey"] for item in body["queriedItems"]]
        if pages == 1:
            item = body["queriedItems"][0]
            assert set(item) == {
                "rowKey", "leafName", "termFullPath", "timeCreated", "timeModified", "createdBy", "modifiedBy",
            }  # fmt: skip
            assert item["timeCreated"] == "2024-12-19 18:15:00 "
            # Destroying a record between pages does not shift the rest.
            assert _destroy(session, emu, ["doc-0001"]).status_code == 200
        if not body["startIndex"]:
            break
        start = body["startIndex"]
    assert pages == 3
    assert seen == [f"doc-{n:04d}" for n in range(25)]
    assert emu.stats()["opus_due"] == 3
    admin = requests.get(
        f"{emu.admin_url}/opus/due", params={"id": CONN, "before": cutoff}, timeout=10
    ).json()
    assert admin["count"] == 24


def test_due_records_validation_and_204(emu: AosEmulator, session: requests.Session) -> None:
    ok = {"id": CONN, "disposalDueDate": "2024-12-20T11:13:00", "itemsPerPage": 5}
    for broken in (
        {**ok, "id": "x"},
        {**ok, "disposalDueDate": "soon"},
        {k: v for k, v in ok.items() if k != "itemsPerPage"},
        {**ok, "itemsPerPage": 101},
        {**ok, "itemsPerPage": -1},
        {**ok, "startIndex": "bogus"},
    ):
        assert _due(session, emu, **broken).status_code == 400, broken
    empty = _due(session, emu, **ok)
    assert empty.status_code == 200
    assert empty.json() == {"startIndex": None, "statusCode": 200, "message": None, "queriedItems": []}
    emu.configure(opus_due_empty_status=204)
    none = _due(session, emu, **ok)
    assert none.status_code == 204
    assert none.content == b""
    # Derived due dates: timeModified + retention days.
    emu.configure(opus_retention_days=10)
    emu.opus_add_records(CONN, [_record(1, timeModified="2024-12-01T00:00:00")])
    emu.opus_add_records(CONN, [_record(2, timeModified="2024-12-15T00:00:00")])
    body = _due(session, emu, **ok, startIndex="").json()
    assert [i["rowKey"] for i in body["queriedItems"]] == ["doc-0001"]


# -- destroy ---------------------------------------------------------------------------------


def test_destroy_with_partial_failure(emu: AosEmulator, session: requests.Session) -> None:
    emu.opus_add_records(CONN, [_record(n) for n in range(6)], disposal_due="2024-01-01")
    assert _destroy(session, emu, [f"doc-{n:04d}" for n in range(16)]).status_code == 400
    assert session.delete(emu.graph_url + RECORDS, json={"disposalIds": []}, timeout=10).status_code == 400
    emu.opus_fail_destroy({"doc-0002": "Record is on hold."})
    response = _destroy(session, emu, ["doc-0000", "doc-0001", "doc-0002", "missing"])
    assert response.status_code == 418
    body = response.json()
    assert body["message"] == "Exist Failed Data Operation"
    assert body["failedItems"] == [
        {"rowKey": "doc-0002", "errorMessage": "Record is on hold."},
        {"rowKey": "missing", "errorMessage": "Record not found."},
    ]
    assert emu.opus_destroyed(CONN) == ["doc-0000", "doc-0001"]
    assert set(emu.opus_records(CONN)) == {"doc-0002", "doc-0003", "doc-0004", "doc-0005"}
    assert len(emu.opus_records(CONN, include_destroyed=True)) == 6
    # Repeating a destroy is harmless; 204 mode answers without a body.
    ok = _destroy(session, emu, ["doc-0000", "doc-0003"])
    assert (ok.status_code, ok.json()) == (200, {"statusCode": 200, "message": None})
    emu.configure(opus_destroy_status=204)
    assert _destroy(session, emu, ["doc-0004"]).status_code == 204
    stats = emu.stats()
    assert stats["opus_records_destroyed"] == 4
    assert stats["opus_destroy_failed"] == 2
    assert stats["opus_destroy"] == 3
    body = _due(session, emu, id=CONN, disposalDueDate="2025-01-01T00:00:00", itemsPerPage=100).json()
    assert [i["rowKey"] for i in body["queriedItems"]] == ["doc-0002", "doc-0005"]


# -- restore archived data -------------------------------------------------------------------


def test_has_archived_data(emu: AosEmulator, session: requests.Session) -> None:
    emu.opus_add_archive("site_collection", SITE)
    url = emu.graph_url + RESTORE
    site = session.get(url + "/HasArchivedSiteCollectionData", params={"scope": SITE + "/"}, timeout=10)
    assert site.json() == {"success": True, "message": None, "hasArchivedData": True, "scope": SITE + "/"}
    group = session.get(url + "/HasArchivedTeamsGroupData", params={"scope": GROUP}, timeout=10).json()
    assert (group["success"], group["hasArchivedData"]) == (True, False)
    demo = session.get(
        url + "/HasArchivedTeamsGroupData",
        params={"scope": "Archived-Team@contoso.onmicrosoft.com"},
        timeout=10,
    ).json()
    assert demo["hasArchivedData"] is True  # a demo archive, matched case-insensitively
    bad = session.get(url + "/HasArchivedTeamsGroupData", params={"scope": "not an email"}, timeout=10)
    assert bad.status_code == 400
    assert bad.json()["success"] is False
    assert emu.stats()["opus_has_archive_site"] == 1


def test_restore_job_schedule_and_grace_period(emu: AosEmulator, session: requests.Session) -> None:
    emu.configure(opus_restore_seconds=1.0)
    emu.opus_add_archive("teams_group", GROUP, outcome="partial")
    url = emu.graph_url + RESTORE
    body = {"scope": GROUP, "conflictResolution": 1, "appsConflictResolution": 0,
            "includeWorkflowDefinition": True, "includeSharingLink": False,
            "siteAdministratorUserPrincipalName": "admin@contoso.onmicrosoft.com"}  # fmt: skip
    started = session.post(url + "/RestoreTeamsGroup", json=body, timeout=10)
    assert started.status_code == 200
    job_id = started.json()["jobId"]
    assert started.json()["success"] is True
    again = session.post(url + "/RestoreTeamsGroup", json=body, timeout=10)
    assert (again.status_code, again.json()["success"]) == (400, False)  # one restore per scope at a time
    status = session.get(url + "/GetRestoreJobStatus", params={"jobId": job_id}, timeout=10).json()
    assert status["success"] is True
    assert status["job"]["id"] == job_id
    assert status["job"]["status"] in (0, 1)
    assert status["job"]["finishTime"] is None
    time.sleep(1.1)
    job = session.get(url + "/GetRestoreJobStatus", params={"jobId": job_id}, timeout=10).json()["job"]
    assert (job["status"], job["progress"]) == (4, 100)
    assert job["finishTime"].endswith("Z")
    assert emu.opus_restore_job(job_id)["request"]["conflictResolution"] == 1
    grace = {"scope": GROUP, "deleteArchivedDataDaysAfterRestore": 30}
    assert session.post(url + "/SetRestoreGracePeriodTeamsGroup", json=grace, timeout=10).json() == {
        "success": True,
        "message": None,
    }
    assert emu.opus.grace_period("teams_group", GROUP) == 30
    for broken in ({**grace, "deleteArchivedDataDaysAfterRestore": 366}, {"scope": GROUP}):
        assert (
            session.post(url + "/SetRestoreGracePeriodTeamsGroup", json=broken, timeout=10).status_code == 400
        )
    stats = emu.stats()
    assert (stats["opus_restore_group"], stats["opus_restore_status"], stats["opus_grace_group"]) == (1, 2, 1)
    assert stats["opus_restore_refused"] == 1


def test_restore_refusals_and_failure_status(emu: AosEmulator, session: requests.Session) -> None:
    url = emu.graph_url + RESTORE
    missing = session.post(url + "/RestoreSiteCollection", json={"scope": SITE}, timeout=10)
    assert missing.status_code == 400
    assert missing.json() == {
        "success": False,
        "message": f"No archived data was found for the scope {SITE}.",
    }
    for body in ({}, {"scope": SITE, "conflictResolution": 3}, {"scope": SITE, "includeSharingLink": "yes"}):
        assert session.post(url + "/RestoreSiteCollection", json=body, timeout=10).status_code == 400
    emu.configure(opus_restore_failure_status=200)
    unknown = session.get(url + "/GetRestoreJobStatus", params={"jobId": CONN}, timeout=10)
    assert (unknown.status_code, unknown.json()["success"]) == (200, False)
    assert (
        session.post(url + "/RestoreSiteCollection", json={"scope": SITE}, timeout=10).json()["success"]
        is False
    )


def test_restore_job_phases_none_and_stopping(emu: AosEmulator, session: requests.Session) -> None:
    url = emu.graph_url + RESTORE + "/GetRestoreJobStatus"
    future = emu.opus_add_restore_job(start=time.time() + 60)
    assert session.get(url, params={"jobId": future}, timeout=10).json()["job"]["status"] == -1
    now = time.time()
    custom = emu.opus_add_restore_job(outcome="timed_out", phases=[(9, 30), (8, 30)], start=now - 40)
    assert session.get(url, params={"jobId": custom}, timeout=10).json()["job"]["status"] == 8
    stopping = emu.opus_add_restore_job(outcome="stopped", run_seconds=100, start=now - 90)
    assert session.get(url, params={"jobId": stopping}, timeout=10).json()["job"]["status"] == 7
    done = emu.opus_add_restore_job(outcome="failed", run_seconds=1, start=now - 5)
    assert session.get(url, params={"jobId": done}, timeout=10).json()["job"]["status"] == 3
    created = requests.post(
        f"{emu.admin_url}/opus/restore_jobs", json={"outcome": 6, "run_seconds": 0}, timeout=10
    ).json()
    assert session.get(url, params={"jobId": created["jobId"]}, timeout=10).json()["job"]["status"] == 6
    listed = requests.get(f"{emu.admin_url}/opus/restore_jobs", timeout=10).json()["jobs"]
    assert len(listed) == 5
    one = requests.get(f"{emu.admin_url}/opus/restore_jobs/{done}", timeout=10).json()
    assert one["statusLabel"] == "Failed"


# -- scope, faults, admin --------------------------------------------------------------------


def test_scope_is_required(emu: AosEmulator) -> None:
    with requests.Session() as s:
        s.headers["Authorization"] = "Bearer " + _token(emu, "audit.read.all")
        response = _submit(s, emu, [_record(1)])
        assert response.status_code == 403
        assert response.json()["statusCode"] == 403
        restore = s.get(emu.graph_url + RESTORE + "/GetRestoreJobStatus", params={"jobId": CONN}, timeout=10)
        assert restore.status_code == 403
        assert restore.json()["success"] is False
    assert requests.get(emu.graph_url + RECORDS, timeout=10).status_code == 401
    assert emu.stats()["forbidden"] == 2


def test_faults(emu: AosEmulator, session: requests.Session) -> None:
    emu.inject_faults("opus_submit", [503])
    emu.inject_faults("opus", ["ok", 500])
    first = _submit(session, emu, [_record(1)])
    assert first.status_code == 503
    assert first.headers["Retry-After"] == "1"
    assert first.json()["statusCode"] == 503
    assert _submit(session, emu, [_record(1)]).status_code == 201  # "ok"
    assert _due(session, emu, id=CONN, disposalDueDate="2024-01-01", itemsPerPage=1).status_code == 500
    emu.inject_faults("opus_restore", ["drop"])
    with pytest.raises(requests.ConnectionError):
        session.get(emu.graph_url + RESTORE + "/GetRestoreJobStatus", params={"jobId": CONN}, timeout=10)
    requests.post(f"{emu.admin_url}/faults", json={"kind": "opus_connector", "faults": [429]}, timeout=10)
    assert _destroy(session, emu, ["doc-0001"]).status_code == 429
    assert _destroy(session, emu, ["doc-0001"]).status_code == 200
    stats = emu.stats()
    assert (stats["fault_503"], stats["fault_500"], stats["fault_drop"], stats["fault_429"]) == (1, 1, 1, 1)
    assert emu.opus_records(CONN, include_destroyed=True).keys() == {"doc-0001"}


def test_drop_after_processing(emu: AosEmulator, session: requests.Session) -> None:
    """The records are stored, the answer is lost; a resend with Overwrite duplicates nothing."""
    emu.inject_faults("opus_submit", ["drop_after"])
    batch = [_record(n) for n in range(3)]
    with pytest.raises(requests.ConnectionError):
        _submit(session, emu, batch)
    assert len(emu.opus_records(CONN)) == 3
    assert _submit(session, emu, batch).status_code == 201
    assert len(emu.opus_records(CONN)) == 3
    stats = emu.stats()
    assert (stats["opus_submit"], stats["opus_records_stored"], stats["fault_drop"]) == (2, 6, 1)


def test_admin_endpoints(emu: AosEmulator, session: requests.Session) -> None:
    admin = emu.admin_url + "/opus"
    added = requests.post(
        f"{admin}/records", json={"id": CONN, "records": [_record(1), _record(2)], "disposalDue": "2024-01-01"},
        timeout=10,
    )  # fmt: skip
    assert added.json() == {"added": 2}
    requests.post(f"{admin}/due", json={"id": CONN, "due": {"doc-0002": None}}, timeout=10).raise_for_status()
    body = _due(session, emu, id=CONN, disposalDueDate="2025-01-01", itemsPerPage=0).json()
    assert [i["rowKey"] for i in body["queriedItems"]] == ["doc-0001"]
    requests.post(f"{admin}/fail_destroy", json={"ids": {"doc-0001": "Held."}, "times": 1}, timeout=10)
    assert _destroy(session, emu, ["doc-0001"]).status_code == 418
    assert _destroy(session, emu, ["doc-0001"]).status_code == 200
    requests.post(f"{admin}/archives", json={"kind": "site_collection", "scope": SITE}, timeout=10)
    scopes = [a["scope"] for a in requests.get(f"{admin}/archives", timeout=10).json()["archives"]]
    assert SITE in scopes
    assert requests.post(f"{admin}/clear", json={}, timeout=10).status_code == 200
    assert requests.get(f"{admin}/records", params={"id": CONN}, timeout=10).json()["count"] == 0
    assert requests.post(f"{admin}/records", json={"id": "x", "records": []}, timeout=10).status_code == 400
    assert requests.post(f"{admin}/nope", json={}, timeout=10).status_code == 404
    assert (
        requests.post(f"{emu.admin_url}/config", json={"opus_due_empty_status": 500}, timeout=10).status_code
        == 400
    )
    requests.post(f"{emu.admin_url}/config", json={"opus_conflict_spelling": "confilictoption"}, timeout=10)
    assert emu.config.opus_conflict_spelling == "confilictOption"


def test_cli_flags(tmp_path: Path) -> None:
    repo_root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo_root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_aos.emulator", "--port", "0", "--records", "10",
         "--no-opus-demo-archives", "--opus-archive", f"site_collection={SITE}",
         "--opus-archive", f"teams_group={GROUP}", "--opus-due-empty-status", "204",
         "--opus-restore-outcome", "timed_out", "--opus-restore-seconds", "0"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["opus_archives"] == [
            {"kind": "site_collection", "scope": SITE},
            {"kind": "teams_group", "scope": GROUP},
        ]
        form = {"grant_type": "client_credentials", "client_id": info["client_id"],
                "client_secret": info["client_secret"]}  # fmt: skip
        token = requests.post(info["token_url"], data=form, timeout=10).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        params = {"id": CONN, "disposalDueDate": "2024-12-20T11:13:00", "itemsPerPage": 10}
        due = requests.get(info["graph_url"] + RECORDS, params=params, headers=headers, timeout=10)
        assert due.status_code == 204
        started = requests.post(
            info["graph_url"] + RESTORE + "/RestoreSiteCollection",
            json={"scope": SITE},
            headers=headers,
            timeout=10,
        ).json()
        status = requests.get(
            info["graph_url"] + RESTORE + "/GetRestoreJobStatus", params={"jobId": started["jobId"]},
            headers=headers, timeout=10,
        ).json()  # fmt: skip
        assert status["job"]["status"] == 10
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
