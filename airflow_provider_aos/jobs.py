"""
One model for every kind of AOS job: backup, restore and scan jobs of every service.

Each service lists its jobs in its own shape (backup-jobs.md): a string label or a number for the
state, ``state`` or ``status``, ``totalNumber`` or ``totalCount``, a duration in hours or as a .NET
TimeSpan. A :class:`JobKind` is the data that tells them apart (paths, scope, paging, filters, field
names, the state table); :func:`parse_job` turns any of them into one :class:`AosJob` whose
:class:`JobState` a sensor can act on. Nothing here does I/O: the hook fetches, this module reads.

Unknown state values become :attr:`JobState.UNKNOWN`, which is not terminal: the docs never list
every value (the M365 label set is not documented at all), and a value we do not know must neither
crash a sensor nor pass for a success (backup-jobs.md, "State classes").
"""

from __future__ import annotations

import enum
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, Literal
from urllib.parse import quote

from airflow_provider_aos.exceptions import AosConfigError, AosError
from airflow_provider_aos.pagination import (
    NextLinkPaging,
    PageIndexPaging,
    PagingStyle,
    TopSkipPaging,
    find_items,
)

log = logging.getLogger(__name__)

# The public filter names an operator accepts; each kind supports a subset (JobKind.filters).
FILTER_NAMES = (
    "job_type",
    "object_type",
    "state",
    "location",
    "search",
    "organization_id",
    "level",
    "data_source",
)


class JobState(enum.Enum):
    """The state of an AOS job, whatever the service (backup-jobs.md, "State classes")."""

    RUNNING = "RUNNING"  # also pending, waiting, paused, not started: it may still change
    SUCCEEDED = "SUCCEEDED"
    PARTIAL = "PARTIAL"  # finished with exceptions, or partially finished
    FAILED = "FAILED"
    STOPPED = "STOPPED"  # stopped or cancelled: not a success
    SKIPPED = "SKIPPED"  # nothing was run
    UNKNOWN = "UNKNOWN"  # a value the docs do not list, a filter-only value, or no state at all

    @property
    def is_terminal(self) -> bool:
        """Whether the job is over. UNKNOWN is not: keep polling until the value changes or a timeout."""
        return self not in (JobState.RUNNING, JobState.UNKNOWN)


class AosJobParseError(AosError, ValueError):
    """A job record (or a job detail response) that cannot be read, e.g. one without a job id."""


@dataclass(frozen=True)
class StateValue:
    """
    One documented state value of a kind.

    :param code: the number (the response value, or for M365 the ``jobState`` filter value).
    :param label: the documented label; M365 responses send it instead of the number.
    :param state: what it means.
    :param filter_only: a value that exists only as a query filter ("All"); a job carrying it is UNKNOWN.
    """

    code: int
    label: str
    state: JobState
    filter_only: bool = False


@dataclass(frozen=True)
class JobFilter:
    """
    A documented list filter.

    :param param: the API's query parameter.
    :param values: the documented enum as ``(code, label)`` pairs; None for free text.
    :param also_send: further parameter names sent with the same value (where the docs disagree).
    """

    param: str
    values: tuple[tuple[int, str], ...] | None = None
    also_send: tuple[str, ...] = ()


def _key(label: str) -> str:
    """A label compared case-, whitespace-, ``_``- and ``-``-insensitively, without a trailing "job"."""
    key = re.sub(r"[\s_\-]+", "", label.lower())
    return key[:-3] if key.endswith("job") and len(key) > 3 else key


def _enum(text: str) -> tuple[tuple[int, str], ...]:
    """``"0 All, 1 Backup"`` (the docs' own form) as ``((0, "All"), (1, "Backup"))``."""
    pairs = []
    for part in text.split(","):
        code, _, label = part.strip().partition(" ")
        pairs.append((int(code), label.strip()))
    return tuple(pairs)


def _states(*values: tuple[int, str, JobState] | tuple[int, str, JobState, bool]) -> tuple[StateValue, ...]:
    return tuple(StateValue(*v) for v in values)


def _as_int(value: Any) -> int | None:
    """An integer from an int, an integral float or a numeric string; None otherwise (bools too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


@dataclass(frozen=True, eq=False, repr=False)  # one object per kind: compared and hashed by identity
class JobKind:
    """
    What one kind of AOS job looks like in the API: data, not a class per service.

    :param name: registry key, e.g. ``m365``.
    :param title: the product, for messages.
    :param scope: the scope that reads these jobs.
    :param list_path: the list endpoint, or None.
    :param detail_path: one job's endpoint, a template with ``{job_id}``, or None.
    :param paging: the list endpoint's paging style (a pagination.py style object).
    :param filters: public filter name (:data:`FILTER_NAMES`) -> the documented parameter.
    :param time_params: the list's ``(start, finish)`` parameters; None: the caller filters by time.
    :param required_params: parameters the API requires on the list call.
    :param defaults: public filter -> value sent when the caller gives none (required ones).
    :param fixed_params: parameters always sent on the list call.
    :param poll_by: how to read one job: ``detail`` (GET ``detail_path``), ``search`` (the list
        filtered with ``id_search_param``), or None: no way to ask for one job; a sensor must find it
        in the list within a time window.
    :param id_search_param: the list parameter that matches job ids (``poll_by="search"``).
    :param states: the documented state values.
    :param id_fields, state_fields, start_fields, finish_fields: where each value may be, first
        present wins.
    :param duration_field: the API's own duration; ``duration_unit`` says how to read it.
    :param count_fields: ``(total|succeeded|failed|skipped|warning, fields)``; a dotted field reads
        a nested object.
    :param error_list_field: a list of ``{value, number, isErrorCode, url}`` (M365 ``jobErrors``).
    :param error_fields: text fields that hold an error message when not empty.
    :param detail_fields: kind-specific primitives kept in :attr:`AosJob.details`.
    :param detail_item_key: where the job sits in a detail response (M365: ``data``; Opus restore:
        ``job``); None: the body.
    :param detail_id_param: a status endpoint that takes the job id as this query parameter
        (Opus ``GetRestoreJobStatus?jobId=``); None: ``detail_path`` has a ``{job_id}`` placeholder.
    :param start_path, start_scope: the endpoint that starts such a job, and its scope.
    """

    name: str
    title: str
    scope: str
    list_path: str | None
    detail_path: str | None
    paging: PagingStyle | None
    item_keys: tuple[str, ...]
    filters: Mapping[str, JobFilter]
    states: tuple[StateValue, ...]
    time_params: tuple[str, str] | None = ("startTime", "finishTime")
    required_params: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    fixed_params: tuple[tuple[str, str], ...] = ()
    poll_by: Literal["detail", "search"] | None = None
    id_search_param: str | None = None
    id_fields: tuple[str, ...] = ("jobId", "id")
    state_fields: tuple[str, ...] = ("status", "state")  # both, always: §5.1, §8
    start_fields: tuple[str, ...] = ("startTime",)
    # endTime: the commented-out D365 schema (§3 notes)
    finish_fields: tuple[str, ...] = ("finishTime", "endTime")
    duration_field: str | None = None
    duration_unit: Literal["hours", "timespan"] = "hours"
    count_fields: tuple[tuple[str, tuple[str, ...]], ...] = ()
    error_list_field: str | None = None
    error_fields: tuple[str, ...] = ()
    detail_fields: tuple[str, ...] = ()
    detail_item_key: str | None = None
    detail_id_param: str | None = None
    start_path: str | None = None
    start_scope: str | None = None

    def __repr__(self) -> str:
        return f"JobKind({self.name!r})"

    @cached_property
    def _state_index(self) -> dict[str, StateValue]:
        index: dict[str, StateValue] = {}
        for value in self.states:
            index[str(value.code)] = value
            index[_key(value.label)] = value
        return index

    def state_value(self, raw: Any) -> StateValue | None:
        """The documented value a raw state is (a number, a numeric string or a label), or None."""
        code = _as_int(raw)
        if code is not None:
            return self._state_index.get(str(code))
        if isinstance(raw, str):
            return self._state_index.get(_key(raw))
        return None

    def query(
        self,
        filters: Mapping[str, Any] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[tuple[str, str]]:
        """
        The list endpoint's query parameters for the given filters and time window.

        Enum filters take the documented number or label (case-insensitive: ``"restore"``, ``2``).
        ``None`` means "not given". Paging parameters are the paging style's business.

        :param filters: public filter name -> value.
        :param start: window start (aware datetime); sent as the start-time parameter where there is one.
        :param end: window end (aware datetime).
        :raises AosConfigError: an unsupported filter, an undocumented label, a missing required value.
        """
        given = {k: v for k, v in (filters or {}).items() if v is not None and v != ""}
        for name in given:
            if name not in self.filters:
                supported = ", ".join(self.filters) or "none"
                raise AosConfigError(
                    name,
                    f"{self.title} jobs ({self.name}) cannot be filtered by {name}; supported filters: {supported}",
                )
        params: list[tuple[str, str]] = list(self.fixed_params)
        for name, spec in self.filters.items():
            value = given.get(name, self.defaults.get(name))
            if value is None:
                continue
            sent = self._filter_value(name, spec, value)
            params.extend((param, sent) for param in (spec.param, *spec.also_send))
        start_text = None if start is None else _api_time(start, "start", round_up=False)
        end_text = None if end is None else _api_time(end, "end", round_up=True)
        if start is not None and end is not None and start >= end:
            raise AosConfigError("start", f"the window start {start} is not before its end {end}")
        if self.time_params is not None:
            for param, text in zip(self.time_params, (start_text, end_text), strict=True):
                if text is not None:
                    params.append((param, text))
        sent_names = {k for k, _ in params}
        for param in self.required_params:
            if param not in sent_names:
                arg = self._arg_of(param)
                raise AosConfigError(
                    arg, f"{self.title} jobs ({self.name}): the API requires {param}; give {arg}"
                )
        return params

    def _arg_of(self, param: str) -> str:
        if self.time_params is not None and param in self.time_params:
            return "start" if param == self.time_params[0] else "end"
        return next((name for name, spec in self.filters.items() if spec.param == param), param)

    def _filter_value(self, name: str, spec: JobFilter, value: Any) -> str:
        if spec.values is None:
            if not isinstance(value, str | int) or isinstance(value, bool):
                raise AosConfigError(name, f"expected text, got {type(value).__name__}")
            return str(value)
        documented = ", ".join(f"{code} {label}" for code, label in spec.values)
        code = _as_int(value)
        if code is None and isinstance(value, str):
            code = next((c for c, label in spec.values if _key(label) == _key(value)), None)
            if code is None:
                raise AosConfigError(
                    name,
                    f"{value!r} is not a documented {spec.param} value of {self.title} jobs; valid: {documented}",
                )
        if code is None:
            raise AosConfigError(
                name, f"expected a number or a label, got {type(value).__name__}; valid: {documented}"
            )
        if all(code != c for c, _ in spec.values):
            # Sent anyway: services add values (IaaS job types grow), and refusing would block them.
            _warn_once(
                self.name,
                f"filter:{name}:{code}",
                "%s jobs: %s=%d is not a documented value (%s); sent as is",
                self.name,
                name,
                code,
                documented,
            )
        return str(code)

    def poll_request(self, job_id: str, *, location: str | None = None) -> tuple[str, list[tuple[str, str]]]:
        """
        The path and query that read one job (``poll_by``); read the answer with :func:`find_job`
        or :func:`job_from_response`.

        :param location: M365 Multi-Geo location: the detail endpoint otherwise looks only in the
            central location (backup-jobs.md §8).
        :raises AosConfigError: the kind has no way to read one job (find it in the list instead).
        """
        params: list[tuple[str, str]] = []
        if location:
            if "location" not in self.filters:
                raise AosConfigError("location", f"{self.title} jobs have no location parameter")
            params.append((self.filters["location"].param, location))
        if self.poll_by == "detail" and self.detail_path and self.detail_id_param:
            return self.detail_path, [(self.detail_id_param, job_id), *params]
        if self.poll_by == "detail" and self.detail_path:
            return self.detail_path.format(job_id=quote(job_id, safe="")), params
        if self.poll_by == "search" and self.list_path and self.id_search_param:
            return self.list_path, [*self.fixed_params, (self.id_search_param, job_id), *params]
        raise AosConfigError(
            "job_id",
            f"{self.title} jobs cannot be read one by one (no detail endpoint, no id search); "
            "find the job in the list of a time window instead",
        )


def _api_time(moment: datetime, arg: str, *, round_up: bool) -> str:
    """UTC ``YYYY-MM-DDTHH:MM:SSZ``, the samples' form; the end is rounded up so no job is lost."""
    if not isinstance(moment, datetime):
        raise AosConfigError(arg, f"expected a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise AosConfigError(arg, "a naive datetime is ambiguous; give a timezone-aware one (UTC)")
    moment = moment.astimezone(UTC)
    if round_up and moment.microsecond:
        moment += timedelta(seconds=1)
    return moment.replace(microsecond=0, tzinfo=None).isoformat() + "Z"


# -- the registry --------------------------------------------------------------------------------

_R, _S, _P, _F = JobState.RUNNING, JobState.SUCCEEDED, JobState.PARTIAL, JobState.FAILED
_X, _K, _U = JobState.STOPPED, JobState.SKIPPED, JobState.UNKNOWN

# M365 responses send the label (only "Finished" appears in samples); the numbers are the jobState
# filter's, matched too in case a number arrives (§1.1).
_M365_STATES = _states(
    (0, "All", _U, True),
    (1, "In Progress", _R),
    (2, "Finished", _S),
    (3, "Failed", _F),
    (4, "Finished with Exception", _P),
    (5, "Partially Finished", _P),
)
_M365_FILTERS = {
    "job_type": JobFilter("jobType", _enum("0 All, 1 Backup, 2 Restore, 3 Export, 4 Deletion, 5 Retention")),
    "object_type": JobFilter(
        "objectType",
        _enum(
            "0 All, 1 Exchange Online, 2 SharePoint Online, 3 OneDrive, 4 Microsoft 365 Groups, 5 Project Online, "
            "6 Public Folder, 7 Teams, 8 Viva Engage, 9 Teams Chat, 10 Power BI, 11 Power Automate, 12 Power Apps"
        ),
    ),
    "state": JobFilter("jobState", tuple((s.code, s.label) for s in _M365_STATES)),
    "location": JobFilter("location"),
}
_M365_COUNTS = (
    # The tables and the detail sample say *Number, the list sample *Count (§1.1): both.
    ("total", ("backupDetails.totalNumber", "backupDetails.totalCount")),
    ("succeeded", ("backupDetails.successfulNumber", "backupDetails.successfulCount")),
    ("failed", ("backupDetails.failedNumber", "backupDetails.failedCount")),
    ("skipped", ("backupDetails.skippedNumber", "backupDetails.skippedCount")),
)
# §8: the table says pageIndex starts at 0, the request sample asks for 1 and gets both jobs. 0
# loses nothing if the API is 0-based, and if 0 and 1 are the same page, unique_jobs drops the
# repeats. metadata.nextLink, when given, is followed instead of counting.
# stop_at_total off: pages 0 and 1 may be the same page (§8), so the count would end the walk early.
_M365_PAGING = PageIndexPaging(first_index=0, page_size=10, item_keys=("data",), stop_at_total=False)
_M365_COMMON: dict[str, Any] = {
    "scope": "microsoft365backup.jobInfo.read.all",
    "list_path": "/backup/m365/cloudbackupjobs",
    "detail_path": "/backup/m365/cloudbackupjobs/{job_id}",
    "paging": _M365_PAGING,
    "item_keys": ("data",),
    "states": _M365_STATES,
    "poll_by": "detail",
    "id_fields": ("id", "jobId"),
    "state_fields": ("state", "status"),
    "duration_field": "duration",  # hours, as a string ("0.011")
    "count_fields": _M365_COUNTS,
    "error_list_field": "jobErrors",
    "detail_item_key": "data",
}

_IAAS_JOB_TYPES = _enum(
    "1 Azure VM Backup, 2 Azure VM Restore, 4 Azure VM File Level Export, 33 Azure VM Index Generation, "
    "64 Data Retention, 128 Microsoft Entra ID Backup, 256 Microsoft Entra ID Restore, 257 Microsoft Entra ID Export, "
    "1024 Azure Storage Backup, 2048 Azure Storage Restore, 4096 Azure Storage Export, "
    "20003 Admin Portal Settings Backup, 20004 Admin Portal Settings Export, 20006 Admin Portal Settings Restore, "
    "20009 Amazon EC2 Backup, 20010 Amazon EC2 Restore, "
    "20012 Native Azure SQL backup monitoring Backup, 20013 Native Azure SQL backup monitoring Restore, "
    "20014 Azure DevOps Backup, 20015 Azure DevOps Restore, 20016 Azure SQL Database Backup, "
    "20017 Azure SQL Database Restore, 20018 Azure VM File Restore, 20019 Azure AD B2C Backup, "
    "20020 Azure AD B2C Restore, 20022 Google VM instance Backup, 20023 Google VM instance Restore, "
    "20024 Google VM instance Generate Index, 20025 Google VM instance File Level Export, 30003 Data Deletion, "
    "40000 AWS Platform Configurations Backup, 40001 AWS Platform Configurations job, 60000 SQL Server Backup, "
    "60001 SQL Server Restore, 60010 Azure VMware VMs Backup, 60011 Azure VMware VMs Restore, "
    "60100 Azure PostgresSQL Backup, 60101 Azure PostgresSQL Restore, 70010 Google Cloud Storage Backup, "
    "70011 Google Cloud Storage Restore, 70012 Google Cloud Storage Export, 80000 Azure Cosmos Database Backup, "
    "80010 Azure Cosmos Database Restore, 90000 Entra External ID Backup, 90001 Entra External ID Restore, "
    "90002 Entra External ID Export, 90110 Amazon S3 Backup, 90120 Amazon S3 Restore"
)
_IAAS_SERVICE_TYPES = _enum(
    "1 Azure Virtual Machine, 2 Microsoft Entra ID, 4 Azure Storage, 64 Admin Portal Settings, 128 Common, "
    "256 Amazon EC2, 512 Native Azure SQL backup monitoring, 1024 Azure DevOps, 2048 Azure SQL backup, "
    "4096 Azure AD B2C, 8192 Google Cloud Platform, 16384 AWS Setting, 20000 SQL Server, 21000 VMware, "
    "23000 Google Cloud Storage, 24000 Azure Cosmos Database, 25000 Azure PostgreSQL, 26000 Amazon S3, "
    "27000 Entra External ID"
)
_COUNTS_COUNT = (
    ("total", ("totalCount", "totalNumber")),
    ("succeeded", ("successfulCount", "successfulNumber")),
    ("failed", ("failedCount", "failedNumber")),
    ("skipped", ("skippedCount", "skippedNumber")),
)

_SALESFORCE_STATES = _states(
    (0, "All", _U, True),
    (1, "In progress", _R),
    (2, "Finished", _S),
    (3, "Finished with exception", _P),  # 3 and 4 are swapped relative to M365 (§5.1)
    (4, "Failed", _F),
    (5, "Paused", _R),  # may resume
    (6, "Stopped", _X),
    (7, "Skipped", _K),
)
_DYNAMICS_STATES = _states(
    (2, "In progress", _R), (3, "Finished", _S), (4, "Failed", _F), (7, "Finished with Exception", _P)
)
_GOOGLE_STATES = _states(
    (0, "In progress", _R), (2, "Finished", _S), (3, "Failed", _F), (7, "Finished with exception", _P)
)

# opus.md §2. -1 "None" is documented but means nothing yet: UNKNOWN, not terminal, no warning.
# The status sample pairs 2 (Finished) with progress 75 and no finishTime: the status decides.
_OPUS_RESTORE_STATES = _states(
    (-1, "None", _U),
    (0, "Waiting", _R),
    (1, "In progress", _R),
    (2, "Finished", _S),
    (3, "Failed", _F),
    (4, "Finished with exception", _P),
    (5, "Stopped", _X),
    (6, "Skipped", _K),
    (7, "Stopping", _R),  # turns into Stopped
    (8, "Calculating", _R),
    (9, "Pending", _R),
    (10, "Timed out", _F),
)

JOB_KINDS: dict[str, JobKind] = {
    kind.name: kind
    for kind in (
        JobKind(name="m365", title="Cloud Backup for Microsoft 365", filters=_M365_FILTERS, **_M365_COMMON),
        # Restore jobs are read through the same endpoints (§1.3: the list with jobType=2, or the detail).
        JobKind(
            name="m365_restore",
            title="Cloud Backup for Microsoft 365 restore",
            filters={k: v for k, v in _M365_FILTERS.items() if k != "job_type"},
            fixed_params=(("jobType", "2"),),
            start_path="/backup/m365/restore/jobs",
            start_scope="microsoft365backup.restore.readwrite.all",
            **_M365_COMMON,
        ),
        JobKind(
            name="iaas_paas",
            title="Cloud Backup for IaaS + PaaS",
            scope="platformbackup.readwrite.all",
            list_path="/backup/vm/jobs",
            detail_path=None,
            # nextlink/nextLink is an opaque token sent back as skiptoken (§2).
            paging=NextLinkPaging(token_param="skiptoken", item_keys=("jobs",)),  # noqa: S106
            item_keys=("jobs",),
            filters={
                "search": JobFilter("searchText"),
                "object_type": JobFilter("serviceType", _IAAS_SERVICE_TYPES),
                "job_type": JobFilter("jobType", _IAAS_JOB_TYPES),
            },  # no status filter (§2)
            states=_states(
                (0, "Not Started", _R),
                (1, "In Progress", _R),
                (2, "Successful", _S),
                (4, "Skipped", _K),
                (8, "Exception", _P),
                (16, "Failed", _F),
                (32, "Waiting", _R),
                (64, "Stopped", _X),
            ),
            poll_by="search",
            id_search_param="searchText",  # matches ids *or descriptions*: pick the job by id
            duration_field="duration",
            duration_unit="timespan",
            count_fields=_COUNTS_COUNT,
            error_fields=("comments",),
            detail_fields=("jobType",),
        ),
        JobKind(
            name="dynamics365",
            title="Cloud Backup for Dynamics 365",
            scope="dynamics.readwrite.all",
            list_path="/dynamicsbackup/jobs",
            detail_path=None,
            # nextLink is /jobs?... without the service prefix (§3).
            paging=PageIndexPaging(
                first_index=1, page_size=10, service_prefix="/dynamicsbackup", item_keys=("jobs",)
            ),
            item_keys=("jobs",),
            filters={
                "job_type": JobFilter(
                    "type",
                    _enum("0 All, 1 Backup, 2 Restore, 4 Dryrun, 8 Retention, 16 AuditBackup, 32 Export"),
                ),
                "state": JobFilter("status", tuple((s.code, s.label) for s in _DYNAMICS_STATES)),
                "organization_id": JobFilter("organizationId"),
            },
            states=_DYNAMICS_STATES,
            required_params=("type", "startTime", "finishTime"),
            defaults={"job_type": 0},
            duration_field="durationHours",
            # Records are the unit of the counts; entities go into details.
            count_fields=(
                ("total", ("totalRecord",)),
                ("succeeded", ("successfulRecord",)),
                ("failed", ("failedRecord",)),
                ("skipped", ("skippedRecord",)),
                ("warning", ("warningRecord",)),
            ),
            detail_fields=(
                "type",
                "module",
                "organizationId",
                "organizationName",
                "backupSize",
                "totalEntity",
                "failedEntity",
            ),
        ),
        JobKind(
            name="google_workspace",
            title="Cloud Backup for Google Workspace",
            scope="gsuite.graph.read.all",
            list_path="/backup/google/admin/jobs",
            detail_path=None,
            # nextLink is an opaque token with no documented parameter to send it back (§4):
            # PageIndexPaging follows only values that look like links, else counts pages.
            paging=PageIndexPaging(first_index=0, page_size=100, item_keys=("jobs",)),
            item_keys=("jobs",),
            filters={
                "data_source": JobFilter("dataSource", _enum("1 Admin, 2 ReCenter")),
                "object_type": JobFilter(
                    "appType",
                    _enum(
                        "1 Gmail, 2 Drive, 4 Calendar, 8 Contacts, 64 Shared drives, 128 Classroom, 256 Users, "
                        "512 Groups, 4096 Chat, 8192 Gmail (Vault), 16384 Drive (Vault), 32768 shared drives (Vault)"
                    ),
                ),
                "job_type": JobFilter(
                    "jobType",
                    _enum("1 Backup, 2 Restore, 3 Export, 4 Delete, 5 Retention, 6 Generate Report"),
                ),
                # The table names it jobStatus, the sample query sends status=2 (§4). Both are sent:
                # the server ignores a query parameter it does not bind, so whichever name it reads
                # gets the value, and neither alone risks an unfiltered answer.
                "state": JobFilter(
                    "jobStatus", tuple((s.code, s.label) for s in _GOOGLE_STATES), also_send=("status",)
                ),
            },
            states=_GOOGLE_STATES,
            state_fields=("status", "jobStatus", "state"),
            detail_fields=("appType", "jobType", "dataSource", "progress", "operator"),
        ),
        JobKind(
            name="salesforce",
            title="Cloud Backup for Salesforce",
            scope="salesforce.public.read.all",
            list_path="/backup/sfbapi/jobs",
            detail_path=None,
            # §8: the request sample asks pageIndex=1 against a documented default of 0; as for M365.
            paging=PageIndexPaging(
                first_index=0, page_size=10, item_keys=("data", "jobs"), stop_at_total=False
            ),
            item_keys=("data", "jobs"),  # data.jobs
            filters={
                "job_type": JobFilter(
                    "type",
                    _enum(
                        "0 All, 1 Backup, 2 On-demand backup, 3 Restore, 4 Pre restore, 5 Compare, 6 Archive, "
                        "7 Simulation, 8 Inactive data analysis, 9 Retention, 10 Discovery, 11 Backup export, "
                        "12 On-demand export, 13 Auto export, 14 Data cleanup, 15 Sandbox seeding, "
                        "16 Generate recovery point, 17 Continuous data protection, 18 Data service, "
                        "19 On-demand data service, 20 Audit log backup, 21 Audit log export, 22 Audit log auto export"
                    ),
                ),
                "state": JobFilter("status", tuple((s.code, s.label) for s in _SALESFORCE_STATES)),
                "level": JobFilter(
                    "level", _enum("0 All, 1 Organization, 2 Object, 3 Record, 4 Field, 5 Metadata, 6 N/A")
                ),
                "organization_id": JobFilter("organizationId"),
            },
            states=_SALESFORCE_STATES,
            required_params=("startTime", "finishTime"),
            count_fields=(
                ("total", ("totalRecords",)),
                ("succeeded", ("successfulRecords",)),
                ("failed", ("failedRecords",)),
                ("skipped", ("skippedRecords",)),
            ),
            detail_fields=(
                "type",
                "organizationId",
                "totalObjects",
                "failedObjects",
                "totalMetadata",
                "failedMetadata",
                "dataSize",
                "apiCalls",
            ),
        ),
        JobKind(
            name="aos_scan",
            title="AOS scan",
            scope="autodiscovery.readwrite.all",
            list_path="/aos/jobs",
            detail_path=None,
            # §8: the sample's nextLink skips by pages, not items; followed as given.
            paging=TopSkipPaging(top=100, item_keys=("jobs",)),
            item_keys=("jobs",),
            filters={"search": JobFilter("search")},
            fixed_params=(("sortorder", "1"),),  # newest first
            time_params=None,  # no time filter: the caller keeps the window (in_window)
            states=_states(
                (0, "None", _U),  # AvePoint's table has it (§8): neither running nor done
                (1, "Running", _R),
                (2, "Finished", _S),
                (3, "Failed", _F),
                (4, "Finished with exception", _P),
                (5, "Skipped", _K),
                (10, "Stopped", _X),
            ),
            poll_by="search",
            id_search_param="search",
            id_fields=("id", "jobId"),
            state_fields=("state", "status"),
            detail_fields=("type", "category", "scanProfileName"),
        ),
        # Restore of archived data (opus.md §2): no list, one status endpoint keyed by a query
        # parameter, the job under "job". Started by RestoreSiteCollection / RestoreTeamsGroup
        # (operators/opus_restore.py: two start paths, so none here).
        JobKind(
            name="opus_restore",
            title="AvePoint Opus restore",
            scope="records.readwrite.all",
            list_path=None,
            detail_path="/api/restore/GetRestoreJobStatus",
            paging=None,
            item_keys=(),
            filters={},
            time_params=None,
            states=_OPUS_RESTORE_STATES,
            poll_by="detail",
            detail_id_param="jobId",
            detail_item_key="job",
            id_fields=("id", "jobId"),
            state_fields=("status",),
            detail_fields=("progress",),
            start_scope="records.readwrite.all",
        ),
    )
}


def get_job_kind(kind: JobKind | str) -> JobKind:
    """The :class:`JobKind` itself, or the registered one of that name."""
    if isinstance(kind, JobKind):
        return kind
    try:
        return JOB_KINDS[kind]
    except KeyError:
        raise AosConfigError("kind", f"unknown job kind {kind!r}; known: {', '.join(JOB_KINDS)}") from None


# -- the job -------------------------------------------------------------------------------------


def parse_api_time(value: Any) -> datetime | None:
    """
    An aware UTC datetime from an API time, or None when absent or unreadable.

    Tolerates ``Z`` or an offset, more than 6 fractional digits (AOS scan sends 7), a space for
    ``T``, a bare date, and naive values (read as UTC: every documented time is UTC). .NET's
    ``DateTime.MinValue`` (year 1), sent for "not finished yet", is None.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text[-1] in "Zz":
            text = text[:-1] + "+00:00"
        try:  # Python 3.11+ reads 7 fractional digits (AOS scan, .NET) itself, truncating to 6
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if moment.year <= 1:
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None


def iso_utc(moment: datetime | None) -> str | None:
    """``moment`` as ISO 8601 UTC with ``Z`` (microseconds kept, so it reads back the same)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


@dataclass(frozen=True)
class AosJob:
    """
    One AOS job of any kind, as a sensor or an operator needs it.

    :param kind: the :class:`JobKind` name.
    :param id: the job id.
    :param state: what the state means.
    :param raw_state: the state exactly as the API sent it (None when it sent none).
    :param start_time: aware UTC, or None.
    :param finish_time: aware UTC, or None (running jobs).
    :param duration_s: the API's own duration where it gives one, else finish - start, in seconds.
    :param counts: among ``total``, ``succeeded``, ``failed``, ``skipped``, ``warning``: those given.
    :param errors: the job's error messages.
    :param details: a few kind-specific values (job type, module, progress...), JSON primitives.
    """

    kind: str
    id: str
    state: JobState
    raw_state: int | float | str | None = None
    start_time: datetime | None = None
    finish_time: datetime | None = None
    duration_s: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def first_error(self) -> str | None:
        return self.errors[0] if self.errors else None

    def to_dict(self) -> dict[str, Any]:
        """JSON primitives only (for XCom and trigger events); :meth:`from_dict` reads it back."""
        return {
            "kind": self.kind,
            "id": self.id,
            "state": self.state.name,
            "raw_state": self.raw_state,
            "start_time": iso_utc(self.start_time),
            "finish_time": iso_utc(self.finish_time),
            "duration_s": self.duration_s,
            "counts": dict(self.counts),
            "errors": list(self.errors),
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AosJob:
        """The job :meth:`to_dict` wrote."""
        try:
            state = JobState[data["state"]]
            kind, job_id = str(data["kind"]), str(data["id"])
        except (KeyError, TypeError):
            raise AosJobParseError(
                f"not an AosJob dict: needs kind, id and a JobState name as state; keys seen: {sorted(map(str, data))}"
            ) from None
        return cls(
            kind=kind,
            id=job_id,
            state=state,
            raw_state=data.get("raw_state"),
            start_time=parse_api_time(data.get("start_time")),
            finish_time=parse_api_time(data.get("finish_time")),
            duration_s=data.get("duration_s"),
            counts=dict(data.get("counts") or {}),
            errors=tuple(data.get("errors") or ()),
            details=dict(data.get("details") or {}),
        )


_warned: set[tuple[str, str]] = set()


def _warn_once(kind: str, key: str, message: str, *args: Any) -> None:
    """Log ``message`` once per (kind, key) per process: a poll loop must not repeat it every minute."""
    if (kind, key) in _warned:
        return
    _warned.add((kind, key))
    log.warning(message, *args)


def _finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def _get(raw: Mapping[str, Any], path: str) -> Any:
    value: Any = raw
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _first(raw: Mapping[str, Any], fields: Iterable[str]) -> Any:
    """The first of ``fields`` present and not null."""
    return next((v for v in (_get(raw, f) for f in fields) if v is not None), None)


_TIMESPAN = re.compile(r"\s*(-)?(?:(\d+)\.)?(\d+):(\d{1,2}):(\d{1,2})(?:\.(\d+))?\s*")


def _duration(
    kind: JobKind, raw: Mapping[str, Any], start: datetime | None, finish: datetime | None
) -> float | None:
    value = _get(raw, kind.duration_field) if kind.duration_field else None
    seconds: float | None = None
    if isinstance(value, str | int | float) and not isinstance(value, bool) and value != "":
        if kind.duration_unit == "timespan" and isinstance(value, str):
            # .NET TimeSpan: [-][d.]hh:mm:ss[.fffffff] (§2)
            if match := _TIMESPAN.fullmatch(value):
                sign, days, hours, minutes, secs, fraction = match.groups()
                seconds = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(secs)
                seconds += float(f"0.{fraction}") if fraction else 0.0
                seconds = -seconds if sign else seconds
        elif kind.duration_unit == "hours":
            try:
                seconds = float(value) * 3600  # M365 "0.011" (a string), D365 durationHours (§1.1, §3)
            except ValueError:
                seconds = None
    if seconds is not None and math.isfinite(seconds) and seconds >= 0:
        return seconds
    if start is not None and finish is not None and finish >= start:
        return (finish - start).total_seconds()
    return None


def _errors(kind: JobKind, raw: Mapping[str, Any]) -> tuple[str, ...]:
    errors: list[str] = []
    items = _get(raw, kind.error_list_field) if kind.error_list_field else None
    for item in items if isinstance(items, list) else ():
        if isinstance(item, str) and item.strip():
            errors.append(item.strip())
        if not isinstance(item, Mapping):
            continue
        text = str(item.get("value") or item.get("message") or "").strip()
        if not text:
            continue
        number = _as_int(item.get("number"))
        if number is not None and number > 1:
            text += f" ({number} occurrences)"
        if item.get("isErrorCode") and isinstance(item.get("url"), str) and item["url"]:
            text += f" - {item['url']}"
        errors.append(text)
    for name in kind.error_fields:
        value = raw.get(name)
        if isinstance(value, str) and value.strip():
            errors.append(value.strip())
    return tuple(errors)


def parse_job(kind: JobKind | str, raw: Mapping[str, Any]) -> AosJob:
    """
    One job record of ``kind`` as an :class:`AosJob`.

    Tolerates what backup-jobs.md §8 and the samples contradict: numeric or label states, ``status``
    or ``state``, ``*Count`` or ``*Number``, missing fields, every time form the samples show. An
    undocumented state is UNKNOWN, logged once per kind and value.

    :raises AosJobParseError: the record is not an object, or has no job id.
    """
    kind = get_job_kind(kind)
    if not isinstance(raw, Mapping):
        raise AosJobParseError(f"{kind.name} job: expected a JSON object, got {type(raw).__name__}")
    job_id = _first(raw, kind.id_fields)
    if isinstance(job_id, bool) or not isinstance(job_id, str | int) or str(job_id).strip() == "":
        raise AosJobParseError(
            f"{kind.title} job without an id (looked for {', '.join(kind.id_fields)}); "
            f"keys seen: {', '.join(sorted(map(str, raw))) or 'none'}"
        )
    raw_state = _first(raw, kind.state_fields)
    value = kind.state_value(raw_state)
    if value is None or value.filter_only:
        state = JobState.UNKNOWN
        if raw_state is None:
            why = "no state field"
        else:
            why = "an undocumented state" if value is None else "a filter-only value"
        _warn_once(
            kind.name,
            repr(raw_state),
            "%s job %s has %s (%r in %s); treating it as UNKNOWN: not terminal, not a success",
            kind.name,
            job_id,
            why,
            raw_state,
            "/".join(kind.state_fields),
        )
    else:
        state = value.state
    if raw_state is not None and not (isinstance(raw_state, int | str) or _finite(raw_state)):
        raw_state = str(raw_state)  # an object, a list or NaN: kept readable, and JSON-safe
    start = parse_api_time(_first(raw, kind.start_fields))
    finish = parse_api_time(_first(raw, kind.finish_fields))
    counts = {}
    for name, fields in kind.count_fields:
        number = _as_int(_first(raw, fields))
        if number is not None:
            counts[name] = number
    details = {
        name: raw[name]
        for name in kind.detail_fields
        if isinstance(raw.get(name), str | int | bool) or _finite(raw.get(name))
    }
    return AosJob(
        kind=kind.name,
        id=str(job_id).strip(),
        state=state,
        raw_state=raw_state,
        start_time=start,
        finish_time=finish,
        duration_s=_duration(kind, raw, start, finish),
        counts=counts,
        errors=_errors(kind, raw),
        details=details,
    )


def job_from_response(kind: JobKind | str, body: Any, job_id: str | None = None) -> AosJob:
    """
    The job of a detail response (M365: the envelope's ``data`` is the job).

    :param job_id: the id the caller asked for, used when the body carries none (a status endpoint
        keyed by the path, like Insights' ``/insights/job/{jobId}/exportstatus``).
    :raises AosJobParseError: the body holds no job object where the kind's detail endpoint puts it.
    """
    kind = get_job_kind(kind)
    item = body.get(kind.detail_item_key) if kind.detail_item_key and isinstance(body, Mapping) else body
    if not isinstance(item, Mapping):
        where = f"under {kind.detail_item_key!r}" if kind.detail_item_key else "in the body"
        seen = ", ".join(sorted(map(str, body))) if isinstance(body, Mapping) else type(body).__name__
        said = body.get("message") if isinstance(body, Mapping) else None
        # An envelope with success false (Opus) says why there is no job: keep its words.
        said = f"; the API said: {said.strip()}" if isinstance(said, str) and said.strip() else ""
        raise AosJobParseError(f"{kind.title} job detail: no job object {where}; keys seen: {seen}{said}")
    if job_id is not None and _first(item, kind.id_fields) is None:
        item = {**item, kind.id_fields[0]: job_id}
    return parse_job(kind, item)


def find_job(kind: JobKind | str, body: Any, job_id: str) -> AosJob | None:
    """
    The job ``job_id`` in a list page (``poll_by="search"``), or None if the page does not hold it.

    An id search may match other jobs too (IaaS ``searchText`` also matches descriptions), so the
    id is compared; records of other jobs are not parsed.
    """
    kind = get_job_kind(kind)
    for item in find_items(body, kind.item_keys) or ():
        if isinstance(item, Mapping) and str(_first(item, kind.id_fields)).strip() == job_id:
            return parse_job(kind, item)
    return None


def unique_jobs(jobs: Iterable[AosJob]) -> Iterator[AosJob]:
    """``jobs`` without repeats (§8: pages 0 and 1 may hold the same jobs); the first one wins."""
    seen: set[tuple[str, str]] = set()
    for job in jobs:
        key = (job.kind, job.id)
        if key not in seen:
            seen.add(key)
            yield job


def in_window(job: AosJob, start: datetime | None, end: datetime | None) -> bool:
    """
    Whether the job started in ``[start, end)``: the client-side time filter for kinds without one
    (``time_params`` None). A job without a start time is kept: it may not have started yet.
    """
    if job.start_time is None:
        return True
    return (start is None or job.start_time >= start) and (end is None or job.start_time < end)
