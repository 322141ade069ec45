"""
How many requests one task keeps in flight: a limit that adapts to the server's throttling (AIMD).

The AOS docs name 429 with ``Retry-After`` but no request rate or concurrency quota (endpoints.md),
so the client has to find the limit by itself, the way TCP finds a link's capacity: the limit grows
by one request per round of successes (additive increase) and halves on each 429 or 503
(multiplicative decrease). It starts at one request and grows one at a time, so it never jumps past
what the server has shown it accepts: against a server that throttles above N concurrent requests,
at most N+1 are ever in flight once it has answered its first 429s, and the probe that finds N+1
too many is a single request. Waiting out ``Retry-After`` stays the retry policy's job; the limit only
decides how many requests may be on the wire at once.
"""

from __future__ import annotations

import threading

THROTTLE_STATUSES = frozenset({429, 503})
"""Answers that mean "too much at once": the limit halves."""


class Cancelled(Exception):
    """The limit was cancelled (the task is being killed) while a request waited for a slot."""


class AdaptiveLimit:
    """
    A concurrency limit between 1 and ``ceiling`` that halves on throttling and grows back by one
    request per round of successes. Thread-safe; :meth:`cancel` may be called from a signal handler.

    :param ceiling: the most requests ever in flight (the task's ``max_concurrency``).
    """

    def __init__(self, ceiling: int) -> None:
        if ceiling < 1:
            raise ValueError("ceiling must be at least 1")
        self.ceiling = ceiling
        self.limit = 1.0
        self.in_flight = 0
        self.peak = 0
        """The most requests that were in flight at once."""
        self.throttled = 0
        """Answers that made the limit halve."""
        self._cond = threading.Condition()
        self._cancelled = False

    def acquire(self) -> None:
        """Wait for a slot. :raises Cancelled: :meth:`cancel` was called."""
        with self._cond:
            while self.in_flight >= int(self.limit):
                if self._cancelled:
                    raise Cancelled
                self._cond.wait(0.2)  # a timeout, so a cancel from a signal handler is seen anyway
            if self._cancelled:
                raise Cancelled
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def release(self, status: int | None) -> None:
        """
        Free a slot, with what the request got: an HTTP status, or None when no answer came (a
        broken connection says nothing about load: the limit stays).
        """
        with self._cond:
            self.in_flight -= 1
            if status in THROTTLE_STATUSES:
                self.throttled += 1
                self.limit = max(1.0, self.limit / 2)
            elif status is not None and status < 400:
                # +1/limit per success: one more request per round trip of the whole window.
                self.limit = min(float(self.ceiling), self.limit + 1 / self.limit)
            self._cond.notify_all()

    def cancel(self) -> None:
        """Make every waiting and later :meth:`acquire` raise :class:`Cancelled`. Takes no lock."""
        self._cancelled = True
