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
