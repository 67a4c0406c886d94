"""Tracking in-flight operations so a service can drain before it exits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from common.errors import ShuttingDownError


class Lifecycle:
    """Counts in-flight operations and refuses new ones once draining has begun."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._inflight = 0
        #: Set when the service must stop (signal received); long waits watch it.
        self.stop_requested = threading.Event()
        self._draining = False

    @property
    def inflight(self) -> int:
        """Operations currently running."""
        with self._condition:
            return self._inflight

    @contextmanager
    def operation(self) -> Iterator[None]:
        """Run one operation; raises :class:`ShuttingDownError` when draining."""
        with self._condition:
            if self._draining:
                raise ShuttingDownError("service is shutting down")
            self._inflight += 1
        try:
            yield
        finally:
            with self._condition:
                self._inflight -= 1
                self._condition.notify_all()

    def start_draining(self) -> None:
        """Refuse new operations from now on."""
        with self._condition:
            self._draining = True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no operation runs; False if ``timeout`` seconds passed first."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
        return True
