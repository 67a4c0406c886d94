"""The adaptive upload concurrency of one destination, against models of stores."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from import_adapter.spool.concurrency import (
    WINDOW,
    AdaptiveLimit,
    ConcurrencySettings,
    size_bucket,
)

SMALL = 500_000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


Latency = Callable[[int], float]


def run(
    limit: AdaptiveLimit, clock: Clock, latency_of: Latency, samples: int, size: int = SMALL
) -> int:
    """Feed ``samples`` completions whose latency depends on the limit in force."""
    for _ in range(samples):
        seconds = latency_of(limit.limit)
        clock.now += seconds / max(limit.limit, 1)  # completions arrive limit per latency
        limit.sample(seconds, size, limit.limit)
    return limit.limit


def serial_store(rtt: float, service: float) -> Latency:
    """A far store that works one request at a time: queueing once the pipe is full."""
    return lambda in_flight: max(rtt + service, in_flight * service)


def test_grows_to_the_cap_while_the_store_does_not_queue() -> None:
    clock = Clock()
    limit = AdaptiveLimit(ConcurrencySettings(cap=32), clock)
    assert limit.limit == 4
    assert run(limit, clock, lambda _n: 0.1, 200) == 32


def test_settles_where_a_far_serial_store_is_just_saturated() -> None:
    clock = Clock()
    limit = AdaptiveLimit(ConcurrencySettings(cap=64), clock)
    settled = run(limit, clock, serial_store(rtt=0.05, service=0.0065), 2000)
    # The pipe holds (rtt + service) / service = 8.7 requests: enough in flight to fill it,
    # with the store queueing about sqrt(limit) more, and far from the cap.
    assert 9 <= settled <= 16
    settled_far = run(
        AdaptiveLimit(ConcurrencySettings(cap=64), clock), clock,
        serial_store(rtt=0.1, service=0.0065), 2000,
    )
    assert settled_far > settled


def test_a_store_next_door_stays_near_the_floor() -> None:
    clock = Clock()
    limit = AdaptiveLimit(ConcurrencySettings(cap=32, floor=4), clock)
    # Its baseline is already queued (four in flight from the start), hence a little over 4.
    assert run(limit, clock, serial_store(rtt=0.0002, service=0.0065), 1000) <= 7


def test_does_not_grow_while_the_limit_is_not_used() -> None:
    clock = Clock()
    limit = AdaptiveLimit(ConcurrencySettings(cap=32), clock)
    for _ in range(200):
        clock.now += 0.01
        limit.sample(0.1, SMALL, inflight=1)
    assert limit.limit == 4


def test_overload_halves_and_it_grows_back() -> None:
    clock = Clock()
    limit = AdaptiveLimit(ConcurrencySettings(cap=32, initial=16, floor=4), clock)
    assert limit.overload() == 8
    assert limit.overload() == 4
    assert limit.overload() == 2
    assert limit.overload() == 1
    assert limit.overload() == 1
    # Latency never pushes it back up to the floor at once; unqueued answers let it grow.
    limit.sample(0.1, SMALL, 1)
    assert limit.limit == 1
    assert run(limit, clock, lambda _n: 0.1, 300) == 32


def test_rising_latency_shrinks_it_but_not_below_the_floor() -> None:
    clock = Clock()
    limit = AdaptiveLimit(ConcurrencySettings(cap=32, window=1e6), clock)
    assert run(limit, clock, lambda _n: 0.1, 200) == 32
    assert run(limit, clock, lambda _n: 0.4, 60) < 16
    assert run(limit, clock, lambda _n: 1.0, 200) == 4
    # A latency that stays up whatever the limit is the store's new normal, not queueing:
    # once the baseline windows have turned over, the limit grows again.
    later = AdaptiveLimit(ConcurrencySettings(cap=32, window=5.0), clock)
    run(later, clock, lambda _n: 0.1, 200)
    assert run(later, clock, lambda _n: 1.0, 400) == 32


def test_the_baseline_follows_a_store_that_got_slower() -> None:
    clock = Clock()
    limit = AdaptiveLimit(ConcurrencySettings(cap=32, window=10.0), clock)
    run(limit, clock, lambda _n: 0.05, 100)
    clock.now += 25  # two windows later the old, faster minimum is forgotten
    assert run(limit, clock, lambda _n: 0.2, 400) == 32


def test_large_uploads_are_judged_against_large_ones() -> None:
    clock = Clock()
    limit = AdaptiveLimit(ConcurrencySettings(cap=32), clock)
    run(limit, clock, lambda _n: 0.05, 200, size=SMALL)
    assert limit.limit == 32
    # A 50 MB upload takes far longer than a small one, without any queueing.
    run(limit, clock, lambda _n: 2.0, 50, size=50_000_000)
    assert limit.limit == 32


@pytest.mark.parametrize(
    ("size", "bucket"), [(0, 0), (1, 0), (65_535, 0), (300_000, 1), (50_000_000, 5)]
)
def test_size_buckets(size: int, bucket: int) -> None:
    assert size_bucket(size) == bucket


def test_fixed_never_moves() -> None:
    clock = Clock()
    limit = AdaptiveLimit(ConcurrencySettings.fixed(3), clock)
    assert run(limit, clock, lambda _n: 0.1, 100) == 3
    assert run(limit, clock, lambda _n: 5.0, 100) == 3
    assert limit.cap == 3


def test_slow_start_doubles_per_round_trip_until_the_store_queues() -> None:
    clock = Clock()
    limit = AdaptiveLimit(ConcurrencySettings(cap=64), clock)
    # No queueing: one more per completed upload, i.e. the limit doubles every round trip.
    assert run(limit, clock, lambda _n: 0.1, 4) == 8
    assert run(limit, clock, lambda _n: 0.1, 8) == 16
    # A serial store 100 ms away: slow start overshoots a little, then the gradient rule
    # brings it back to where the pipe is full.
    settled = run(limit, clock, serial_store(rtt=0.1, service=0.0065), 2000)
    assert 15 <= settled <= 26


def test_an_overload_ends_slow_start() -> None:
    clock = Clock()
    limit = AdaptiveLimit(ConcurrencySettings(cap=64), clock)
    assert run(limit, clock, lambda _n: 0.1, 4) == 8
    assert limit.overload() == 4
    run(limit, clock, lambda _n: 0.1, 4)
    assert limit.limit < 8  # growing by the gradient rule's square root, not by one each


def test_in_slow_start_a_large_upload_counts_one_completion_per_window() -> None:
    """A 50 MB upload 100 ms away takes about a round trip per window: the limit still doubles
    about every round trip, not once per upload."""
    clock = Clock()
    limit = AdaptiveLimit(ConcurrencySettings(cap=64), clock)
    assert run(limit, clock, lambda _n: 1.5, 1, size=50 * 2**20) == 8  # at most doubled
    assert run(limit, clock, lambda _n: 1.5, 1, size=50 * 2**20) == 16
    # Up to a window, one completion each, as for small ones.
    small = AdaptiveLimit(ConcurrencySettings(cap=64), Clock())
    assert run(small, Clock(), lambda _n: 0.1, 1, size=WINDOW) == 5
    # A store next door that queues large uploads ends it at its first sign of queueing (else
    # it would double on to the cap of 64); the gradient rule then holds it where counting
    # one per upload does (12 here).
    near = AdaptiveLimit(ConcurrencySettings(cap=64), clock := Clock())
    assert run(near, clock, serial_store(rtt=0.0002, service=0.25), 200, size=50 * 2**20) <= 16
