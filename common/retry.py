"""Capped exponential backoff within a bounded time, for transient DICOMweb failures."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from common.errors import DicomwebError, DicomwebHttpError
from common.status import is_retried_at_once

LOG = logging.getLogger(__name__)
T = TypeVar("T")
#: While a ``wake`` event may end a wait, ``stop`` is looked at this often (seconds).
_STOP_POLL = 0.1


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried.

    Attributes:
        initial_delay: seconds before the first retry.
        max_delay: the cap on one delay.
        budget: total seconds after the first attempt during which retries may start; when the
            next delay would end past it, the last error is raised.
        multiplier: growth factor between delays.
    """

    initial_delay: float = 0.25
    max_delay: float = 5.0
    budget: float = 30.0
    multiplier: float = 2.0

    def backoff(self) -> Iterator[float]:
        """The nominal delays without end: ``initial_delay`` growing to ``max_delay`` (no jitter).

        For a caller whose waiting ends otherwise than by the budget (a deadline, shutdown).
        """
        delay = self.initial_delay
        while True:
            yield delay
            delay = min(self.max_delay, delay * self.multiplier)

    def delays(self) -> list[float]:
        """The nominal delay schedule within the budget (without jitter)."""
        out: list[float] = []
        total = 0.0
        backoff = self.backoff()
        while total + (delay := next(backoff)) <= self.budget:
            out.append(delay)
            total += delay
        return out


NO_RETRY = RetryPolicy(budget=0.0)


def call_with_retry(
    operation: Callable[[], T],
    policy: RetryPolicy,
    *,
    describe: str,
    stop: threading.Event | None = None,
    on_retry: Callable[[DicomwebError], None] | None = None,
    wake: threading.Event | None = None,
) -> T:
    """Run ``operation``, retrying a :class:`DicomwebError` within the policy's budget.

    Which errors are retried is the failure table's "retried at once" column
    (:func:`common.status.is_retried_at_once`): connection failures, timeouts, 408, 425, 429 and
    5xx but 501; never the store known down (:class:`StoreUnavailableError`), which ends a
    retry loop at once. A ``Retry-After`` from the server lengthens the delay (never past the
    budget). ``stop``, when set, ends the waiting early and raises the last error. ``wake``,
    when set, ends the waiting early and tries again at once: a client sets it as its store's
    circuit breaker opens, so that the next attempt fails fast.
    """
    start = time.monotonic()
    delays = policy.backoff()
    attempt = 1
    while True:
        try:
            return operation()
        except DicomwebError as exc:
            if not is_retried_at_once(exc):
                raise
            wait = next(delays) * random.uniform(0.8, 1.2)
            if isinstance(exc, DicomwebHttpError) and exc.retry_after is not None:
                wait = max(wait, exc.retry_after)
            elapsed = time.monotonic() - start
            if elapsed + wait > policy.budget:
                raise
            LOG.warning(
                "%s failed (attempt %d: %s); retrying in %.2f s", describe, attempt, exc, wait
            )
            if on_retry is not None:
                on_retry(exc)
            if _wait(wait, stop, wake):
                raise
            attempt += 1


def _wait(seconds: float, stop: threading.Event | None, wake: threading.Event | None) -> bool:
    """Wait out one delay, or less once ``wake`` is set; True when ``stop`` was set."""
    if wake is None:
        if stop is None:
            time.sleep(seconds)
            return False
        return stop.wait(seconds)
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if stop is not None and stop.is_set():
            return True
        if wake.wait(min(remaining, _STOP_POLL) if stop is not None else remaining):
            return False
    return stop is not None and stop.is_set()
