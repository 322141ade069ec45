"""
When to retry an AOS request, and how long to wait. No I/O: transports ask, then sleep themselves.

The decisions follow what the official providers learnt the hard way: 429 and 5xx are transient,
``Retry-After`` is an instruction rather than a hint, a non-idempotent POST is replayed only when the
server certainly did not act on it, and the whole thing stops at an overall deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import Enum

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class Failure(Enum):
    """What went wrong with one attempt."""

    CONNECT = "connect"  # no connection was made: the request never reached the server
    TRANSPORT = "transport"  # the connection broke or timed out after the request may have been sent
    STATUS = "status"  # the server answered with a retryable status


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """
    Retry rules for one logical request.

    :param max_attempts: attempts in all, the first included.
    :param backoff: first backoff in seconds; doubles each retry, with jitter.
    :param max_backoff: cap on one backoff (a longer ``Retry-After`` is still honoured).
    :param deadline: seconds, from the first attempt, after which no retry starts.
    :param retry_statuses: statuses worth retrying.
    """

    max_attempts: int = 6
    backoff: float = 1.0
    max_backoff: float = 60.0
    deadline: float = 600.0
    retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})

    def retryable(self, failure: Failure, method: str, status: int | None, idempotent: bool | None) -> bool:
        """
        Whether this failure may be retried at all.

        ``idempotent=None`` means: decide by method. A POST is retried only when the server surely did
        not act on it: no connection was made, or it answered 429 (rejected before processing).
        """
        safe = method.upper() in IDEMPOTENT_METHODS if idempotent is None else idempotent
        if failure is Failure.CONNECT:
            return True
        if failure is Failure.TRANSPORT:
            return safe
        if status not in self.retry_statuses:
            return False
        return safe or status == 429

    def start(self, clock: Callable[[], float] = time.monotonic) -> RetryState:
        return RetryState(self, clock)


_JITTER = random.Random()
"""One jitter source for every request: seeding a Random per request (from os.urandom) cost more
than the rest of the retry bookkeeping of a page. Its use under concurrency needs no lock (the GIL
keeps ``uniform`` consistent, and jitter needs no reproducibility)."""


@dataclass
class RetryState:
    """The attempts of one logical request under a :class:`RetryPolicy`."""

    policy: RetryPolicy
    clock: Callable[[], float]
    attempts: int = 0
    started: float = field(init=False)
    rng: random.Random = field(default_factory=lambda: _JITTER, repr=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def next_delay(
        self,
        failure: Failure,
        method: str,
        *,
        status: int | None = None,
        idempotent: bool | None = None,
        retry_after: str | None = None,
    ) -> float | None:
        """
        Record a failed attempt; return seconds to wait before the next one, or None to give up.

        Gives up when the failure is not retryable, attempts are used up, or waiting would cross
        the deadline (a ``Retry-After`` beyond it is not worth sleeping through).
        """
        self.attempts += 1
        if not self.policy.retryable(failure, method, status, idempotent):
            return None
        if self.attempts >= self.policy.max_attempts:
            return None
        ceiling: float = min(self.policy.max_backoff, self.policy.backoff * 2 ** (self.attempts - 1))
        delay = ceiling / 2 + self.rng.uniform(0, ceiling / 2)  # "equal jitter": never ~0, never in step
        server_wait = parse_retry_after(retry_after, time.time())
        if server_wait is not None:
            delay = max(delay if status != 429 else 0.0, server_wait)  # the server's word is the floor
        if self.clock() - self.started + delay > self.policy.deadline:
            return None
        return delay
