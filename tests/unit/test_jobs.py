"""The one job model: every kind's samples and state values, as /work/shared/aos-api/backup-jobs.md shows them."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_aos import jobs
from airflow_provider_aos.exceptions import AosConfigError
from airflow_provider_aos.jobs import (
    JOB_KINDS,
    AosJob,
    AosJobParseError,
    JobFilter,
    JobKind,
    JobState,
    StateValue,
    find_job,
    get_job_kind,
    in_window,
    job_from_response,
    parse_api_time,
    parse_job,
    unique_jobs,
)
from airflow_provider_aos.pagination import PageRequest, PageWalk, get_param

R, S, P, F = JobState.RUNNING, JobState.SUCCEEDED, JobState.PARTIAL, JobState.FAILED
X, K, U = JobState.STOPPED, JobState.SKIPPED, JobState.UNKNOWN

# -- the samples, copied from backup-jobs.md as they appear (contradictions included) -----------

M365_LIST = """
{
  "statusCode": 200,
  "message": "",
  "data": [
    {
      "id": "FB20241015105312327583",
      "state": "Finished",
      "startTime": "2024-12-02T07:52:25Z",
      "finishTime": "2024-12-02T07:53:04Z",
      "duration": "0.011",
      "backupDetails": {"totalCount": 16, "failedCount": 0, "successfulCount": 14, "skippedCount": 2},
      "jobErrors": []
    }
  ],
  "requestId": "0HNEVHLNSPSEJ:00000002",
  "timestamp": "2025-08-20T03:25:12.304891Z",
  "metadata": {"totalCount": 2, "nextLink": ""},
  "traceId": "00-f33571c212e19c7bad36b255e18b7df2-97d26a62bd4a5b70-00"
}
"""

M365_DETAIL = """
{
  "statusCode": 200,
  "message": "",
  "data": {
    "id": "FB20241015105312327583",
    "state": "Finished",
    "startTime": "2024-12-02T07:52:25Z",
    "finishTime": "2024-12-02T07:53:04Z",
    "duration": "0.011",
    "backupDetails": {"totalNumber": 16, "failedNumber": 0, "successfulNumber": 14, "skippedNumber": 2},
    "jobErrors": []
  },
  "requestId": "0HNEVHLNSPSEJ:00000010",
  "timestamp": "2026-04-22T07:25:12.304891Z",
  "traceId": "00-f33571c212e19c7bad36b255e18b7df2-97d26a62bd4a5b70-00"
}
"""

IAAS = """
{
  "totalCount": 51,
  "jobs": [
    {"jobId": "FB20241027081716326", "jobType": 1, "status": 2, "failedCount": 0, "successfulCount": 1, "skippedCount": 0, "totalCount": 1, "startTime": "2024-10-27T08:17:06Z", "finishTime": "2024-10-27T08:21:08Z", "duration": "00:04:01", "comments": ""},
    {"jobId": "IB20241025160014096", "jobType": 1, "status": 2, "failedCount": 0, "successfulCount": 10, "skippedCount": 35, "totalCount": 45, "startTime": "2024-10-25T16:00:14Z", "finishTime": "2024-10-27T08:00:58Z", "duration": "1.16:00:44", "comments": ""}
  ],
  "nextLink": "pZ5%2FtiSPUEfNBIK13B%2BPG5WyXm4CBVPocjiPTqZQgfxHHh2isXpr6JU4eK3OYIIUBKLwoh3tWeLFiMd5fn1eytgvIE3C5qgYl1XUUiBcpv2BPmBrJlKXxLOtTDHwvlPCA4wGnuqQEhd5E8NDFbYkWDa5QwLB5mIlFJj607ZxAKvQCG7oG1BLYb0bmRUf6Wz%2B%2FMfzvDPjhV%2Fpz%2F7SwHtj034jcRrkiMkJwXWB"
}
"""

DYNAMICS = """
{
  "totalCount": 20,
  "nextLink": "/jobs?pageIndex=2&pageSize=5&startTime=2021-05-22T11:42:00Z&finishTime=2024-09-22T11:42:00Z&type=1&status=3&organizationId=6cccccc-ffff-bbb-88888-aabbccdeee",
  "jobs": [
    {"module": "Customer Engagement", "type": 1, "jobId": "DCIB2022081903124382222110", "startTime": "2022-08-19T03:12:43.823Z", "finishTime": "2022-08-19T03:13:46.633Z", "durationHours": 0.01744722222222222, "status": 3, "successfulEntity": 1, "failedEntity": 0, "skippedEntity": 0, "warningEntity": 0, "totalEntity": 1, "successfulRecord": 1, "failedRecord": 0, "skippedRecord": 0, "warningRecord": 0, "totalRecord": 1, "backupSize": 180832, "organizationId": "6cccccc-ffff-bbb-88888-aabbccdeee", "organizationName": "uatorg123"}
  ],
  "pageIndex": 1,
  "pageSize": 5
}
"""

GOOGLE = """
{
  "status": 200,
  "message": "",
  "jobs": [
    {"jobId": "GDIG20241009053431", "appType": 1, "jobType": 5, "dataSource": 1, "status": 2, "progress": 100.0, "startTime": "2024-10-09T05:34:31+00:00", "finishTime": "2024-10-09T05:50:36.008+00:00", "operator": "System"},
    {"jobId": "GDIG20240909071817", "appType": 1, "jobType": 5, "dataSource": 1, "status": 3, "progress": 100.0, "startTime": "2024-09-09T07:18:17+00:00", "finishTime": "2024-09-09T07:22:34.984+00:00", "operator": "System"}
  ],
  "nextLink": "5Q4WjfOaJ0YwYlq3J7HYvC3h%2BxgR7lllqb48ILCpWyebIQeNnukVgM72yyYiR6P2Hd1FBfsKTbh5pDP6j%2FZxloE%2BahKnVh7ZcSE8PGxRbH4OklY%2FQKphJG1%2FDmzyX7IAavZyGDCr0xcDgkX0j0ej2TUwdfu4puqtgRKJ%2FT41jdrgJ2WR9xnZSjT6UcjquKX4X%2By9kSzG7kM6N5XZIm3gXC%2Bg6CPFXllRr2dxBPVTnjkz"
}
"""

SALESFORCE = """
{
  "statusCode": 200,
  "message": "",
  "data": {
    "totalCount": 1,
    "jobs": [
      {"type": 20, "jobId": "AI20241015105312327583", "startTime": "2024-12-02T07:52:25Z", "finishTime": "2024-12-02T07:53:04Z", "state": 2, "successfulRecords": 0, "skippedRecords": 0, "failedRecords": 0, "totalRecords": 0, "successfulMetadata": 0, "failedMetadata": 0, "totalMetadata": 0, "successfulObjects": 2, "skippedObjects": 0, "failedObjects": 0, "totalObjects": 2}
    ],
    "nextLink": ""
  },
  "requestId": "0HNEVHLNSPSEJ:00000002",
  "timestamp": "2025-08-20T03:25:12.304891Z",
  "traceId": "00-f33571c212e19c7bad36b255e18b7df2-97d26a62bd4a5b70-00"
}
"""

AOS_SCAN = """
{
  "jobs": [
    {"id": "Scan20240926055840723067", "type": 0, "state": 2, "startTime": "2024-09-26T05:58:40.4092427+00:00", "finishTime": "2024-09-26T05:59:12.2300688+00:00", "scanProfileName": "scan sharepoint sites", "category": 0, "extension": null},
    {"id": "Scan20240926051311702920", "type": 0, "state": 2, "startTime": "2024-09-26T05:13:11.0634642+00:00", "finishTime": "2024-09-26T05:13:42.3793844+00:00", "scanProfileName": "scan power platform", "category": 0, "extension": null}
  ],
  "nextLink": "https://graph-us.avepointonlineservices.com/aos/jobs?orderby=StartTime&sortorder=1&top=2&skip=1",
  "totalCount": 2
}
"""

# opus.md and other-services.md: not registered yet, but the model must fit them.
OPUS_STATUS = '{"success": true, "message": null, "job": {"id": "8f1678a9-****-****-****-745212ef3c2a", "status": 2, "progress": 75, "startTime": "2026-06-29T08:31:12Z", "finishTime": null}}'


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_warnings() -> None:
    jobs._warned.clear()


def job_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == jobs.__name__ and r.levelno == logging.WARNING
    ]


# -- JobState ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "terminal"), [(R, False), (U, False), (S, True), (P, True), (F, True), (X, True), (K, True)]
)
def test_terminal_states(state: JobState, terminal: bool) -> None:
    assert state.is_terminal is terminal


# -- each service's sample -----------------------------------------------------------------------


def test_m365_list_sample() -> None:
    (item,) = json.loads(M365_LIST)["data"]
    job = parse_job("m365", item)
    assert job == AosJob(
        kind="m365",
        id="FB20241015105312327583",
        state=S,
        raw_state="Finished",
        start_time=utc(2024, 12, 2, 7, 52, 25),
        finish_time=utc(2024, 12, 2, 7, 53, 4),
        duration_s=0.011 * 3600,  # hours, as a string: not finish - start (39 s)
        counts={"total": 16, "failed": 0, "succeeded": 14, "skipped": 2},  # the *Count spelling
        errors=(),
        details={},
    )
    assert job.first_error is None


def test_m365_detail_sample_with_number_spelling() -> None:
    job = job_from_response("m365", json.loads(M365_DETAIL))
    assert (job.id, job.state, job.raw_state) == ("FB20241015105312327583", S, "Finished")
    assert job.counts == {"total": 16, "failed": 0, "succeeded": 14, "skipped": 2}  # the *Number spelling


def test_m365_job_errors() -> None:
    item = {
        "id": "FB1",
        "state": "Finished with Exception",
        "jobErrors": [
            {"isErrorCode": False, "value": "Mailbox is locked", "url": "", "number": 3},
            {"isErrorCode": True, "value": "E1001", "url": "https://help.example/E1001", "number": 1},
            {"isErrorCode": False, "value": "", "number": 5},
        ],
    }
    job = parse_job("m365", item)
    assert job.state is P
    assert job.errors == ("Mailbox is locked (3 occurrences)", "E1001 - https://help.example/E1001")
    assert job.first_error == "Mailbox is locked (3 occurrences)"
    assert (job.start_time, job.finish_time, job.duration_s) == (None, None, None)
    assert job.counts == {}


def test_iaas_sample() -> None:
    first, second = (parse_job("iaas_paas", item) for item in json.loads(IAAS)["jobs"])
    assert (first.id, first.state, first.raw_state) == ("FB20241027081716326", S, 2)
    assert first.duration_s == 4 * 60 + 1  # the TimeSpan, not finish - start (242 s)
    assert first.counts == {"total": 1, "succeeded": 1, "failed": 0, "skipped": 0}
    assert first.errors == ()  # empty comments are no error
    assert first.details == {"jobType": 1}
    assert second.duration_s == 86400 + 16 * 3600 + 44  # "1.16:00:44": d.hh:mm:ss
    assert second.counts == {"total": 45, "succeeded": 10, "failed": 0, "skipped": 35}


def test_iaas_comments_are_errors_and_number_spelling() -> None:
    job = parse_job(
        "iaas_paas", {"jobId": "J", "status": 16, "comments": " disk not found ", "failedNumber": 2}
    )
    assert (job.state, job.errors, job.counts) == (F, ("disk not found",), {"failed": 2})


def test_dynamics_sample() -> None:
    (item,) = json.loads(DYNAMICS)["jobs"]
    job = parse_job("dynamics365", item)
    assert (job.id, job.state, job.raw_state) == ("DCIB2022081903124382222110", S, 3)
    assert job.start_time == utc(2022, 8, 19, 3, 12, 43, 823000)
    assert job.duration_s == pytest.approx(0.01744722222222222 * 3600)
    assert job.counts == {"total": 1, "succeeded": 1, "failed": 0, "skipped": 0, "warning": 0}
    assert job.details == {
        "type": 1,
        "module": "Customer Engagement",
        "organizationId": "6cccccc-ffff-bbb-88888-aabbccdeee",
        "organizationName": "uatorg123",
        "backupSize": 180832,
        "totalEntity": 1,
        "failedEntity": 0,
    }


def test_google_sample() -> None:
    finished, failed = (parse_job("google_workspace", item) for item in json.loads(GOOGLE)["jobs"])
    assert (finished.state, failed.state) == (S, F)
    assert finished.finish_time == utc(2024, 10, 9, 5, 50, 36, 8000)  # +00:00 offset
    assert finished.duration_s == pytest.approx(965.008)  # no duration field: finish - start
    assert finished.counts == {}
    assert finished.details == {
        "appType": 1,
        "jobType": 5,
        "dataSource": 1,
        "progress": 100.0,
        "operator": "System",
    }


def test_salesforce_sample_names_the_state_field_state() -> None:
    (item,) = json.loads(SALESFORCE)["data"]["jobs"]
    job = parse_job("salesforce", item)
    assert (job.id, job.state, job.raw_state) == ("AI20241015105312327583", S, 2)
    assert job.counts == {"total": 0, "succeeded": 0, "failed": 0, "skipped": 0}  # records
    assert job.details == {
        "type": 20,
        "totalObjects": 2,
        "failedObjects": 0,
        "totalMetadata": 0,
        "failedMetadata": 0,
    }


def test_aos_scan_sample_with_seven_fraction_digits() -> None:
    first, _ = (parse_job("aos_scan", item) for item in json.loads(AOS_SCAN)["jobs"])
    assert (first.id, first.state) == ("Scan20240926055840723067", S)
    assert first.start_time == utc(2024, 9, 26, 5, 58, 40, 409242)
    assert first.duration_s == pytest.approx(31.820826)
    assert first.details == {
        "type": 0,
        "category": 0,
        "scanProfileName": "scan sharepoint sites",
    }  # extension null


# -- every documented state value, in every spelling ----------------------------------------------

DOCUMENTED = {
    "m365": [
        (1, "In Progress", R),
        (2, "Finished", S),
        (3, "Failed", F),
        (4, "Finished with Exception", P),
        (5, "Partially Finished", P),
    ],
    "m365_restore": [
        (1, "In Progress", R),
        (2, "Finished", S),
        (3, "Failed", F),
        (4, "Finished with Exception", P),
        (5, "Partially Finished", P),
    ],
    "iaas_paas": [
        (0, "Not Started", R),
        (1, "In Progress", R),
        (2, "Successful", S),
        (4, "Skipped", K),
        (8, "Exception", P),
        (16, "Failed", F),
        (32, "Waiting", R),
        (64, "Stopped", X),
    ],
    "dynamics365": [
        (2, "In progress", R),
        (3, "Finished", S),
        (4, "Failed", F),
        (7, "Finished with Exception", P),
    ],
    "google_workspace": [
        (0, "In progress", R),
        (2, "Finished", S),
        (3, "Failed", F),
        (7, "Finished with exception", P),
    ],
    "salesforce": [
        (1, "In progress", R),
        (2, "Finished", S),
        (3, "Finished with exception", P),
        (4, "Failed", F),
        (5, "Paused", R),
        (6, "Stopped", X),
        (7, "Skipped", K),
    ],
    "aos_scan": [
        (0, "None", U),
        (1, "Running", R),
        (2, "Finished", S),
        (3, "Failed", F),
        (4, "Finished with exception", P),
        (5, "Skipped", K),
        (10, "Stopped", X),
    ],
}
STATE_CASES = [
    (kind, raw, expected)
    for kind, values in DOCUMENTED.items()
    for code, label, expected in values
    for raw in (code, str(code), label, f"  {label.upper()} ", label.replace(" ", ""))
]


@pytest.mark.parametrize("field", ["state", "status"])
@pytest.mark.parametrize(("kind", "raw", "expected"), STATE_CASES)
def test_every_documented_state(
    kind: str, raw: Any, expected: JobState, field: str, caplog: pytest.LogCaptureFixture
) -> None:
    job = parse_job(kind, {"jobId": "J1", "id": "J1", field: raw})
    assert job.state is expected
    assert job.raw_state == raw  # exactly as sent
    assert job_warnings(caplog) == []  # documented values, even aos_scan's 0 None, do not warn


def test_state_tables_cover_the_docs() -> None:
    """No documented value is missing from a table, and no table holds an undocumented one."""
    for name, values in DOCUMENTED.items():
        table = {(v.code, v.label, v.state) for v in JOB_KINDS[name].states if not v.filter_only}
        assert table == set(values), name
    assert {v.code for v in JOB_KINDS["m365"].states if v.filter_only} == {0}
    assert {v.code for v in JOB_KINDS["salesforce"].states if v.filter_only} == {0}


def test_salesforce_and_m365_codes_3_and_4_are_swapped() -> None:
    assert (
        parse_job("m365", {"id": "a", "state": 3}).state,
        parse_job("m365", {"id": "a", "state": 4}).state,
    ) == (F, P)
    assert (
        parse_job("salesforce", {"jobId": "a", "status": 3}).state,
        parse_job("salesforce", {"jobId": "a", "status": 4}).state,
    ) == (P, F)


def test_status_wins_over_state_where_the_docs_name_status() -> None:
    # IaaS documents `status`; a stray `state` beside it is not read first.
    assert parse_job("iaas_paas", {"jobId": "a", "status": 16, "state": 2}).state is F
    # M365 documents `state`.
    assert parse_job("m365", {"id": "a", "state": "Failed", "status": "Finished"}).state is F
    # null in the first field falls through to the second
    assert parse_job("salesforce", {"jobId": "a", "status": None, "state": 6}).state is X


@pytest.mark.parametrize(
    ("kind", "raw"), [("m365", 0), ("m365", "All"), ("salesforce", 0), ("salesforce", "all")]
)
def test_filter_only_value_is_unknown(kind: str, raw: Any, caplog: pytest.LogCaptureFixture) -> None:
    job = parse_job(kind, {"id": "a", "jobId": "a", "status": raw})
    assert job.state is U
    assert not job.state.is_terminal
    (message,) = job_warnings(caplog)
    assert "filter-only" in message
    assert kind in message


def test_unknown_state_warns_once_per_kind_and_value(caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(3):
        assert parse_job("m365", {"id": "a", "state": "Completed"}).state is U
    assert parse_job("m365", {"id": "b", "state": 99}).state is U
    assert parse_job("google_workspace", {"jobId": "c", "status": "Completed"}).state is U
    assert parse_job("google_workspace", {"jobId": "d", "status": 1}).state is U  # 1 is not a Google value
    assert parse_job("dynamics365", {"jobId": "e", "status": True}).state is U  # a bool is no code
    messages = job_warnings(caplog)
    assert len(messages) == 5
    assert "m365" in messages[0]
    assert "'Completed'" in messages[0]
    assert "m365" in messages[1]
    assert "99" in messages[1]
    assert "google_workspace" in messages[2]
    assert "'Completed'" in messages[2]


def test_missing_state_is_unknown(caplog: pytest.LogCaptureFixture) -> None:
    job = parse_job("aos_scan", {"id": "a"})
    assert (job.state, job.raw_state) == (U, None)
    (message,) = job_warnings(caplog)
    assert "no state field" in message


def test_job_without_id_names_kind_and_keys_never_values() -> None:
    with pytest.raises(AosJobParseError) as err:
        parse_job("iaas_paas", {"status": 2, "comments": "secret-looking text"})
    message = str(err.value)
    assert "IaaS + PaaS" in message
    assert "comments, status" in message
    assert "jobId, id" in message
    assert "secret-looking" not in message
    assert isinstance(err.value, ValueError)
    for no_id in ({"jobId": ""}, {"jobId": None}, {"jobId": True}, {"jobId": {"x": 1}}):
        with pytest.raises(AosJobParseError):
            parse_job("iaas_paas", no_id)
    with pytest.raises(AosJobParseError, match="expected a JSON object"):
        parse_job("iaas_paas", ["jobId"])  # type: ignore[arg-type]


def test_odd_raw_states_stay_json_safe() -> None:
    assert parse_job("aos_scan", {"id": "a", "state": 2.0}).state is S
    assert parse_job("aos_scan", {"id": "a", "state": float("nan")}).raw_state == "nan"
    assert parse_job("aos_scan", {"id": "a", "state": {"code": 2}}).raw_state == "{'code': 2}"
    assert parse_job("google_workspace", {"jobId": "a", "status": 2, "progress": float("inf")}).details == {}


def test_filters_use_the_public_names() -> None:
    for kind in JOB_KINDS.values():
        assert set(kind.filters) <= set(jobs.FILTER_NAMES), kind.name
        assert set(kind.defaults) <= set(kind.filters), kind.name


def test_numeric_id_becomes_text() -> None:
    assert parse_job("aos_scan", {"id": 42, "state": 1}).id == "42"


def test_unknown_kind() -> None:
    with pytest.raises(AosConfigError, match="unknown job kind 'm366'; known: m365, m365_restore"):
        get_job_kind("m366")


# -- times and durations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-12-02T07:52:25Z", utc(2024, 12, 2, 7, 52, 25)),
        ("2024-12-02T07:52:25z", utc(2024, 12, 2, 7, 52, 25)),
        ("2024-10-09T05:34:31+00:00", utc(2024, 10, 9, 5, 34, 31)),
        ("2024-10-09T07:34:31+02:00", utc(2024, 10, 9, 5, 34, 31)),
        ("2024-09-26T05:58:40.4092427+00:00", utc(2024, 9, 26, 5, 58, 40, 409242)),
        ("2024-09-26T05:58:40.409242789Z", utc(2024, 9, 26, 5, 58, 40, 409242)),
        ("2026-02-27T03:54:23.1052191Z", utc(2026, 2, 27, 3, 54, 23, 105219)),
        ("2024-12-02T07:52:25", utc(2024, 12, 2, 7, 52, 25)),  # naive: UTC
        ("2024-12-19 18:15:00 ", utc(2024, 12, 19, 18, 15)),
        ("2024-01-01", utc(2024, 1, 1)),
        ("0001-01-01T00:00:00", None),  # .NET DateTime.MinValue: not finished
        ("0001-01-01T00:00:00+08:00", None),
        ("", None),
        ("   ", None),
        ("yesterday", None),
        (None, None),
        (1733125945, None),
    ],
)
def test_parse_api_time(text: Any, expected: datetime | None) -> None:
    parsed = parse_api_time(text)
    assert parsed == expected
    if parsed is not None:
        assert parsed.utcoffset() == timedelta(0)


def test_running_job_has_no_finish_and_no_duration() -> None:
    job = parse_job(
        "google_workspace",
        {"jobId": "a", "status": 0, "startTime": "2024-10-09T05:34:31Z", "finishTime": None},
    )
    assert (job.state, job.finish_time, job.duration_s) == (R, None, None)


@pytest.mark.parametrize(
    ("duration", "expected"),
    [
        ("00:04:01", 241.0),
        ("1.16:00:44", 144044.0),
        ("00:00:01.5000000", 1.5),
        ("12.00:00:00.25", 12 * 86400 + 0.25),
        ("not a span", 60.0),  # unreadable: finish - start
        ("", 60.0),
        (None, 60.0),
        ("-00:00:05", 60.0),  # negative: not believed
    ],
)
def test_iaas_timespan_durations(duration: str | None, expected: float) -> None:
    raw = {
        "jobId": "a",
        "status": 2,
        "startTime": "2024-10-27T08:17:00Z",
        "finishTime": "2024-10-27T08:18:00Z",
    }
    assert parse_job("iaas_paas", {**raw, "duration": duration}).duration_s == pytest.approx(expected)


@pytest.mark.parametrize(
    ("duration", "expected"), [("0.5", 1800.0), (2, 7200.0), ("0", 0.0), ("n/a", None), ("nan", None)]
)
def test_m365_hour_durations(duration: Any, expected: float | None) -> None:
    assert parse_job("m365", {"id": "a", "state": "Finished", "duration": duration}).duration_s == expected


def test_finish_before_start_gives_no_duration() -> None:
    raw = {
        "jobId": "a",
        "status": 2,
        "startTime": "2024-10-27T08:18:00Z",
        "finishTime": "2024-10-27T08:17:00Z",
    }
    assert parse_job("google_workspace", raw).duration_s is None


def test_counts_tolerate_numeric_strings_and_skip_junk() -> None:
    raw = {
        "jobId": "a",
        "status": 2,
        "totalCount": "45",
        "failedCount": "many",
        "successfulCount": True,
        "skippedCount": 3.0,
    }
    assert parse_job("iaas_paas", raw).counts == {"total": 45, "skipped": 3}


# -- to_dict / from_dict -------------------------------------------------------------------------

ALL_SAMPLE_JOBS = [
    *(parse_job("m365", i) for i in json.loads(M365_LIST)["data"]),
    *(parse_job("iaas_paas", i) for i in json.loads(IAAS)["jobs"]),
    *(parse_job("dynamics365", i) for i in json.loads(DYNAMICS)["jobs"]),
    *(parse_job("google_workspace", i) for i in json.loads(GOOGLE)["jobs"]),
    *(parse_job("salesforce", i) for i in json.loads(SALESFORCE)["data"]["jobs"]),
    *(parse_job("aos_scan", i) for i in json.loads(AOS_SCAN)["jobs"]),
    AosJob(kind="m365", id="x", state=U),
]


@pytest.mark.parametrize("job", ALL_SAMPLE_JOBS, ids=lambda j: f"{j.kind}-{j.id}")
def test_to_dict_round_trip_through_json(job: AosJob) -> None:
    data = job.to_dict()
    assert set(data) >= {
        "kind",
        "id",
        "state",
        "raw_state",
        "start_time",
        "finish_time",
        "duration_s",
        "counts",
        "errors",
        "details",
    }
    text = json.dumps(data, allow_nan=False)
    assert AosJob.from_dict(json.loads(text)) == job


def test_to_dict_values() -> None:
    job = parse_job("aos_scan", json.loads(AOS_SCAN)["jobs"][0])
    data = job.to_dict()
    assert data["state"] == "SUCCEEDED"
    assert data["raw_state"] == 2
    assert data["start_time"] == "2024-09-26T05:58:40.409242Z"
    assert AosJob(kind="m365", id="x", state=R, errors=("e",)).to_dict()["errors"] == ["e"]
    assert AosJob(kind="m365", id="x", state=R).to_dict()["finish_time"] is None


def test_from_dict_refuses_what_to_dict_never_writes() -> None:
    with pytest.raises(AosJobParseError, match="keys seen"):
        AosJob.from_dict({"kind": "m365", "id": "a", "state": "DONE"})
    with pytest.raises(AosJobParseError):
        AosJob.from_dict({"id": "a", "state": "RUNNING"})


# -- query building ------------------------------------------------------------------------------

START, END = utc(2026, 11, 1), utc(2026, 11, 2)


def test_m365_query_with_numbers_and_labels() -> None:
    m365 = JOB_KINDS["m365"]
    by_number = m365.query({"job_type": 1, "object_type": 7, "state": 2, "location": "EUR"}, START, END)
    by_label = m365.query(
        {"job_type": "backup", "object_type": " teams ", "state": "FINISHED", "location": "EUR"}, START, END
    )
    assert (
        by_number
        == by_label
        == [
            ("jobType", "1"),
            ("objectType", "7"),
            ("jobState", "2"),
            ("location", "EUR"),
            ("startTime", "2026-11-01T00:00:00Z"),
            ("finishTime", "2026-11-02T00:00:00Z"),
        ]
    )
    assert m365.query({"job_type": "2", "state": None}) == [("jobType", "2")]  # None: not given


def test_unsupported_filter_names_it_and_lists_the_supported() -> None:
    with pytest.raises(AosConfigError) as err:
        JOB_KINDS["iaas_paas"].query({"state": 2}, START, END)  # IaaS has no status filter
    assert err.value.field == "state"
    assert "supported filters: search, object_type, job_type" in str(err.value)
    with pytest.raises(AosConfigError, match=r"job_type.*supported filters: object_type, state, location"):
        JOB_KINDS["m365_restore"].query({"job_type": "backup"})
    with pytest.raises(AosConfigError, match="colour"):
        JOB_KINDS["m365"].query({"colour": 1})


def test_undocumented_label_lists_the_valid_values() -> None:
    with pytest.raises(AosConfigError) as err:
        JOB_KINDS["m365"].query({"job_type": "snapshot"})
    assert err.value.field == "job_type"
    assert "'snapshot' is not a documented jobType value" in str(err.value)
    assert "0 All, 1 Backup, 2 Restore, 3 Export, 4 Deletion, 5 Retention" in str(err.value)
    with pytest.raises(AosConfigError, match="expected a number or a label, got list"):
        JOB_KINDS["m365"].query({"job_type": [1, 2]})
    with pytest.raises(AosConfigError, match="expected text"):
        JOB_KINDS["m365"].query({"location": ["EUR"]})


def test_undocumented_number_is_sent_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert JOB_KINDS["iaas_paas"].query({"job_type": 90003}) == [("jobType", "90003")]
    JOB_KINDS["iaas_paas"].query({"job_type": 90003})
    (message,) = job_warnings(caplog)
    assert "iaas_paas" in message
    assert "90003" in message


def test_iaas_labels_with_or_without_job() -> None:
    iaas = JOB_KINDS["iaas_paas"]
    assert (
        iaas.query({"job_type": "Azure VM Backup Job"})
        == iaas.query({"job_type": "azure vm backup"})
        == [("jobType", "1")]
    )
    assert iaas.query({"job_type": "AWS Platform Configurations job"}) == [("jobType", "40001")]
    assert iaas.query({"object_type": "Amazon S3", "search": "FB2024"}) == [
        ("searchText", "FB2024"),
        ("serviceType", "26000"),
    ]


def test_labels_are_unambiguous_in_every_table() -> None:
    for kind in JOB_KINDS.values():
        for name, spec in kind.filters.items():
            keys = [jobs._key(label) for _, label in spec.values or ()]
            assert len(keys) == len(set(keys)), (kind.name, name)
        keys = [jobs._key(v.label) for v in kind.states]
        assert len(keys) == len(set(keys)), kind.name


def test_dynamics_requires_type_and_a_window() -> None:
    d365 = JOB_KINDS["dynamics365"]
    assert d365.query({}, START, END) == [
        ("type", "0"),
        ("startTime", "2026-11-01T00:00:00Z"),
        ("finishTime", "2026-11-02T00:00:00Z"),
    ]
    assert d365.query(
        {"job_type": "AuditBackup", "state": "finished with exception", "organization_id": "org"}, START, END
    )[:3] == [
        ("type", "16"),
        ("status", "7"),
        ("organizationId", "org"),
    ]
    with pytest.raises(AosConfigError, match="requires startTime") as err:
        d365.query({}, None, END)
    assert err.value.field == "start"
    with pytest.raises(AosConfigError, match="requires finishTime") as err:
        d365.query({}, START, None)
    assert err.value.field == "end"


def test_salesforce_requires_a_window() -> None:
    sf = JOB_KINDS["salesforce"]
    with pytest.raises(AosConfigError, match="requires startTime"):
        sf.query({"level": "record"})
    assert sf.query({"level": "N/A", "state": "paused", "job_type": "audit log backup"}, START, END)[:3] == [
        ("type", "20"),
        ("status", "5"),
        ("level", "6"),
    ]


def test_google_sends_the_state_under_both_documented_names() -> None:
    google = JOB_KINDS["google_workspace"]
    assert google.query({"state": "failed", "data_source": "recenter", "object_type": "gmail (vault)"}) == [
        ("dataSource", "2"),
        ("appType", "8192"),
        ("jobStatus", "3"),
        ("status", "3"),
    ]


def test_aos_scan_newest_first_and_no_time_parameters() -> None:
    assert JOB_KINDS["aos_scan"].time_params is None
    assert JOB_KINDS["aos_scan"].query({"search": "Scan2024"}, START, END) == [
        ("sortorder", "1"),
        ("search", "Scan2024"),
    ]


def test_m365_restore_reads_restore_jobs_only() -> None:
    restore = JOB_KINDS["m365_restore"]
    assert restore.query({"object_type": "OneDrive"}) == [("jobType", "2"), ("objectType", "3")]
    assert (restore.start_path, restore.start_scope) == (
        "/backup/m365/restore/jobs",
        "microsoft365backup.restore.readwrite.all",
    )
    assert (restore.list_path, restore.detail_path, restore.scope) == (
        "/backup/m365/cloudbackupjobs",
        "/backup/m365/cloudbackupjobs/{job_id}",
        "microsoft365backup.jobInfo.read.all",
    )
    assert JOB_KINDS["m365"].start_path is None


def test_window_is_validated_and_never_narrowed() -> None:
    m365 = JOB_KINDS["m365"]
    end = datetime(2026, 11, 2, 1, 0, 0, 1, tzinfo=timezone(timedelta(hours=1)))
    assert m365.query({}, START + timedelta(microseconds=900000), end) == [
        ("startTime", "2026-11-01T00:00:00Z"),  # start rounded down
        ("finishTime", "2026-11-02T00:00:01Z"),  # end in UTC, rounded up
    ]
    with pytest.raises(AosConfigError, match="naive") as err:
        m365.query({}, datetime(2026, 11, 1), END)
    assert err.value.field == "start"
    with pytest.raises(AosConfigError, match="not before its end"):
        m365.query({}, END, START)


# -- reading one job -----------------------------------------------------------------------------


def test_poll_requests() -> None:
    assert JOB_KINDS["m365"].poll_request("FB/1", location="EUR") == (
        "/backup/m365/cloudbackupjobs/FB%2F1",
        [("location", "EUR")],
    )
    assert JOB_KINDS["iaas_paas"].poll_request("FB1") == ("/backup/vm/jobs", [("searchText", "FB1")])
    assert JOB_KINDS["aos_scan"].poll_request("Scan1") == (
        "/aos/jobs",
        [("sortorder", "1"), ("search", "Scan1")],
    )
    for name in ("dynamics365", "google_workspace", "salesforce"):
        assert JOB_KINDS[name].poll_by is None
        with pytest.raises(AosConfigError, match="cannot be read one by one"):
            JOB_KINDS[name].poll_request("X")
    with pytest.raises(AosConfigError, match="no location"):
        JOB_KINDS["iaas_paas"].poll_request("FB1", location="EUR")


def test_find_job_in_a_search_page() -> None:
    body = json.loads(IAAS)
    job = find_job("iaas_paas", body, "IB20241025160014096")
    assert job is not None
    assert job.counts["total"] == 45
    assert find_job("iaas_paas", body, "FB2024") is None  # a search hit by description is not the job
    assert find_job("salesforce", json.loads(SALESFORCE), "AI20241015105312327583") is not None  # data.jobs


def test_job_from_response_without_a_job() -> None:
    with pytest.raises(AosJobParseError, match="no job object under 'data'; keys seen: data, statusCode"):
        job_from_response("m365", {"statusCode": 200, "data": None})


# -- unique_jobs and windows ---------------------------------------------------------------------


def test_unique_jobs_drops_repeated_pages() -> None:
    page = [parse_job("m365", i) for i in json.loads(M365_LIST)["data"]]
    other = AosJob(kind="m365", id="FB2", state=R)
    same_id_other_kind = AosJob(kind="iaas_paas", id="FB20241015105312327583", state=R)
    result = list(unique_jobs([*page, other, *page, same_id_other_kind, other]))
    assert [(j.kind, j.id) for j in result] == [
        ("m365", "FB20241015105312327583"),
        ("m365", "FB2"),
        ("iaas_paas", "FB20241015105312327583"),
    ]


def test_unique_jobs_over_the_dynamics_sample_repeats() -> None:
    """The D365 sample repeats one jobId four times (§3 notes)."""
    (item,) = json.loads(DYNAMICS)["jobs"]
    assert len(list(unique_jobs(parse_job("dynamics365", item) for _ in range(4)))) == 1


def test_in_window() -> None:
    job = parse_job("aos_scan", json.loads(AOS_SCAN)["jobs"][0])
    assert in_window(job, utc(2024, 9, 26), utc(2024, 9, 27))
    assert not in_window(job, utc(2024, 9, 27), None)
    assert not in_window(job, None, utc(2024, 9, 26, 5, 58, 40, 409242))  # the end is exclusive
    assert in_window(AosJob(kind="aos_scan", id="x", state=R), START, END)


# -- the descriptors' paging reads the samples ---------------------------------------------------


def walk_one(kind: JobKind, body: Any) -> tuple[list[Any], PageRequest | None]:
    assert kind.paging is not None
    assert kind.list_path is not None
    walk = PageWalk(kind.paging)
    return walk.advance(walk.first(PageRequest(kind.list_path, tuple(kind.query({}, START, END)))), body)


def test_paging_styles_read_the_samples() -> None:
    items, _ = walk_one(JOB_KINDS["m365"], json.loads(M365_LIST))
    assert len(items) == 1
    items, following = walk_one(JOB_KINDS["iaas_paas"], json.loads(IAAS))
    assert len(items) == 2
    assert following is not None
    assert get_param(following.params, "skiptoken") == json.loads(IAAS)["nextLink"]
    items, following = walk_one(JOB_KINDS["dynamics365"], json.loads(DYNAMICS))
    assert len(items) == 1
    assert following is not None
    assert following.url.startswith("/dynamicsbackup/jobs?pageIndex=2")
    items, following = walk_one(JOB_KINDS["google_workspace"], json.loads(GOOGLE))
    assert len(items) == 2
    assert following is None
    items, following = walk_one(JOB_KINDS["salesforce"], json.loads(SALESFORCE))
    assert len(items) == 1
    assert following is None
    items, following = walk_one(JOB_KINDS["aos_scan"], json.loads(AOS_SCAN))
    assert len(items) == 2
    assert following is not None
    assert following.url.endswith("top=2&skip=1")


def test_first_page_indexes() -> None:
    first = {
        name: get_param(PageWalk(k.paging).first(PageRequest("x")).params, "pageIndex")
        for name, k in JOB_KINDS.items()
        if k.paging
    }
    assert first == {
        "m365": "0",
        "m365_restore": "0",
        "iaas_paas": None,
        "dynamics365": "1",
        "google_workspace": "0",
        "salesforce": "0",
        "aos_scan": None,
    }


# -- the model fits the restore and export jobs of opus.md and other-services.md ----------------

OPUS = JobKind(
    name="opus_restore",
    title="AvePoint Opus restore",
    scope="records.readwrite.all",
    list_path=None,
    detail_path="/api/restore/GetRestoreJobStatus?jobId={job_id}",
    paging=None,
    item_keys=(),
    filters={},
    states=(
        StateValue(-1, "None", U),
        *(
            StateValue(c, label, s)
            for c, label, s in [
                (0, "Waiting", R),
                (1, "In progress", R),
                (2, "Finished", S),
                (3, "Failed", F),
                (4, "Finished with exception", P),
                (5, "Stopped", X),
                (6, "Skipped", K),
                (7, "Stopping", R),
                (8, "Calculating", R),
                (9, "Pending", R),
                (10, "Timed out", F),
            ]
        ),
    ),
    poll_by="detail",
    detail_fields=("progress",),
    detail_item_key="job",
)
INSIGHTS = JobKind(
    name="insights_export",
    title="Insights export",
    scope="insights.read.all",
    list_path=None,
    detail_path="/insights/job/{job_id}/exportstatus",
    paging=None,
    item_keys=(),
    filters={"search": JobFilter("unused")},
    states=(StateValue(1, "In progress", R), StateValue(2, "Finished", S), StateValue(3, "Failed", F)),
    poll_by="detail",
    state_fields=("jobStatus",),  # `status` there is an HTTP code
)


def test_model_fits_opus_restore_status() -> None:
    job = job_from_response(OPUS, json.loads(OPUS_STATUS))
    # The sample says Finished with progress 75 and no finish time (opus.md): the status decides.
    assert (job.state, job.finish_time, job.details) == (S, None, {"progress": 75})
    assert parse_job(OPUS, {"id": "g", "status": -1}).state is U
    assert parse_job(OPUS, {"id": "g", "status": 10}).state is F
    assert OPUS.poll_request("8f16 78")[0] == "/api/restore/GetRestoreJobStatus?jobId=8f16%2078"


def test_model_fits_insights_export_status() -> None:
    job = job_from_response(INSIGHTS, {"jobStatus": 2, "status": 200, "message": ""}, job_id="123")
    assert (job.id, job.state, job.raw_state) == ("123", S, 2)
    assert job_from_response(INSIGHTS, {"jobStatus": 3, "status": 200}, job_id="123").state is F
