"""Wait for an AvePoint Opus job: the restore of archived data (GetRestoreJobStatus)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_aos.exceptions import AosConfigError
from airflow_provider_aos.jobs_api import JobQuery
from airflow_provider_aos.operators.jobs import LabelledJobVerdict
from airflow_provider_aos.operators.opus_restore import OPUS_RESTORE_KIND
from airflow_provider_aos.sensors.jobs import AosJobSensorBase

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


def restore_job_id(value: Any) -> str:
    """The job id a restore endpoint returned (a GUID string), checked; the error names ``job_id``."""
    text = "" if value is None else str(value).strip()
    if not text or text == "None" or any(c.isspace() for c in text):
        raise AosConfigError("job_id", f"expected the jobId an Opus restore returned (a GUID), got {value!r}")
    return text


class AosOpusRestoreJobSensor(AosJobSensorBase):
    """
    Wait until an AvePoint Opus restore job (``GetRestoreJobStatus``) ends, then pass or fail on its
    status.

    Finished (2) passes; Failed (3), Timed out (10) and Stopped (5) fail, Skipped (6) too; Finished
    with exception (4) fails unless ``accept_partial=True``. Waiting, In progress, Stopping,
    Calculating, Pending, and also None (-1) and any undocumented value, keep the sensor waiting,
    until ``timeout``. Poke and deferrable mode (through
    :class:`~airflow_provider_aos.triggers.jobs.AosJobTrigger`) return the same XCom value: the final
    job as ``AosJob.to_dict()`` (``details.progress`` holds the percent). Asks for
    ``records.readwrite.all`` itself.

    :param job_id: the restore job, e.g. ``"{{ ti.xcom_pull(task_ids='restore', key='aos_job_id') }}"``
        (templated).
    :param accept_partial: let a job that finished with exception pass.
    :param deferrable: wait in the triggerer instead of a worker slot.
    :param poll_interval: seconds between polls.
    :param aos_conn_id: the AOS connection (templated).
    """

    template_fields: Sequence[str] = ("aos_conn_id", "job_id")

    def __init__(self, *, job_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.verdict = LabelledJobVerdict.labelled(self.verdict)

    def job_query(self, context: Context) -> JobQuery:
        return JobQuery(kind=OPUS_RESTORE_KIND, job_id=restore_job_id(self.job_id))
