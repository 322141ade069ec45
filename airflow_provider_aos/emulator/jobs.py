"""Backup and scan jobs of six services (backup-jobs.md), each in its own documented dialect.

| service            | route                                   | envelope / paging                          |
|--------------------|-----------------------------------------|--------------------------------------------|
| m365               | GET /backup/m365/cloudbackupjobs[/{id}] | ApiResult + metadata; pageIndex/pageSize   |
| m365 (restore)     | POST /backup/m365/restore/jobs          | ApiResult; data.jobId; 400 errors[]; 429   |
| iaas_paas          | GET /backup/vm/jobs                     | bare list; opaque nextlink -> skiptoken    |
| dynamics365        | GET /dynamicsbackup/jobs                | bare list + pageIndex (from 1); relative   |
| google_workspace   | GET /backup/google/admin/jobs           | {status, message, jobs, nextLink token}    |
| salesforce         | GET /backup/sfbapi/jobs                 | ApiResult, data{totalCount, jobs, nextLink}|
| aos_scan           | GET /aos/jobs                           | bare list; top/skip; absolute nextLink     |

Jobs follow a schedule computed from the clock: a job is running (the service's running value)
from ``start`` until ``start + run_seconds``, then shows its outcome. Seeded jobs are a pure
function of the config seed, spread over [data_start, data_end); more jobs come from
``AosEmulator.add_job`` / ``POST /_emulator/jobs`` and from the restore endpoint.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote, urlencode

from .config import EmulatorConfig
from .data import GEO_LOCATIONS, to_utc
from .routing import ApiError, Reply, Request, Route, graph_error, trace_id

SERVICES: tuple[str, ...] = (
    "m365", "iaas_paas", "dynamics365", "google_workspace", "salesforce", "aos_scan",
)  # fmt: skip
OUTCOMES: tuple[str, ...] = ("succeeded", "failed", "partial", "stopped", "skipped")

# State classes of backup-jobs.md ("State classes used below").
RUNNING, SUCCESS, PARTIAL, FAILED, STOPPED, SKIPPED = (
    "RUNNING", "SUCCESS", "PARTIAL", "FAILED", "STOPPED", "SKIPPED",
)  # fmt: skip
_OUTCOME_CLASS = {
    "succeeded": SUCCESS, "failed": FAILED, "partial": PARTIAL, "stopped": STOPPED, "skipped": SKIPPED,
}  # fmt: skip
_CLASS_OUTCOME = {v: k for k, v in _OUTCOME_CLASS.items()}

RESTORE_SCOPE = "microsoft365backup.restore.readwrite.all"
RESTORE_LIMIT = 3  # restore/export jobs running at once (the 429 below)
RESTORE_BUSY = "There are already 3 restore/export jobs running, cannot start new restore job."
MAX_RESTORE_PATHS = 20
CENTRAL_LOCATION = "PrimaryGeoLocation"  # where detail/restore look without `location`

StateValue = str | int


@dataclass(frozen=True)
class ServiceSpec:
    """A service's scope, its state values (wire value -> class) and its default values."""

    name: str
    scope: str
    states: Mapping[StateValue, str]
    running: StateValue  # shown while a job runs
    finals: Mapping[str, StateValue]  # outcome -> value shown once it has ended
    pending: StateValue | None = None  # shown before a job's start time (IaaS "Not Started")


SPECS: dict[str, ServiceSpec] = {
    "m365": ServiceSpec(
        "m365", "microsoft365backup.jobInfo.read.all",
        {"In Progress": RUNNING, "Finished": SUCCESS, "Failed": FAILED,
         "Finished with Exception": PARTIAL, "Partially Finished": PARTIAL},
        "In Progress",
        {"succeeded": "Finished", "failed": "Failed", "partial": "Finished with Exception"},
    ),
    "iaas_paas": ServiceSpec(
        "iaas_paas", "platformbackup.readwrite.all",
        {0: RUNNING, 1: RUNNING, 2: SUCCESS, 4: SKIPPED, 8: PARTIAL, 16: FAILED, 32: RUNNING,
         64: STOPPED},
        1,
        {"succeeded": 2, "skipped": 4, "partial": 8, "failed": 16, "stopped": 64},
        pending=0,
    ),
    "dynamics365": ServiceSpec(
        "dynamics365", "dynamics.readwrite.all",
        {2: RUNNING, 3: SUCCESS, 4: FAILED, 7: PARTIAL},
        2,
        {"succeeded": 3, "failed": 4, "partial": 7},
    ),
    "google_workspace": ServiceSpec(
        "google_workspace", "gsuite.graph.read.all",
        {0: RUNNING, 2: SUCCESS, 3: FAILED, 7: PARTIAL},
        0,
        {"succeeded": 2, "failed": 3, "partial": 7},
    ),
    "salesforce": ServiceSpec(
        "salesforce", "salesforce.public.read.all",
        {1: RUNNING, 2: SUCCESS, 3: PARTIAL, 4: FAILED, 5: RUNNING, 6: STOPPED, 7: SKIPPED},
        1,
        {"succeeded": 2, "partial": 3, "failed": 4, "stopped": 6, "skipped": 7},
    ),
    "aos_scan": ServiceSpec(
        "aos_scan", "autodiscovery.readwrite.all",
        {1: RUNNING, 2: SUCCESS, 3: FAILED, 4: PARTIAL, 5: SKIPPED, 10: STOPPED},
        1,
        {"succeeded": 2, "failed": 3, "partial": 4, "skipped": 5, "stopped": 10},
    ),
}  # fmt: skip

# Job type codes per service (the first is the default of add_job) and seeding weights.
JOB_TYPES: dict[str, dict[int, int]] = {
    "m365": {1: 70, 2: 10, 3: 8, 4: 6, 5: 6},  # Backup, Restore, Export, Deletion, Retention
    "iaas_paas": {1: 30, 2: 5, 128: 15, 1024: 15, 20016: 10, 20009: 8, 60000: 8, 64: 5, 90110: 4},
    "dynamics365": {1: 70, 2: 10, 4: 5, 8: 5, 16: 5, 32: 5},
    "google_workspace": {1: 60, 2: 10, 3: 8, 4: 5, 5: 12, 6: 5},
    "salesforce": {1: 50, 2: 15, 3: 8, 9: 7, 11: 10, 20: 10},
    "aos_scan": {0: 70, 10: 20, 11: 10},
}
_OUTCOME_WEIGHTS = {"succeeded": 70, "failed": 10, "partial": 12, "stopped": 4, "skipped": 4}

# Filter enums (backup-jobs.md), for 400s on unknown values.
_M365_OBJECT_TYPES = range(13)  # 0 All .. 12 Power Apps
_M365_STATE_FILTER = {1: "In Progress", 2: "Finished", 3: "Failed", 4: "Finished with Exception",
                      5: "Partially Finished"}  # fmt: skip
_M365_SERVICE_TO_OBJECT = {1: 2, 2: 3, 3: 4, 6: 7}  # restore serviceType -> list objectType
_IAAS_SERVICE_OF_TYPE = {1: 1, 2: 1, 4: 1, 33: 1, 64: 128, 128: 2, 256: 2, 257: 2, 1024: 4, 2048: 4,
                         4096: 4, 20016: 2048, 20017: 2048, 20009: 256, 20010: 256, 60000: 20000,
                         60001: 20000, 90110: 26000, 90120: 26000}  # fmt: skip
_IAAS_SERVICE_TYPES = frozenset({1, 2, 4, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 20000, 21000,
                                 23000, 24000, 25000, 26000, 27000})  # fmt: skip
_IAAS_JOB_TYPES = frozenset({1, 2, 4, 33, 64, 128, 256, 257, 1024, 2048, 4096, 20003, 20004, 20006, 20009,
                             20010, 20012, 20013, 20014, 20015, 20016, 20017, 20018, 20019, 20020, 20022,
                             20023, 20024, 20025, 30003, 40000, 40001, 60000, 60001, 60010, 60011, 60100,
                             60101, 70010, 70011, 70012, 80000, 80010, 90000, 90001, 90002, 90110,
                             90120})  # fmt: skip
_IAAS_BACKUP_TYPES = frozenset({1, 128, 1024, 20003, 20009, 20012, 20014, 20016, 20019, 20022, 40000, 60000,
                                 60010, 60100, 70010, 80000, 90000, 90110})  # fmt: skip
_IAAS_RESTORE_TYPES = frozenset({2, 256, 2048, 20006, 20010, 20013, 20015, 20017, 20018, 20020, 20023, 60001,
                                  60011, 60101, 70011, 80010, 90001, 90120})  # fmt: skip
# Added jobs are where a default query finds them: the central M365 location (the detail
# endpoint's default), the Google Admin data source (the list's default dataSource).
_ADDED_JOB_ATTRS: dict[str, dict[str, Any]] = {
    "m365": {"location": "PrimaryGeoLocation"},
    "google_workspace": {"dataSource": 1},
}
_GOOGLE_APP_TYPES = (1, 2, 4, 8, 64, 128, 256, 512, 4096, 8192, 16384, 32768)
_D365_ORGS = (("6c1d2f0e-5a8b-4c3d-9e7f-a1b2c3d4e5f6", "uatorg123"),
              ("0f9e8d7c-6b5a-4938-8271-605f4e3d2c1b", "contoso-prod"))  # fmt: skip
_SF_ORGS = ("00D5g000004ABCDEA2", "00D5g000007WXYZEA0")
_SCAN_PROFILES = ("scan sharepoint sites", "scan power platform", "scan teams", "scan google drives",
                  "batch import")  # fmt: skip

_M365_ERRORS = (
    {"isErrorCode": True, "value": "The mailbox could not be found.",
     "url": "https://cloud.avepoint.com/errorcodes/FBMB0001", "number": 2},
    {"isErrorCode": True, "value": "Access to the site was denied.",
     "url": "https://cloud.avepoint.com/errorcodes/FBSP0403", "number": 1},
    {"isErrorCode": False, "value": "The item exceeds the maximum size and was skipped.", "url": "",
     "number": 3},
)  # fmt: skip
_IAAS_COMMENTS = {
    "failed": "The snapshot of the virtual machine could not be created.",
    "partial": "Some objects failed: the storage account key was rotated during the backup.",
    "stopped": "The job was stopped by an administrator.",
    "skipped": "The job was skipped because the previous job was still running.",
}


# -- time formats ----------------------------------------------------------------------------


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _fmt_z(ts: float) -> str:  # 2024-12-02T07:52:25Z (M365, IaaS, Salesforce)
    return _dt(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt_ms_z(ts: float) -> str:  # 2022-08-19T03:12:43.823Z (Dynamics 365)
    return _dt(ts).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fmt_google(ts: float) -> str:  # 2024-10-09T05:34:31+00:00 / 2024-10-09T05:50:36.008+00:00
    d = _dt(ts)
    return d.isoformat(timespec="seconds" if d.microsecond < 1000 else "milliseconds")


def _fmt_7(ts: float) -> str:  # 2024-09-26T05:58:40.4092427+00:00 (AOS scan)
    d = _dt(ts)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond:06d}0+00:00"


def _ts14(ts: float) -> str:
    return _dt(ts).strftime("%Y%m%d%H%M%S")


def timespan(seconds: float) -> str:
    """A .NET TimeSpan string: ``hh:mm:ss`` or ``d.hh:mm:ss``."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    text = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}.{text}" if days else text


def _now_utc_text(now: float) -> str:
    return _dt(now).isoformat(timespec="microseconds").replace("+00:00", "Z")


# -- the jobs ----------------------------------------------------------------------------------


@dataclass
class Job:
    """One job; its state at time t follows from ``start``, ``run_seconds`` and the final state."""

    service: str
    job_id: str
    start: float  # epoch seconds
    run_seconds: float
    job_type: int
    final_state: StateValue
    running_state: StateValue
    total: int  # items (objects, entities, files...) the job handles
    failed: int
    skipped: int
    errors: list[dict[str, object]] = field(default_factory=list)  # M365 jobErrors
    comments: str = ""  # IaaS comments
    attrs: dict[str, Any] = field(default_factory=dict)  # service-specific fixed fields
    seq: int = 0  # creation order, breaks ties between equal start times

    @property
    def end(self) -> float:
        return self.start + self.run_seconds

    @property
    def outcome_class(self) -> str:
        return SPECS[self.service].states[self.final_state]

    def is_running(self, now: float) -> bool:
        return now < self.end

    def state(self, now: float) -> StateValue:
        spec = SPECS[self.service]
        if now < self.start and spec.pending is not None and self.running_state == spec.running:
            return spec.pending
        return self.running_state if self.is_running(now) else self.final_state

    def state_class(self, now: float) -> str:
        return SPECS[self.service].states[self.state(now)]

    def progress(self, now: float) -> float:
        if not self.is_running(now):
            return 1.0
        if now <= self.start or self.run_seconds <= 0:
            return 0.0
        return min(0.99, (now - self.start) / self.run_seconds)

    def elapsed(self, now: float) -> float:
        return max(0.0, min(now, self.end) - self.start)

    def counts(self, now: float) -> tuple[int, int, int, int]:
        """(total, failed, successful, skipped) as of `now`; partial while running."""
        succeeded = self.total - self.failed - self.skipped
        if not self.is_running(now):
            return self.total, self.failed, succeeded, self.skipped
        frac = self.progress(now)
        return self.total, int(self.failed * frac), int(succeeded * frac), int(self.skipped * frac)

    def status(self, now: float) -> dict[str, object]:
        """The admin view: state value and class now, and when it ends."""
        return {
            "service": self.service,
            "jobId": self.job_id,
            "jobType": self.job_type,
            "state": self.state(now),
            "stateClass": self.state_class(now),
            "running": self.is_running(now),
            "finalState": self.final_state,
            "startTime": _fmt_ms_z(self.start),
            "endTime": _fmt_ms_z(self.end),
        }


def _weighted(rng: random.Random, weights: Mapping[Any, int]) -> Any:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def _counts_for(rng: random.Random, outcome_class: str) -> tuple[int, int, int]:
    """(total, failed, skipped) consistent with how the job ended."""
    total = rng.randint(1, 200)
    if outcome_class == SKIPPED:
        return total, 0, total
    if outcome_class == FAILED:
        return total, total, 0
    if outcome_class == PARTIAL:
        total = max(total, 2)
        failed = rng.randint(1, total - 1)
        return total, failed, rng.randint(0, total - failed - 1)
    if outcome_class == STOPPED:
        return total, 0, rng.randint(1, total)
    return total, 0, rng.randint(0, total // 10)


class JobStore:
    """All jobs of all services; thread-safe."""

    def __init__(self, seed: int, per_service: int, data_start: datetime, data_end: datetime) -> None:
        if per_service < 0:
            raise ValueError("jobs_per_service must be >= 0")
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Job]] = {s: {} for s in SERVICES}
        self._seq = 0
        self._restore_counter = 0
        self._request_counter = 0
        self._conn_id = "".join(
            random.Random(seed).choices("0123456789ABCDEFGHIJKLMNOPQRSTUV", k=13)
        )  # like Kestrel's "0HNEVHLNSPSEJ"
        lo, hi = to_utc(data_start).timestamp(), to_utc(data_end).timestamp()
        for service in SERVICES:
            rng = random.Random(f"aos-emulator-jobs|{seed}|{service}")
            starts = sorted(rng.randrange(int(lo), int(hi)) for _ in range(per_service))
            for start in starts:
                self._seed_job(rng, service, float(start))

    # -- creation ----------------------------------------------------------------------------

    def _seed_job(self, rng: random.Random, service: str, start: float) -> None:
        spec = SPECS[service]
        outcome = _weighted(rng, {o: w for o, w in _OUTCOME_WEIGHTS.items() if o in spec.finals})
        final = spec.finals[outcome]
        if service == "m365" and outcome == "partial" and rng.random() < 0.5:
            final = "Partially Finished"  # both PARTIAL labels occur (backup-jobs.md §1.1)
        # 20 s .. ~2 days, log-uniform, with milliseconds.
        run = round(math.exp(rng.uniform(math.log(20), math.log(170_000))), 3)
        self._create(
            rng, service, start=start, run_seconds=run, job_type=_weighted(rng, JOB_TYPES[service]),
            final_state=final, running_state=spec.running, errors=None,
        )  # fmt: skip

    def add(
        self,
        service: str,
        *,
        outcome: str = "succeeded",
        run_seconds: float = 2.0,
        start: float,
        errors: Sequence[object] | None = None,
        job_type: int | None = None,
        final_state: StateValue | None = None,
        running_state: StateValue | None = None,
    ) -> Job:
        """Validate and add a job (see ``AosEmulator.add_job``)."""
        if service not in SPECS:
            raise ValueError(f"service must be one of {SERVICES}")
        spec = SPECS[service]
        if final_state is None:
            if outcome not in spec.finals:
                raise ValueError(f"{service} jobs end as one of {tuple(spec.finals)}, not {outcome!r}")
            final_state = spec.finals[outcome]
        else:
            final_state = self._state_value(spec, final_state, "final_state")
            if spec.states[final_state] == RUNNING:
                raise ValueError("final_state must be a terminal state")
        if running_state is None:
            running_state = spec.running
        else:
            running_state = self._state_value(spec, running_state, "running_state")
            if spec.states[running_state] != RUNNING:
                raise ValueError("running_state must be a running state")
        if isinstance(run_seconds, bool) or not isinstance(run_seconds, (int, float)) or run_seconds < 0:
            raise ValueError("run_seconds must be a non-negative number")
        if job_type is None:
            job_type = next(iter(JOB_TYPES[service]))
        elif isinstance(job_type, bool) or not isinstance(job_type, int):
            raise ValueError("job_type must be an integer")
        with self._lock:
            rng = random.Random(f"{service}|{start}|{self._seq}")
        return self._create(
            rng, service, start=start, run_seconds=float(run_seconds), job_type=job_type,
            final_state=final_state, running_state=running_state, errors=errors,
            attrs=_ADDED_JOB_ATTRS.get(service),
        )  # fmt: skip

    @staticmethod
    def _state_value(spec: ServiceSpec, value: object, name: str) -> StateValue:
        for known in spec.states:
            if known == value or (
                isinstance(known, str) and isinstance(value, str) and known.lower() == value.lower()
            ):
                return known
        raise ValueError(f"{name} must be one of {list(spec.states)} for {spec.name}")

    def _create(self, rng: random.Random, service: str, **kwargs: Any) -> Job:
        job = self._build(rng, service, **kwargs)
        with self._lock:
            self._insert(rng, job)
        return job

    def _insert(self, rng: random.Random, job: Job, job_id: str | None = None) -> None:
        """Number and store a job; the caller holds the lock."""
        self._seq += 1
        job.seq = self._seq
        job.job_id = job_id or self._new_id(rng, job.service, job.job_type, job.start)
        self._jobs[job.service][job.job_id] = job

    def _build(
        self,
        rng: random.Random,
        service: str,
        *,
        start: float,
        run_seconds: float,
        job_type: int,
        final_state: StateValue,
        running_state: StateValue,
        errors: Sequence[object] | None,
        attrs: Mapping[str, Any] | None = None,
        total: int | None = None,
        location: str | None = None,
    ) -> Job:
        cls = SPECS[service].states[final_state]
        n_total, n_failed, n_skipped = _counts_for(rng, cls)
        if total is not None:  # a restore of `total` paths
            n_total = total
            n_failed = {FAILED: total, PARTIAL: min(total - 1, max(1, total // 2))}.get(cls, 0)
            n_skipped = 0
        job = Job(
            service=service, job_id="", start=start, run_seconds=run_seconds, job_type=job_type,
            final_state=final_state, running_state=running_state, total=n_total, failed=n_failed,
            skipped=n_skipped,
        )  # fmt: skip
        job.attrs = self._attrs(rng, service, job_type)
        if location is not None:
            job.attrs["location"] = location
        job.attrs.update(attrs or {})
        bad = cls in (FAILED, PARTIAL)
        if service == "m365" and bad:
            job.errors = (
                _m365_errors(errors) if errors is not None else [dict(_M365_ERRORS[rng.randrange(3)])]
            )
        if service == "iaas_paas" and cls != SUCCESS:
            job.comments = (
                _comment_text(errors) if errors is not None else _IAAS_COMMENTS[_CLASS_OUTCOME[cls]]
            )
        return job

    @staticmethod
    def _attrs(rng: random.Random, service: str, job_type: int) -> dict[str, Any]:
        if service == "m365":
            loc = CENTRAL_LOCATION if rng.random() < 0.8 else rng.choice(("NAM", "EUR"))
            return {"objectType": rng.randint(1, 12), "location": loc}
        if service == "iaas_paas":
            return {"serviceType": _IAAS_SERVICE_OF_TYPE.get(job_type, 128)}
        if service == "dynamics365":
            org_id, org_name = rng.choice(_D365_ORGS)
            return {"organizationId": org_id, "organizationName": org_name,
                    "recordsPerEntity": rng.randint(1, 500), "bytesPerRecord": rng.randint(200, 4000)}  # fmt: skip
        if service == "google_workspace":
            return {"appType": rng.choice(_GOOGLE_APP_TYPES), "dataSource": 1 if rng.random() < 0.8 else 2,
                    "operator": "System" if job_type in (1, 5) else "admin@contoso.com"}  # fmt: skip
        if service == "salesforce":
            return {"organizationId": rng.choice(_SF_ORGS), "level": rng.randint(1, 5),
                    "metadata": rng.randint(0, 50), "recordsPerObject": rng.randint(0, 2000)}  # fmt: skip
        category = 3 if job_type == 10 else rng.choice((0, 0, 1, 2))
        return {"category": category, "scanProfileName": rng.choice(_SCAN_PROFILES)}

    def _new_id(self, rng: random.Random, service: str, job_type: int, start: float) -> str:
        """A documented-looking, unique ID; the caller holds the lock."""
        taken = self._jobs[service]
        stamp = _ts14(start)
        for _ in range(1000):
            if service == "m365":
                prefix = {1: "FB", 2: "RS", 3: "EX", 4: "DL", 5: "RT"}.get(job_type, "FB")
                job_id = f"{prefix}{stamp}{rng.randrange(10**6):06d}"
            elif service == "iaas_paas":
                prefix = (
                    rng.choice(("FB", "IB")) if job_type in _IAAS_BACKUP_TYPES
                    else "RS" if job_type in _IAAS_RESTORE_TYPES
                    else "DR" if job_type in (64, 30003)
                    else "EX"
                )  # fmt: skip
                job_id = f"{prefix}{stamp}{rng.randrange(1000):03d}"
            elif service == "dynamics365":
                kind = {1: "IB", 2: "RS", 4: "DR", 8: "RT", 16: "AB", 32: "EX"}.get(job_type, "IB")
                job_id = f"DC{kind}{stamp}{rng.randrange(10**8):08d}"
            elif service == "google_workspace":
                kind = {1: "IB", 2: "RS", 3: "EX", 4: "DL", 5: "IG", 6: "GR"}.get(job_type, "IB")
                job_id = f"GD{kind}{stamp}"
            elif service == "salesforce":
                prefix = {1: "FB", 2: "OB", 3: "RS", 9: "RT", 11: "EX", 20: "AI"}.get(job_type, "JB")
                job_id = f"{prefix}{stamp}{rng.randrange(10**6):06d}"
            else:
                job_id = f"Scan{stamp}{rng.randrange(10**6):06d}"
            if job_id not in taken:
                return job_id
            stamp = _ts14(start + rng.randint(1, 3600))  # Google IDs have no random part
        raise RuntimeError("could not make a unique job id")

    def add_restore(
        self, now: float, total: int, object_type: int, location: str, cfg: EmulatorConfig
    ) -> str | None:
        """Start an M365 restore job, or None when 3 restore/export jobs already run (429)."""
        spec = SPECS["m365"]
        rng = random.Random(f"restore|{now}|{total}")
        job = self._build(
            rng, "m365", start=now, run_seconds=cfg.restore_seconds, job_type=2,
            final_state=spec.finals[cfg.restore_outcome], running_state=spec.running, errors=None,
            attrs={"objectType": object_type}, total=total, location=location,
        )  # fmt: skip
        with self._lock:  # check and insert atomically, so parallel posts cannot pass the limit
            busy = sum(1 for j in self._jobs["m365"].values() if j.job_type in (2, 3) and j.is_running(now))
            if busy >= RESTORE_LIMIT:
                return None
            job_id = ""
            while not job_id or job_id in self._jobs["m365"]:
                self._restore_counter += 1
                job_id = f"RS{_ts14(now)}{self._restore_counter % 10_000:04d}"
            self._insert(rng, job, job_id)
        return job_id

    # -- reading -----------------------------------------------------------------------------

    def get(self, service: str, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs[service].get(job_id)

    def newest_first(self, service: str) -> list[Job]:
        with self._lock:
            jobs = list(self._jobs[service].values())
        jobs.sort(key=lambda j: (j.start, j.seq), reverse=True)
        return jobs

    def envelope_ids(self, now: float) -> tuple[str, str, str]:
        """(requestId, timestamp, traceId) of the Backup ApiResult."""
        with self._lock:
            self._request_counter += 1
            counter = self._request_counter
        tid = trace_id().replace("-", "")
        return (
            f"{self._conn_id}:{counter:08X}",
            _now_utc_text(now),
            f"00-{tid}-{hashlib.blake2b(tid.encode(), digest_size=8).hexdigest()}-00",
        )


def _m365_errors(errors: Sequence[object]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for item in errors:
        if isinstance(item, Mapping):
            out.append(
                {
                    "isErrorCode": bool(item.get("isErrorCode", False)),
                    "value": str(item.get("value", "")),
                    "url": str(item.get("url", "")),
                    "number": int(item.get("number", 1)),
                }
            )
        else:
            out.append({"isErrorCode": False, "value": str(item), "url": "", "number": 1})
    return out


def _comment_text(errors: Sequence[object]) -> str:
    return "; ".join(str(e.get("value", "")) if isinstance(e, Mapping) else str(e) for e in errors)


# -- query parameters ------------------------------------------------------------------------


class _Params:
    """Reads query parameters and collects ``InvalidParameter`` errors instead of raising."""

    def __init__(self, req: Request) -> None:
        self.req = req
        self.errors: list[ApiError] = []

    def error(self, name: str, message: str) -> None:
        self.errors.append({"code": "InvalidParameter", "field": name, "message": message})

    def text(self, name: str) -> str | None:
        value = self.req.param(name.lower())
        return value if value is not None and value.strip() else None

    def integer(
        self,
        name: str,
        default: int | None = None,
        *,
        allowed: Iterable[int] | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
        required: bool = False,
    ) -> int | None:
        raw = self.text(name)
        if raw is None:
            if required:
                self.error(name, f"The {name} field is required.")
            return default
        try:
            value = int(raw.strip())
        except ValueError:
            self.error(name, f"The value '{raw}' is not valid for {name}.")
            return default
        if allowed is not None and value not in set(allowed):
            self.error(name, f"The value '{raw}' is not valid for {name}.")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = (
                f"{minimum if minimum is not None else '-inf'}..{maximum if maximum is not None else 'inf'}"
            )
            self.error(name, f"{name} must be within {bounds}.")
            return default
        return value

    def time(self, name: str, *, required: bool = False, end: bool = False) -> float | None:
        """Epoch seconds; a date-only end bound covers its whole day."""
        raw = self.text(name)
        if raw is None:
            if required:
                self.error(name, f"The {name} field is required.")
            return None
        try:
            value = to_utc(datetime.fromisoformat(raw.strip()))
        except ValueError:
            self.error(name, f"The value '{raw}' is not a valid ISO 8601 date-time for {name}.")
            return None
        if end and len(raw.strip()) == 10:
            value += timedelta(days=1) - timedelta(microseconds=1)
        return value.timestamp()

    def window(self, start_name: str, end_name: str, *, required: bool) -> tuple[float | None, float | None]:
        lo = self.time(start_name, required=required)
        hi = self.time(end_name, required=required, end=True)
        if lo is not None and hi is not None and hi < lo:
            self.error(end_name, f"{end_name} must not be earlier than {start_name}.")
        return lo, hi

    def location(self) -> str | None:
        raw = self.text("location")
        if raw is None:
            return None
        match = next((g for g in GEO_LOCATIONS if g.lower() == raw.strip().lower()), None)
        if match is None:
            self.error("location", f"The value '{raw}' is not a valid location.")
        return match


def _in_window(job: Job, lo: float | None, hi: float | None) -> bool:
    return (lo is None or job.start >= lo) and (hi is None or job.start <= hi)


def _link(base: str, pairs: Sequence[tuple[str, object]]) -> str:
    return base + "?" + urlencode([(k, str(v)) for k, v in pairs], quote_via=quote, safe=":")


def _given(req: Request, names: Sequence[str]) -> list[tuple[str, object]]:
    """The request's own values of `names` (camelCase), to carry into a next link."""
    return [(n, req.param(n.lower())) for n in names if req.param(n.lower()) not in (None, "")]


def _opaque(payload: Mapping[str, object]) -> str:
    """An opaque, already percent-encoded token (like the IaaS/Google samples: ``%2F``, ``%2B``)."""
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return quote(base64.b64encode(b"\x9b\xfe" + raw).decode(), safe="")


def _unopaque(token: str) -> dict[str, Any]:
    """Read a token sent back raw (``%2F`` kept) or decoded once, even with ``+`` turned to space."""
    text = unquote(token) if "%" in token else token
    text = text.replace(" ", "+")
    try:
        raw = base64.b64decode(text, validate=True)
        payload = json.loads(raw[2:]) if raw[:2] == b"\x9b\xfe" else None
    except (binascii.Error, ValueError):
        payload = None
    if not isinstance(payload, dict):
        raise ValueError("invalid skiptoken")
    return payload


def _fingerprint(*parts: object) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=6).hexdigest()


# -- the service -----------------------------------------------------------------------------


class JobsService:
    """The job routes of the six services over one ``JobStore``."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def routes(self) -> list[Route]:
        def route(method: str, path: str, name: str, scope: str, handler: Callable[[Request], Reply],
                  error: Callable[[int, str, Sequence[ApiError]], Reply], target: str) -> Route:  # fmt: skip
            err_stat = "restore_error" if target == "restore" else "jobs_error"
            return Route(method, re.compile(path), name, scope, handler, error, err_stat, (target,))

        m365 = SPECS["m365"].scope
        return [
            route("GET", r"/backup/m365/cloudbackupjobs", "jobs_m365", m365, self.m365_list,
                  self._api_error, "jobs"),
            route("GET", r"/backup/m365/cloudbackupjobs/(?P<job_id>[^/]+)", "jobs_m365_detail", m365,
                  self.m365_detail, self._api_error, "jobs"),
            route("POST", r"/backup/m365/restore/jobs", "restore_post", RESTORE_SCOPE, self.m365_restore,
                  self._api_error, "restore"),
            route("GET", r"/backup/vm/jobs", "jobs_iaas_paas", SPECS["iaas_paas"].scope, self.iaas_list,
                  self._iaas_error, "jobs"),
            route("GET", r"/dynamicsbackup/jobs", "jobs_dynamics365", SPECS["dynamics365"].scope,
                  self.d365_list, self._d365_error, "jobs"),
            route("GET", r"/backup/google/admin/jobs", "jobs_google_workspace",
                  SPECS["google_workspace"].scope, self.google_list, self._google_error, "jobs"),
            route("GET", r"/backup/sfbapi/jobs", "jobs_salesforce", SPECS["salesforce"].scope,
                  self.salesforce_list, self._api_error, "jobs"),
            route("GET", r"/aos/jobs", "jobs_aos_scan", SPECS["aos_scan"].scope, self.scan_list,
                  graph_error, "jobs"),
        ]  # fmt: skip

    # -- envelopes ---------------------------------------------------------------------------

    def _api_result(self, now: float, status: int, data: object, *, message: str = "",
                    errors: Sequence[ApiError] | None = None,
                    metadata: Mapping[str, object] | None = None) -> dict[str, object]:  # fmt: skip
        """The Backup ApiResult (M365, Salesforce); key order as in the samples."""
        request_id, stamp, tid = self.store.envelope_ids(now)
        body: dict[str, object] = {"statusCode": status, "message": message}
        if errors is not None:
            body["errors"] = list(errors)
        body.update({"data": data, "requestId": request_id, "timestamp": stamp})
        if metadata is not None:
            body["metadata"] = dict(metadata)
        body["traceId"] = tid
        return body

    def _api_error(self, status: int, message: str, errors: Sequence[ApiError]) -> Reply:
        body = self._api_result(time.time(), status, None, message=message, errors=errors)
        return Reply(status, body, {"x-trace-id": str(body["traceId"])})

    def _invalid(self, params: _Params, make: Callable[[int, str, Sequence[ApiError]], Reply]) -> Reply:
        fields = ", ".join(e["field"] for e in params.errors)
        reply = make(400, f"One or more parameters are invalid: {fields}.", params.errors)
        reply.stat = "jobs_error"
        return reply

    @staticmethod
    def _iaas_error(status: int, message: str, errors: Sequence[ApiError]) -> Reply:
        codes = {400: "InvalidParameter", 401: "Unauthorized", 403: "Forbidden", 405: "MethodNotAllowed",
                 429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}  # fmt: skip
        tid = trace_id()
        model = {"requestId": tid, "date": _now_utc_text(time.time()), "errorCode": codes.get(status, str(status)),
                 "message": message, "errors": list(errors)}  # fmt: skip
        return Reply(status, {"totalCount": 0, "jobs": [], "nextLink": None, "errorModel": model},
                     {"x-trace-id": tid})  # fmt: skip

    @staticmethod
    def _d365_error(status: int, message: str, errors: Sequence[ApiError]) -> Reply:
        tid = trace_id()
        body = {"statusCode": status, "message": message, "errors": list(errors), "traceId": tid}
        return Reply(status, body, {"x-trace-id": tid})

    @staticmethod
    def _google_error(status: int, message: str, errors: Sequence[ApiError]) -> Reply:
        tid = trace_id()
        body = {"status": status, "message": message, "errors": list(errors), "jobs": [], "nextLink": None}
        return Reply(status, body, {"x-trace-id": tid})

    # -- M365 --------------------------------------------------------------------------------

    @staticmethod
    def _m365_job(job: Job, now: float, count_suffix: str) -> dict[str, object]:
        total, failed, ok, skipped = job.counts(now)
        running = job.is_running(now)
        s = count_suffix
        return {
            "id": job.job_id,
            "state": job.state(now),
            "startTime": _fmt_z(job.start),
            "finishTime": None if running else _fmt_z(job.end),
            "duration": f"{job.elapsed(now) / 3600:.3f}",
            "backupDetails": {
                f"total{s}": total,
                f"failed{s}": failed,
                f"successful{s}": ok,
                f"skipped{s}": skipped,
            },
            "jobErrors": [] if running else [dict(e) for e in job.errors],
        }

    def m365_list(self, req: Request) -> Reply:
        p, cfg = _Params(req), req.config
        lo, hi = p.window("startTime", "finishTime", required=False)
        job_type = p.integer("jobType", 0, allowed=range(6))
        object_type = p.integer("objectType", 0, allowed=_M365_OBJECT_TYPES)
        job_state = p.integer("jobState", 0, allowed=range(6))
        location = p.location()
        page_index = p.integer("pageIndex", 0, minimum=0)
        page_size = p.integer("pageSize", 10, minimum=1, maximum=1000)
        if p.errors:
            return self._invalid(p, self._api_error)
        assert page_index is not None
        assert page_size is not None
        now = req.now
        jobs = [
            j for j in self.store.newest_first("m365")
            if _in_window(j, lo, hi)
            and job_type in (0, j.job_type)
            and object_type in (0, j.attrs["objectType"])
            and location in (None, j.attrs["location"])
            and (job_state == 0 or j.state(now) == _M365_STATE_FILTER.get(job_state or 0))
        ]  # fmt: skip
        page, first = self._page_by_index(jobs, page_index, page_size, cfg.first_page_index)
        suffix = "Number" if cfg.spelling == "table" else "Count"
        next_link = ""
        if (first + 1) * page_size < len(jobs):
            pairs = _given(req, ("startTime", "finishTime", "jobType", "objectType", "jobState", "location"))
            pairs += [("pageIndex", first + 1 + cfg.first_page_index), ("pageSize", page_size)]
            next_link = _link(f"{req.graph_url}/backup/m365/cloudbackupjobs", pairs)
        metadata = {f"total{suffix}": len(jobs), "nextLink": next_link}
        data = [self._m365_job(j, now, suffix) for j in page]
        return Reply(200, self._api_result(now, 200, data, metadata=metadata))

    @staticmethod
    def _page_by_index(jobs: list[Job], index: int, size: int, base: int) -> tuple[list[Job], int]:
        """Page `index` of `jobs` where `base` is the first index; lower indexes alias the first."""
        zero_based = max(index, base) - base
        return jobs[zero_based * size : (zero_based + 1) * size], zero_based

    def m365_detail(self, req: Request) -> Reply:
        p = _Params(req)
        location = p.location()
        if p.errors:
            return self._invalid(p, self._api_error)
        job_id = req.path_args["job_id"]
        job = self.store.get("m365", job_id)
        # Without `location` only the central location is searched (backup-jobs.md §1.2, §8).
        if job is None or job.attrs["location"] != (location or CENTRAL_LOCATION):
            error: ApiError = {
                "code": "NotFound",
                "field": "jobId",
                "message": f"Job {job_id} was not found.",
            }
            reply = self._api_error(404, f"Job {job_id} was not found.", [error])
            reply.stat = "jobs_error"
            return reply
        # The detail sample spells backupDetails *Number in both spellings.
        return Reply(200, self._api_result(req.now, 200, self._m365_job(job, req.now, "Number")))

    def m365_restore(self, req: Request) -> Reply:
        p = _Params(req)
        location = p.location() or CENTRAL_LOCATION
        try:
            body = json.loads(req.body) if req.body else None
        except ValueError:
            body = None
            p.error("body", "The request body is not valid JSON.")
        if body is not None and not isinstance(body, dict):
            p.error("body", "The request body must be a JSON object.")
        elif body is None and not p.errors:
            p.error("body", "The request body is required.")
        paths = 0
        service_type = None
        if isinstance(body, dict):
            service_type, paths = _validate_restore(body, p.error)
        if p.errors:
            reply = self._invalid(p, self._api_error)
            reply.stat = "restore_error"
            return reply
        assert service_type is not None
        job_id = self.store.add_restore(
            req.now, paths, _M365_SERVICE_TO_OBJECT[service_type], location, req.config
        )
        if job_id is None:
            body_429 = self._api_result(req.now, 429, None, message=RESTORE_BUSY)
            return Reply(429, body_429, stat="restore_throttled")
        return Reply(200, self._api_result(req.now, 200, {"jobId": job_id}))

    # -- IaaS + PaaS -------------------------------------------------------------------------

    def iaas_list(self, req: Request) -> Reply:
        p, cfg, now = _Params(req), req.config, req.now
        search = p.text("searchText")
        lo, hi = p.window("startTime", "finishTime", required=False)
        service_type = p.integer("serviceType", allowed=_IAAS_SERVICE_TYPES)
        job_type = p.integer("jobType", allowed=_IAAS_JOB_TYPES)
        page_number = p.integer("pageNumber", 0, minimum=0)
        page_size = p.integer("pageSize", 10, minimum=1, maximum=1000)
        token = req.param("skiptoken")
        fp = _fingerprint(search, lo, hi, service_type, job_type, page_size)
        if token:  # pageNumber is ignored when skiptoken is set
            try:
                payload = _unopaque(token)
                if payload.get("q") != fp or not isinstance(payload.get("p"), int):
                    raise ValueError("invalid skiptoken")
                page_number = payload["p"]
            except ValueError:
                p.error("skiptoken", "The skiptoken is invalid or does not belong to this query.")
        if p.errors:
            return self._invalid(p, self._iaas_error)
        assert page_number is not None
        assert page_size is not None
        needle = (search or "").lower()
        jobs = [
            j for j in self.store.newest_first("iaas_paas")
            if _in_window(j, lo, hi)
            and (not needle or needle in j.job_id.lower() or needle in j.comments.lower())
            and service_type in (None, j.attrs["serviceType"])
            and job_type in (None, j.job_type)
        ]  # fmt: skip
        page = jobs[page_number * page_size : (page_number + 1) * page_size]
        more = (page_number + 1) * page_size < len(jobs)
        token_out = _opaque({"p": page_number + 1, "q": fp, "n": now}) if more else None
        body: dict[str, object] = {"totalCount": len(jobs), "jobs": [self._iaas_job(j, now) for j in page]}
        body["nextlink" if cfg.spelling == "table" else "nextLink"] = token_out
        if cfg.spelling == "table":
            body["errorModel"] = None
        return Reply(200, body)

    @staticmethod
    def _iaas_job(job: Job, now: float) -> dict[str, object]:
        total, failed, ok, skipped = job.counts(now)
        running = job.is_running(now)
        return {
            "jobId": job.job_id, "jobType": job.job_type, "status": job.state(now),
            "failedCount": failed, "successfulCount": ok, "skippedCount": skipped, "totalCount": total,
            "startTime": _fmt_z(job.start), "finishTime": None if running else _fmt_z(job.end),
            "duration": timespan(job.elapsed(now)), "comments": "" if running else job.comments,
        }  # fmt: skip

    # -- Dynamics 365 ------------------------------------------------------------------------

    def d365_list(self, req: Request) -> Reply:
        p, now = _Params(req), req.now
        page_index = p.integer("pageIndex", 1, minimum=1)
        page_size = p.integer("pageSize", 10, minimum=1, maximum=1000)
        type_ = p.integer("type", required=True, minimum=0, maximum=63)
        lo, hi = p.window("startTime", "finishTime", required=True)
        status = p.integer("status", allowed=(2, 3, 4, 7))
        org = p.text("organizationId")
        if p.errors:
            return self._invalid(p, self._d365_error)
        assert page_index is not None
        assert page_size is not None
        assert type_ is not None
        jobs = [
            j for j in self.store.newest_first("dynamics365")
            if _in_window(j, lo, hi)
            and (type_ == 0 or j.job_type & type_)
            and status in (None, j.state(now))
            and (org is None or org.lower() == j.attrs["organizationId"].lower())
        ]  # fmt: skip
        page = jobs[(page_index - 1) * page_size : page_index * page_size]
        next_link = None
        if page_index * page_size < len(jobs):
            pairs: list[tuple[str, object]] = [("pageIndex", page_index + 1), ("pageSize", page_size)]
            pairs += _given(req, ("startTime", "finishTime", "type", "status", "organizationId"))
            next_link = _link("/jobs", pairs)  # relative, without /dynamicsbackup, as documented
        return Reply(
            200,
            {"totalCount": len(jobs), "nextLink": next_link, "jobs": [self._d365_job(j, now) for j in page],
             "pageIndex": page_index, "pageSize": page_size},
        )  # fmt: skip

    @staticmethod
    def _d365_job(job: Job, now: float) -> dict[str, object]:
        total, failed, ok, skipped = job.counts(now)
        per, size = job.attrs["recordsPerEntity"], job.attrs["bytesPerRecord"]
        warning = 1 if job.outcome_class == PARTIAL and ok and not job.is_running(now) else 0
        return {
            "module": "Customer Engagement", "type": job.job_type, "jobId": job.job_id,
            "startTime": _fmt_ms_z(job.start),
            "finishTime": None if job.is_running(now) else _fmt_ms_z(job.end),
            "durationHours": job.elapsed(now) / 3600, "status": job.state(now),
            "successfulEntity": ok - warning, "failedEntity": failed, "skippedEntity": skipped,
            "warningEntity": warning, "totalEntity": total,
            "successfulRecord": (ok - warning) * per, "failedRecord": failed * per,
            "skippedRecord": skipped * per, "warningRecord": warning * per, "totalRecord": total * per,
            "backupSize": ok * per * size,
            "organizationId": job.attrs["organizationId"], "organizationName": job.attrs["organizationName"],
        }  # fmt: skip

    # -- Google Workspace --------------------------------------------------------------------

    def google_list(self, req: Request) -> Reply:
        p, now = _Params(req), req.now
        data_source = p.integer("dataSource", 1, allowed=(1, 2))
        app_type = p.integer("appType", allowed=_GOOGLE_APP_TYPES)
        page_index = p.integer("pageIndex", 0, minimum=0)
        page_size = p.integer("pageSize", 100, minimum=1, maximum=1000)
        job_type = p.integer("jobType", allowed=range(1, 7))
        lo, hi = p.window("startTime", "finishTime", required=False)
        states = (0, 2, 3, 7)
        # The table names the filter jobStatus; the sample query sends status (backup-jobs.md §4).
        status = p.integer("jobStatus", allowed=states)
        if status is None:
            status = p.integer("status", allowed=states)
        if p.errors:
            return self._invalid(p, self._google_error)
        assert page_index is not None
        assert page_size is not None
        jobs = [
            j for j in self.store.newest_first("google_workspace")
            if _in_window(j, lo, hi)
            and j.attrs["dataSource"] == data_source
            and app_type in (None, j.attrs["appType"])
            and job_type in (None, j.job_type)
            and status in (None, j.state(now))
        ]  # fmt: skip
        page = jobs[page_index * page_size : (page_index + 1) * page_size]
        more = (page_index + 1) * page_size < len(jobs)
        token = _opaque({"p": page_index + 1, "s": page_size, "n": now}) if more else None
        return Reply(
            200,
            {
                "status": 200,
                "message": "",
                "jobs": [self._google_job(j, now) for j in page],
                "nextLink": token,
            },
        )

    @staticmethod
    def _google_job(job: Job, now: float) -> dict[str, object]:
        return {
            "jobId": job.job_id, "appType": job.attrs["appType"], "jobType": job.job_type,
            "dataSource": job.attrs["dataSource"], "status": job.state(now),
            "progress": round(job.progress(now) * 100, 1), "startTime": _fmt_google(job.start),
            "finishTime": None if job.is_running(now) else _fmt_google(job.end),
            "operator": job.attrs["operator"],
        }  # fmt: skip

    # -- Salesforce --------------------------------------------------------------------------

    def salesforce_list(self, req: Request) -> Reply:
        p, cfg, now = _Params(req), req.config, req.now
        lo, hi = p.window("startTime", "finishTime", required=True)
        type_ = p.integer("type", 0, allowed=range(23))
        status = p.integer("status", 0, allowed=range(8))
        level = p.integer("level", 0, allowed=range(7))
        org = p.text("organizationId")
        page_index = p.integer("pageIndex", 0, minimum=0)
        page_size = p.integer("pageSize", 10, minimum=1, maximum=1000)
        if p.errors:
            return self._invalid(p, self._api_error)
        assert page_index is not None
        assert page_size is not None
        jobs = [
            j for j in self.store.newest_first("salesforce")
            if _in_window(j, lo, hi)
            and type_ in (0, j.job_type)
            and status in (0, j.state(now))
            and level in (0, j.attrs["level"])
            and (org is None or org == j.attrs["organizationId"])
        ]  # fmt: skip
        page, first = self._page_by_index(jobs, page_index, page_size, cfg.first_page_index)
        next_link = ""
        if (first + 1) * page_size < len(jobs):
            pairs = _given(req, ("startTime", "finishTime", "type", "status", "level", "organizationId"))
            pairs += [("pageIndex", first + 1 + cfg.first_page_index), ("pageSize", page_size)]
            next_link = _link(f"{req.graph_url}/backup/sfbapi/jobs", pairs)
        table = cfg.spelling == "table"
        data = {"totalCount": len(jobs), "jobs": [self._sf_job(j, now, table) for j in page],
                "nextLink": next_link}  # fmt: skip
        return Reply(200, self._api_result(now, 200, data))

    @staticmethod
    def _sf_job(job: Job, now: float, table: bool) -> dict[str, object]:
        total, failed, ok, skipped = job.counts(now)
        per, meta = job.attrs["recordsPerObject"], job.attrs["metadata"]
        done = not job.is_running(now)
        body: dict[str, object] = {
            "type": job.job_type, "jobId": job.job_id, "startTime": _fmt_z(job.start),
            "finishTime": _fmt_z(job.end) if done else None,
            # The table names it status, the sample state (backup-jobs.md §5.1).
            ("status" if table else "state"): job.state(now),
            "successfulRecords": ok * per, "skippedRecords": skipped * per, "failedRecords": failed * per,
            "totalRecords": total * per,
            "successfulMetadata": meta if done and job.outcome_class != FAILED else 0,
            "failedMetadata": meta if done and job.outcome_class == FAILED else 0, "totalMetadata": meta,
            "successfulObjects": ok, "skippedObjects": skipped, "failedObjects": failed, "totalObjects": total,
        }  # fmt: skip
        if table:  # the sample omits these three
            body.update({"dataSize": ok * per * 2, "apiCalls": 1 + total // 10 + ok,
                         "organizationId": job.attrs["organizationId"]})  # fmt: skip
        return body

    # -- AOS scan ----------------------------------------------------------------------------

    def scan_list(self, req: Request) -> Reply:
        p, cfg, now = _Params(req), req.config, req.now
        top = p.integer("top", 100, minimum=1, maximum=1000)
        skip = p.integer("skip", 0, minimum=0)
        orderby = p.text("orderby")
        if orderby is not None and orderby.strip().lower() != "starttime":
            p.error("orderby", f"Ordering by '{orderby}' is not supported; use StartTime.")
        sortorder = p.integer("sortorder", 1, allowed=(0, 1))
        search = p.text("search")
        if p.errors:
            reply = graph_error(400, "; ".join(e["message"] for e in p.errors))
            reply.stat = "jobs_error"
            return reply
        assert top is not None
        assert skip is not None
        jobs = [
            j for j in self.store.newest_first("aos_scan")
            if search is None or search.strip().lower() in j.job_id.lower()
        ]  # fmt: skip
        if sortorder == 0:
            jobs.reverse()
        pages = cfg.scan_skip == "pages"
        offset = skip * top if pages else skip
        page = jobs[offset : offset + top]
        if pages:  # as the sample: the walk ends on an empty page
            more = bool(page)
            next_skip = skip + 1
        else:
            more = skip + top < len(jobs)
            next_skip = skip + top
        next_link = None
        if more:
            pairs: list[tuple[str, object]] = [("orderby", orderby or "StartTime"), ("sortorder", sortorder)]
            pairs += [("search", search)] if search is not None else []
            pairs += [("top", top), ("skip", next_skip)]
            next_link = _link(f"{req.graph_url}/aos/jobs", pairs)
        return Reply(
            200,
            {"jobs": [self._scan_job(j, now) for j in page], "nextLink": next_link, "totalCount": len(jobs)},
        )

    @staticmethod
    def _scan_job(job: Job, now: float) -> dict[str, object]:
        return {
            "id": job.job_id, "type": job.job_type, "state": job.state(now),
            "startTime": _fmt_7(job.start), "finishTime": None if job.is_running(now) else _fmt_7(job.end),
            "scanProfileName": job.attrs["scanProfileName"], "category": job.attrs["category"],
            "extension": None,
        }  # fmt: skip


# -- restore body validation -----------------------------------------------------------------

_RECOVERY_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{7})?Z")


def _validate_restore(body: Mapping[str, Any], error: Callable[[str, str], None]) -> tuple[int | None, int]:
    """Check a restore body (backup-jobs.md §1.3); report each problem; (serviceType, path count)."""
    service_type = body.get("serviceType")
    if service_type is None:
        error("serviceType", "The serviceType field is required.")
        service_type = None
    elif isinstance(service_type, bool) or service_type not in (1, 2, 3, 6):
        error("serviceType", "serviceType must be 1 (SharePoint Online), 2 (OneDrive), 3 (Microsoft 365 "
                             "Groups) or 6 (Teams).")  # fmt: skip
        service_type = None
    recovery = body.get("recoveryDateTime")
    if recovery is None:
        error("recoveryDateTime", "The recoveryDateTime field is required.")
    elif not isinstance(recovery, str) or not _RECOVERY_TIME.fullmatch(recovery):
        error(
            "recoveryDateTime",
            "recoveryDateTime must be yyyy-MM-ddTHH:mm:ssZ or yyyy-MM-ddTHH:mm:ss.fffffffZ.",
        )
    else:
        try:
            datetime.strptime(recovery[:19], "%Y-%m-%dT%H:%M:%S")
        except ValueError:
            error("recoveryDateTime", f"recoveryDateTime '{recovery}' is not a valid date and time.")
    if service_type is None:
        return None, 0
    if service_type == 2:
        scope_name, owner_name = "oneDriveRestoreScope", "oneDriveUpn"
    else:
        scope_name, owner_name = "siteRestoreScope", "siteUrl"
    scope = body.get(scope_name)
    if not isinstance(scope, dict):
        error(scope_name, f"The {scope_name} field is required for serviceType {service_type}.")
        return service_type, 0
    owner = scope.get(owner_name)
    if not isinstance(owner, str) or not owner.strip():
        error(f"{scope_name}.{owner_name}", f"The {owner_name} field is required.")
    elif owner_name == "siteUrl" and not re.match(r"https?://[^/\s]+", owner):
        error(f"{scope_name}.siteUrl", "siteUrl must be an absolute URL of a site collection or subsite.")
    elif owner_name == "oneDriveUpn" and "@" not in owner:
        error(f"{scope_name}.oneDriveUpn", "oneDriveUpn must be a user principal name.")
    targets = scope.get("restoreTargets")
    if not isinstance(targets, list) or not targets:
        error(f"{scope_name}.restoreTargets", "At least one restore target is required.")
        return service_type, 0
    total = 0
    for t, target in enumerate(targets):
        where = f"{scope_name}.restoreTargets[{t}]"
        if not isinstance(target, dict):
            error(where, "A restore target must be an object.")
            continue
        library = target.get("libraryName")
        if not isinstance(library, str) or not library.strip():
            error(f"{where}.libraryName", "The libraryName field is required.")
        paths: list[tuple[str, str]] = []  # (normalised path, field)
        given = 0
        for kind in ("files", "folders"):
            items = target.get(kind)
            if items is None:
                continue
            if not isinstance(items, list):
                error(f"{where}.{kind}", f"{kind} must be a list.")
                continue
            given += len(items)
            for i, item in enumerate(items):
                path = item.get("relativePath") if isinstance(item, dict) else None
                name = f"{where}.{kind}[{i}].relativePath"
                if not isinstance(path, str) or not path.strip().strip("/"):
                    error(name, "relativePath must not be empty.")
                    continue
                paths.append((path.strip().strip("/").lower(), name))
        if given == 0:
            error(where, "At least one of files or folders is required.")
        total += given
        for a, name_a in paths:
            for b, name_b in paths:
                if b.startswith(a + "/"):
                    error(name_b, f"A parent and a child path cannot be restored together ({name_a}).")
    if total > MAX_RESTORE_PATHS:
        error(f"{scope_name}.restoreTargets",
              f"At most {MAX_RESTORE_PATHS} file and folder paths can be restored in one job; got {total}.")  # fmt: skip
    return service_type, total
