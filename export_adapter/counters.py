"""In-process counters of what the export adapter did with the messages it received."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class CountersSnapshot:
    """The counters at one moment."""

    received: int = 0
    exported: int = 0
    skipped: int = 0
    permanent_failures: int = 0
    transient_failures: int = 0
    dead_lettered: int = 0


class ExportCounters:
    """Thread-safe counters, one instance per adapter, passed to whoever counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = dict.fromkeys(CountersSnapshot.__dataclass_fields__, 0)

    def add(self, name: str, amount: int = 1) -> None:
        """Add to one counter (a field name of :class:`CountersSnapshot`)."""
        with self._lock:
            if name not in self._values:
                raise KeyError(f"unknown counter {name!r}")
            self._values[name] += amount

    def snapshot(self) -> CountersSnapshot:
        """A consistent copy of all counters."""
        with self._lock:
            return CountersSnapshot(**self._values)
