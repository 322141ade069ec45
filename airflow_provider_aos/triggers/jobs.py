"""One trigger for every kind of AOS job: backup, restore, Opus restore, Insights export, ..."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_aos.hooks.aos import AosAsyncHook
from airflow_provider_aos.jobs_api import DEFAULT_MAX_CONSECUTIVE_ERRORS, JobQuery, job_event, wait_for_job
from airflow_provider_aos.retry import RetryPolicy


class AosJobTrigger(BaseTrigger):
    """
    Wait, on the triggerer's event loop, until an AOS job is terminal; yield exactly one event.

    Fully async: the connection comes through common-compat's ``get_async_connection`` and every
    request goes through :class:`AosAsyncHook` (no sync hook, no blocking I/O). A transient failure
    (429, 5xx, a dropped connection, an identity-service outage, after the hook's own retries) does
    not end the wait: it is retried with backoff until ``max_consecutive_errors`` polls in a row have
    failed. The deadline is absolute (epoch seconds), so a triggerer restart does not extend it.

    Its kwargs are primitives and never a secret (``BaseTrigger.__repr__`` prints them): the
    connection is named by id and read in the triggerer.

    Events: ``{"status": "terminal", "job": AosJob.to_dict()}``; ``{"status": "timeout", "job":
    <last seen or None>, "message": ...}``; ``{"status": "error", "job": ..., "message": ...}``.

    :param query: :meth:`JobQuery.to_dict` of the job to wait for.
    :param aos_conn_id: the AOS connection.
    :param poll_interval: seconds between polls.
    :param deadline: epoch seconds after which the wait ends with a timeout event; None: no limit.
    :param max_consecutive_errors: transient failures in a row tolerated before an error event.
    :param retry_attempts: attempts per request within one poll (the hook's retry policy, with
        backoff and ``Retry-After``); None: the hook's default (6). Each failed poll has used them all,
        so the requests of an outage multiply: ``retry_attempts`` x ``max_consecutive_errors``.
    """

    def __init__(
        self,
        *,
        query: Mapping[str, Any],
        aos_conn_id: str = AosAsyncHook.default_conn_name,
        poll_interval: float = 60.0,
        deadline: float | None = None,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        retry_attempts: int | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.query = dict(query)
        self.aos_conn_id = aos_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = None if deadline is None else float(deadline)
        self.max_consecutive_errors = int(max_consecutive_errors)
        self.retry_attempts = None if retry_attempts is None else max(1, int(retry_attempts))

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "query": self.query,
                "aos_conn_id": self.aos_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "max_consecutive_errors": self.max_consecutive_errors,
                "retry_attempts": self.retry_attempts,
            },
        )

    def _hook(self) -> AosAsyncHook:
        policy = None if self.retry_attempts is None else RetryPolicy(max_attempts=self.retry_attempts)
        return AosAsyncHook(self.aos_conn_id, retry_policy=policy)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Whatever goes wrong (an unknown kind, a missing or invalid connection) ends in one event.
        what = f"{self.query.get('kind')} job {self.query.get('job_id') or '(newest)'}"
        try:
            query = JobQuery.from_dict(self.query)
            what = query.describe()
            async with self._hook() as hook:
                event = await hook.drive(
                    lambda session: wait_for_job(
                        session,
                        query,
                        poll_interval=self.poll_interval,
                        deadline=self.deadline,
                        max_consecutive_errors=self.max_consecutive_errors,
                    )
                )
        except Exception as exc:
            event = job_event("error", None, f"waiting for {what} failed: {exc}")
        yield TriggerEvent(event)  # type: ignore[no-untyped-call]
