"""Wait for an AvePoint Cloud Backup job (any of the six services) to end."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_aos.exceptions import AosConfigError
from airflow_provider_aos.jobs import FILTER_NAMES, get_job_kind
from airflow_provider_aos.jobs_api import JobQuery
from airflow_provider_aos.operators.audit import parse_time
from airflow_provider_aos.sensors.jobs import AosJobSensorBase, window_bounds

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

BACKUP_SERVICES = ("m365", "iaas_paas", "dynamics365", "google_workspace", "salesforce", "aos_scan")


def backup_service(service: str, field: str = "service") -> str:
    """A backup service name, checked (the error lists the services)."""
    name = str(service).strip().lower()
    if name not in BACKUP_SERVICES:
        raise AosConfigError(
            field, f"unknown backup service {service!r}; use one of {', '.join(BACKUP_SERVICES)}"
        )
    return name


def job_filters(values: dict[str, Any]) -> dict[str, Any]:
    """The filters that were given (None and empty strings are "not given")."""
    return {k: v for k, v in values.items() if v is not None and v != ""}


class AosBackupJobSensor(AosJobSensorBase):
    """
    Wait until a Cloud Backup job is terminal, then pass or fail on its state.

    With ``job_id`` it polls that job: through the service's detail endpoint (Microsoft 365), its
    id search (IaaS + PaaS, AOS scan), or, for services that have neither (Dynamics 365, Google
    Workspace, Salesforce), by finding it in the list of the window. Without ``job_id`` ("tonight's
    job") it waits on the newest job matching the filters that started in the window.

    Defaults: SUCCEEDED passes; FAILED and STOPPED fail; PARTIAL (finished with exceptions) fails
    unless ``accept_partial=True``. Returns the final job as ``AosJob.to_dict()`` in poke and
    deferrable mode alike. ``timeout``, ``soft_fail`` and ``mode="reschedule"`` behave as for any
    sensor.

    The AOS docs give no stable portal address for a job, so this sensor has no "AOS job" link.

    :param service: ``m365``, ``iaas_paas``, ``dynamics365``, ``google_workspace``, ``salesforce``
        or ``aos_scan`` (templated).
    :param job_id: the job to wait for (templated), e.g. from an upstream task's XCom.
    :param start_time: window start, aware datetime or ISO 8601 (templated); default: the run's
        ``data_interval_start``.
    :param end_time: window end (templated); default: ``data_interval_end``.
    :param job_type: the service's job type filter, its documented number or label (templated).
    :param object_type: object, service or app type filter (templated).
    :param state: the service's state filter (templated).
    :param location: Microsoft 365 Multi-Geo location, e.g. ``EUR`` (templated); also used to read
        a job by id outside the central location.
    :param search: text search, where the service has one (templated).
    :param organization_id: Dynamics 365 / Salesforce organization (templated).
    :param level: Salesforce level filter (templated).
    :param data_source: Google Workspace data source (templated).
    """

    template_fields: Sequence[str] = (
        "aos_conn_id",
        "service",
        "job_id",
        "start_time",
        "end_time",
        *FILTER_NAMES,
    )

    def __init__(
        self,
        *,
        service: str,
        job_id: str | None = None,
        start_time: datetime | str | None = None,
        end_time: datetime | str | None = None,
        job_type: int | str | None = None,
        object_type: int | str | None = None,
        state: int | str | None = None,
        location: str | None = None,
        search: str | None = None,
        organization_id: str | None = None,
        level: int | str | None = None,
        data_source: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.service = service
        self.job_id = job_id
        self.start_time = start_time
        self.end_time = end_time
        self.job_type = job_type
        self.object_type = object_type
        self.state = state
        self.location = location
        self.search = search
        self.organization_id = organization_id
        self.level = level
        self.data_source = data_source

    def job_query(self, context: Context) -> JobQuery:
        kind = get_job_kind(backup_service(self.service))
        filters = job_filters({name: getattr(self, name) for name in FILTER_NAMES})
        start, end = window_bounds(context, self.start_time, self.end_time, parse_time)
        job_id = str(self.job_id).strip() if self.job_id not in (None, "", "None") else None
        if (job_id is None or kind.poll_by is None) and (start is None or end is None):
            raise AosConfigError(
                "start_time" if start is None else "end_time",
                f"the run has no data interval, and {'finding' if job_id else 'choosing'} a {kind.title} job "
                "needs a time window: pass start_time and end_time",
            )
        kind.query(filters, start, end)  # bad filters fail here, before any request
        return JobQuery(kind=kind.name, job_id=job_id, filters=filters, start=start, end=end)
