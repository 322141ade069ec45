"""
AosBackupJobsOperator and AosM365RestoreOperator against the emulator over real HTTP.

Jobs the tests add start on 2026-12-01 or 2026-12-02, after the emulator's seeded data (Oct-Nov
2026), so a window of those days holds exactly the jobs a test put there; the seeded jobs are still
served by services without a time filter (AOS scan), which the operator must filter out itself.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_aos.emulator import AosEmulator
from airflow_provider_aos.exceptions import AosConfigError, AosJobFailedError
from airflow_provider_aos.hooks.aos import AosHook
from airflow_provider_aos.jobs_api import read_job
from airflow_provider_aos.operators.backup import AosBackupJobsOperator, AosM365RestoreOperator

DAY1 = datetime(2026, 12, 1, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
SERVICES = ("m365", "iaas_paas", "dynamics365", "google_workspace", "salesforce", "aos_scan")
PAGE_SIZE = {"m365": 10, "iaas_paas": 10, "dynamics365": 10, "google_workspace": 100, "salesforce": 10}
JOB_INFO_SCOPE = "microsoft365backup.jobInfo.read.all"
RESTORE_SCOPE = "microsoft365backup.restore.readwrite.all"
TARGETS = [
    {
        "libraryName": "Documents",
        "folders": [{"relativePath": "Shared/Reports/2026"}],
        "files": [{"relativePath": "Shared/Budget.xlsx"}],
    }
]


# -- helpers --------------------------------------------------------------------------------------


def add_jobs(emulator: AosEmulator, service: str, n: int, day: datetime = DAY1, **kwargs: Any) -> list[str]:
    """``n`` jobs one minute apart from ``day`` 01:00, ended long ago; their ids, oldest first."""
    return [
        emulator.add_job(service, start=day + timedelta(hours=1, minutes=i), run_seconds=1, **kwargs)
        for i in range(n)
    ]


def truth(emulator: AosEmulator, service: str, start: datetime, end: datetime) -> list[str]:
    """The ids of the service's jobs that started in [start, end), as the emulator holds them."""
    return [
        str(j["jobId"])
        for j in emulator.list_jobs(service)
        if start <= datetime.fromisoformat(str(j["startTime"]).replace("Z", "+00:00")) < end
    ]


def list_jobs(conn: str, service: str, context: dict | None = None, **kwargs: Any) -> Any:
    kwargs.setdefault("start_time", DAY1.isoformat())
    kwargs.setdefault("end_time", DAY2.isoformat())
    op = AosBackupJobsOperator(task_id="jobs", aos_conn_id=conn, service=service, **kwargs)
    return op.execute(context or {})


def read_lines(path: Path) -> list[dict]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt") as fh:
        return [json.loads(line) for line in fh]


def graph_requests(emulator: AosEmulator) -> int:
    """Every request the emulator answered, identity included."""
    return emulator.stats()["requests"]


class RecordingTI:
    """What the restore operator needs of ``context["ti"]``: a place to push the job id."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def restore(conn: str, context: dict | None = None, **kwargs: Any) -> tuple[Any, RecordingTI]:
    ti = RecordingTI()
    kwargs.setdefault("service_type", "sharepoint")
    kwargs.setdefault("recovery_time", "2026-02-27T03:54:22Z")
    kwargs.setdefault("site_url", "https://contoso.sharepoint.com/sites/Finance")
    kwargs.setdefault("restore_targets", TARGETS)
    kwargs.setdefault("poll_interval", 0.2)
    kwargs.setdefault("capacity_poll_interval", 0.2)
    op = AosM365RestoreOperator(task_id="restore", aos_conn_id=conn, **kwargs)
    return op.execute({"ti": ti, **(context or {})}), ti


def final_job(conn: str, job_id: str, kind: str = "m365_restore") -> dict[str, Any]:
    """The job as a fresh read through the API gives it (what a sensor would return)."""
    hook = AosHook(aos_conn_id=conn)
    try:
        job = hook.drive(lambda session: read_job(session, kind, job_id))
    finally:
        hook.close()
    assert job is not None
    return job.to_dict()


# -- AosBackupJobsOperator: health check -------------------------------------------------------------


@pytest.mark.parametrize("service", ["m365", "iaas_paas"])
def test_health_check_names_every_bad_job_after_reading_the_whole_window(
    emulator: AosEmulator, aos_connection, tmp_path: Path, service: str
):
    conn = aos_connection()
    # Newest first in the list: the oldest job of the window is on the last page.
    last_page_failure = emulator.add_job(
        service,
        "failed",
        start=DAY1 + timedelta(minutes=1),
        run_seconds=1,
        errors=["Quota exceeded on site A"],
    )
    add_jobs(emulator, service, 11)
    partial = emulator.add_job(
        service, "partial", start=DAY1 + timedelta(hours=5), run_seconds=1, errors=["3 items were locked"]
    )
    add_jobs(emulator, service, 12, day=DAY1 + timedelta(hours=6))
    first_page_failure = emulator.add_job(
        service, "failed", start=DAY1 + timedelta(hours=23), run_seconds=1, errors=["Token of tenant revoked"]
    )
    assert len(truth(emulator, service, DAY1, DAY2)) == 26  # three pages of 10

    out = tmp_path / "jobs.jsonl"
    with pytest.raises(AosJobFailedError) as failure:
        list_jobs(conn, service, fail_on=("FAILED", "PARTIAL"), destination=str(out))

    message = str(failure.value)
    assert message.startswith("3 of 26 ")
    lines = {line.split()[0]: line for line in message.splitlines()[1:]}
    assert set(lines) == {last_page_failure, partial, first_page_failure}  # no good job named
    raw = {"m365": ("'Failed'", "'Finished with Exception'"), "iaas_paas": ("16", "8")}[service]
    assert f"FAILED (raw state {raw[0]}): Quota exceeded on site A" in lines[last_page_failure]
    assert f"FAILED (raw state {raw[0]}): Token of tenant revoked" in lines[first_page_failure]
    assert f"PARTIAL (raw state {raw[1]}): 3 items were locked" in lines[partial]
    # Every page was asked for once, and the evidence of all 26 jobs is kept.
    assert emulator.stats()[f"jobs_{service}"] == 3
    assert sorted(j["id"] for j in read_lines(out)) == sorted(truth(emulator, service, DAY1, DAY2))


def test_health_check_passes_on_a_clean_day(emulator: AosEmulator, aos_connection):
    conn = aos_connection()
    ids = add_jobs(emulator, "m365", 15)
    emulator.add_job("m365", "failed", start=DAY2 + timedelta(hours=1), run_seconds=1)  # the next day's
    emulator.add_job("m365", "failed", start=DAY1 - timedelta(seconds=1), run_seconds=1)  # the day before's
    jobs = list_jobs(conn, "m365", fail_on=("FAILED", "PARTIAL", "STOPPED"))
    assert sorted(j["id"] for j in jobs) == sorted(ids)
    assert {j["state"] for j in jobs} == {"SUCCEEDED"}
    assert emulator.stats()["jobs_m365"] == 2


def test_health_check_lists_at_most_fifty_offenders_and_counts_the_rest(
    emulator: AosEmulator, aos_connection
):
    conn = aos_connection()
    add_jobs(emulator, "salesforce", 53, outcome="failed")
    with pytest.raises(AosJobFailedError) as failure:
        list_jobs(conn, "salesforce", fail_on="FAILED")
    lines = str(failure.value).splitlines()
    assert lines[0].startswith("53 of 53 ")
    assert len(lines) == 1 + 50 + 1
    assert lines[-1].strip() == "... and 3 more"


# -- AosBackupJobsOperator: XCom and destination --------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_xcom_list_and_destination_hold_the_same_jobs_of_the_window(
    emulator: AosEmulator, aos_connection, tmp_path: Path, service: str
):
    """Several pages where the service pages; AOS scan has no time filter (seeded jobs are dropped)."""
    conn = aos_connection()
    n = 2 * PAGE_SIZE.get(service, 50) + 3
    add_jobs(emulator, service, n)
    expected = truth(emulator, service, DAY1, DAY2)
    assert len(expected) == n

    listed = list_jobs(conn, service)
    requests_for_list = emulator.stats()[f"jobs_{service}"]
    out = tmp_path / f"{service}.jsonl"
    manifest = list_jobs(conn, service, destination=str(out))

    assert sorted(j["id"] for j in listed) == sorted(expected)
    assert read_lines(out) == listed  # same jobs, same order, same fields
    assert {j["kind"] for j in listed} == {service}
    assert manifest == {
        "path": str(out),
        "jobs": n,
        "pages": requests_for_list,
        "service": service,
        "start_time": "2026-12-01T00:00:00.000Z",
        "end_time": "2026-12-02T00:00:00.000Z",
        "states": {"SUCCEEDED": n},
        "bytes": out.stat().st_size,
    }
    assert requests_for_list >= 2  # more than one page was read
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary file left
    if service == "aos_scan":
        # No time filter on the API: the seeded jobs of Oct-Nov were served too, and dropped here.
        served = len(emulator.list_jobs(service))
        assert served > n
        assert requests_for_list == -(-served // 100)


def test_gzip_destination_for_gz_names(emulator: AosEmulator, aos_connection, tmp_path: Path):
    conn = aos_connection()
    ids = add_jobs(emulator, "dynamics365", 12)
    out = tmp_path / "sub" / "jobs.JSONL.GZ"
    manifest = list_jobs(conn, "dynamics365", destination=str(out))
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    assert sorted(j["id"] for j in read_lines(out)) == sorted(ids)
    assert manifest["bytes"] == out.stat().st_size
    assert manifest["jobs"] == 12
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_a_rerun_replaces_the_file(emulator: AosEmulator, aos_connection, tmp_path: Path):
    conn = aos_connection()
    add_jobs(emulator, "google_workspace", 4)
    out = tmp_path / "jobs.jsonl.gz"
    out.write_bytes(b"old content")
    list_jobs(conn, "google_workspace", destination=str(out))
    first = out.read_bytes()
    list_jobs(conn, "google_workspace", destination=str(out))
    assert out.read_bytes() == first  # byte-identical (gzip mtime 0)
    assert len(read_lines(out)) == 4


def test_a_job_served_on_two_pages_counts_once(emulator: AosEmulator, aos_connection, tmp_path: Path):
    """
    A job starting mid-walk shifts a newest-first list by one: the last job of a page is served again
    at the top of the next page. It must be listed, counted and written once.
    """
    conn = aos_connection()
    before = add_jobs(emulator, "m365", 35)  # 4 pages of 10
    emulator.configure(latency=0.2)  # room to add a job between two pages
    added: dict[str, Any] = {}

    def add_when_the_first_page_was_served() -> None:
        while emulator.stats()["jobs_m365"] < 1:
            threading.Event().wait(0.005)
        added["pages_served"] = emulator.stats()["jobs_m365"]
        added["id"] = emulator.add_job("m365", start=DAY1 + timedelta(hours=20), run_seconds=1)

    thread = threading.Thread(target=add_when_the_first_page_was_served)
    thread.start()
    out = tmp_path / "jobs.jsonl"
    manifest = list_jobs(conn, "m365", destination=str(out))
    thread.join()

    # The new job landed before at least two more pages were computed, so one page repeated a job.
    assert added["pages_served"] <= manifest["pages"] - 2
    ids = [j["id"] for j in read_lines(out)]
    assert len(ids) == len(set(ids)) == manifest["jobs"] == 35
    assert set(ids) == set(before)  # the newcomer sorted above the pages already read
    assert manifest["states"] == {"SUCCEEDED": 35}


def test_the_same_job_on_pages_zero_and_one_counts_once(emulator: AosEmulator, aos_connection):
    """§8: with the samples' paging pages 0 and 1 are the same page."""
    conn = aos_connection()
    emulator.configure(first_page_index=1)
    ids = add_jobs(emulator, "salesforce", 25)
    jobs = list_jobs(conn, "salesforce")
    assert sorted(j["id"] for j in jobs) == sorted(ids)


# -- AosBackupJobsOperator: bad arguments fail before any request ----------------------------------


@pytest.mark.parametrize(
    ("service", "filters", "field"),
    [
        ("aos_scan", {"state": "FAILED"}, "state"),
        ("iaas_paas", {"state": 16}, "state"),
        ("dynamics365", {"level": 1}, "level"),
        ("google_workspace", {"organization_id": "x"}, "organization_id"),
        ("m365", {"search": "FB2026"}, "search"),
    ],
)
def test_an_unsupported_filter_fails_early_naming_it(
    emulator: AosEmulator, aos_connection, tmp_path: Path, service: str, filters: dict, field: str
):
    conn = aos_connection()
    out = tmp_path / "jobs.jsonl"
    with pytest.raises(AosConfigError) as failure:
        list_jobs(conn, service, destination=str(out), **filters)
    assert failure.value.field == field
    assert f"cannot be filtered by {field}" in str(failure.value)
    assert graph_requests(emulator) == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "context",
    [{}, {"data_interval_start": None, "data_interval_end": None}],
    ids=["no-interval", "empty-interval"],
)
def test_no_data_interval_and_no_window_names_start_time(
    emulator: AosEmulator, aos_connection, tmp_path: Path, context: dict
):
    conn = aos_connection()
    op = AosBackupJobsOperator(
        task_id="jobs", aos_conn_id=conn, service="salesforce", destination=str(tmp_path / "j.jsonl")
    )
    with pytest.raises(AosConfigError) as failure:
        op.execute(context)
    assert failure.value.field == "start_time"
    assert "start_time and end_time" in str(failure.value)
    assert graph_requests(emulator) == 0
    assert list(tmp_path.iterdir()) == []


def test_an_empty_data_interval_names_the_fix(emulator: AosEmulator, aos_connection):
    """Airflow 3 runs of a plain cron schedule have data_interval_start == data_interval_end."""
    op = AosBackupJobsOperator(task_id="jobs", aos_conn_id=aos_connection(), service="m365")
    with pytest.raises(AosConfigError) as failure:
        op.execute({"data_interval_start": DAY1, "data_interval_end": DAY1})
    assert failure.value.field == "start_time"
    assert "CronDataIntervalTimetable" in str(failure.value)
    assert graph_requests(emulator) == 0


def test_the_data_interval_is_the_default_window(emulator: AosEmulator, aos_connection):
    conn = aos_connection()
    ids = add_jobs(emulator, "iaas_paas", 3, day=DAY2)
    add_jobs(emulator, "iaas_paas", 2)  # the day before
    op = AosBackupJobsOperator(task_id="jobs", aos_conn_id=conn, service="iaas_paas")
    jobs = op.execute({"data_interval_start": DAY2, "data_interval_end": DAY2 + timedelta(days=1)})
    assert sorted(j["id"] for j in jobs) == sorted(ids)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"service": "exchange"}, "service"),
        ({"end_time": DAY1.isoformat()}, "end_time"),
        ({"start_time": "2026-12-01T00:00:00"}, "start_time"),  # naive
        ({"job_type": "nightly"}, "job_type"),
        ({"state": "Exploded"}, "state"),
    ],
)
def test_bad_arguments_fail_before_any_request_and_write_nothing(
    emulator: AosEmulator, aos_connection, tmp_path: Path, kwargs: dict, field: str
):
    conn = aos_connection()
    kwargs = {"service": "salesforce", **kwargs}
    with pytest.raises(AosConfigError) as failure:
        list_jobs(conn, destination=str(tmp_path / "j.jsonl"), **kwargs)
    assert failure.value.field == field
    assert graph_requests(emulator) == 0
    assert list(tmp_path.iterdir()) == []


def test_fail_on_names_the_argument_for_an_unknown_state():
    with pytest.raises(AosConfigError) as failure:
        AosBackupJobsOperator(task_id="jobs", service="m365", fail_on=("FAILED", "BROKEN"))
    assert failure.value.field == "fail_on"
    assert "'BROKEN'" in str(failure.value)


@pytest.mark.parametrize("case", ["relative", "directory", "trailing-slash", "parent-is-a-file"])
def test_a_bad_destination_fails_before_any_request(
    emulator: AosEmulator, aos_connection, tmp_path: Path, case: str
):
    conn = aos_connection()
    add_jobs(emulator, "m365", 2)
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()
    destination = {
        "relative": "out/jobs.jsonl",
        "directory": str(tmp_path / "a-dir"),
        "trailing-slash": str(tmp_path / "new") + "/",
        "parent-is-a-file": str(tmp_path / "a-file" / "jobs.jsonl"),
    }[case]
    with pytest.raises(AosConfigError) as failure:
        list_jobs(conn, "m365", destination=destination)
    assert failure.value.field == "destination"
    assert graph_requests(emulator) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-dir", "a-file"]
    assert list((tmp_path / "a-dir").iterdir()) == []


def test_a_failure_mid_walk_leaves_no_file_and_keeps_the_previous_one(
    emulator: AosEmulator, aos_connection, tmp_path: Path
):
    conn = aos_connection()
    add_jobs(emulator, "dynamics365", 25)
    out = tmp_path / "jobs.jsonl"
    out.write_text("yesterday's file\n")
    emulator.inject_faults("jobs_dynamics365", ["ok", "400"])  # the second page fails for good
    with pytest.raises(Exception, match="400"):
        list_jobs(conn, "dynamics365", destination=str(out))
    assert out.read_text() == "yesterday's file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


# -- AosM365RestoreOperator: the body is checked before anything is sent ---------------------------


def _paths(n: int) -> list[dict]:
    return [{"libraryName": "Documents", "files": [{"relativePath": f"f{i}.docx"} for i in range(n)]}]


@pytest.mark.parametrize(
    ("kwargs", "field", "names"),
    [
        ({"service_type": 4}, "service_type", "4"),
        ({"service_type": "exchange"}, "service_type", "'exchange'"),
        ({"recovery_time": "2026-02-27T03:54:22"}, "recovery_time", "no timezone"),
        ({"recovery_time": "last tuesday"}, "recovery_time", "'last tuesday'"),
        ({"site_url": None}, "site_url", "https://"),
        ({"site_url": "http://contoso.sharepoint.com/sites/x"}, "site_url", "http://contoso"),
        ({"service_type": "onedrive", "onedrive_upn": None}, "onedrive_upn", "UPN"),
        ({"service_type": 2, "onedrive_upn": "megan"}, "onedrive_upn", "'megan'"),
        ({"restore_targets": []}, "restore_targets", "give a list"),
        ({"restore_targets": [{"files": ["a.txt"]}]}, "restore_targets", "restore_targets[0].libraryName"),
        (
            {"restore_targets": [*TARGETS, {"libraryName": "Docs", "files": [{"relativePath": " "}]}]},
            "restore_targets",
            "restore_targets[1].files[0].relativePath: must be a non-empty path",
        ),
        (
            {"restore_targets": [{"libraryName": "Docs"}]},
            "restore_targets",
            "restore_targets[0]: needs at least one of files or folders",
        ),
        ({"restore_targets": _paths(21)}, "restore_targets", "21 paths"),
        (
            {
                "restore_targets": [
                    {"libraryName": "Docs", "folders": ["Shared/Reports", "shared\\reports\\2026"]}
                ]
            },
            "restore_targets",
            "restore_targets[0].folders[1].relativePath: inside restore_targets[0].folders[0].relativePath",
        ),
        ({"location": "EU-1"}, "location", "'EU-1'"),
    ],
)
def test_restore_validation_names_the_bad_field_and_sends_nothing(
    emulator: AosEmulator, aos_connection, kwargs: dict, field: str, names: str
):
    conn = aos_connection()
    with pytest.raises(AosConfigError) as failure:
        restore(conn, **kwargs)
    assert failure.value.field == field
    assert names in str(failure.value)
    assert graph_requests(emulator) == 0


def test_twenty_paths_and_siblings_are_accepted(emulator: AosEmulator, aos_connection):
    """The limits' edges: exactly 20 paths; "Shared/Report" is not a parent of "Shared/Reports"."""
    conn = aos_connection()
    targets = [*_paths(18), {"libraryName": "Docs", "folders": ["Shared/Report", "Shared/Reports"]}]
    job_id, ti = restore(conn, restore_targets=targets, wait=False)
    assert ti.pushed == {"aos_job_id": job_id}
    assert emulator.stats()["restore_post"] == 1
    assert emulator.stats()["restore_error"] == 0


# -- AosM365RestoreOperator: start, wait, capacity -------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "object_type"),
    [
        ({}, 2),
        ({"service_type": 2, "site_url": None, "onedrive_upn": "megan@contoso.com"}, 3),
        ({"service_type": "teams", "location": "EUR"}, 7),
    ],
)
def test_a_valid_restore_starts_one_job_and_returns_the_final_job(
    emulator: AosEmulator, aos_connection, kwargs: dict, object_type: int
):
    conn = aos_connection()
    emulator.configure(restore_seconds=1.0)
    result, ti = restore(conn, **kwargs)
    job_id = ti.pushed["aos_job_id"]
    assert result["id"] == job_id
    assert result["state"] == "SUCCEEDED"
    assert result["kind"] == "m365_restore"
    assert emulator.job_status("m365", job_id)["stateClass"] == "SUCCESS"
    location = kwargs.get("location")
    hook = AosHook(aos_conn_id=conn)
    try:
        fresh = hook.drive(lambda s: read_job(s, "m365_restore", job_id, location=location))
    finally:
        hook.close()
    assert fresh is not None
    assert result == fresh.to_dict()
    stats = emulator.stats()
    assert stats["restore_post"] == 1
    assert stats["jobs_m365_detail"] >= 2  # it waited: polled while running, then once done


def test_a_failed_restore_fails_the_task_with_its_errors(emulator: AosEmulator, aos_connection):
    conn = aos_connection()
    emulator.configure(restore_seconds=0.5, restore_outcome="failed")
    with pytest.raises(AosJobFailedError) as failure:
        restore(conn)
    assert "ended FAILED (raw state 'Failed')" in str(failure.value)
    assert failure.value.job is not None
    assert failure.value.job["errors"]
    assert emulator.stats()["restore_post"] == 1


def test_partial_restore_passes_only_when_accepted(emulator: AosEmulator, aos_connection):
    conn = aos_connection()
    emulator.configure(restore_seconds=0.3, restore_outcome="partial")
    with pytest.raises(AosJobFailedError, match="accept_partial=True"):
        restore(conn)
    result, _ = restore(conn, accept_partial=True)
    assert result["state"] == "PARTIAL"


def test_three_running_restores_are_waited_out(
    emulator: AosEmulator, aos_connection, caplog: pytest.LogCaptureFixture, capsys
):
    """The 429 "already 3 restore/export jobs running" is a capacity signal: wait, then start once."""
    conn = aos_connection()
    emulator.configure(restore_seconds=3.0)
    busy = [restore(conn, wait=False)[0] for _ in range(3)]
    assert all(emulator.job_status("m365", b)["running"] for b in busy)
    emulator.configure(restore_seconds=0.5)
    emulator.reset_stats()
    caplog.set_level(logging.INFO)

    result, ti = restore(conn, capacity_poll_interval=0.25)

    stats = emulator.stats()
    assert stats["restore_throttled"] >= 1
    assert stats["restore_post"] == 1
    assert result["id"] == ti.pushed["aos_job_id"]
    assert result["id"] not in busy
    assert result["state"] == "SUCCEEDED"
    # Every 429 was seen by the operator's capacity wait (capacity_poll_interval), none swallowed by
    # the hook's generic backoff.
    out, err = capsys.readouterr()
    logged = caplog.text if caplog.records else out + err  # Airflow 2: stdlib logging; 3: structlog
    assert logged.count("AOS is at capacity for restores") == stats["restore_throttled"]


def test_capacity_timeout_ends_the_wait_with_the_servers_reason(emulator: AosEmulator, aos_connection):
    conn = aos_connection()
    emulator.configure(restore_seconds=600.0)
    for _ in range(3):
        restore(conn, wait=False)
    emulator.reset_stats()
    with pytest.raises(Exception, match="3 restore/export jobs running") as failure:
        restore(conn, capacity_timeout=0.5, capacity_poll_interval=0.2)
    assert getattr(failure.value, "status", None) == 429
    assert emulator.stats()["restore_post"] == 0


def test_a_restore_wait_asks_one_token_per_scope(emulator: AosEmulator, aos_connection):
    conn = aos_connection()
    emulator.configure(restore_seconds=1.5)
    result, _ = restore(conn, poll_interval=0.1)
    assert result["state"] == "SUCCEEDED"
    assert emulator.stats()["jobs_m365_detail"] >= 5  # a wait of many polls
    scopes = Counter(form.get("scope") for form in emulator.received_token_requests())
    assert scopes == {RESTORE_SCOPE: 1, JOB_INFO_SCOPE: 1}


def test_without_wait_the_job_id_is_returned_and_pushed(emulator: AosEmulator, aos_connection):
    conn = aos_connection()
    emulator.configure(restore_seconds=60.0)
    job_id, ti = restore(conn, wait=False)
    assert ti.pushed == {"aos_job_id": job_id}
    assert emulator.job_status("m365", job_id)["running"]
    assert emulator.stats()["jobs_m365_detail"] == 0


class DictStateStore:
    """The two calls the operator makes on Airflow 3.3's ``context["task_state_store"]``."""

    def __init__(self, **values: Any) -> None:
        self.values = dict(values)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.values[key] = value


def test_a_stored_running_or_succeeded_job_is_resumed_and_a_failed_one_restarted(
    emulator: AosEmulator, aos_connection
):
    """The decisions of ResumableJobMixin; the real store across tries is in tests/dags/test_restore_resume.py."""
    conn = aos_connection()
    emulator.configure(restore_seconds=1.0)
    running, _ = restore(conn, wait=False)
    store = DictStateStore(aos_job_id=running)
    result, ti = restore(conn, {"task_state_store": store})
    assert result["id"] == ti.pushed["aos_job_id"] == running
    assert emulator.stats()["restore_post"] == 1

    result, _ = restore(conn, {"task_state_store": store})  # it succeeded meanwhile: returned as is
    assert result["id"] == running
    assert emulator.stats()["restore_post"] == 1

    emulator.configure(restore_seconds=0.0, restore_outcome="failed")
    failed, _ = restore(conn, wait=False)
    emulator.configure(restore_seconds=0.5, restore_outcome="succeeded")
    store = DictStateStore(aos_job_id=failed)
    result, ti = restore(conn, {"task_state_store": store})
    assert result["id"] not in (running, failed)
    assert store.values == {"aos_job_id": result["id"]} == {"aos_job_id": ti.pushed["aos_job_id"]}
    assert emulator.stats()["restore_post"] == 3
