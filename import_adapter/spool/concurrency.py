"""How many uploads one destination may have in flight: a limit that follows the store.

A far store (the Cloud Healthcare API is tens of milliseconds away and answers a STOW-RS in about
100 ms) needs many requests in flight to fill the path; a store next door that does its work
serially gains nothing from more than a few, and a store that throttles (429/503) needs fewer.
:class:`AdaptiveLimit` finds the number without tuning, with the gradient rule of TCP Vegas and
Netflix's concurrency limits:

- every completed upload is a latency sample; the *baseline* is the lowest latency seen lately
  (the smaller of this window's and the last window's minimum) for instances of about the same
  size (sizes are bucketed by factors of 4, so a 50 MB upload is not judged against a 500 kB one);
- ``gradient = clamp(baseline / sample, 0.5, 1)``: 1 while requests are not queueing anywhere,
  lower as the store (or the path) starts queueing them;
- ``target = limit * gradient + sqrt(limit)``: with no queueing the limit grows (by about its
  square root per round), and it settles where the store queues about ``sqrt(limit)`` requests,
  which keeps it busy without piling work on it; it is smoothed (``smoothing``) and it grows
  only while the limit is in use (an idle destination does not inflate it);
- an overload answer (HTTP 429, 503) halves it at once;
- at the start it grows as TCP's slow start does, by one per completed upload (so it doubles
  every round trip) while the samples show no queueing (``gradient >= SLOW_START_EXIT``): a
  store 100 ms away needs some 30 uploads in flight, and the gradient rule alone would take
  seconds to get there; the first sign of queueing, or an overload answer, ends it. A large
  upload counts as one completion per TCP window it carried (``WINDOW``, at most doubling the
  limit): on a far path it took about one round trip per window, so the limit still doubles
  about every round trip. Counted as one, a study of 50 MB instances 100 ms away (a second or
  two per upload) kept the initial 4 in flight for seconds and reached 0.74 of its LAN rate.

It never goes above ``cap`` (``--upload_concurrency``), and latency alone never takes it below
``floor``: only overload answers do, and it then grows back as the samples allow.

The class is not thread-safe: the destination queue calls it under its own lock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ConcurrencySettings:
    """Bounds and pace of one destination's adaptive upload concurrency.

    Attributes:
        cap: the most uploads in flight (``--upload_concurrency``).
        floor: latency alone never takes the limit below this (overload answers do).
        initial: the limit at start.
        smoothing: weight of each new target in the running limit (0 < s <= 1).
        window: seconds of one latency-baseline window (the baseline is the lowest latency of
            the current and the previous window, so it follows a store that got slower).
    """

    cap: int = 32
    floor: int = 4
    initial: int = 4
    smoothing: float = 0.2
    window: float = 10.0

    @classmethod
    def fixed(cls, count: int) -> ConcurrencySettings:
        """Exactly ``count`` in flight (no adaptation)."""
        return cls(cap=count, floor=count, initial=count)


#: Slow start ends at the first sample whose gradient is below this (latency a third above the
#: baseline: queueing, not jitter).
SLOW_START_EXIT = 0.75

#: In slow start, an upload counts as one completion per this many bytes: Linux's largest
#: default TCP send window (``tcp_wmem``), about what one round trip carries on a far path.
WINDOW = 4 * 1024 * 1024


def size_bucket(size: int) -> int:
    """The latency-baseline bucket of an upload of ``size`` bytes (64 KiB * 4**k)."""
    return max(0, (max(size, 1).bit_length() - 16) // 2)


class _Baseline:
    """The lowest latency of the current and the previous window."""

    __slots__ = ("current", "previous", "started")

    def __init__(self, now: float) -> None:
        self.current = math.inf
        self.previous = math.inf
        self.started = now

    def add(self, seconds: float, now: float, window: float) -> float:
        if now - self.started >= window:
            self.previous, self.current, self.started = self.current, math.inf, now
        self.current = min(self.current, seconds)
        return min(self.current, self.previous)


class AdaptiveLimit:
    """The in-flight limit of one destination (see the module docstring)."""

    def __init__(
        self, settings: ConcurrencySettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._cap = max(1, settings.cap)
        self._floor = max(1, min(settings.floor, self._cap))
        self._estimate = float(max(1, min(settings.initial, self._cap)))
        self._baselines: dict[int, _Baseline] = {}
        self._slow_start = True

    @property
    def limit(self) -> int:
        """Uploads allowed in flight now."""
        return max(1, int(self._estimate + 0.5))

    @property
    def cap(self) -> int:
        """The most the limit can be."""
        return self._cap

    def sample(self, seconds: float, size: int, inflight: int) -> int:
        """Take one completed upload's latency; ``inflight`` counts it. Returns the new limit."""
        now = self._clock()
        bucket = self._baselines.get(size_bucket(size))
        if bucket is None:
            bucket = self._baselines[size_bucket(size)] = _Baseline(now)
        baseline = bucket.add(max(seconds, 1e-6), now, self._settings.window)
        gradient = min(1.0, max(0.5, baseline / max(seconds, 1e-6)))
        current = self._estimate
        in_use = inflight >= self.limit - 1
        if self._slow_start:
            if gradient >= SLOW_START_EXIT:
                if in_use:
                    completions = min(current, max(1.0, size / WINDOW))
                    self._estimate = min(float(self._cap), current + completions)
                return self.limit
            self._slow_start = False
        target = current * gradient + math.sqrt(current)
        if target > current and not in_use:
            target = current  # not using the limit: no evidence that more would help
        # Latency alone never goes below the floor; below it after an overload, it may grow.
        target = max(target, min(float(self._floor), current))
        smoothing = self._settings.smoothing
        self._estimate = min(float(self._cap), (1 - smoothing) * current + smoothing * target)
        return self.limit

    def overload(self) -> int:
        """The store said it is overloaded (429, 503): halve the limit. Returns it."""
        self._slow_start = False
        self._estimate = max(1.0, self._estimate / 2)
        return self.limit
