"""A poke-mode job sensor keeps one hook for its whole wait: one discovery and one token per scope."""

from __future__ import annotations

from airflow_provider_aos.emulator import AosEmulator
from airflow_provider_aos.sensors.backup import AosBackupJobSensor


def test_one_token_request_over_a_whole_poke_mode_wait(emulator: AosEmulator, aos_connection) -> None:
    conn_id = aos_connection()
    job_id = emulator.add_job("m365", outcome="succeeded", run_seconds=1.5)
    sensor = AosBackupJobSensor(
        task_id="wait", service="m365", job_id=job_id, aos_conn_id=conn_id, poll_interval=0.2, timeout=60
    )

    result = sensor.execute({})  # type: ignore[arg-type]

    assert result["id"] == job_id
    assert result["state"] == "SUCCEEDED"
    stats = emulator.stats()
    assert stats["jobs_m365_detail"] >= 4  # several pokes...
    assert stats["token"] == 1  # ...one token
    assert stats["discovery"] == 1


def test_a_not_found_event_fails_the_sensor_without_retry_and_unknown_events_are_refused() -> None:
    import pytest
    from airflow.providers.common.compat.sdk import AirflowFailException

    from airflow_provider_aos.exceptions import AosError

    sensor = AosBackupJobSensor(
        task_id="wait", service="m365", start_time="2026-11-01T00:00:00Z", end_time="2026-11-02T00:00:00Z"
    )
    event = {"status": "not_found", "job": None, "message": "no job found: the newest ... job"}
    with pytest.raises(AirflowFailException, match="no job found"):
        sensor.execute_complete({}, event)  # type: ignore[arg-type]
    with pytest.raises(AosError, match="unexpected trigger event"):
        sensor.execute_complete({}, {"status": "done"})  # type: ignore[arg-type]
