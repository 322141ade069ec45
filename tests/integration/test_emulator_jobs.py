"""The emulator's backup/scan job endpoints (backup-jobs.md), over real HTTP on loopback."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urljoin

import pytest
import requests

from airflow_provider_aos.emulator import AosEmulator, EmulatorConfig

# Seeded jobs lie in 2024, so they have all ended whatever the test machine's clock says.
CONFIG = EmulatorConfig(
    records=100,
    jobs_per_service=25,
    data_start=datetime(2024, 1, 1, tzinfo=UTC),
    data_end=datetime(2024, 3, 1, tzinfo=UTC),
)
WINDOW = {"startTime": "2024-01-01", "finishTime": "2024-12-31"}
M365 = "/backup/m365/cloudbackupjobs"
RESTORE = "/backup/m365/restore/jobs"
IAAS = "/backup/vm/jobs"
D365 = "/dynamicsbackup/jobs"
GOOGLE = "/backup/google/admin/jobs"
SF = "/backup/sfbapi/jobs"
SCAN = "/aos/jobs"


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
        s.headers["Authorization"] = "Bearer " + _token(emu)
        yield s


def _get(session: requests.Session, emu: AosEmulator, path: str, **params: Any) -> requests.Response:
    return session.get(emu.graph_url + path, params=params, timeout=10)


def _ids(emu: AosEmulator, service: str) -> list[str]:
    return [str(j["jobId"]) for j in emu.list_jobs(service)]


def _restore_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "serviceType": 1,
        "recoveryDateTime": "2026-02-27T03:54:22Z",
        "siteRestoreScope": {
            "siteUrl": "https://contoso.sharepoint.com/sites/Finance",
            "restoreTargets": [
                {
                    "libraryName": "Documents",
                    "folders": [{"relativePath": "Shared/Reports/2026"}],
                    "files": [{"relativePath": "Shared/Budget.xlsx"}],
                }
            ],
        },
    }
    body.update(overrides)
    return body


# -- Microsoft 365 -------------------------------------------------------------------------------


def test_m365_list_envelope_and_paging(emu: AosEmulator, session: requests.Session) -> None:
    first = _get(session, emu, M365, PageSize=10, PageIndex=0, StartTime="2024-01-01")  # PascalCase
    assert first.status_code == 200
    body = first.json()
    assert list(body) == ["statusCode", "message", "data", "requestId", "timestamp", "metadata", "traceId"]
    assert (body["statusCode"], body["message"]) == (200, "")
    assert re.fullmatch(r"[0-9A-Z]{13}:[0-9A-F]{8}", body["requestId"])
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", body["traceId"])
    assert body["metadata"]["totalCount"] == 25
    job = body["data"][0]
    assert list(job) == ["id", "state", "startTime", "finishTime", "duration", "backupDetails", "jobErrors"]
    assert set(job["backupDetails"]) == {"totalCount", "failedCount", "successfulCount", "skippedCount"}
    assert re.fullmatch(r"\d+\.\d{3}", job["duration"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", job["startTime"])

    seen = [j["id"] for j in body["data"]]
    while body["metadata"]["nextLink"]:
        body = session.get(body["metadata"]["nextLink"], timeout=10).json()
        seen += [j["id"] for j in body["data"]]
    assert body["metadata"]["nextLink"] == ""
    assert seen == _ids(emu, "m365")  # newest first, each once

    states = {j["state"] for j in _get(session, emu, M365, pageSize=100).json()["data"]}
    assert states <= {"Finished", "Failed", "Finished with Exception", "Partially Finished"}
    failed = _get(session, emu, M365, jobState=3, pageSize=100).json()["data"]
    assert all(j["state"] == "Failed" and j["jobErrors"] for j in failed)
    for key in ("isErrorCode", "value", "url", "number"):
        assert all(key in e for j in failed for e in j["jobErrors"])
    restores = _get(session, emu, M365, jobType=2, pageSize=100).json()
    assert all(j["id"].startswith("RS") for j in restores["data"])
    bad = _get(session, emu, M365, jobType=9, pageSize=0, location="MARS", startTime="yesterday")
    assert bad.status_code == 400
    fields = {e["field"] for e in bad.json()["errors"]}
    assert fields == {"jobType", "pageSize", "location", "startTime"}
    assert {e["code"] for e in bad.json()["errors"]} == {"InvalidParameter"}


def test_m365_first_page_index_setting(emu: AosEmulator, session: requests.Session) -> None:
    page = {i: [j["id"] for j in _get(session, emu, M365, pageIndex=i).json()["data"]] for i in (0, 1)}
    assert page[0] != page[1]  # the table: pageIndex 0 is the first page
    emu.configure(first_page_index=1)  # the samples (§8): pages 0 and 1 are the same
    body = {i: _get(session, emu, M365, pageIndex=i).json() for i in (0, 1, 2)}
    assert [j["id"] for j in body[0]["data"]] == [j["id"] for j in body[1]["data"]] == page[0]
    assert [j["id"] for j in body[2]["data"]] == page[1]
    assert "pageIndex=2" in body[1]["metadata"]["nextLink"]
    sf = {i: _get(session, emu, SF, pageIndex=i, **WINDOW).json()["data"]["jobs"] for i in (0, 1)}
    assert sf[0] == sf[1]


def test_m365_detail_and_location(emu: AosEmulator, session: requests.Session) -> None:
    listed = _get(session, emu, M365, pageSize=100).json()["data"]
    central = {
        j["id"] for j in _get(session, emu, M365, pageSize=100, location="PrimaryGeoLocation").json()["data"]
    }
    other = [j for j in listed if j["id"] not in central]
    assert central
    assert other
    job = next(j for j in listed if j["id"] in central)
    detail = _get(session, emu, f"{M365}/{job['id']}").json()
    assert list(detail) == ["statusCode", "message", "data", "requestId", "timestamp", "traceId"]
    assert detail["data"]["id"] == job["id"]
    assert detail["data"]["state"] == job["state"]
    assert set(detail["data"]["backupDetails"]) == {
        "totalNumber",
        "failedNumber",
        "successfulNumber",
        "skippedNumber",
    }
    # A job of another geo is found only with its location (backup-jobs.md §8).
    assert _get(session, emu, f"{M365}/{other[0]['id']}").status_code == 404
    geo = {g: _get(session, emu, f"{M365}/{other[0]['id']}", location=g).status_code for g in ("NAM", "EUR")}
    assert sorted(geo.values()) == [200, 404]
    missing = _get(session, emu, f"{M365}/FB000")
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["field"] == "jobId"


def test_spelling_switch(emu: AosEmulator, session: requests.Session) -> None:
    sample = _get(session, emu, M365, pageSize=2).json()
    assert "totalCount" in sample["metadata"]
    assert "totalCount" in sample["data"][0]["backupDetails"]
    assert "nextLink" in _get(session, emu, IAAS).json()
    sf_job = _get(session, emu, SF, **WINDOW).json()["data"]["jobs"][0]
    assert "state" in sf_job
    assert not {"status", "dataSize", "apiCalls", "organizationId"} & set(sf_job)

    response = requests.post(f"{emu.admin_url}/config", json={"spelling": "table"}, timeout=10)
    assert response.json() == {"ok": True}
    table = _get(session, emu, M365, pageSize=2).json()
    assert table["metadata"]["totalNumber"] == 25
    assert "totalCount" not in table["metadata"]
    assert set(table["data"][0]["backupDetails"]) == {
        "totalNumber",
        "failedNumber",
        "successfulNumber",
        "skippedNumber",
    }
    iaas = _get(session, emu, IAAS).json()
    assert "nextlink" in iaas
    assert "nextLink" not in iaas
    assert iaas["errorModel"] is None
    sf_job = _get(session, emu, SF, **WINDOW).json()["data"]["jobs"][0]
    assert {"status", "dataSize", "apiCalls", "organizationId"} <= set(sf_job)
    assert "state" not in sf_job
    bad = requests.post(f"{emu.admin_url}/config", json={"spelling": "both"}, timeout=10)
    assert bad.status_code == 400


# -- IaaS + PaaS ---------------------------------------------------------------------------------


def test_iaas_skiptoken_paging(emu: AosEmulator, session: requests.Session) -> None:
    body = _get(session, emu, IAAS, pageSize=7).json()
    assert list(body) == ["totalCount", "jobs", "nextLink"]
    assert body["totalCount"] == 25
    job = body["jobs"][0]
    assert list(job) == [
        "jobId", "jobType", "status", "failedCount", "successfulCount", "skippedCount", "totalCount",
        "startTime", "finishTime", "duration", "comments",
    ]  # fmt: skip
    assert job["status"] in (2, 4, 8, 16, 64)
    assert re.fullmatch(r"(\d+\.)?\d\d:\d\d:\d\d", job["duration"])
    token = body["nextLink"]
    assert "%" in token
    assert not token.startswith("http")
    # The same page whether the token goes back raw, percent-encoded once more, or decoded.
    raw = session.get(f"{emu.graph_url}{IAAS}?pageSize=7&skiptoken={token}", timeout=10).json()
    again = _get(session, emu, IAAS, pageSize=7, skiptoken=token).json()
    decoded = session.get(
        f"{emu.graph_url}{IAAS}?pageSize=7&skiptoken={quote(unquote(token), safe='')}", timeout=10
    ).json()
    assert raw["jobs"] == again["jobs"] == decoded["jobs"]
    assert raw["jobs"][0]["jobId"] != job["jobId"]
    # Walk to the end; pageNumber is ignored when skiptoken is set.
    seen = [j["jobId"] for j in body["jobs"]]
    while body["nextLink"]:
        body = _get(session, emu, IAAS, pageSize=7, pageNumber=99, skiptoken=body["nextLink"]).json()
        seen += [j["jobId"] for j in body["jobs"]]
    assert body["nextLink"] is None
    assert seen == _ids(emu, "iaas_paas")
    assert [j["jobId"] for j in _get(session, emu, IAAS, pageSize=7, pageNumber=1).json()["jobs"]] == seen[
        7:14
    ]

    found = _get(session, emu, IAAS, searchText=seen[3].lower(), status=999).json()  # no status filter
    assert [j["jobId"] for j in found["jobs"]] == [seen[3]]
    wrong = _get(session, emu, IAAS, pageSize=3, skiptoken=token)  # token of another query
    assert wrong.status_code == 400
    assert wrong.json()["errorModel"]["errorCode"] == "InvalidParameter"
    assert _get(session, emu, IAAS, serviceType=3).status_code == 400


# -- Dynamics 365 --------------------------------------------------------------------------------


def test_d365_required_params_and_relative_next_link(emu: AosEmulator, session: requests.Session) -> None:
    missing = _get(session, emu, D365, pageSize=5)
    assert missing.status_code == 400
    errors = missing.json()["errors"]
    assert [e["field"] for e in errors] == ["type", "startTime", "finishTime"]
    assert {e["code"] for e in errors} == {"InvalidParameter"}
    assert _get(session, emu, D365, type=1, startTime="2024-01-01", finishTime="nope").status_code == 400
    assert _get(session, emu, D365, type=0, pageIndex=0, **WINDOW).status_code == 400  # from 1

    body = _get(session, emu, D365, type=0, pageSize=10, **WINDOW).json()
    assert list(body) == ["totalCount", "nextLink", "jobs", "pageIndex", "pageSize"]
    assert (body["totalCount"], body["pageIndex"], body["pageSize"]) == (25, 1, 10)
    assert body["nextLink"].startswith("/jobs?pageIndex=2&pageSize=10&")
    job = body["jobs"][0]
    assert job["module"] == "Customer Engagement"
    assert job["status"] in (3, 4, 7)
    assert isinstance(job["durationHours"], float)
    seen = [j["jobId"] for j in body["jobs"]]
    while body["nextLink"]:
        # Documented as relative and missing the service prefix: resolve against /dynamicsbackup.
        body = session.get(
            urljoin(emu.graph_url + "/dynamicsbackup/", body["nextLink"].lstrip("/")), timeout=10
        )
        body = body.json()
        seen += [j["jobId"] for j in body["jobs"]]
    assert seen == _ids(emu, "dynamics365")
    backups = _get(session, emu, D365, type=1, status=3, pageSize=100, **WINDOW).json()["jobs"]
    assert all(j["type"] == 1 and j["status"] == 3 for j in backups)


# -- Google Workspace ----------------------------------------------------------------------------


def test_google_envelope_and_filters(emu: AosEmulator, session: requests.Session) -> None:
    body = _get(session, emu, GOOGLE, pageSize=4).json()
    assert list(body) == ["status", "message", "jobs", "nextLink"]
    assert (body["status"], body["message"]) == (200, "")
    assert not body["nextLink"].startswith("http")  # an opaque token, not a URL
    job = body["jobs"][0]
    assert list(job) == [
        "jobId", "appType", "jobType", "dataSource", "status", "progress", "startTime", "finishTime", "operator",
    ]  # fmt: skip
    assert job["startTime"].endswith("+00:00")
    assert job["progress"] == 100.0
    # No parameter takes the token back: walk pageIndex until a short page.
    seen, index = [], 0
    while True:
        jobs = _get(session, emu, GOOGLE, pageSize=4, pageIndex=index).json()["jobs"]
        seen += [j["jobId"] for j in jobs]
        if len(jobs) < 4:
            break
        index += 1
    admin = [j["jobId"] for j in emu.list_jobs("google_workspace")]
    assert set(seen) < set(admin)  # dataSource defaults to 1 (Admin)
    recenter = _get(session, emu, GOOGLE, dataSource=2, pageSize=100).json()["jobs"]
    assert sorted(seen + [j["jobId"] for j in recenter]) == sorted(admin)
    by_job_status = _get(session, emu, GOOGLE, jobStatus=2, pageSize=100).json()["jobs"]
    by_status = _get(session, emu, GOOGLE, status=2, pageSize=100).json()["jobs"]
    assert by_job_status == by_status
    assert by_status
    assert all(j["status"] == 2 for j in by_status)
    assert _get(session, emu, GOOGLE, jobStatus=5).status_code == 400


# -- Salesforce ----------------------------------------------------------------------------------


def test_salesforce_envelope_paging_and_required(emu: AosEmulator, session: requests.Session) -> None:
    missing = _get(session, emu, SF)
    assert missing.status_code == 400
    assert [e["field"] for e in missing.json()["errors"]] == ["startTime", "finishTime"]
    body = _get(session, emu, SF, pageSize=10, **WINDOW).json()
    assert list(body) == ["statusCode", "message", "data", "requestId", "timestamp", "traceId"]
    assert list(body["data"]) == ["totalCount", "jobs", "nextLink"]
    assert body["data"]["totalCount"] == 25
    seen = [j["jobId"] for j in body["data"]["jobs"]]
    while body["data"]["nextLink"]:
        body = session.get(body["data"]["nextLink"], timeout=10).json()
        seen += [j["jobId"] for j in body["data"]["jobs"]]
    assert body["data"]["nextLink"] == ""
    assert seen == _ids(emu, "salesforce")
    partial = _get(session, emu, SF, status=3, pageSize=100, **WINDOW).json()["data"]["jobs"]
    assert all(j["state"] == 3 for j in partial)  # 3 = Finished with exception here, not Failed


# -- AOS scan ------------------------------------------------------------------------------------


def test_aos_scan_top_skip(emu: AosEmulator, session: requests.Session) -> None:
    body = _get(session, emu, SCAN, top=10).json()
    assert list(body) == ["jobs", "nextLink", "totalCount"]
    assert body["nextLink"].startswith(emu.graph_url + "/aos/jobs?")
    assert "skip=10" in body["nextLink"]
    job = body["jobs"][0]
    assert list(job) == [
        "id",
        "type",
        "state",
        "startTime",
        "finishTime",
        "scanProfileName",
        "category",
        "extension",
    ]
    assert re.fullmatch(r".+T.+\.\d{7}\+00:00", job["startTime"])
    seen = [j["id"] for j in body["jobs"]]
    while body["nextLink"]:
        body = session.get(body["nextLink"], timeout=10).json()
        seen += [j["id"] for j in body["jobs"]]
    assert seen == _ids(emu, "aos_scan")  # sortorder defaults to newest on top
    oldest = _get(session, emu, SCAN, top=100, sortorder=0, orderby="StartTime").json()["jobs"]
    assert [j["id"] for j in oldest] == seen[::-1]
    assert [j["id"] for j in _get(session, emu, SCAN, search=seen[5]).json()["jobs"]] == [seen[5]]
    bad = _get(session, emu, SCAN, top=0)
    assert bad.status_code == 400
    assert set(bad.json()) == {"traceId", "error", "statusCode"}

    emu.configure(scan_skip="pages")  # skip counts pages (the sample's nextLink); ends on an empty page
    pages = []
    body = _get(session, emu, SCAN, top=10).json()
    while True:
        pages.append([j["id"] for j in body["jobs"]])
        if not body["nextLink"]:
            break
        body = session.get(body["nextLink"], timeout=10).json()
    assert [len(p) for p in pages] == [10, 10, 5, 0]
    assert [i for p in pages for i in p] == seen


# -- scopes, schedule, restore, faults -----------------------------------------------------------


ROUTES = [
    ("GET", M365, "microsoft365backup.jobInfo.read.all"),
    ("GET", f"{M365}/FB1", "microsoft365backup.jobInfo.read.all"),
    ("POST", RESTORE, "microsoft365backup.restore.readwrite.all"),
    ("GET", IAAS, "platformbackup.readwrite.all"),
    ("GET", D365, "dynamics.readwrite.all"),
    ("GET", GOOGLE, "gsuite.graph.read.all"),
    ("GET", SF, "salesforce.public.read.all"),
    ("GET", SCAN, "autodiscovery.readwrite.all"),
]


def test_each_route_needs_its_scope(emu: AosEmulator) -> None:
    audit_only = {"Authorization": "Bearer " + _token(emu, "audit.read.all")}
    for method, path, scope in ROUTES:
        url = emu.graph_url + path
        assert requests.request(method, url, timeout=10).status_code == 401
        denied = requests.request(method, url, headers=audit_only, timeout=10)
        assert denied.status_code == 403, path
        assert scope in denied.text
        own = {"Authorization": "Bearer " + _token(emu, scope)}
        assert requests.request(method, url, headers=own, timeout=10).status_code not in (401, 403)
    stats = emu.stats()
    assert (stats["unauthorized"], stats["forbidden"]) == (8, 8)
    assert requests.delete(emu.graph_url + M365, headers=audit_only, timeout=10).status_code == 405


def test_jobs_run_then_end_on_schedule(emu: AosEmulator, session: requests.Session) -> None:
    cases = [
        ("m365", "failed", M365 + "/{id}", lambda b: b["data"]["state"], "In Progress", "Failed"),
        ("iaas_paas", "stopped", IAAS + "?searchText={id}", lambda b: b["jobs"][0]["status"], 1, 64),
        ("dynamics365", "partial", D365 + "?type=0&startTime=2020-01-01&finishTime=2099-01-01",
         lambda b: b["jobs"][0]["status"], 2, 7),
        ("google_workspace", "succeeded", GOOGLE, lambda b: b["jobs"][0]["status"], 0, 2),
        ("salesforce", "skipped", SF + "?startTime=2020-01-01&finishTime=2099-01-01",
         lambda b: b["data"]["jobs"][0]["state"], 1, 7),
        ("aos_scan", "partial", SCAN + "?search={id}", lambda b: b["jobs"][0]["state"], 1, 4),
    ]  # fmt: skip
    ids = {}
    for service, outcome, *_ in cases:
        if service == "m365":
            ids[service] = emu.add_job(service, outcome, run_seconds=2.0, errors=["Mailbox locked"])
        else:
            payload = {"service": service, "outcome": outcome, "run_seconds": 2.0, "errors": ["Disk full"]}
            response = requests.post(f"{emu.admin_url}/jobs", json=payload, timeout=10)
            ids[service] = response.json()["jobId"]
    for phase in (0, 1):
        for service, _, path, read, running, final in cases:
            body = session.get(emu.graph_url + path.format(id=ids[service]), timeout=10).json()
            assert read(body) == (running, final)[phase], (service, phase)
            status = requests.get(f"{emu.admin_url}/jobs/{service}/{ids[service]}", timeout=10).json()
            assert (status["stateClass"] == "RUNNING") == (phase == 0)
        if not phase:
            time.sleep(2.1)
    detail = _get(session, emu, f"{M365}/{ids['m365']}").json()["data"]
    assert detail["jobErrors"][0]["value"] == "Mailbox locked"
    assert detail["finishTime"]
    iaas = _get(session, emu, IAAS, searchText=ids["iaas_paas"]).json()["jobs"][0]
    assert iaas["comments"] == "Disk full"
    assert emu.job_status("m365", ids["m365"])["state"] == "Failed"

    exact = emu.add_job("m365", final_state="Partially Finished", run_seconds=0)
    assert emu.job_status("m365", exact)["state"] == "Partially Finished"
    paused = emu.add_job("salesforce", running_state=5, run_seconds=60)
    assert emu.job_status("salesforce", paused)["state"] == 5
    later = emu.add_job("iaas_paas", start=time.time() + 60)
    assert emu.job_status("iaas_paas", later)["state"] == 0  # Not Started
    with pytest.raises(ValueError, match="end as one of"):
        emu.add_job("m365", "stopped")
    bad = requests.post(f"{emu.admin_url}/jobs", json={"service": "fly"}, timeout=10)
    assert bad.status_code == 400
    assert requests.get(f"{emu.admin_url}/jobs/m365/FB0", timeout=10).status_code == 404
    listed = requests.get(f"{emu.admin_url}/jobs", params={"service": "aos_scan"}, timeout=10).json()
    assert listed["jobs"][0]["jobId"] == ids["aos_scan"]


def test_restore_validation(emu: AosEmulator, session: requests.Session) -> None:
    url = emu.graph_url + RESTORE
    scope = "siteRestoreScope.restoreTargets[0]"
    many = [{"relativePath": f"Docs/f{i}.txt"} for i in range(21)]
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"recoveryDateTime": "2026-02-27T03:54:22Z"}, {"serviceType"}),
        (_restore_body(serviceType=5), {"serviceType"}),
        (_restore_body(recoveryDateTime="2026-02-27 03:54:22"), {"recoveryDateTime"}),
        (_restore_body(recoveryDateTime="2026-02-27T03:54:22.123Z"), {"recoveryDateTime"}),
        (_restore_body(serviceType=2), {"oneDriveRestoreScope"}),
        (_restore_body(siteRestoreScope={"siteUrl": "https://c.sharepoint.com", "restoreTargets": []}),
         {"siteRestoreScope.restoreTargets"}),
        (_restore_body(siteRestoreScope={"siteUrl": "https://c.sharepoint.com",
                                         "restoreTargets": [{"libraryName": "Documents"}]}), {scope}),
        (_restore_body(siteRestoreScope={"siteUrl": "https://c.sharepoint.com", "restoreTargets": [
            {"libraryName": "Documents", "files": [{"relativePath": ""}]}]}), {f"{scope}.files[0].relativePath"}),
        (_restore_body(siteRestoreScope={"siteUrl": "https://c.sharepoint.com", "restoreTargets": [
            {"libraryName": "Documents", "files": many}]}), {"siteRestoreScope.restoreTargets"}),
        (_restore_body(siteRestoreScope={"siteUrl": "https://c.sharepoint.com", "restoreTargets": [
            {"libraryName": "Documents", "folders": [{"relativePath": "Shared"}],
             "files": [{"relativePath": "Shared/Budget.xlsx"}]}]}), {f"{scope}.files[0].relativePath"}),
    ]  # fmt: skip
    for body, fields in cases:
        response = session.post(url, json=body, timeout=10)
        assert response.status_code == 400, body
        errors = response.json()["errors"]
        assert {e["field"] for e in errors} == fields, body
        assert all(e["code"] == "InvalidParameter" and e["message"] for e in errors)
    assert session.post(url, data="{nope", timeout=10).status_code == 400
    assert emu.stats()["restore_error"] == len(cases) + 1

    onedrive = {
        "serviceType": 2,
        "recoveryDateTime": "2026-02-27T03:54:22.1234567Z",
        "oneDriveRestoreScope": {
            "oneDriveUpn": "megan@contoso.onmicrosoft.com",
            "restoreTargets": [{"libraryName": "Documents", "folders": [{"relativePath": "Projects"}]}],
        },
        "siteRestoreScope": {"siteUrl": "ignored"},  # the scope matching serviceType is used
    }
    ok = session.post(url, json=onedrive, timeout=10)
    assert ok.status_code == 200
    assert re.fullmatch(r"RS\d{18}", ok.json()["data"]["jobId"])


def test_restore_jobs_run_and_the_fourth_gets_429(emu: AosEmulator, session: requests.Session) -> None:
    emu.configure(restore_seconds=2.0, restore_outcome="partial")
    url = emu.graph_url + RESTORE
    ids = [session.post(url, json=_restore_body(), timeout=10).json()["data"]["jobId"] for _ in range(3)]
    assert len(set(ids)) == 3
    busy = session.post(url, json=_restore_body(), timeout=10)
    assert busy.status_code == 429
    assert (
        busy.json()["message"]
        == "There are already 3 restore/export jobs running, cannot start new restore job."
    )
    listed = _get(session, emu, M365, jobType=2, jobState=1, pageSize=100).json()["data"]
    assert {j["id"] for j in listed} == set(ids)
    detail = _get(session, emu, f"{M365}/{ids[0]}").json()["data"]
    assert detail["state"] == "In Progress"
    assert detail["backupDetails"]["totalNumber"] == 2  # two paths
    time.sleep(2.1)
    detail = _get(session, emu, f"{M365}/{ids[0]}").json()["data"]
    assert detail["state"] == "Finished with Exception"
    assert detail["jobErrors"]
    assert session.post(url, json=_restore_body(), timeout=10).status_code == 200
    stats = emu.stats()
    assert (stats["restore_post"], stats["restore_throttled"]) == (4, 1)


def test_faults_and_counters(emu: AosEmulator, session: requests.Session) -> None:
    emu.configure(retry_after=4)
    emu.inject_faults("jobs", [503, "ok", 500])
    throttled = _get(session, emu, M365)
    assert throttled.status_code == 503
    assert throttled.headers["Retry-After"] == "4"
    assert throttled.json()["statusCode"] == 503  # in the route's own ApiResult envelope
    assert _get(session, emu, IAAS).status_code == 200
    assert _get(session, emu, GOOGLE).status_code == 500
    assert _get(session, emu, GOOGLE).status_code == 200

    emu.inject_faults("jobs_aos_scan", [400])  # one route only
    assert _get(session, emu, M365).status_code == 200
    assert _get(session, emu, SCAN).status_code == 400
    response = requests.post(
        f"{emu.admin_url}/faults", json={"kind": "restore", "faults": ["429", "drop"]}, timeout=10
    )
    assert response.status_code == 200
    assert session.post(emu.graph_url + RESTORE, json=_restore_body(), timeout=10).status_code == 429
    with pytest.raises(requests.ConnectionError):
        session.post(emu.graph_url + RESTORE, json=_restore_body(), timeout=10)
    with pytest.raises(ValueError, match="kind must be one of"):
        emu.inject_faults("jobz", [500])

    stats = requests.get(f"{emu.admin_url}/stats", timeout=10).json()
    assert stats["jobs_m365"] == 1
    assert stats["jobs_iaas_paas"] == 1
    assert stats["jobs_google_workspace"] == 1
    assert stats["jobs_aos_scan"] == 0
    assert stats["jobs_error"] == 1
    assert stats["restore_post"] == 0
    assert [stats[f"fault_{k}"] for k in ("429", "500", "503", "drop")] == [1, 1, 1, 1]

    emu.configure(fault_rate=1.0, fault_kinds=["500"])
    assert _get(session, emu, D365, type=0, **WINDOW).status_code == 500
    emu.configure(fault_rate=0.0)
    assert _get(session, emu, D365, type=0, **WINDOW).status_code == 200
    assert emu.stats()["jobs_dynamics365"] == 1


def test_same_seed_same_jobs() -> None:
    with AosEmulator(CONFIG) as a, AosEmulator(CONFIG) as b:
        for service in ("m365", "iaas_paas", "dynamics365", "google_workspace", "salesforce", "aos_scan"):
            assert a.list_jobs(service) == b.list_jobs(service)
            outcomes = {j["stateClass"] for j in a.list_jobs(service)}
            assert "SUCCESS" in outcomes
            assert len(outcomes) >= 2
