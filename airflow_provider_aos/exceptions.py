"""Exceptions raised by the AOS provider.

Every message is written for the person who has to fix the problem: it names the connection field,
the HTTP status or the server's traceId. No message ever contains a secret, a token or an assertion.
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException


class AosError(AirflowException):
    """Base class of every error raised by the AOS provider."""


class AosConfigError(AosError, ValueError):
    """
    A connection field or an operator argument is missing or invalid.

    :param field: the field to fix, e.g. ``extra.data_center`` or ``start_time``.
    :param message: what is wrong and how to fix it.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class AosAuthError(AosError):
    """
    No access token could be obtained from the AOS identity service.

    :param message: what went wrong and what to check.
    :param error: the OAuth2 ``error`` code (``invalid_client``, ``invalid_scope``...), if any.
    :param status: the HTTP status of the token endpoint, if it answered.
    """

    def __init__(self, message: str, *, error: str | None = None, status: int | None = None) -> None:
        self.error = error
        self.status = status
        super().__init__(message)


class AosApiError(AosError):
    """
    The AOS Graph API answered with an error, or could not be reached.

    :param method: HTTP method of the failed request.
    :param path: the request path (no query string: queries may carry opaque paging tokens).
    :param status: HTTP status, or ``None`` when no response was received.
    :param error: the server's error message (``error``, ``message`` or ``errorMessage``).
    :param trace_id: the server's ``traceId``, to quote to AvePoint support.
    """

    def __init__(
        self,
        *,
        method: str,
        path: str,
        status: int | None,
        error: str | None = None,
        trace_id: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.error = error
        self.trace_id = trace_id
        self.attempts = attempts
        what = f"HTTP {status}" if status is not None else "no response"
        parts = [f"AOS API {method} {path} failed: {what}"]
        if error:
            parts.append(f"- {error}")
        if trace_id:
            parts.append(f"(traceId {trace_id})")
        if attempts > 1:
            parts.append(f"after {attempts} attempts")
        super().__init__(" ".join(parts))


class AosPaginationError(AosError):
    """A page could not be followed safely (a next link to a foreign host, a paging loop...)."""


class AosJobFailedError(AosError):
    """
    An AOS job ended in a state the task does not accept (failed, stopped, partial...).

    :param message: which job, its state and raw state, its first error, and how to accept it.
    :param job: the job, as ``AosJob.to_dict()``.
    """

    def __init__(self, message: str, *, job: dict[str, object] | None = None) -> None:
        self.job = job
        super().__init__(message)


class AosJobCheckFailedError(AosJobFailedError, AirflowFailException):
    """Jobs a check or a wait was told to refuse: trying the task again would not change them (no retry)."""
