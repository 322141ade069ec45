"""
AosOpusRestoreOperator and AosOpusRestoreJobSensor against the emulator over real HTTP.

The emulator starts with archived data for two scopes (OPUS_DEMO_ARCHIVES); tests add their own
archives with the outcome their restores must end in, and count what the emulator was asked.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from airflow_provider_aos.emulator import AosEmulator
from airflow_provider_aos.exceptions import AosApiError, AosConfigError, AosError, AosJobFailedError
from airflow_provider_aos.hooks.aos import AosHook
from airflow_provider_aos.jobs_api import read_job
from airflow_provider_aos.operators.opus_restore import AosOpusNoArchivedDataError, AosOpusRestoreOperator
from airflow_provider_aos.retry import RetryPolicy
from airflow_provider_aos.sensors.jobs import AosJobSensorFailedError
from airflow_provider_aos.sensors.opus import AosOpusRestoreJobSensor

SITE = "https://contoso.sharepoint.com/sites/Legal2019"
GROUP = "legal-2019@contoso.onmicrosoft.com"
OPUS_SCOPE = "records.readwrite.all"


class RecordingTI:
    """What the operator needs of ``context["ti"]``: a place to push the job id."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


class StateStore:
    """Airflow 3.3's ``task_state_store`` as the operator uses it: get and set, kept across tries."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.values[key] = value


def restore(conn: str, store: StateStore | None = None, **kwargs: Any) -> tuple[Any, RecordingTI]:
    ti = RecordingTI()
    kwargs.setdefault("scope", SITE)
    kwargs.setdefault("poll_interval", 0.2)
    op = AosOpusRestoreOperator(task_id="restore", aos_conn_id=conn, **kwargs)
    context: dict[str, Any] = {"ti": ti}
    if store is not None:
        context["task_state_store"] = store
    return op.execute(context), ti


def fresh_read(conn: str, job_id: str) -> dict[str, Any]:
    hook = AosHook(aos_conn_id=conn)
    try:
        job = hook.drive(lambda session: read_job(session, "opus_restore", job_id))
    finally:
        hook.close()
    assert job is not None
    return job.to_dict()


def starts(emulator: AosEmulator) -> int:
    stats = emulator.stats()
    return stats["opus_restore_site"] + stats["opus_restore_group"]


# -- before anything starts ----------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "scope", "check"), [
    ("site_collection", "https://contoso.sharepoint.com/sites/NeverArchived", "opus_has_archive_site"),
    ("teams_group", "never-archived@contoso.com", "opus_has_archive_group"),
])  # fmt: skip
def test_no_archived_data_fails_naming_the_scope_and_starts_nothing(
    emulator: AosEmulator, aos_connection, kind: str, scope: str, check: str
):
    conn = aos_connection()
    with pytest.raises(AosOpusNoArchivedDataError) as failure:
        restore(conn, kind=kind, scope=scope, grace_period_days=5)
    assert failure.value.field == "scope"
    assert scope in str(failure.value)
    assert "no restore was started" in str(failure.value)
    stats = emulator.stats()
    assert stats[check] == 1
    assert starts(emulator) == 0
    assert stats["opus_grace_site"] + stats["opus_grace_group"] == 0
    assert emulator.opus_restore_jobs() == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "site"}, "kind"),
        ({"scope": "contoso.sharepoint.com/sites/A"}, "scope"),
        ({"kind": "teams_group"}, "scope"),  # a site URL is not a group email
        ({"conflict_resolution": "Replace"}, "conflict_resolution"),
        ({"apps_conflict_resolution": 3}, "apps_conflict_resolution"),
        ({"include_workflow_definition": "maybe"}, "include_workflow_definition"),
        ({"include_sharing_link": "1"}, "include_sharing_link"),
        ({"site_administrator": "admin"}, "site_administrator"),
        ({"grace_period_days": 400}, "grace_period_days"),
    ],
)
def test_a_bad_argument_fails_naming_it_before_any_request(
    emulator: AosEmulator, aos_connection, kwargs: dict, field: str
):
    conn = aos_connection()
    with pytest.raises(AosConfigError) as failure:
        restore(conn, **kwargs)
    assert failure.value.field == field
    assert emulator.stats()["requests"] == 0


def test_an_empty_sensor_job_id_fails_naming_it_before_any_request(emulator: AosEmulator, aos_connection):
    conn = aos_connection()
    sensor = AosOpusRestoreJobSensor(task_id="wait", job_id="None", aos_conn_id=conn)
    with pytest.raises(AosConfigError, match=r"^job_id: "):
        sensor.poke({})
    assert emulator.stats()["requests"] == 0


# -- start, map, wait ----------------------------------------------------------------------------


def test_every_argument_reaches_the_documented_body_and_the_job_is_waited_for(
    emulator: AosEmulator, aos_connection
):
    conn = aos_connection()
    emulator.opus_add_archive("site_collection", SITE, run_seconds=1.0)
    result, ti = restore(
        conn,
        conflict_resolution="Append",
        apps_conflict_resolution=1,
        include_workflow_definition=True,
        include_sharing_link="False",
        site_administrator="megan@contoso.com",
        grace_period_days=30,
    )
    job_id = ti.pushed["aos_job_id"]
    job = emulator.opus_restore_job(job_id)
    assert job["request"] == {
        "scope": SITE,
        "conflictResolution": 2,
        "appsConflictResolution": 1,
        "includeWorkflowDefinition": True,
        "includeSharingLink": False,
        "siteAdministratorUserPrincipalName": "megan@contoso.com",
    }
    assert emulator.opus.grace_period("site_collection", SITE) == 30
    assert (result["kind"], result["id"], result["state"], result["raw_state"]) == (
        "opus_restore", job_id, "SUCCEEDED", 2,
    )  # fmt: skip
    assert result["details"] == {"progress": 100}
    assert result == fresh_read(conn, job_id)
    stats = emulator.stats()
    assert (stats["opus_has_archive_site"], stats["opus_restore_site"], stats["opus_grace_site"]) == (1, 1, 1)
    assert stats["opus_restore_status"] >= 2  # met running, then done


def test_a_teams_group_restore_without_wait_returns_the_id_and_polls_nothing(
    emulator: AosEmulator, aos_connection
):
    conn = aos_connection()
    emulator.opus_add_archive("teams_group", GROUP, run_seconds=60.0)
    job_id, ti = restore(conn, kind="teams_group", scope=GROUP, wait=False, grace_period_days=0)
    assert ti.pushed == {"aos_job_id": job_id}
    job = emulator.opus_restore_job(job_id)
    assert (job["kind"], job["request"], job["running"]) == ("teams_group", {"scope": GROUP}, True)
    assert emulator.opus.grace_period("teams_group", GROUP) == 0
    stats = emulator.stats()
    assert (stats["opus_has_archive_group"], stats["opus_restore_group"], stats["opus_grace_group"]) == (
        1,
        1,
        1,
    )
    assert stats["opus_restore_status"] == 0


def test_only_records_readwrite_is_asked_for(emulator: AosEmulator, aos_connection):
    conn = aos_connection(extra={"scope": "audit.read.all"})  # a connection default must not leak in
    emulator.opus_add_archive("site_collection", SITE, run_seconds=0.5)
    restore(conn, grace_period_days=3)
    scopes = Counter(form.get("scope") for form in emulator.received_token_requests())
    assert scopes == {OPUS_SCOPE: 1}


@pytest.mark.parametrize(
    ("outcome", "state", "raw", "label"),
    [("failed", "FAILED", 3, "Failed"), ("timed_out", "FAILED", 10, "Timed out"), ("stopped", "STOPPED", 5, "Stopped"),
     ("skipped", "SKIPPED", 6, "Skipped")],
)  # fmt: skip
def test_a_restore_job_that_ends_badly_fails_the_task_with_its_status(
    emulator: AosEmulator, aos_connection, outcome: str, state: str, raw: int, label: str
):
    conn = aos_connection()
    emulator.opus_add_archive("site_collection", SITE, outcome=outcome, run_seconds=0.5)
    with pytest.raises(AosJobFailedError) as failure:
        restore(conn)
    assert f"ended {state} (raw state {raw} {label!r})" in str(failure.value)
    assert failure.value.job is not None
    assert failure.value.job["raw_state"] == raw
    assert starts(emulator) == 1


def test_finished_with_exception_passes_only_when_accepted(emulator: AosEmulator, aos_connection):
    conn = aos_connection()
    emulator.opus_add_archive("site_collection", SITE, outcome="partial", run_seconds=0.3)
    with pytest.raises(AosJobFailedError, match="accept_partial=True"):
        restore(conn)
    result, _ = restore(conn, accept_partial=True)
    assert (result["state"], result["raw_state"]) == ("PARTIAL", 4)


def test_a_refused_restore_reports_the_servers_message_even_with_http_200(
    emulator: AosEmulator, aos_connection
):
    """HTTP codes are undocumented: ``success: false`` with 200 is an error too, never a job."""
    conn = aos_connection()
    emulator.configure(opus_restore_failure_status=200)
    emulator.opus_add_archive("site_collection", SITE, run_seconds=60.0)
    restore(conn, wait=False)
    with pytest.raises(
        AosApiError, match=r"success: false - A restore job for the scope .* already in progress"
    ):
        restore(conn, wait=False)


def test_a_failed_grace_period_call_fails_the_task_but_the_job_id_is_already_pushed(
    emulator: AosEmulator, aos_connection
):
    conn = aos_connection()
    emulator.opus_add_archive("site_collection", SITE, run_seconds=60.0)
    emulator.inject_faults("opus_grace_site", ["400"])
    store = StateStore()
    ti = RecordingTI()
    op = AosOpusRestoreOperator(
        task_id="restore", aos_conn_id=conn, scope=SITE, grace_period_days=7, wait=False
    )
    with pytest.raises(AosApiError, match="its grace period was not set") as failure:
        op.execute({"ti": ti, "task_state_store": store})
    assert ti.pushed["aos_job_id"] in str(failure.value)
    # The retry resumes the running job and sets the grace period; still one restore.
    job_id, _ = restore(conn, store=store, grace_period_days=7, wait=False)
    assert job_id == ti.pushed["aos_job_id"]
    assert emulator.opus.grace_period("site_collection", SITE) == 7
    assert starts(emulator) == 1


# -- retries ---------------------------------------------------------------------------------------


def test_a_retry_resumes_the_running_restore_instead_of_starting_another(
    emulator: AosEmulator, aos_connection
):
    conn = aos_connection()
    emulator.opus_add_archive("site_collection", SITE, run_seconds=2.0)
    emulator.inject_faults("opus_restore_status", ["400"])  # the first try's first poll: not transient
    store = StateStore()
    with pytest.raises(AosError, match="HTTP 400"):
        restore(conn, store=store)
    job_id = store.values["aos_job_id"]
    assert emulator.opus_restore_job(job_id)["running"]

    result, ti = restore(conn, store=store)

    assert starts(emulator) == 1
    assert emulator.stats()["opus_has_archive_site"] == 1  # the resumed try asked nothing again
    assert ti.pushed == {"aos_job_id": job_id}
    assert (result["id"], result["state"]) == (job_id, "SUCCEEDED")


def test_a_retry_after_success_returns_the_job_without_waiting_or_starting(
    emulator: AosEmulator, aos_connection
):
    conn = aos_connection()
    emulator.opus_add_archive("site_collection", SITE, run_seconds=0.3)
    store = StateStore()
    first, _ = restore(conn, store=store)
    emulator.reset_stats()
    again, _ = restore(conn, store=store)
    assert again == first
    stats = emulator.stats()
    assert (starts(emulator), stats["opus_has_archive_site"], stats["opus_restore_status"]) == (0, 0, 1)


def test_a_retry_after_a_failed_restore_starts_a_new_one(emulator: AosEmulator, aos_connection):
    conn = aos_connection()
    emulator.opus_add_archive("site_collection", SITE, outcome="failed", run_seconds=0.3)
    store = StateStore()
    with pytest.raises(AosJobFailedError):
        restore(conn, store=store)
    failed_id = store.values["aos_job_id"]
    emulator.opus_add_archive("site_collection", SITE, outcome="finished", run_seconds=0.3)
    result, _ = restore(conn, store=store)
    assert starts(emulator) == 2
    assert result["id"] != failed_id
    assert store.values["aos_job_id"] == result["id"]


# -- the sensor, poke mode in process (deferrable: tests/dags/test_opus_restore.py) ----------------


def poke_until_done(sensor: AosOpusRestoreJobSensor, limit: float = 20.0) -> tuple[Any, int]:
    deadline, pokes = time.monotonic() + limit, 0
    while time.monotonic() < deadline:
        pokes += 1
        answer = sensor.poke({})
        if answer:
            return answer.xcom_value, pokes  # type: ignore[union-attr]
        time.sleep(0.1)
    raise AssertionError("the sensor never finished")


def test_none_and_every_running_status_keep_the_sensor_waiting(emulator: AosEmulator, aos_connection):
    conn = aos_connection()
    job_id = emulator.opus_add_restore_job(
        phases=[(-1, 1.5), (0, 0.3), (9, 0.3), (8, 0.3), (1, 1.5), (7, 0.3)], outcome="finished"
    )
    sensor = AosOpusRestoreJobSensor(task_id="wait", job_id=job_id, aos_conn_id=conn)
    seen: list[int] = []
    real = sensor._read

    def spy(query):  # the raw status of every poll
        job = real(query)
        seen.append(job.raw_state)
        return job

    sensor._read = spy  # type: ignore[method-assign]
    value, _ = poke_until_done(sensor)
    assert value == fresh_read(conn, job_id)
    assert value["state"] == "SUCCEEDED"
    assert seen[-1] == 2
    assert set(seen[:-1]) <= {-1, 0, 9, 8, 1, 7}
    assert {-1, 1}.issubset(seen)  # it polled through None and In progress without stopping


@pytest.mark.parametrize(("outcome", "raw"), [("failed", 3), ("timed_out", 10), ("stopped", 5)])
def test_the_sensor_fails_on_failed_timed_out_and_stopped(
    emulator: AosEmulator, aos_connection, outcome: str, raw: int
):
    conn = aos_connection()
    job_id = emulator.opus_add_restore_job(outcome=outcome, run_seconds=0.3)
    sensor = AosOpusRestoreJobSensor(task_id="wait", job_id=job_id, aos_conn_id=conn)
    with pytest.raises(AosJobSensorFailedError, match=f"raw state {raw} "):
        poke_until_done(sensor)


def test_the_sensor_follows_accept_partial(emulator: AosEmulator, aos_connection):
    conn = aos_connection()
    job_id = emulator.opus_add_restore_job(outcome="partial", run_seconds=0.2)
    with pytest.raises(AosJobSensorFailedError, match="accept_partial=True"):
        poke_until_done(AosOpusRestoreJobSensor(task_id="wait", job_id=job_id, aos_conn_id=conn))
    value, _ = poke_until_done(
        AosOpusRestoreJobSensor(task_id="wait", job_id=job_id, aos_conn_id=conn, accept_partial=True)
    )
    assert (value["state"], value["raw_state"]) == ("PARTIAL", 4)


def test_the_sensor_rides_out_a_transient_failure(emulator: AosEmulator, aos_connection):
    conn = aos_connection()
    job_id = emulator.opus_add_restore_job(run_seconds=0.5)
    emulator.inject_faults("opus_restore_status", ["503"] * 6)  # one whole poll's attempts
    sensor = AosOpusRestoreJobSensor(task_id="wait", job_id=job_id, aos_conn_id=conn)
    fast = RetryPolicy(max_attempts=2, backoff=0.01)
    sensor._hook = lambda: AosHook(aos_conn_id=conn, retry_policy=fast)  # type: ignore[method-assign]
    value, _ = poke_until_done(sensor)
    assert value["state"] == "SUCCEEDED"


def test_an_unknown_job_id_ends_the_wait_with_the_servers_words(emulator: AosEmulator, aos_connection):
    conn = aos_connection()
    sensor = AosOpusRestoreJobSensor(
        task_id="wait", job_id="00000000-0000-4000-8000-000000000000", aos_conn_id=conn
    )
    with pytest.raises(AosApiError, match="was not found"):
        sensor.poke({})
