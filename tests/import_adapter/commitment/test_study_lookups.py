"""Commitment lookups per study: grouping, settling from a listing, and the same verdicts."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from common.dicom.reference import InstanceReference
from common.dimse.aet_dictionary import AetDictionary
from common.dimse.sender import PeerAddress
from common.errors import DicomwebConnectionError, DicomwebHttpError
from common.retry import RetryPolicy
from common.status import Status
from import_adapter.commitment.known_studies import KnownStudies
from import_adapter.commitment.service import (
    CommitmentRequest,
    CommitmentService,
    CommitmentSettings,
    group_by_study,
    settle_from_listing,
    verdict,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def _ref(uid: str, sop_class: str = CT) -> InstanceReference:
    return InstanceReference(sop_instance_uid=uid, sop_class_uid=sop_class)


def _result(uid: str, sop_class: str | None = CT) -> dict[str, Any]:
    result: dict[str, Any] = {"00080018": {"vr": "UI", "Value": [uid]}}
    if sop_class is not None:
        result["00080016"] = {"vr": "UI", "Value": [sop_class]}
    return result


# -- pure: grouping and settling ---------------------------------------------------------------


def test_grouping_lists_a_study_only_for_two_or_more_of_its_instances() -> None:
    refs = [_ref("1.1"), _ref("1.2"), _ref("1.3"), _ref("1.4"), _ref("1.5")]
    studies = {"1.1": "9.1", "1.2": "9.2", "1.3": "9.1", "1.5": "9.3"}
    by_study, alone = group_by_study(refs, studies)
    assert by_study == {"9.1": [_ref("1.1"), _ref("1.3")]}
    assert alone == [_ref("1.4"), _ref("1.2"), _ref("1.5")]  # unknown first, then singles
    assert group_by_study([], studies) == ({}, [])


def test_verdict_is_the_per_instance_rule() -> None:
    assert verdict(_ref("1.1"), {CT}) is None
    assert verdict(_ref("1.1"), {MR, CT}) is None
    assert verdict(_ref("1.1"), {None}) is None  # the store did not say: taken at its word
    assert verdict(_ref("1.1"), {MR}) == Status.CLASS_INSTANCE_CONFLICT


def test_settling_from_a_listing() -> None:
    refs = [_ref("1.1"), _ref("1.2"), _ref("1.3"), _ref("1.4", MR)]
    listing = [_result("1.7"), _result("1.3", MR), _result("1.1"), _result("1.4", None), {}]
    found, rest = settle_from_listing(refs, listing)
    assert found == {
        _ref("1.1"): None,
        _ref("1.3"): Status.CLASS_INSTANCE_CONFLICT,
        _ref("1.4", MR): None,
    }
    assert rest == [_ref("1.2")]


def test_settling_stops_reading_once_all_are_seen() -> None:
    read: list[int] = []

    def listing() -> Iterator[dict[str, Any]]:
        for index in range(1000):
            read.append(index)
            yield _result(f"1.{index}")
        raise AssertionError("read past the last wanted instance")

    found, rest = settle_from_listing([_ref("1.3"), _ref("1.1")], listing())
    assert found == {_ref("1.3"): None, _ref("1.1"): None} and not rest
    assert read == [0, 1, 2, 3]


# -- the service against a store that counts its requests -------------------------------------


class CountingStore:
    """A QIDO-RS store: ``instances?SOPInstanceUID=`` and paged ``studies/{uid}/instances``."""

    def __init__(self, instances: dict[str, tuple[str, str]]) -> None:
        self.instances = instances  # SOP Instance UID -> (study, SOP class)
        self.failing_studies: set[str] = set()
        self.requests: list[tuple[str, ...]] = []
        self.pages: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def search(
        self, resource: Sequence[str], query: Any, *, page_size: int = 10, parallel: int = 1
    ) -> Iterator[dict[str, Any]]:
        with self.lock:
            self.requests.append(tuple(resource))
        if tuple(resource) == ("instances",):
            uid = dict(query)["SOPInstanceUID"]
            if uid in self.instances:
                yield _result(uid, self.instances[uid][1])
            return
        assert resource[0] == "studies" and resource[2] == "instances", resource
        assert dict(query) == {"includefield": "00080016"}
        study = resource[1]
        listing = [_result(uid, sop_class)
                   for uid, (where, sop_class) in self.instances.items() if where == study]
        offset = 0
        while True:
            with self.lock:
                self.pages.append((study, offset))
            if study in self.failing_studies:
                raise DicomwebHttpError(500, reason="Internal Server Error")
            page = listing[offset:offset + page_size]
            yield from page
            if len(page) < page_size:
                return
            offset += page_size

    def count(self, kind: str) -> int:
        return sum(1 for request in self.requests if request[0] == kind)


def _service(store: CountingStore, known: KnownStudies | None, wait: float = 0.3) -> (
    CommitmentService
):
    return CommitmentService(
        store,  # type: ignore[arg-type]
        AetDictionary([PeerAddress("SCU", "127.0.0.1", 11112)]),
        CommitmentSettings(
            wait=wait, lookup_backoff=RetryPolicy(initial_delay=0.05, max_delay=0.1)
        ),
        known_studies=known,
    )


def _check(
    service: CommitmentService, refs: list[InstanceReference]
) -> tuple[list[str], dict[str, int]]:
    try:
        committed, failed = service.check(CommitmentRequest("SCU", "1.2.3", tuple(refs)))
    finally:
        service.stop(0)
    return (
        [ref.sop_instance_uid for ref in committed],
        {ref.sop_instance_uid: reason for ref, reason in failed},
    )


def _known(pairs: dict[str, str]) -> KnownStudies:
    known = KnownStudies()
    for sop, study in pairs.items():
        known.record(sop, study)
    return known


def test_one_listing_per_known_study_and_a_search_for_the_unknown() -> None:
    stored = {f"1.1.{n}": ("9.1", CT) for n in range(10)}
    stored |= {f"1.2.{n}": ("9.2", CT) for n in range(5)}
    stored["1.3.1"] = ("9.3", CT)  # received by another replica: not known here
    store = CountingStore(stored)
    known = _known({uid: study for uid, (study, _) in stored.items() if uid != "1.3.1"})
    committed, failed = _check(_service(store, known), [_ref(uid) for uid in stored])
    assert committed == list(stored) and not failed
    assert store.count("studies") == 2
    assert store.requests.count(("instances",)) == 1


def test_the_same_verdicts_as_searching_each_instance() -> None:
    stored = {
        "1.1.1": ("9.1", CT), "1.1.2": ("9.1", CT), "1.1.3": ("9.1", MR),
        "1.1.4": ("9.9", CT),  # known in 9.1, but the store holds it in another study
    }  # fmt: skip
    refs = [*(_ref(uid) for uid in stored), _ref("1.1.5")]  # 1.1.5: known, never stored
    hints = {"1.1.1": "9.1", "1.1.2": "9.1", "1.1.3": "9.1", "1.1.4": "9.1", "1.1.5": "9.1"}
    by_search = _check(_service(CountingStore(stored), None), refs)
    store = CountingStore(stored)
    by_study = _check(_service(store, _known(hints)), refs)
    assert by_study == by_search == (
        ["1.1.1", "1.1.2", "1.1.4"],
        {"1.1.3": Status.CLASS_INSTANCE_CONFLICT, "1.1.5": Status.NO_SUCH_OBJECT_INSTANCE},
    )
    # One listing; the two it did not settle are searched at once, then alone in later rounds.
    assert store.count("studies") == 1
    searched = [r for r in store.requests if r == ("instances",)]
    assert len(searched) >= 3  # 1.1.4 once, 1.1.5 once per round until the deadline


def test_a_failed_listing_falls_back_to_searching_its_instances(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stored = {"1.1.1": ("9.1", CT), "1.1.2": ("9.1", MR)}
    store = CountingStore(stored)
    store.failing_studies.add("9.1")
    committed, failed = _check(
        _service(store, _known({"1.1.1": "9.1", "1.1.2": "9.1"})), [_ref("1.1.1"), _ref("1.1.2")]
    )
    assert committed == ["1.1.1"] and failed == {"1.1.2": Status.CLASS_INSTANCE_CONFLICT}
    assert store.count("studies") == 1 and store.count("instances") == 2
    assert "QIDO listing of study 9.1 failed" in caplog.text


def test_a_store_that_is_down_gives_each_instance_its_search_failure() -> None:
    class DownStore(CountingStore):
        def search(
            self, resource: Sequence[str], query: Any, *, page_size: int = 10, parallel: int = 1
        ) -> Iterator[dict[str, Any]]:
            with self.lock:
                self.requests.append(tuple(resource))
            raise DicomwebConnectionError("store unreachable")
            yield {}  # a generator, as the client's search is

    store = DownStore({})
    refs = [_ref("1.1.1"), _ref("1.1.2")]
    committed, failed = _check(_service(store, _known({"1.1.1": "9.1", "1.1.2": "9.1"})), refs)
    assert not committed and failed == {
        "1.1.1": Status.PROCESSING_FAILURE, "1.1.2": Status.PROCESSING_FAILURE
    }
    # The listing failed once; from then on each instance is searched by itself.
    assert store.count("studies") == 1 and store.count("instances") >= 4


def test_a_large_study_is_read_no_further_than_the_searches_it_replaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import import_adapter.commitment.service as service_module

    monkeypatch.setattr(service_module, "_STUDY_PAGE_SIZE", 10)
    stored = {f"1.1.{n:03}": ("9.1", CT) for n in range(100)}
    store = CountingStore(stored)
    known = _known({uid: "9.1" for uid in stored})
    # Two wanted: the first is on page 1, the second on page 8 (never reached: 2 pages at most).
    committed, failed = _check(_service(store, known), [_ref("1.1.005"), _ref("1.1.075")])
    assert committed == ["1.1.005", "1.1.075"] and not failed
    assert store.pages == [("9.1", 0), ("9.1", 10)]
    assert store.requests.count(("instances",)) == 1  # 1.1.075, searched by itself
