"""The ``opus_restore`` job kind: GetRestoreJobStatus as /work/shared/aos-api/opus.md §2 shows it."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from airflow_provider_aos import jobs
from airflow_provider_aos.exceptions import AosConfigError
from airflow_provider_aos.jobs import (
    JOB_KINDS,
    AosJobParseError,
    JobState,
    get_job_kind,
    job_from_response,
)
from airflow_provider_aos.jobs_api import read_job
from airflow_provider_aos.operators.jobs import LabelledJobVerdict
from airflow_provider_aos.operators.opus_restore import conflict_resolution, opus_restore_plan
from airflow_provider_aos.sensors.jobs import AosJobSensorFailedError, JobVerdict

R, S, P, F = JobState.RUNNING, JobState.SUCCEEDED, JobState.PARTIAL, JobState.FAILED
X, K, U = JobState.STOPPED, JobState.SKIPPED, JobState.UNKNOWN

# The doc's sample, as it appears (status 2 with progress 75 and no finishTime: contradictory).
STATUS_SAMPLE = """
{"success": true, "message": null, "job": {"id": "8f1678a9-****-****-****-745212ef3c2a", "status": 2,
 "progress": 75, "startTime": "2026-06-29T08:31:12Z", "finishTime": null}}
"""

# Every documented job.status value: (value, label, what it means) - opus.md §2 and backup-jobs.md §7.
DOCUMENTED = [
    (-1, "None", U),
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


def status_body(status: object, **job: object) -> dict:
    return {
        "success": True,
        "message": None,
        "job": {"id": "job-1", "status": status, "progress": 10, "startTime": "2026-06-29T08:31:12Z",
                "finishTime": None, **job},
    }  # fmt: skip


def test_the_kind_is_registered_with_the_records_scope_and_a_status_endpoint():
    kind = get_job_kind("opus_restore")
    assert JOB_KINDS["opus_restore"] is kind
    assert kind.scope == "records.readwrite.all"
    assert kind.start_scope == "records.readwrite.all"
    # The job id goes in the query (jobId), not in the path; quoted by the HTTP layer, not here.
    assert kind.poll_request("8f1678a9-0000-4000-8000-745212ef3c2a") == (
        "/api/restore/GetRestoreJobStatus",
        [("jobId", "8f1678a9-0000-4000-8000-745212ef3c2a")],
    )


@pytest.mark.parametrize(("code", "label", "state"), DOCUMENTED)
def test_every_documented_status_maps_to_its_class(code: int, label: str, state: JobState):
    job = job_from_response("opus_restore", status_body(code), "job-1")
    assert (job.state, job.raw_state, job.kind) == (state, code, "opus_restore")
    # The label, should a server send it instead of the number, means the same.
    assert job_from_response("opus_restore", status_body(label), "job-1").state is state
    # A numeric string too (a proxy or an older server).
    assert job_from_response("opus_restore", status_body(str(code)), "job-1").state is state


def test_the_documented_table_is_exactly_the_kind_s_state_table():
    kind = get_job_kind("opus_restore")
    assert [(v.code, v.label, v.state) for v in kind.states] == DOCUMENTED


@pytest.mark.parametrize("code", [c for c, _, s in DOCUMENTED if s in (R, U)])
def test_running_statuses_and_none_keep_a_wait_going(code: int):
    assert not job_from_response("opus_restore", status_body(code), "job-1").state.is_terminal


@pytest.mark.parametrize("code", [c for c, _, s in DOCUMENTED if s not in (R, U)])
def test_terminal_statuses_end_a_wait(code: int):
    assert job_from_response("opus_restore", status_body(code), "job-1").state.is_terminal


@pytest.mark.parametrize(
    ("code", "accept_partial", "passes"),
    [(2, False, True), (3, False, False), (10, False, False), (5, False, False), (6, False, False),
     (4, False, False), (4, True, True)],
)  # fmt: skip
def test_the_sensor_verdict_on_each_terminal_status(code: int, accept_partial: bool, passes: bool):
    """Finished passes; Failed, Timed out, Stopped (and Skipped) fail; Finished with exception per accept_partial."""
    verdict = JobVerdict.of(("SUCCEEDED",), ("FAILED", "STOPPED"), accept_partial)
    job = job_from_response("opus_restore", status_body(code), "job-1")
    if passes:
        assert verdict.judge(job)["raw_state"] == code
    else:
        with pytest.raises(
            Exception, match=f"opus_restore job job-1 ended {job.state.name} \\(raw state {code}\\)"
        ):
            verdict.judge(job)


@pytest.mark.parametrize("raw", [11, 99, -2, "Archiving", None, 2.5, [], {"x": 1}])
def test_an_undocumented_status_is_unknown_and_warned_once(raw: object, caplog: pytest.LogCaptureFixture):
    jobs._warned.clear()
    caplog.set_level(logging.WARNING, logger="airflow_provider_aos.jobs")
    for _ in range(3):
        job = job_from_response("opus_restore", status_body(raw), "job-1")
        assert job.state is U
        assert not job.state.is_terminal
        json.dumps(job.to_dict())  # still JSON-safe whatever the server sent
    assert len([r for r in caplog.records if "treating it as UNKNOWN" in r.getMessage()]) == 1


def test_status_none_is_documented_so_it_is_not_warned(caplog: pytest.LogCaptureFixture):
    jobs._warned.clear()
    caplog.set_level(logging.WARNING, logger="airflow_provider_aos.jobs")
    assert job_from_response("opus_restore", status_body(-1), "job-1").state is U
    assert not caplog.records


def test_the_doc_sample_reads_as_finished_whatever_its_progress_says():
    job = job_from_response("opus_restore", json.loads(STATUS_SAMPLE), "8f1678a9-****-****-****-745212ef3c2a")
    assert job.state is S
    assert job.id == "8f1678a9-****-****-****-745212ef3c2a"
    assert job.start_time == datetime(2026, 6, 29, 8, 31, 12, tzinfo=UTC)
    assert job.finish_time is None
    assert job.duration_s is None
    assert job.details == {"progress": 75}


def test_times_progress_and_duration_of_a_finished_job():
    body = status_body(2, progress=100, startTime="2026-06-29T08:31:12Z", finishTime="2026-06-29T08:41:12Z")
    job = job_from_response("opus_restore", body, "job-1")
    assert job.finish_time == datetime(2026, 6, 29, 8, 41, 12, tzinfo=UTC)
    assert job.duration_s == 600.0
    assert job.details == {"progress": 100}


def test_a_job_without_its_own_id_takes_the_one_asked_for():
    body = status_body(1)
    del body["job"]["id"]
    assert job_from_response("opus_restore", body, "asked-for").id == "asked-for"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"success": False, "message": "Job not found.", "job": None}, "the API said: Job not found."),
        ({"success": True, "message": None}, "keys seen: message, success"),
        ({"success": True, "message": None, "job": 2}, "no job object under 'job'"),
    ],
)
def test_an_answer_without_a_job_is_an_error_that_keeps_the_servers_words(body: dict, words: str):
    with pytest.raises(AosJobParseError, match="AvePoint Opus restore job detail") as failure:
        job_from_response("opus_restore", body, "job-1")
    assert words in str(failure.value)


def test_read_job_asks_the_status_endpoint_with_the_job_id_and_the_records_scope():
    """The one read of jobs_api, driven by hand: one GET, jobId in the query, the kind's scope."""

    class Session:
        def __init__(self) -> None:
            self.calls: list = []

        def request_json(self, method, path, **options):
            self.calls.append((method, path, options))
            return status_body(1)
            yield  # a generator, like the protocol's steps

    session = Session()
    steps = read_job(session, "opus_restore", "a b/c")  # type: ignore[arg-type]
    try:
        next(steps)
    except StopIteration as done:
        job = done.value
    assert job.state is R
    assert job.id == "job-1"
    assert session.calls == [
        (
            "GET",
            "/api/restore/GetRestoreJobStatus",
            {"params": (("jobId", "a b/c"),), "scope": "records.readwrite.all"},
        )
    ]


def test_existing_kinds_still_put_the_job_id_in_the_path():
    assert get_job_kind("m365_restore").poll_request("FB 1") == ("/backup/m365/cloudbackupjobs/FB%201", [])


# -- the restore request: every argument mapped to its documented body field, or refused by name ---


def test_every_argument_maps_to_its_documented_body_field():
    plan = opus_restore_plan(
        "site_collection",
        " https://contoso.sharepoint.com/sites/Archive ",
        "Append",
        1,
        True,
        "false",  # a rendered template
        "megan@contoso.com",
        "30",
    )
    assert plan.target.start_path == "/api/restore/RestoreSiteCollection"
    assert plan.target.check_path == "/api/restore/HasArchivedSiteCollectionData"
    assert plan.target.grace_path == "/api/restore/SetRestoreGracePeriodSiteCollection"
    assert plan.body == {
        "scope": "https://contoso.sharepoint.com/sites/Archive",
        "conflictResolution": 2,
        "appsConflictResolution": 1,
        "includeWorkflowDefinition": True,
        "includeSharingLink": False,
        "siteAdministratorUserPrincipalName": "megan@contoso.com",
    }
    assert plan.grace_period_days == 30


def test_teams_group_paths_and_optional_fields_left_out():
    plan = opus_restore_plan("Teams-Group", "finance@contoso.com")
    assert plan.body == {"scope": "finance@contoso.com"}  # the service's defaults apply
    assert plan.grace_period_days is None
    assert (plan.target.check_path, plan.target.start_path, plan.target.grace_path) == (
        "/api/restore/HasArchivedTeamsGroupData",
        "/api/restore/RestoreTeamsGroup",
        "/api/restore/SetRestoreGracePeriodTeamsGroup",
    )


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"kind": "site"}, "kind"),
        ({"scope": "contoso.sharepoint.com/sites/A"}, "scope"),
        ({"scope": "http://contoso.sharepoint.com/sites/A"}, "scope"),
        ({"kind": "teams_group", "scope": "https://contoso.sharepoint.com/sites/A"}, "scope"),
        ({"kind": "teams_group", "scope": "finance"}, "scope"),
        ({"scope": None}, "scope"),
        ({"conflict": 3}, "conflict_resolution"),
        ({"conflict": "Replace"}, "conflict_resolution"),
        ({"conflict": True}, "conflict_resolution"),
        ({"apps_conflict": -1}, "apps_conflict_resolution"),
        ({"include_workflow_definition": "yes"}, "include_workflow_definition"),
        ({"include_sharing_link": 1}, "include_sharing_link"),
        ({"site_administrator": "megan"}, "site_administrator"),
        ({"grace_period_days": 366}, "grace_period_days"),
        ({"grace_period_days": -1}, "grace_period_days"),
        ({"grace_period_days": 1.5}, "grace_period_days"),
        ({"grace_period_days": True}, "grace_period_days"),
    ],
)
def test_a_bad_argument_is_refused_naming_its_field(args: dict, field: str):
    given = {"kind": "site_collection", "scope": "https://contoso.sharepoint.com/sites/A", **args}
    with pytest.raises(AosConfigError) as failure:
        opus_restore_plan(**given)
    assert failure.value.field == field
    assert str(failure.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("value", "code"), [(0, 0), ("0", 0), ("overwrite", 0), ("Skip", 1), (" APPEND ", 2), (2, 2)]
)
def test_conflict_resolution_takes_the_number_or_the_label(value: object, code: int):
    assert conflict_resolution(value, "conflict_resolution") == code


@pytest.mark.parametrize(("raw", "label"), [(3, "Failed"), (10, "Timed out"), (5, "Stopped"), (6, "Skipped")])
def test_failures_name_the_status_label(raw: int, label: str):
    verdict = LabelledJobVerdict.labelled(JobVerdict.of(("SUCCEEDED",), ("FAILED", "STOPPED"), False))
    with pytest.raises(AosJobSensorFailedError) as failure:
        verdict.judge(job_from_response("opus_restore", status_body(raw), "job-1"))
    assert f"(raw state {raw} {label!r})" in str(failure.value)
    assert failure.value.job is not None
    assert failure.value.job["raw_state"] == raw
