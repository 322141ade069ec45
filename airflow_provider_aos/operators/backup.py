"""AvePoint Cloud Backup: list and health-check jobs of any service; restore Microsoft 365 files and folders."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_aos.exceptions import AosApiError, AosConfigError, AosJobCheckFailedError
from airflow_provider_aos.hooks.aos import AosHook
from airflow_provider_aos.jobs import FILTER_NAMES, AosJob, JobState, get_job_kind, in_window, parse_job
from airflow_provider_aos.jobs_api import JobQuery
from airflow_provider_aos.operators.audit import iso_z, parse_time
from airflow_provider_aos.operators.jobs import JOB_ID_KEY, AosJobOperatorBase  # noqa: F401 - JOB_ID_KEY re-exported
from airflow_provider_aos.sensors.backup import backup_service, job_filters
from airflow_provider_aos.sensors.jobs import (
    job_states,
    window_bounds,
)
from airflow_provider_aos.storage import AtomicDestination, encode_record

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

MAX_LISTED_OFFENDERS = 50
"""A health-check failure names at most this many jobs (and counts the rest)."""


class AosBackupJobsOperator(BaseOperator):
    """
    List one Cloud Backup service's jobs of a time window; optionally fail on bad ones (health check).

    A job belongs to the window when its start time is in ``[start_time, end_time)``; where the
    endpoint has no time filter (AOS scan jobs) the window is applied client-side, and it is applied
    client-side everywhere so that every service means the same. No filter means every job type,
    not only backups. Pages are walked lazily; a job returned twice (pages 0 and 1 of some services
    overlap) counts once.

    ``fail_on=("FAILED", "PARTIAL")`` makes it a backup health check: the whole window is read,
    then the task fails with one message naming every offending job (id, state, raw state, first
    error). With ``destination`` the jobs are streamed there as JSON Lines first (written
    atomically), so the evidence is kept even when the check fails.

    :param service: ``m365``, ``iaas_paas``, ``dynamics365``, ``google_workspace``, ``salesforce``
        or ``aos_scan`` (templated).
    :param aos_conn_id: the AOS connection (templated).
    :param start_time: window start, aware datetime or ISO 8601 (templated); default: the run's
        ``data_interval_start``.
    :param end_time: window end (templated); default: ``data_interval_end``.
    :param job_type: the service's job type filter, number or documented label (templated).
    :param object_type: object, service or app type filter (templated).
    :param state: the service's state filter (templated).
    :param location: Microsoft 365 Multi-Geo location (templated).
    :param search: text search, where the service has one (templated).
    :param organization_id: Dynamics 365 / Salesforce organization (templated).
    :param level: Salesforce level (templated).
    :param data_source: Google Workspace data source (templated).
    :param fail_on: job states (``JobState`` names) that fail the task, e.g. ``("FAILED", "PARTIAL")``.
    :param destination: write the jobs to this object-storage file as JSON Lines instead of XCom
        (templated); gzip for ``.gz`` names.
    :param destination_conn_id: connection of the object store, if it needs one (templated).
    :return: without ``destination``, a list of ``AosJob.to_dict()``; with it, a manifest
        (``path``, ``jobs``, ``pages``, ``service``, ``start_time``, ``end_time``, ``states``, ``bytes``).
    """

    template_fields: Sequence[str] = (
        "aos_conn_id",
        "service",
        "start_time",
        "end_time",
        *FILTER_NAMES,
        "destination",
        "destination_conn_id",
    )
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        service: str,
        aos_conn_id: str = AosHook.default_conn_name,
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
        fail_on: Iterable[str | JobState] = (),
        destination: str | None = None,
        destination_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.service = service
        self.aos_conn_id = aos_conn_id
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
        self.fail_on = job_states(fail_on, "fail_on")
        self.destination = destination
        self.destination_conn_id = destination_conn_id

    def execute(self, context: Context) -> Any:
        # Every argument is checked before the first request.
        kind = get_job_kind(backup_service(self.service))
        start, end = window_bounds(context, self.start_time, self.end_time, parse_time)
        if start is None or end is None:
            raise AosConfigError(
                "start_time" if start is None else "end_time",
                "the run has no data interval, or an empty one (an Airflow 3 manual run, or a cron schedule "
                "without CronDataIntervalTimetable); pass start_time and end_time",
            )
        if end <= start:
            raise AosConfigError("end_time", f"{iso_z(end)} is not after start_time {iso_z(start)}")
        params = kind.query(job_filters({n: getattr(self, n) for n in FILTER_NAMES}), start, end)
        dest = (
            AtomicDestination(self.destination, conn_id=self.destination_conn_id)
            if self.destination
            else None
        )
        assert kind.list_path is not None
        hook = AosHook(aos_conn_id=self.aos_conn_id)
        hook.config  # noqa: B018 - a bad connection fails before anything is written

        seen: set[str] = set()
        states: dict[str, int] = {}
        offenders: list[AosJob] = []
        listed: list[dict[str, Any]] = []
        iterator = hook.paginate(kind.list_path, params=params, scope=kind.scope, style=kind.paging)
        try:
            with dest if dest is not None else contextlib.nullcontext() as out:
                for page in iterator.pages:
                    lines = []
                    for raw in page.items:
                        job = parse_job(kind, raw)
                        if job.id in seen or not in_window(job, start, end):
                            continue
                        seen.add(job.id)
                        states[job.state.name] = states.get(job.state.name, 0) + 1
                        if job.state in self.fail_on:
                            offenders.append(job)
                        if out is None:
                            listed.append(job.to_dict())
                        else:
                            lines.append(encode_record(job.to_dict())[0])
                    if out is not None and lines:
                        out.write(b"\n".join(lines) + b"\n")
        finally:
            hook.close()
        self.log.info(
            "%d %s job(s) started %s to %s (%d page(s)): %s",
            len(seen), kind.title, iso_z(start), iso_z(end), iterator.page_number, states or "none",
        )  # fmt: skip
        if offenders:
            # A retry would read the same jobs again: fail without one (AirflowFailException).
            raise AosJobCheckFailedError(self._health_message(kind.title, offenders, len(seen)))
        if dest is None:
            return listed
        return {
            "path": str(dest.path),
            "jobs": len(seen),
            "pages": iterator.page_number,
            "service": kind.name,
            "start_time": iso_z(start),
            "end_time": iso_z(end),
            "states": states,
            "bytes": dest.size,
        }

    def _health_message(self, title: str, offenders: list[AosJob], total: int) -> str:
        names = sorted(s.name for s in self.fail_on)
        lines = [f"{len(offenders)} of {total} {title} job(s) ended in {names}:"]
        for job in offenders[:MAX_LISTED_OFFENDERS]:
            error = f": {job.first_error}" if job.first_error else ""
            lines.append(f"  {job.id} {job.state.name} (raw state {job.raw_state!r}){error}")
        if len(offenders) > MAX_LISTED_OFFENDERS:
            lines.append(f"  ... and {len(offenders) - MAX_LISTED_OFFENDERS} more")
        return "\n".join(lines)


# -- Microsoft 365 restore --------------------------------------------------------------------------

SERVICE_TYPES = {"sharepoint": 1, "onedrive": 2, "groups": 3, "teams": 6}
"""``serviceType`` of the restore endpoint (backup-jobs.md §1.3): 1, 2, 3 and 6 only."""
SERVICE_SCOPE = {1: "site_url", 2: "onedrive_upn", 3: "site_url", 6: "site_url"}
MAX_RESTORE_PATHS = 20
RESTORE_KIND = "m365_restore"


def restore_service_type(value: Any) -> int:
    """1/2/3/6, or ``sharepoint``/``onedrive``/``groups``/``teams`` (a template renders a string)."""
    text = str(value).strip().lower()
    number = SERVICE_TYPES.get(text) or (int(text) if text.isdigit() else None)
    if number not in SERVICE_SCOPE:
        raise AosConfigError(
            "service_type",
            f"{value!r}: the restore endpoint takes 1 (sharepoint), 2 (onedrive), 3 (groups) or 6 (teams)",
        )
    return number


def _norm_path(path: str) -> str:
    return "/".join(p for p in re.split(r"[\\/]+", path.strip()) if p).lower()


def restore_targets_body(targets: Any) -> list[dict[str, Any]]:
    """
    The documented ``restoreTargets`` (``[{libraryName, files: [{relativePath}], folders: [...]}]``),
    checked: a library name, at least one file or folder each, no empty path, at most 20 paths in
    all, no parent and child together. Paths may also be given as plain strings. Every problem is
    reported at once, each with its field.
    """
    problems: list[str] = []
    if isinstance(targets, dict):
        targets = [targets]
    if not isinstance(targets, list) or not targets:
        raise AosConfigError("restore_targets", "give a list of {libraryName, files: [...], folders: [...]}")
    body: list[dict[str, Any]] = []
    paths: list[tuple[str, str, str]] = []  # (library, normalized path, field)
    for i, target in enumerate(targets):
        where = f"restore_targets[{i}]"
        if not isinstance(target, dict):
            problems.append(f"{where}: expected an object, got {type(target).__name__}")
            continue
        library = str(target.get("libraryName") or "").strip()
        if not library:
            problems.append(f"{where}.libraryName: required (e.g. 'Documents')")
        entry: dict[str, Any] = {"libraryName": library}
        for group in ("files", "folders"):
            items = target.get(group) or []
            if not isinstance(items, list):
                problems.append(f"{where}.{group}: expected a list")
                continue
            out = []
            for j, item in enumerate(items):
                path = item.get("relativePath") if isinstance(item, dict) else item
                field = f"{where}.{group}[{j}].relativePath"
                if not isinstance(path, str) or not path.strip():
                    problems.append(f"{field}: must be a non-empty path")
                    continue
                out.append({"relativePath": path.strip()})
                paths.append((library.lower(), _norm_path(path), field))
            if out:
                entry[group] = out
        if not entry.get("files") and not entry.get("folders"):
            problems.append(f"{where}: needs at least one of files or folders")
        body.append(entry)
    if len(paths) > MAX_RESTORE_PATHS:
        problems.append(
            f"restore_targets: {len(paths)} paths; the API takes at most {MAX_RESTORE_PATHS} per restore"
        )
    for lib, path, field in paths:
        for other_lib, other, other_field in paths:
            if lib == other_lib and other != path and other.startswith(path + "/"):
                problems.append(
                    f"{other_field}: inside {field} ({path!r}); a parent and its child cannot be restored together"
                )
    if problems:
        raise AosConfigError("restore_targets", "; ".join(problems))
    return body


def m365_restore_body(
    service_type: Any,
    recovery_time: Any,
    site_url: Any,
    onedrive_upn: Any,
    restore_targets: Any,
    location: Any,
) -> dict[str, Any]:
    """The body of ``POST /backup/m365/restore/jobs``, checked field by field before anything is sent."""
    number = restore_service_type(service_type)
    moment = parse_time(recovery_time, "recovery_time")
    body: dict[str, Any] = {"serviceType": number, "recoveryDateTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}
    targets = restore_targets_body(restore_targets)
    if SERVICE_SCOPE[number] == "onedrive_upn":
        upn = str(onedrive_upn or "").strip()
        if "@" not in upn:
            raise AosConfigError(
                "onedrive_upn", f"a OneDrive restore (service_type 2) needs the owner's UPN, got {upn!r}"
            )
        body["oneDriveRestoreScope"] = {"oneDriveUpn": upn, "restoreTargets": targets}
    else:
        url = str(site_url or "").strip()
        if not url.lower().startswith("https://"):
            raise AosConfigError(
                "site_url", f"service_type {number} restores into a site: give its https:// URL, got {url!r}"
            )
        body["siteRestoreScope"] = {"siteUrl": url, "restoreTargets": targets}
    if location is not None and not re.fullmatch(r"[A-Za-z]+", str(location)):
        raise AosConfigError("location", f"{location!r} is not a Multi-Geo location such as 'EUR'")
    return body


class AosM365RestoreOperator(AosJobOperatorBase):
    """
    Restore Microsoft 365 files and folders (SharePoint, OneDrive, Groups, Teams) from Cloud Backup,
    and wait for the restore job.

    The body is checked before anything is sent (service type, recovery time, site URL or OneDrive
    UPN, at most 20 paths, no parent and child together), each bad field named. AOS answers 429 when
    it already runs 3 restore/export jobs: that is a capacity signal, so the operator waits it out
    (``capacity_timeout``) instead of failing. The job id is pushed to XCom (key ``aos_job_id``) as
    soon as it exists.

    A retried task does not start a second restore: on Airflow 3.3+ the job id is kept in the task
    instance's ``task_state_store``, and a retry resumes that job while it runs (or returns it if it
    succeeded); only a job that ended badly is restarted. Airflow 2.11 has no such store: there a
    retry after the restore was started submits a new one (set ``retries=0`` if that is unwanted).

    Waiting works as for :class:`~airflow_provider_aos.sensors.backup.AosBackupJobSensor`, in the
    worker or (``deferrable``) in the triggerer (see
    :class:`~airflow_provider_aos.operators.jobs.AosJobOperatorBase` for the waiting arguments:
    ``wait``, ``deferrable``, ``poll_interval``, ``timeout``, ``success_states``, ``failure_states``,
    ``accept_partial``, ``capacity_timeout``, ``capacity_poll_interval``, ``aos_conn_id``). The AOS
    docs give no stable portal address for a job, so there is no "AOS job" link.

    :param service_type: 1/``"sharepoint"``, 2/``"onedrive"``, 3/``"groups"`` or 6/``"teams"`` (templated).
    :param recovery_time: restore from the latest backup before this time, aware datetime or ISO
        8601 (templated).
    :param restore_targets: ``[{"libraryName": ..., "files": [{"relativePath": ...}], "folders": [...]}]``
        (templated); paths may be plain strings.
    :param site_url: site collection or subsite URL, for service types 1, 3 and 6 (templated).
    :param onedrive_upn: the OneDrive owner's UPN, for service type 2 (templated).
    :param location: Multi-Geo location of the data (templated).
    :return: with ``wait``, the final job as ``AosJob.to_dict()``; else the job id.
    """

    job_kind = RESTORE_KIND
    job_noun = "restores"
    template_fields: Sequence[str] = (
        "aos_conn_id",
        "service_type",
        "recovery_time",
        "restore_targets",
        "site_url",
        "onedrive_upn",
        "location",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"restore_targets": "json"}

    def __init__(
        self,
        *,
        service_type: int | str,
        recovery_time: datetime | str,
        restore_targets: list[dict[str, Any]] | str,
        site_url: str | None = None,
        onedrive_upn: str | None = None,
        location: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.service_type = service_type
        self.recovery_time = recovery_time
        self.restore_targets = restore_targets
        self.site_url = site_url
        self.onedrive_upn = onedrive_upn
        self.location = location

    def job_query(self, job_id: str) -> JobQuery:
        filters = {"location": self.location} if self.location else {}
        return JobQuery(kind=RESTORE_KIND, job_id=job_id, filters=filters)

    def prepare(self, context: Context) -> dict[str, Any]:
        return m365_restore_body(
            self.service_type,
            self.recovery_time,
            self.site_url,
            self.onedrive_upn,
            self.restore_targets,
            self.location,
        )

    def start_job(self, hook: AosHook, prepared: dict[str, Any], context: Context) -> str:
        kind = get_job_kind(RESTORE_KIND)
        assert kind.start_path is not None
        params = {"location": self.location} if self.location else None
        reply = self.start_with_capacity_wait(
            hook, "POST", kind.start_path, params=params, json=prepared, scope=kind.start_scope
        )
        data = reply.get("data") if isinstance(reply, dict) else None
        job_id = data.get("jobId") if isinstance(data, dict) else None
        if not isinstance(job_id, str) or not job_id:
            raise AosApiError(
                method="POST", path=kind.start_path, status=200,
                error=f"the restore was accepted but no data.jobId came back (keys: {sorted(reply or {})})",
            )  # fmt: skip
        self.log.info("Started Microsoft 365 restore job %s", job_id)
        return job_id
