"""Several import adapter replicas behind one load balancer, sharing one store (issue 15).

Two adapter processes on two ports, one Orthanc, each replica with its own durable spool and
``--auto_ack_cstore``; replica A reaches the store through a latency proxy with one upload at a
time, so it is still uploading when the modality asks for Storage Commitment - of replica B,
as a load balancer may send it. Then SIGTERM on a replica with a queue: readiness, the spool
drain, what is left, the next start, and the commitment report a pending transaction gets.
"""

from __future__ import annotations

import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from common.status import Status
from tests.integration.commitment_support import Requester, aet_dictionary_json
from tests.integration.spool_support import queued_files, send_files, stored_uids
from tests.support.adapters import AdapterProcess
from tests.support.latency_proxy import FarStore, far_store
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port, wait_until
from tests.support.samples import make_corpus

#: One way through the proxy: with one upload at a time, about 0.1 s per instance.
ONE_WAY_MS = 40.0
INSTANCES = 60


@pytest.fixture
def requester() -> Iterator[Requester]:
    item = Requester([str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)])
    item.listen()
    yield item
    item.stop()


@pytest.fixture
def slow_store(fresh_orthanc: Callable[..., OrthancServer]) -> Iterator[
    tuple[OrthancServer, FarStore]
]:
    store = fresh_orthanc()
    with far_store(store.http_port, ONE_WAY_MS, tls=False) as far:
        yield store, far


def _replica(dicomweb: str, spool: Path, log: Path, *extra: str) -> AdapterProcess:
    return AdapterProcess(
        [
            "--dicomweb_address", dicomweb,
            "--persistent_file_storage_location", str(spool),
            "--auto_ack_cstore", "--spool_min_free_disk_mb", "0",
            "--upload_concurrency", "1",
            "--min_upload_delay", "50", "--max_waiting_time_between_uploads", "500",
            *extra,
        ],
        log_path=log,
    )


def _readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except urllib.error.URLError:
        return 0  # not listening (yet): the health endpoint starts after the DIMSE listener


def test_commitment_sent_to_another_replica_waits_for_the_uploads(
    slow_store: tuple[OrthancServer, FarStore], requester: Requester, tmp_path: Path
) -> None:
    store, far = slow_store
    corpus = make_corpus(tmp_path / "c", INSTANCES, kinds=("CT",))
    unknown = (corpus[0].sop_class_uid, generate_uid())
    wait = 10.0
    a = _replica(far.url("/dicom-web"), tmp_path / "spool-a", tmp_path / "a.log").start()
    b = _replica(
        store.dicomweb_url, tmp_path / "spool-b", tmp_path / "b.log",
        "--aet_dictionary_inline", aet_dictionary_json(requester),
        "--storage_commitment_wait", str(wait),
    ).start()
    try:
        acked = send_files(a.port, [s.path for s in corpus], calling_aet="COMMITSCU")
        assert len(acked) == INSTANCES and set(acked.values()) == {Status.SUCCESS}
        refs = [(s.sop_class_uid, s.sop_instance_uid) for s in corpus] + [unknown]
        asked = time.monotonic()
        transaction, status = requester.request(b.port, refs)
        assert status == Status.SUCCESS
        in_store_when_asked = len(stored_uids(store))
        event_type, info = requester.report(timeout=wait + 30)
        answered = time.monotonic() - asked
        assert len(stored_uids(store)) == INSTANCES
    finally:
        a.kill()
        b.kill()
    assert in_store_when_asked < INSTANCES, "replica A should still be uploading"
    assert event_type == 2 and info.TransactionUID == transaction
    assert {i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence} == {
        s.sop_instance_uid for s in corpus
    }
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in info.FailedSOPSequence] == [
        (unknown[1], Status.NO_SUCH_OBJECT_INSTANCE)
    ]
    # The unknown instance is failed at the deadline, not before.
    assert wait - 0.5 <= answered < wait + 10, answered


def test_sigterm_drains_reports_and_the_next_start_uploads_the_rest(
    fresh_orthanc: Callable[..., OrthancServer], requester: Requester, tmp_path: Path
) -> None:
    store = fresh_orthanc()
    # Twice as far: about 0.16 s per upload, so the drain cannot finish in its 2 s.
    with far_store(store.http_port, 2 * ONE_WAY_MS, tls=False) as far:
        _sigterm_with_a_queue(store, far, requester, tmp_path)


def _sigterm_with_a_queue(
    store: OrthancServer, far: FarStore, requester: Requester, tmp_path: Path
) -> None:
    corpus = make_corpus(tmp_path / "c", INSTANCES, kinds=("CT",))
    unknown = (corpus[0].sop_class_uid, generate_uid())
    spool = tmp_path / "spool-a"
    metrics_port = free_port()
    args = (
        "--aet_dictionary_inline", aet_dictionary_json(requester),
        "--metrics_port", str(metrics_port), "--shutdown_grace", "1",
        "--spool_drain_timeout", "2",
    )
    a = _replica(far.url("/dicom-web"), spool, tmp_path / "a.log", *args).start()
    try:
        wait_until(lambda: _readyz(metrics_port) == 200, timeout=15, message="ready")
        acked = send_files(a.port, [s.path for s in corpus], calling_aet="COMMITSCU")
        assert len(acked) == INSTANCES and set(acked.values()) == {Status.SUCCESS}
        refs = [(s.sop_class_uid, s.sop_instance_uid) for s in corpus] + [unknown]
        transaction, status = requester.request(a.port, refs)  # default wait: 120 s
        assert status == Status.SUCCESS
        assert a.process is not None
        a.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # Not ready from the moment SIGTERM arrives, while the process drains.
        wait_until(lambda: _readyz(metrics_port) == 503, timeout=5, interval=0.05,
                   message="/readyz 503 after SIGTERM")
        unready_after = time.monotonic() - signalled
        assert a.process.poll() is None, "still draining"
        # The pending transaction is reported before the process exits.
        event_type, info = requester.report(timeout=40)
        assert a.process.wait(timeout=60) == 0
    finally:
        a.kill()
    assert unready_after < 1.0, unready_after
    log = a.log()
    stored = stored_uids(store)
    left = queued_files(spool)
    lines = [line for line in log.splitlines() if "left in the spool for" in line]
    assert len(lines) <= 1
    if lines:
        count = int(re.search(r"(\d+) instances left in the spool for", lines[0]).group(1))  # type: ignore[union-attr]
        assert count == len(left) > 0
        assert lines[0].endswith("they are uploaded at the next start")
        assert far.url("/dicom-web") in lines[0]
    assert len(stored) + len(left) == INSTANCES
    assert len(stored) > 0, "the drain kept uploading after SIGTERM"
    # The report: what the store had at the final check is committed, the rest failed.
    assert event_type == 2 and info.TransactionUID == transaction
    committed = {i.ReferencedSOPInstanceUID for i in info.get("ReferencedSOPSequence", [])}
    failed = {i.ReferencedSOPInstanceUID: i.FailureReason for i in info.FailedSOPSequence}
    assert committed | set(failed) == {s.sop_instance_uid for s in corpus} | {unknown[1]}
    assert committed <= stored and failed[unknown[1]] == Status.NO_SUCH_OBJECT_INSTANCE
    assert "get their final check and report" in log
    # The next start uploads what was left: the store then holds every acknowledged instance.
    with _replica(far.url("/dicom-web"), spool, tmp_path / "a2.log", *args[:2]):
        wait_until(lambda: set(acked) <= stored_uids(store), timeout=60, interval=0.5,
                   message="every acknowledged instance in Orthanc")
        wait_until(lambda: not queued_files(spool), timeout=20, message="spool empty")
    assert len(stored_uids(store)) == len(acked) == INSTANCES
