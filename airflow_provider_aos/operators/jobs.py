"""
What every "start an AOS job, then wait for it" operator shares: push the job id at once, resume the
job on a retry instead of starting a second one, and wait in the worker or the triggerer exactly as
a job sensor does. Service operators (Opus restore, Microsoft 365 restore, ...) say only how to
check their arguments and how to start their job.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Unpack

from airflow.providers.common.compat.sdk import BaseOperator, conf

from airflow_provider_aos.exceptions import AosApiError, AosError, AosJobFailedError
from airflow_provider_aos.hooks.aos import AosHook
from airflow_provider_aos.jobs import JOB_KINDS, AosJob, JobState
from airflow_provider_aos.jobs_api import DEFAULT_MAX_CONSECUTIVE_ERRORS, JobQuery, wait_for_job
from airflow_provider_aos.protocol import RequestOptions
from airflow_provider_aos.sensors.jobs import (
    DEFAULT_FAILURE_STATES,
    DEFAULT_SUCCESS_STATES,
    AosJobSensorFailedError,
    JobVerdict,
    job_from_event,
)
from airflow_provider_aos.triggers.jobs import AosJobTrigger

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

JOB_ID_KEY = "aos_job_id"
"""The XCom key of a started job's id, and its ``task_state_store`` key."""


@dataclass(frozen=True)
class LabelledJobVerdict(JobVerdict):
    """A :class:`JobVerdict` whose failures also name the documented label of a numeric state
    (``raw state 10 'Timed out'``): a bare number means nothing to the person reading the log."""

    def judge(self, job: AosJob, error: type[AosJobFailedError] = AosJobSensorFailedError) -> dict[str, Any]:
        try:
            return super().judge(job, error)
        except AosJobFailedError as exc:
            kind = JOB_KINDS.get(job.kind)
            value = kind.state_value(job.raw_state) if kind is not None else None
            if value is None or value.label == str(job.raw_state):
                raise
            raw = f"(raw state {job.raw_state!r})"
            message = str(exc).replace(raw, f"(raw state {job.raw_state!r} {value.label!r})", 1)
            raise type(exc)(message, job=exc.job) from None

    @classmethod
    def labelled(cls, verdict: JobVerdict) -> LabelledJobVerdict:
        return cls(verdict.success, verdict.failure, verdict.accept_partial)


class AosJobOperatorBase(BaseOperator):
    """
    Start one AOS job and (optionally) wait for it; subclasses implement :meth:`prepare` and
    :meth:`start_job`, and may implement :meth:`after_start`.

    - Every argument is checked (:meth:`prepare`) before the first request.
    - The job id is pushed to XCom (key ``aos_job_id``) as soon as the job exists.
    - A retried task does not start a second job: on Airflow 3.3+ the id is kept in the task
      instance's ``task_state_store`` (same key), and a retry resumes that job while it runs, or
      returns it if it passed; only a job that ended badly is started again. Airflow 2.11 has no
      such store: there a retry after the job was started starts a new one (``retries=0`` avoids it).
    - Waiting is the one poll loop of :func:`~airflow_provider_aos.jobs_api.wait_for_job`: in the
      worker, or (``deferrable``) in the triggerer through :class:`AosJobTrigger`; both return the
      final job as ``AosJob.to_dict()`` and fail alike.
    - AOS answers 429 when it runs as many such jobs as it will: :meth:`start_with_capacity_wait`
      waits that out (``capacity_timeout``) instead of failing.

    Airflow's ``ResumableJobMixin`` (3.3) is not used: it polls in the worker only, and has no
    deferrable path; the store is read and written the same way.

    :param wait: wait for the job to end; otherwise return its id.
    :param deferrable: wait in the triggerer instead of a worker slot.
    :param poll_interval: seconds between polls.
    :param timeout: seconds to wait for the job before failing (the job itself goes on).
    :param success_states: job states that pass (``JobState`` names); ``failure_states``: those that fail.
    :param accept_partial: let a job that finished with exceptions (PARTIAL) pass.
    :param capacity_timeout: seconds to keep trying to start the job while AOS answers 429.
    :param capacity_poll_interval: seconds between those tries.
    :param max_consecutive_errors: transient poll failures in a row tolerated.
    :param aos_conn_id: the AOS connection (templated).
    :return: with ``wait``, the final job as ``AosJob.to_dict()``; else the job id.
    """

    job_kind: ClassVar[str]
    """The :class:`~airflow_provider_aos.jobs.JobKind` name of the started job."""
    job_noun: ClassVar[str] = "jobs"
    """What the job is, in log lines ("AOS is at capacity for restores")."""
    job_id_key: ClassVar[str] = JOB_ID_KEY
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        wait: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 60.0,
        timeout: float | timedelta = 7 * 24 * 3600.0,
        success_states: Iterable[str | JobState] = DEFAULT_SUCCESS_STATES,
        failure_states: Iterable[str | JobState] = DEFAULT_FAILURE_STATES,
        accept_partial: bool = False,
        capacity_timeout: float = 3600.0,
        capacity_poll_interval: float = 60.0,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        aos_conn_id: str = AosHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.wait = wait
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        self.verdict = LabelledJobVerdict.labelled(
            JobVerdict.of(success_states, failure_states, accept_partial)
        )
        self.capacity_timeout = capacity_timeout
        self.capacity_poll_interval = capacity_poll_interval
        self.max_consecutive_errors = max_consecutive_errors
        self.aos_conn_id = aos_conn_id

    # -- what a service operator says ----------------------------------------------------------

    def prepare(self, context: Context) -> Any:
        """Check every (rendered) argument; what :meth:`start_job` needs. No request here."""
        raise NotImplementedError

    def start_job(self, hook: AosHook, prepared: Any, context: Context) -> str:
        """Start the job (any pre-flight request included); its id."""
        raise NotImplementedError

    def after_start(self, hook: AosHook, job_id: str, prepared: Any, context: Context) -> None:
        """Settings of the job that exists (a new one, or one a retry resumes); by default none."""

    def job_query(self, job_id: str) -> JobQuery:
        """How to read the job (a Multi-Geo location, for example, goes into the filters)."""
        return JobQuery(kind=self.job_kind, job_id=job_id)

    # -- the shared flow -----------------------------------------------------------------------

    def _hook(self) -> AosHook:
        return AosHook(aos_conn_id=self.aos_conn_id)

    def execute(self, context: Context) -> Any:
        prepared = self.prepare(context)
        hook = self._hook()
        try:
            job_id, job = self._resume_or_start(hook, prepared, context)
            context["ti"].xcom_push(key=self.job_id_key, value=job_id)
            self.after_start(hook, job_id, prepared, context)
            if not self.wait:
                return job_id
            if job is not None and job.state.is_terminal:
                return self.verdict.judge(job, AosJobFailedError)
            query = self.job_query(job_id)
            if self.deferrable:
                self.defer(
                    trigger=AosJobTrigger(
                        query=query.to_dict(),
                        aos_conn_id=self.aos_conn_id,
                        poll_interval=self.poll_interval,
                        deadline=time.time() + self.timeout,
                        max_consecutive_errors=self.max_consecutive_errors,
                    ),
                    method_name="execute_complete",
                    kwargs={"job_id": job_id},
                )
            event = hook.drive(
                lambda session: wait_for_job(
                    session,
                    query,
                    poll_interval=self.poll_interval,
                    deadline=time.time() + self.timeout,
                    max_consecutive_errors=self.max_consecutive_errors,
                )
            )
        finally:
            hook.close()
        return self._finish(query, event)

    def execute_complete(self, context: Context, event: Any = None, job_id: str = "") -> dict[str, Any]:
        """Resume after the trigger: the same result, or the same failure, as waiting in the worker."""
        return self._finish(self.job_query(job_id), event)

    def _finish(self, query: JobQuery, event: Any) -> dict[str, Any]:
        status, job, message = job_from_event(event, query.describe())
        if status == "timeout":
            raise AosError(f"{message} (timeout {self.timeout:.0f}s); the job goes on in AOS")
        if status in ("error", "not_found"):
            raise AosError(message)
        assert job is not None  # job_from_event guarantees it for a terminal event
        return self.verdict.judge(job, AosJobFailedError)

    def _resume_or_start(self, hook: AosHook, prepared: Any, context: Context) -> tuple[str, AosJob | None]:
        """The job an earlier try of this task started (``task_state_store``), else a new one."""
        store = context.get("task_state_store")  # type: ignore[attr-defined]
        if store is None:
            self.log.info("No task_state_store (Airflow < 3.3): a retry of this task starts a new job")
        previous = store.get(self.job_id_key) if store is not None else None
        if previous:
            job = hook.drive(self.job_query(str(previous)).steps)
            if job is None or not job.state.is_terminal or job.state in self.verdict.success:
                self.log.info(
                    "Resuming %s job %s, started by an earlier try (%s)",
                    JOB_KINDS[self.job_kind].title, previous, job.state.name if job else "not readable yet",
                )  # fmt: skip
                return str(previous), job
            self.log.warning(
                "%s job %s of an earlier try ended %s; starting a new one",
                JOB_KINDS[self.job_kind].title,
                previous,
                job.state.name,
            )
        job_id = self.start_job(hook, prepared, context)
        if store is not None:
            store.set(self.job_id_key, job_id)
        return job_id, None

    def start_with_capacity_wait(
        self, hook: AosHook, method: str, path: str, **options: Unpack[RequestOptions]
    ) -> Any:
        """
        Send the request that starts the job (its JSON answer), tried again every
        ``capacity_poll_interval`` while AOS answers 429 (at capacity: the request was refused before
        anything was done, so trying again cannot start two jobs), until ``capacity_timeout``; then
        the 429 is raised with the server's reason.

        The hook's generic 429 backoff (about 30 s over its attempts) would hide the capacity signal
        from this loop and stretch each try, so the request goes out with 429 left to this loop;
        connection failures are still retried by the hook.
        """
        policy = hook.retry_policy
        session = replace(
            hook.protocol, retry_policy=replace(policy, retry_statuses=policy.retry_statuses - {429})
        )
        deadline = time.monotonic() + self.capacity_timeout
        while True:
            try:
                return hook.drive(lambda _: session.request_json(method, path, **options))
            except AosApiError as exc:
                if exc.status != 429 or time.monotonic() + self.capacity_poll_interval > deadline:
                    raise
                self.log.info(
                    "AOS is at capacity for %s (%s); trying again in %.0fs",
                    self.job_noun, exc.error, self.capacity_poll_interval,
                )  # fmt: skip
                time.sleep(self.capacity_poll_interval)
