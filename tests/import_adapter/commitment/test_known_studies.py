"""The in-process index of received instances' studies: bounded, thread-safe, UIDs only."""

from __future__ import annotations

import threading

import pytest

from import_adapter.commitment.known_studies import DEFAULT_CAPACITY, KnownStudies


def test_records_and_answers_only_what_it_knows() -> None:
    known = KnownStudies()
    known.record("1.2.1", "1.5.1")
    known.record("1.2.2", "1.5.1")
    known.record("1.2.3", "1.5.2")
    assert known.studies_of(["1.2.1", "1.2.3", "1.2.9"]) == {"1.2.1": "1.5.1", "1.2.3": "1.5.2"}
    known.record("1.2.1", "1.5.3")  # received again, in another study: the newest counts
    assert known.studies_of(["1.2.1"]) == {"1.2.1": "1.5.3"}
    assert len(known) == 3


def test_the_least_recently_recorded_are_forgotten_first() -> None:
    known = KnownStudies(capacity=3)
    for uid in ("1.1", "1.2", "1.3"):
        known.record(uid, "1.5")
    known.record("1.1", "1.5")  # recorded again: now the newest
    known.record("1.4", "1.5")
    assert set(known.studies_of(["1.1", "1.2", "1.3", "1.4"])) == {"1.1", "1.3", "1.4"}
    assert len(known) == 3


@pytest.mark.parametrize(
    "study", ["", "../..", "1.2/3", "1.2.3 ", ".1.2", "1..2", "1.2.3\n", "1." + "2" * 63]
)
def test_a_study_uid_that_is_not_a_uid_is_not_recorded(study: str) -> None:
    # It would go into a URL path: "../.." would list the whole store.
    known = KnownStudies()
    known.record("1.2.3", study)
    known.record("", "1.5")
    assert known.studies_of(["1.2.3", ""]) == {} and len(known) == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        KnownStudies(0)
    assert DEFAULT_CAPACITY == 100_000


def test_recording_from_many_threads_keeps_the_bound() -> None:
    known = KnownStudies(capacity=500)

    def receive(thread: int) -> None:
        for index in range(1000):
            known.record(f"1.{thread}.{index}", f"1.5.{thread}")
            known.studies_of([f"1.{thread}.{index}"])

    threads = [threading.Thread(target=receive, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(known) == 500
    everything = [f"1.{thread}.{index}" for thread in range(8) for index in range(1000)]
    kept = known.studies_of(everything)
    assert len(kept) == 500
    assert all(study == f"1.5.{uid.split('.')[1]}" for uid, study in kept.items())
