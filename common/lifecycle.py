"""Tracking in-flight operations so a service can drain before it exits."""

from __future__ import annotations

import threading
import time
from types import TracebackType

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

    def operation(self) -> _Operation:
        """A context manager around one operation.

        Entering it raises :class:`ShuttingDownError` when draining.
        """
        return _Operation(self)

    def _begin(self) -> None:
        with self._condition:
            if self._draining:
                raise ShuttingDownError("service is shutting down")
            self._inflight += 1

    def _end(self) -> None:
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


class _Operation:
    """What :meth:`Lifecycle.operation` returns.

    A class, not a generator-based context manager: it wraps every C-STORE, and a generator's
    set-up and tear-down cost several times more.
    """

    __slots__ = ("_lifecycle",)

    def __init__(self, lifecycle: Lifecycle) -> None:
        self._lifecycle = lifecycle

    def __enter__(self) -> None:
        self._lifecycle._begin()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._lifecycle._end()
