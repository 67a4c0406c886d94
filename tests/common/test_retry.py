"""Unit tests of the retry policy."""

from __future__ import annotations

import threading

import pytest

from common.errors import (
    DicomwebConnectionError,
    DicomwebError,
    DicomwebHttpError,
    DicomwebResponseError,
    StoreUnavailableError,
)
from common.retry import RetryPolicy, call_with_retry

FAST = RetryPolicy(initial_delay=0.001, max_delay=0.004, budget=0.5)


def test_transient_errors_are_retried_until_success() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise DicomwebConnectionError("refused")
        return "ok"

    assert call_with_retry(flaky, FAST, describe="x") == "ok"
    assert len(calls) == 4


def test_permanent_errors_are_not_retried() -> None:
    calls = []

    def bad() -> None:
        calls.append(1)
        raise DicomwebHttpError(400)

    with pytest.raises(DicomwebHttpError):
        call_with_retry(bad, FAST, describe="x")
    assert len(calls) == 1


@pytest.mark.parametrize(
    "error",
    [
        DicomwebHttpError(501),
        DicomwebHttpError(401),
        DicomwebHttpError(409),
        StoreUnavailableError("known down"),
        DicomwebResponseError("junk"),
    ],
    ids=["501", "401", "409", "known-down", "bad-response"],
)
def test_what_the_failure_table_does_not_retry_is_raised_at_once(error: DicomwebError) -> None:
    calls = []

    def fails() -> None:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        call_with_retry(fails, FAST, describe="x")
    assert len(calls) == 1


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 505, 507])
def test_what_the_failure_table_retries_is_retried(status: int) -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise DicomwebHttpError(status)
        return "ok"

    assert call_with_retry(flaky, FAST, describe="x") == "ok"
    assert len(calls) == 2


def test_budget_bounds_the_time() -> None:
    def down() -> None:
        raise DicomwebHttpError(503)

    with pytest.raises(DicomwebHttpError):
        call_with_retry(down, RetryPolicy(initial_delay=0.01, max_delay=0.02, budget=0.1), describe="x")


def test_stop_event_ends_waiting() -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(DicomwebConnectionError):
        call_with_retry(
            lambda: (_ for _ in ()).throw(DicomwebConnectionError("x")),
            RetryPolicy(initial_delay=5, budget=60), describe="x", stop=stop,
        )


def test_delay_schedule_is_capped() -> None:
    delays = RetryPolicy(initial_delay=1, max_delay=4, budget=20).delays()
    assert delays == [1, 2, 4, 4, 4, 4]


def test_backoff_is_the_same_schedule_without_a_budget() -> None:
    policy = RetryPolicy(initial_delay=1, max_delay=4, budget=20)
    backoff = policy.backoff()
    assert [next(backoff) for _ in range(9)] == [1, 2, 4, 4, 4, 4, 4, 4, 4]
    assert RetryPolicy(initial_delay=1, budget=0.5).delays() == []
    assert RetryPolicy(initial_delay=1, max_delay=4, budget=3).delays() == [1, 2]
