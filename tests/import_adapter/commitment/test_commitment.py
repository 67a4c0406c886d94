"""Storage Commitment logic without a network: request validation, lookups, report, retries."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from common.dimse.aet_dictionary import AetDictionary
from common.dimse.sender import PeerAddress
from common.errors import CommitmentRequestError, DicomwebConnectionError, PeerUnavailableError
from common.metrics import NullImportObserver
from common.retry import RetryPolicy
from common.status import SUCCESS, DimseStatus, Status
from import_adapter.commitment.report import ReportSettings
from import_adapter.commitment.service import (
    CommitmentService,
    CommitmentSettings,
    PendingInstances,
    build_report,
    parse_request,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


class RecordingObserver(NullImportObserver):
    """Records commitment metrics."""

    def __init__(self) -> None:
        self.commitments: list[tuple[str, int, int]] = []

    def commitment_done(self, calling_aet: str, instances: int, failed: int) -> None:
        self.commitments.append((calling_aet, instances, failed))


def _info(refs: Sequence[tuple[str, str]], transaction: str = "1.2.3") -> Dataset:
    ds = Dataset()
    if transaction:
        ds.TransactionUID = transaction
    items = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = DicomSequence(items)
    return ds


@pytest.mark.parametrize(
    ("action", "info", "status"),
    [
        (2, _info([(CT, "1")]), Status.NO_SUCH_ACTION_TYPE),
        (1, _info([(CT, "1")], transaction=""), Status.MISSING_ATTRIBUTE),
        (1, _info([]), Status.MISSING_ATTRIBUTE),
        (1, _info([(CT, "")]), Status.INVALID_ARGUMENT_VALUE),
    ],
)
def test_invalid_requests(action: int, info: Dataset, status: Status) -> None:
    with pytest.raises(CommitmentRequestError) as caught:
        parse_request("SCU", action, info)
    assert caught.value.status == status


def test_report_event_types() -> None:
    request = parse_request("SCU", 1, _info([(CT, "1"), (CT, "2")]))
    event, ds = build_report("1.2.3", list(request.instances), [])
    assert event == 1 and len(ds.ReferencedSOPSequence) == 2 and "FailedSOPSequence" not in ds
    event, ds = build_report("1.2.3", [request.instances[0]], [(request.instances[1], 0x0112)])
    assert event == 2 and ds.FailedSOPSequence[0].FailureReason == 0x0112


class FakeStore:
    def __init__(self, instances: dict[str, str], fail: set[str]) -> None:
        self.instances = instances
        self.fail = fail

    def search(self, resource: Sequence[str], query: Any, *, page_size: int = 10,
               parallel: int = 1) -> Iterator[
        dict[str, Any]
    ]:
        uid = dict(query)["SOPInstanceUID"]
        if uid in self.fail:
            raise DicomwebConnectionError("1.9.4")
        if uid in self.instances:
            yield {"00080016": {"vr": "UI", "Value": [self.instances[uid]]}}


class FakePending:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def wait_uploaded(self, uids: Iterable[str], timeout: float) -> set[str]:
        self.asked.extend(uids)
        return set()


def test_service_checks_and_reports_with_retries() -> None:
    sent: list[tuple[PeerAddress, int, Dataset]] = []
    done = threading.Event()
    calls = {"n": 0}

    def sender(peer: PeerAddress, event: int, ds: Dataset, _s: ReportSettings) -> DimseStatus:
        calls["n"] += 1
        if calls["n"] < 3:
            raise PeerUnavailableError("requester down")
        sent.append((peer, event, ds))
        done.set()
        return SUCCESS

    peer = PeerAddress("SCU", "127.0.0.1", 11112)
    pending = FakePending()
    observer = RecordingObserver()
    service = CommitmentService(
        FakeStore({"1": CT, "2": MR}, {"4"}),  # type: ignore[arg-type]
        AetDictionary([peer]),
        CommitmentSettings(report_retry=RetryPolicy(initial_delay=0.01, max_delay=0.02,
                                                    budget=5),
                           wait=0.3, lookup_backoff=RetryPolicy(initial_delay=0.05)),
        pending,
        sender,
        observer=observer,
    )
    info = _info([(CT, "1"), (CT, "2"), (CT, "3"), (CT, "4")])
    assert service.request("SCU", 1, info) == SUCCESS
    assert done.wait(5)
    peer_sent, event, ds = sent[0]
    assert peer_sent == peer and event == 2 and calls["n"] == 3
    assert [i.ReferencedSOPInstanceUID for i in ds.ReferencedSOPSequence] == ["1"]
    reasons = {i.ReferencedSOPInstanceUID: i.FailureReason for i in ds.FailedSOPSequence}
    assert reasons == {"2": 0x0119, "3": 0x0112, "4": 0x0110}
    # The spool is asked about every instance, then only about those still unsettled.
    assert pending.asked[:4] == ["1", "2", "3", "4"] and set(pending.asked[4:]) == {"3", "4"}
    assert observer.commitments == [("SCU", 4, 3)]
    assert service.request("OTHER", 1, info).code == Status.PROCESSING_FAILURE
    service.stop()


# -- looking missing instances up again until the deadline (fake clock) -------------------------


class FakeClock:
    """Time that passes only when the service waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += max(0.0, seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if not event.is_set():
            self.advance(seconds)
        return event.is_set()


class TimedStore:
    """A store where instances appear at given times; records when each was looked up."""

    def __init__(self, clock: FakeClock, appear: dict[str, float],
                 failing_until: dict[str, float] | None = None) -> None:
        self.clock = clock
        self.appear = appear
        self.failing_until = failing_until or {}
        self.lookups: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def search(self, resource: Sequence[str], query: Any, *, page_size: int = 10,
               parallel: int = 1) -> Iterator[dict[str, Any]]:
        uid = dict(query)["SOPInstanceUID"]
        now = self.clock()
        with self.lock:
            self.lookups.setdefault(uid, []).append(now)
        if now < self.failing_until.get(uid, float("-inf")):
            raise DicomwebConnectionError("store unreachable")
        if now >= self.appear.get(uid, float("inf")):
            yield {"00080016": {"vr": "UI", "Value": [CT]}}


class TimedSpool:
    """This replica's spool: instances leave it (uploaded) at given times."""

    def __init__(self, clock: FakeClock, uploaded_at: dict[str, float]) -> None:
        self.clock = clock
        self.uploaded_at = uploaded_at

    def _queued(self, uids: Iterable[str]) -> set[str]:
        return {uid for uid in uids if self.clock() < self.uploaded_at.get(uid, float("-inf"))}

    def wait_uploaded(self, uids: Iterable[str], timeout: float) -> set[str]:
        wanted = set(uids)
        queued = self._queued(wanted)
        if queued and timeout > 0:
            last = max(self.uploaded_at[uid] for uid in queued)
            self.clock.advance(min(timeout, last - self.clock()))
            queued = self._queued(wanted)
        return queued


def _timed_service(
    clock: FakeClock, store: Any, pending: PendingInstances | None = None, wait: float = 10.0
) -> CommitmentService:
    return CommitmentService(
        store,
        AetDictionary([PeerAddress("SCU", "127.0.0.1", 11112)]),
        CommitmentSettings(wait=wait),
        pending,
        clock=clock,
        wait=clock.wait,
    )


def test_lookup_schedule_doubles_from_half_a_second_to_ten() -> None:
    settings = CommitmentSettings()
    delays = settings.lookup_backoff.backoff()
    assert [next(delays) for _ in range(8)] == [0.5, 1, 2, 4, 8, 10, 10, 10]
    assert settings.wait == 120.0


def test_missing_instance_is_looked_up_again_until_the_deadline() -> None:
    clock = FakeClock()
    store = TimedStore(clock, {"1.9.1": 3.2})  # "1.9.2" never appears
    service = _timed_service(clock, store)
    request = parse_request("SCU", 1, _info([(CT, "1.9.1"), (CT, "1.9.2")]))
    try:
        committed, failed = service.check(request, arrival=0.0)
    finally:
        service.stop(0)
    assert [ref.sop_instance_uid for ref in committed] == ["1.9.1"]
    assert [(ref.sop_instance_uid, reason) for ref, reason in failed] == [
        ("1.9.2", Status.NO_SUCH_OBJECT_INSTANCE)]
    # 0.5 s doubling, the last lookup at the deadline (10 s after arrival), not before.
    assert store.lookups["1.9.2"] == [0.0, 0.5, 1.5, 3.5, 7.5, 10.0]
    assert store.lookups["1.9.1"] == [0.0, 0.5, 1.5, 3.5]
    assert clock() == 10.0


def test_deadline_counts_from_arrival_and_nothing_waits_once_all_are_found() -> None:
    clock = FakeClock()
    clock.advance(4.0)  # the request waited 4 s in the queue before its check began
    store = TimedStore(clock, {"1.8.1": 0.0, "1.8.2": 4.9})
    service = _timed_service(clock, store, wait=6.0)
    request = parse_request("SCU", 1, _info([(CT, "1.8.1"), (CT, "1.8.2"), (CT, "1.8.3")]))
    try:
        committed, failed = service.check(request, arrival=0.0)
        assert store.lookups["1.8.3"] == [4.0, 4.5, 5.5, 6.0]
        assert store.lookups["1.8.2"] == [4.0, 4.5, 5.5]
        assert len(committed) == 2 and len(failed) == 1
        found = parse_request("SCU", 1, _info([(CT, "1.8.1"), (CT, "1.8.2")]))
        before = clock()
        committed, failed = service.check(found, arrival=before)
        assert len(committed) == 2 and not failed and clock() == before  # reported at once
    finally:
        service.stop(0)


def test_failing_lookups_are_retried_and_reported_0x0110_at_the_deadline() -> None:
    clock = FakeClock()
    store = TimedStore(clock, {"1.9.3": 0.0, "1.9.4": 0.0},
                       failing_until={"1.9.3": 1.0, "1.9.4": 99.0})
    service = _timed_service(clock, store, wait=5.0)
    request = parse_request("SCU", 1, _info([(CT, "1.9.3"), (CT, "1.9.4")]))
    try:
        committed, failed = service.check(request, arrival=0.0)
    finally:
        service.stop(0)
    assert [ref.sop_instance_uid for ref in committed] == ["1.9.3"]
    assert [(ref.sop_instance_uid, reason) for ref, reason in failed] == [
        ("1.9.4", Status.PROCESSING_FAILURE)]
    assert store.lookups["1.9.3"] == [0.0, 0.5, 1.5]
    assert store.lookups["1.9.4"][-1] == 5.0


def test_instances_in_the_local_spool_are_waited_for_not_looked_up() -> None:
    clock = FakeClock()
    store = TimedStore(clock, {"1.9.5": 2.5, "1.9.6": 0.0})
    spool = TimedSpool(clock, {"1.9.5": 2.5})
    service = _timed_service(clock, store, spool)
    request = parse_request("SCU", 1, _info([(CT, "1.9.5")]))
    try:
        committed, failed = service.check(request, arrival=0.0)
        # Not asked while queued here; looked up as soon as its upload ended.
        assert store.lookups == {"1.9.5": [2.5]}
        assert len(committed) == 1 and not failed and clock() == 2.5
        # One still in the spool at the deadline: looked up then, and reported missing.
        spool.uploaded_at["1.9.7"] = 99.0
        request = parse_request("SCU", 1, _info([(CT, "1.9.7"), (CT, "1.9.6")]))
        committed, failed = service.check(request, arrival=clock())
        assert store.lookups["1.9.7"] == [12.5]
        assert [(ref.sop_instance_uid, reason) for ref, reason in failed] == [
            ("1.9.7", Status.NO_SUCH_OBJECT_INSTANCE)]
    finally:
        service.stop(0)


# -- shutdown: every accepted transaction is reported ------------------------------------------


def test_stop_reports_running_and_queued_transactions_at_once() -> None:
    reports: list[tuple[str, int, dict[str, int]]] = []

    def sender(_p: PeerAddress, event: int, ds: Dataset, _s: ReportSettings) -> DimseStatus:
        failures = {i.ReferencedSOPInstanceUID: int(i.FailureReason)
                    for i in ds.get("FailedSOPSequence", [])}
        reports.append((str(ds.TransactionUID), event, failures))
        return SUCCESS

    store = FakeStore({"1.9.8": CT}, set())
    service = CommitmentService(
        store,  # type: ignore[arg-type]
        AetDictionary([PeerAddress("SCU", "127.0.0.1", 11112)]),
        CommitmentSettings(wait=600, workers=1),  # one runs, the other is queued
        None,
        sender,
    )
    assert service.request("SCU", 1, _info([(CT, "1.9.8"), (CT, "1.9.9")], "1.1")) == SUCCESS
    assert service.request("SCU", 1, _info([(CT, "1.9.10")], "1.2")) == SUCCESS
    time.sleep(0.3)
    assert not reports and service.unreported == 2
    started = time.monotonic()
    service.stop(5.0)
    assert time.monotonic() - started < 2.0
    assert sorted(reports) == [
        ("1.1", 2, {"1.9.9": Status.NO_SUCH_OBJECT_INSTANCE}),
        ("1.2", 2, {"1.9.10": Status.NO_SUCH_OBJECT_INSTANCE}),
    ]
    assert service.unreported == 0
    # Nothing new is accepted once stopping.
    assert service.request("SCU", 1, _info([(CT, "1.9.8")], "1.3")).code == (
        Status.RESOURCE_LIMITATION)


class StuckSpool:
    """A spool whose instances never leave (in real time)."""

    def wait_uploaded(self, uids: Iterable[str], timeout: float) -> set[str]:
        time.sleep(timeout)
        return set(uids)


def test_stop_gives_up_on_an_unreachable_requester_when_the_window_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[float] = []

    def sender(_p: PeerAddress, _e: int, _ds: Dataset, settings: ReportSettings) -> DimseStatus:
        attempts.append(settings.timeout)
        raise PeerUnavailableError("requester down")

    service = CommitmentService(
        FakeStore({"1.9.11": CT}, set()),  # type: ignore[arg-type]
        AetDictionary([PeerAddress("SCU", "127.0.0.1", 11112)]),
        CommitmentSettings(wait=600, report=ReportSettings(timeout=30.0)),
        StuckSpool(),  # "1.9.11" stays queued: the check waits until shutdown
        sender,
    )
    assert service.request("SCU", 1, _info([(CT, "1.9.11")], "2.1")) == SUCCESS
    time.sleep(0.2)
    started = time.monotonic()
    service.stop(1.5)
    assert 1.4 < time.monotonic() - started < 3.0
    assert len(attempts) >= 2  # retried within the window, at least every second
    assert all(timeout <= 1.5 for timeout in attempts)  # associations fit in the window
    assert "1 storage commitment transactions not reported at shutdown: 2.1" in caplog.text
