"""
What every AOS job wait shares: which states pass or fail, poke and deferrable mode, the trigger
event's validation. Service sensors (backup, Opus restore, ...) say only which job to watch.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_aos.exceptions import (
    AosConfigError,
    AosError,
    AosJobCheckFailedError,
    AosJobFailedError,
)
from airflow_provider_aos.hooks.aos import AosHook
from airflow_provider_aos.jobs import AosJob, JobState
from airflow_provider_aos.jobs_api import DEFAULT_MAX_CONSECUTIVE_ERRORS, JobQuery, is_transient
from airflow_provider_aos.triggers.jobs import AosJobTrigger

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

DEFAULT_SUCCESS_STATES = ("SUCCEEDED",)
DEFAULT_FAILURE_STATES = ("FAILED", "STOPPED")
EVENT_STATUSES = ("terminal", "timeout", "error", "not_found")
"""How long after its window ended a sensor without a job id keeps looking for a job of the window."""


class AosJobSensorFailedError(AosJobCheckFailedError):
    """The watched job ended in a failing state: waiting again would not change it (no retry)."""


def job_states(values: Iterable[str | JobState], field: str) -> frozenset[JobState]:
    """``JobState`` members from names (case-insensitive) or members; the error names the field."""
    if isinstance(values, str):
        values = [values]
    states = set()
    for value in values:
        if isinstance(value, JobState):
            states.add(value)
            continue
        try:
            states.add(JobState[str(value).strip().upper()])
        except KeyError:
            raise AosConfigError(
                field, f"{value!r} is not a job state; use any of {', '.join(s.name for s in JobState)}"
            ) from None
    return frozenset(states)


@dataclass(frozen=True)
class JobVerdict:
    """
    Which terminal states let a task pass.

    :param success: states that pass.
    :param failure: states that fail.
    :param accept_partial: PARTIAL (finished with exceptions) passes too.
    """

    success: frozenset[JobState]
    failure: frozenset[JobState]
    accept_partial: bool = False

    @classmethod
    def of(
        cls, success: Iterable[str | JobState], failure: Iterable[str | JobState], accept_partial: bool
    ) -> JobVerdict:
        ok, bad = job_states(success, "success_states"), job_states(failure, "failure_states")
        if both := ok & bad:
            raise AosConfigError(
                "failure_states",
                f"{sorted(s.name for s in both)} also in success_states; a state is one or the other",
            )
        return cls(ok | ({JobState.PARTIAL} if accept_partial else set()), bad, accept_partial)

    def judge(self, job: AosJob, error: type[AosJobFailedError] = AosJobSensorFailedError) -> dict[str, Any]:
        """The job as XCom when it passes; else raise ``error`` naming the job, its state and errors."""
        if job.state in self.success:
            return job.to_dict()
        detail = f"{job.kind} job {job.id} ended {job.state.name} (raw state {job.raw_state!r})"
        if job.first_error:
            detail += f": {job.first_error}"
        if job.state is JobState.PARTIAL:
            detail += ". It finished with exceptions; to accept that, set accept_partial=True"
        elif job.state not in self.failure:
            detail += f", which is not in success_states ({sorted(s.name for s in self.success)})"
        raise error(detail, job=job.to_dict())


def job_from_event(event: Any, what: str) -> tuple[str, AosJob | None, str]:
    """
    Validate a trigger event (it crossed the metadata DB: refuse anything unexpected, never fall
    through to success). Returns (status, job, message).
    """
    if not isinstance(event, dict) or event.get("status") not in EVENT_STATUSES:
        raise AosError(f"waiting for {what}: unexpected trigger event {event!r}")
    job_dict = event.get("job")
    job = AosJob.from_dict(job_dict) if isinstance(job_dict, dict) else None
    if event["status"] == "terminal" and (job is None or not job.state.is_terminal):
        raise AosError(f"waiting for {what}: a terminal event without a terminal job: {event!r}")
    return event["status"], job, str(event.get("message") or "")


class AosJobSensorBase(BaseSensorOperator):
    """
    Wait for an AOS job to end; subclasses say which job (:meth:`job_query`).

    Poke mode and deferrable mode return the same XCom value: the final job as ``AosJob.to_dict()``.
    Deferrable mode checks once before deferring (a job already done never defers) and hands the
    wait to :class:`AosJobTrigger` with an absolute deadline of ``timeout``. Transient API failures do
    not end the wait, in either mode, until ``max_consecutive_errors`` polls in a row have failed.
    A job in a failing state fails the task without retry (waiting again would not change it);
    with ``soft_fail`` it is skipped instead, as a timeout is.

    :param aos_conn_id: the AOS connection (templated).
    :param success_states: job states that pass (``JobState`` names).
    :param failure_states: job states that fail; a terminal state in neither fails too.
    :param accept_partial: let a job that finished with exceptions (PARTIAL) pass.
    :param deferrable: wait in the triggerer instead of a worker slot.
    :param poll_interval: seconds between polls (the sensor's ``poke_interval``).
    :param max_consecutive_errors: transient failures in a row tolerated.
    """

    template_fields: Collection[str] = ("aos_conn_id",)
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        aos_conn_id: str = AosHook.default_conn_name,
        success_states: Iterable[str | JobState] = DEFAULT_SUCCESS_STATES,
        failure_states: Iterable[str | JobState] = DEFAULT_FAILURE_STATES,
        accept_partial: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 60.0,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        self.aos_conn_id = aos_conn_id
        self.verdict = JobVerdict.of(success_states, failure_states, accept_partial)
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.max_consecutive_errors = max_consecutive_errors
        self._failed_polls = 0

    def job_query(self, context: Context) -> JobQuery:
        """Which job to watch (rendered arguments are available here)."""
        raise NotImplementedError

    def _hook(self) -> AosHook:
        # One hook for every poke of this task process (poke mode loops in one process): one OIDC
        # discovery and one token per scope over the whole wait, not one per poke. Its pooled
        # connections go with the process; reschedule mode gets a new process, hence a new hook.
        hook: AosHook | None = self.__dict__.get("_aos_hook")
        if hook is None or hook.aos_conn_id != self.aos_conn_id:
            hook = self.__dict__["_aos_hook"] = AosHook(aos_conn_id=self.aos_conn_id)
        return hook

    def _read(self, query: JobQuery) -> AosJob | None:
        job: AosJob | None = self._hook().drive(query.steps)
        return job

    def poke(self, context: Context) -> bool | PokeReturnValue:
        query = self.job_query(context)
        try:
            job = self._read(query)
        except Exception as exc:
            self._failed_polls += 1
            if not is_transient(exc) or self._failed_polls >= self.max_consecutive_errors:
                raise
            self.log.warning(
                "Polling %s failed (%s); transient, try %d of %d",
                query.describe(), exc, self._failed_polls, self.max_consecutive_errors,
            )  # fmt: skip
            return False
        self._failed_polls = 0
        if job is None:
            self._give_up_if_none_can_come(query)
            self.log.info("%s: not found yet", query.describe())
            return False
        if not job.state.is_terminal:
            self.log.info("%s is %s (%r)", query.describe(), job.state.name, job.raw_state)
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.verdict.judge(job))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        query = self.job_query(context)
        try:
            job = self._read(query)
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The trigger tolerates transient failures; one at the first look must not end the wait.
            self.log.warning(
                "Polling %s failed (%s); transient, waiting in the triggerer", query.describe(), exc
            )
            job = None
        if job is not None and job.state.is_terminal:
            return self._judge_now(job)
        if job is None:
            try:
                self._give_up_if_none_can_come(query)
            except AosJobSensorFailedError as exc:
                if self.soft_fail or getattr(self, "never_fail", False):
                    raise AirflowSkipException(f"Skipping (soft_fail): {exc}") from exc
                raise
        self.defer(
            trigger=AosJobTrigger(
                query=query.to_dict(),
                aos_conn_id=self.aos_conn_id,
                poll_interval=self.poll_interval,
                deadline=time.time() + self._timeout_seconds(),
                max_consecutive_errors=self.max_consecutive_errors,
            ),
            method_name="execute_complete",
        )

    def _give_up_if_none_can_come(self, query: JobQuery) -> None:
        """No job id and a window that ended with no matching job: fail now, not at the timeout."""
        if query.none_can_come(time.time()):
            raise AosJobSensorFailedError(query.not_found_message())

    def _judge_now(self, job: AosJob) -> dict[str, Any]:
        """
        The verdict on a job found terminal before deferring. Outside ``BaseSensorOperator.execute``
        and ``resume_execution``, so ``soft_fail`` (and ``never_fail``) is applied here, as they do.
        """
        try:
            return self.verdict.judge(job)
        except AosJobSensorFailedError as exc:
            if self.soft_fail or getattr(self, "never_fail", False):
                raise AirflowSkipException(
                    f"Skipping ({'soft_fail' if self.soft_fail else 'never_fail'}): {exc}"
                ) from exc
            raise

    def _timeout_seconds(self) -> float:
        timeout = self.timeout
        return timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Resume after the trigger: the same XCom value as poke mode, or the same failure."""
        query = self.job_query(context)
        status, job, message = job_from_event(event, query.describe())
        if status == "timeout":
            raise AirflowSensorTimeout(f"{message} (timeout {self._timeout_seconds():.0f}s)")
        if status == "error":
            raise AosError(message)
        if status == "not_found":
            raise AosJobSensorFailedError(message)
        assert job is not None  # job_from_event guarantees it for a terminal event
        return self.verdict.judge(job)


def window_bounds(
    context: Context, start: Any, end: Any, parse: Any
) -> tuple[datetime | None, datetime | None]:
    """
    ``start``/``end`` as given (rendered), else the run's data interval (either may be None).

    An empty data interval (start == end: an Airflow 3 run of a DAG without a data-interval
    timetable, e.g. ``schedule=None`` or ``"@daily"``) is no window at all: (None, None) for the
    part taken from it, so a caller that needs a window says so instead of a "start is not before
    end" error, and one that needs none (a job read by id) is not refused.
    """
    given = [value not in (None, "", "None") for value in (start, end)]
    interval = [context.get("data_interval_start"), context.get("data_interval_end")]
    if interval[0] is not None and interval[0] == interval[1]:
        interval = [None, None]
    start = start if given[0] else interval[0]
    end = end if given[1] else interval[1]
    return (
        None if start is None else parse(start, "start_time"),
        None if end is None else parse(end, "end_time"),
    )
