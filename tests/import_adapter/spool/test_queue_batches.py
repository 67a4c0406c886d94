"""Batched STOW-RS in a destination queue, without a network: who shares a request, and what
happens to each instance of a batch."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pydicom.uid import generate_uid

from common.status import SUCCESS, DimseStatus, Status
from import_adapter.spool.concurrency import ConcurrencySettings
from import_adapter.spool.disk import SpoolLimits
from import_adapter.spool.manager import SpoolManager, SpoolSettings
from import_adapter.spool.outcome import Kind, UploadResult
from import_adapter.spool.queue import BatchSettings, Receipt, UploadSettings
from import_adapter.store import check_instance
from tests.import_adapter.spool.test_spool import DEST_A, _drained, received

STORED = UploadResult(Kind.DONE, SUCCESS)
REFUSED = UploadResult(
    Kind.DEAD, DimseStatus(Status.CANNOT_UNDERSTAND), "destination refused the instance"
)
BUSY = UploadResult(
    Kind.RETRY, DimseStatus(Status.OUT_OF_RESOURCES), "HTTP 500", http_status=500
)


def _uid(path: Path) -> str:
    return str(read_file_meta_info(path).MediaStorageSOPInstanceUID)


class BatchStore:
    """An uploader that records each request's instances and answers per instance.

    ``refuse``: instances refused inside a batch (None) and alone (REFUSED). ``whole``: answers
    given to the next requests as a whole, in order.
    """

    def __init__(self, refuse: Sequence[str] = (), whole: Sequence[UploadResult] = ()) -> None:
        self.lock = threading.Lock()
        self.requests: list[list[str]] = []
        self.refuse = set(refuse)
        self.whole = list(whole)
        self.gate = threading.Event()
        self.gate.set()
        self.arrived = threading.Semaphore(0)  # one release per request, before the gate

    def _record(self, paths: Sequence[Path]) -> UploadResult | None:
        self.arrived.release()
        self.gate.wait(5)
        with self.lock:
            self.requests.append([_uid(path) for path in paths])
            return self.whole.pop(0) if self.whole else None

    def upload(self, path: Path, *, maybe_stored: bool = False) -> UploadResult:
        whole = self._record([path])
        if whole is not None:
            return whole
        return REFUSED if _uid(path) in self.refuse else STORED

    def upload_batch(self, paths: Sequence[Path]) -> list[UploadResult | None]:
        whole = self._record(paths)
        if whole is not None:
            return [whole] * len(paths)
        return [None if _uid(path) in self.refuse else STORED for path in paths]

    def close(self) -> None:
        pass


def _manager(root: Path, store: BatchStore, **upload: object) -> SpoolManager:
    settings = SpoolSettings(
        root, auto_ack=True, limits=SpoolLimits(min_free_bytes=0),
        upload=UploadSettings(
            min_delay=0.01, max_delay=0.05, retry_amount=1, rescan_interval=0.05,
            **{"concurrency": ConcurrencySettings.fixed(1), **upload},  # type: ignore[arg-type]
        ),
    )  # fmt: skip
    return SpoolManager(settings, [DEST_A], lambda _d: lambda: store)


def _queue_while_held(
    manager: SpoolManager, store: BatchStore, studies: Sequence[str], receipt: bool = False
) -> list[str]:
    """Submit one instance per study given, while the store holds its first request.

    The first one alone is the held request: the others are submitted once the store has it (a
    loaded machine may start the worker late), so they make the backlog that batches form from.
    """
    store.gate.clear()
    uids = []
    for index, study in enumerate(studies):
        request = received(manager.layout.incoming, study=study)
        manager.submit(
            check_instance(request), request.origin, [DEST_A], Receipt(1) if receipt else None
        )
        uids.append(request.sop_instance_uid)
        if index == 0:
            assert store.arrived.acquire(timeout=5), "the first upload never started"
    store.gate.set()
    return uids


def test_a_backlog_goes_in_batches_of_one_study_within_the_bounds(tmp_path: Path) -> None:
    store = BatchStore()
    manager = _manager(tmp_path / "s", store, batch=BatchSettings(max_instances=4))
    manager.start()
    try:
        one, other = generate_uid(), generate_uid()
        uids = _queue_while_held(manager, store, [one] * 9 + [other] * 3)
        _drained(manager)
    finally:
        manager.stop()
    assert sorted(uid for request in store.requests for uid in request) == sorted(uids)
    assert max(len(request) for request in store.requests) == 4
    # The held first request, then 8 of the first study in 2 requests, then the other study.
    assert [len(request) for request in store.requests] == [1, 4, 4, 3]
    by_uid = dict(zip(uids, [one] * 9 + [other] * 3, strict=True))
    for request in store.requests:
        assert len({by_uid[uid] for uid in request}) == 1, "a batch mixed studies"


def test_the_byte_bound_sends_instances_alone(tmp_path: Path) -> None:
    store = BatchStore()
    manager = _manager(tmp_path / "s", store, batch=BatchSettings(max_bytes=1))
    manager.start()
    try:
        _queue_while_held(manager, store, [generate_uid()] * 5)
        _drained(manager)
    finally:
        manager.stop()
    assert [len(request) for request in store.requests] == [1] * 5


def test_no_batch_without_a_backlog(tmp_path: Path) -> None:
    store = BatchStore()
    manager = _manager(
        tmp_path / "s", store, concurrency=ConcurrencySettings.fixed(8),
        batch=BatchSettings(max_instances=10),
    )  # fmt: skip
    manager.start()
    try:
        _queue_while_held(manager, store, [generate_uid()] * 5)
        _drained(manager)
    finally:
        manager.stop()
    assert [len(request) for request in store.requests] == [1] * 5


def test_one_refused_in_a_batch_is_sent_again_alone_and_only_it_is_dead_lettered(
    tmp_path: Path,
) -> None:
    study = generate_uid()
    store = BatchStore()
    manager = _manager(tmp_path / "s", store, batch=BatchSettings(max_instances=10))
    manager.start()
    try:
        store.gate.clear()
        first = received(manager.layout.incoming, study=study)
        manager.submit(check_instance(first), first.origin, [DEST_A], None)
        assert store.arrived.acquire(timeout=5)  # held by the store: the next ten are a backlog
        requests = [received(manager.layout.incoming, study=study) for _ in range(10)]
        store.refuse.add(requests[3].sop_instance_uid)
        for request in requests:
            manager.submit(check_instance(request), request.origin, [DEST_A], None)
        store.gate.set()
        _drained(manager)
    finally:
        manager.stop()
    bad = requests[3].sop_instance_uid
    assert [len(request) for request in store.requests] == [1, 10, 1]
    assert store.requests[-1] == [bad]
    dead = list(manager.layout.dead_letter.rglob("*.dcm"))
    assert [_uid(path) for path in dead] == [bad]


def test_a_batch_refused_for_the_store_s_state_is_retried_whole(tmp_path: Path) -> None:
    store = BatchStore(whole=[STORED, BUSY])
    manager = _manager(tmp_path / "s", store, batch=BatchSettings(max_instances=10))
    manager.start()
    try:
        uids = _queue_while_held(manager, store, [generate_uid()] * 6)
        _drained(manager)
    finally:
        manager.stop()
    # 5 refused with a 500 as a batch, then stored together again (one retry used).
    assert [len(request) for request in store.requests] == [1, 5, 5]
    assert sorted(store.requests[1]) == sorted(store.requests[2]) == sorted(uids[1:])
    assert not list(manager.layout.dead_letter.rglob("*.dcm"))


def test_waiting_scus_get_their_own_answers_from_a_batch(tmp_path: Path) -> None:
    study = generate_uid()
    store = BatchStore()
    manager = _manager(tmp_path / "s", store, batch=BatchSettings(max_instances=10))
    manager.start()
    try:
        store.gate.clear()
        receipts = []
        for index in range(6):
            request = received(manager.layout.incoming, study=study)
            if index == 2:
                store.refuse.add(request.sop_instance_uid)
            receipt = Receipt(1)
            manager.submit(check_instance(request), request.origin, [DEST_A], receipt)
            receipts.append(receipt)
            if index == 0:  # held by the store: the next five make the backlog
                assert store.arrived.acquire(timeout=5)
        store.gate.set()
        statuses = [receipt.wait(5) for receipt in receipts]
    finally:
        manager.stop()
    assert [status is not None and status.is_failure for status in statuses] == [
        False, False, True, False, False, False,
    ]
    assert [len(request) for request in store.requests] == [1, 5, 1]
