"""StowUploader: a 409 for an instance whose last upload ended unanswered is looked up first.

Over a raw loopback server, with the spool's NO_RETRY client: one worker's upload times out
after the store read the whole request; the queue's next try (another worker's uploader,
sharing the destination's memory through the client) gets 409 and, the instance being in the
store, is DONE instead of dead-lettered.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.filereader import read_file_meta_info

from common.auth import NoAuth
from common.dicomweb.address import parse_dicomweb_address
from common.dicomweb.client import DicomwebClient
from common.http import HttpSettings, HttpTransport
from common.retry import NO_RETRY
from common.status import Status
from import_adapter.spool.layout import new_entry_name
from import_adapter.spool.outcome import Kind, UploadResult
from import_adapter.spool.uploaders import StowUploader, UnconfirmedStores
from tests.support.raw_http_server import RawHttpServer, ReceivedRequest, answer
from tests.support.samples import pydicom_test_file

_DICOM_JSON = {"Content-Type": "application/dicom+json"}


@pytest.fixture
def entry(tmp_path: Path) -> Path:
    """A spooled file (CT_small with its own UIDs) under a queue entry name."""
    path = tmp_path / new_entry_name("MODALITY")
    shutil.copy(pydicom_test_file("CT_small.dcm"), path)
    return path


@pytest.fixture
def transport() -> Iterator[HttpTransport]:
    client = HttpTransport(HttpSettings(connect_timeout=5, read_timeout=0.3))
    yield client
    client.close()


def _uid(path: Path) -> str:
    return str(read_file_meta_info(path).MediaStorageSOPInstanceUID)


def _store(
    uid: str, *, stall_first_post: bool, qido_found: bool, release: threading.Event
) -> Callable[[ReceivedRequest, socket.socket], bool]:
    """The first POST is read whole and then not answered in time (when ``stall_first_post``);
    later POSTs get 409; QIDO-RS lists the instance when ``qido_found``."""
    posts = 0
    lock = threading.Lock()

    def respond(request: ReceivedRequest, sock: socket.socket) -> bool:
        nonlocal posts
        if request.method == "GET" and request.target.startswith("/dicom-web/instances"):
            found = [{"00080018": {"vr": "UI", "Value": [uid]}}] if qido_found else []
            answer(sock, 200, json.dumps(found).encode(), _DICOM_JSON)
            return True
        with lock:
            posts += 1
            first = posts == 1
        if first and stall_first_post:
            release.wait(10)  # stored, but the answer comes too late
            return False
        answer(sock, 409, b"already exists", reason="Conflict")
        return True

    return respond


def _uploaders(
    server: RawHttpServer, transport: HttpTransport
) -> tuple[UnconfirmedStores, Callable[[], StowUploader]]:
    """The spool's wiring: one NO_RETRY client and one memory per destination, an uploader
    per worker."""
    address = parse_dicomweb_address(f"{server.url}/dicom-web")
    client = DicomwebClient(address, transport, NoAuth(), NO_RETRY)
    unconfirmed = UnconfirmedStores()
    return unconfirmed, lambda: StowUploader(
        client, overwrite=False, retry_codes=frozenset(), unconfirmed=unconfirmed
    )


def _upload_in_thread(uploader: StowUploader, path: Path) -> UploadResult:
    results: list[UploadResult] = []
    worker = threading.Thread(target=lambda: results.append(uploader.upload(path)))
    worker.start()
    worker.join(timeout=30)
    return results[0]


def _methods(server: RawHttpServer) -> list[str]:
    return [r.method for r in server.requests]


def test_a_timed_out_upload_then_409_with_the_instance_present_is_done(
    entry: Path, transport: HttpTransport, caplog: pytest.LogCaptureFixture
) -> None:
    uid = _uid(entry)
    release = threading.Event()
    responder = _store(uid, stall_first_post=True, qido_found=True, release=release)
    try:
        with RawHttpServer(responder) as server:
            unconfirmed, new_uploader = _uploaders(server, transport)
            first = _upload_in_thread(new_uploader(), entry)
            assert first.kind is Kind.UNREACHABLE
            assert uid in unconfirmed
            caplog.set_level("INFO", logger="common.dicomweb.client")
            second = _upload_in_thread(new_uploader(), entry)  # another worker, later
            assert second.kind is Kind.DONE and second.status.code == Status.SUCCESS
            assert second.http_status == 409
            assert _methods(server) == ["POST", "POST", "GET"]
            assert "409 after a resend: instance is in the store" in caplog.text
            assert uid not in unconfirmed  # settled: forgotten
    finally:
        release.set()


def test_a_timed_out_upload_then_409_with_the_instance_absent_is_dead(
    entry: Path, transport: HttpTransport
) -> None:
    uid = _uid(entry)
    release = threading.Event()
    responder = _store(uid, stall_first_post=True, qido_found=False, release=release)
    try:
        with RawHttpServer(responder) as server:
            unconfirmed, new_uploader = _uploaders(server, transport)
            assert new_uploader().upload(entry).kind is Kind.UNREACHABLE
            result = new_uploader().upload(entry)
            assert result.kind is Kind.DEAD
            assert result.status.code == Status.DUPLICATE_SOP_INSTANCE
            assert _methods(server) == ["POST", "POST", "GET"]
            assert uid not in unconfirmed
    finally:
        release.set()


def test_409_without_an_unanswered_upload_before_is_dead_without_a_search(
    entry: Path, transport: HttpTransport
) -> None:
    release = threading.Event()
    responder = _store(_uid(entry), stall_first_post=False, qido_found=True, release=release)
    with RawHttpServer(responder) as server:
        _unconfirmed, new_uploader = _uploaders(server, transport)
        result = new_uploader().upload(entry)
        assert result.kind is Kind.DEAD
        assert result.status.code == Status.DUPLICATE_SOP_INSTANCE
        assert _methods(server) == ["POST"]


def test_unconfirmed_stores_are_bounded() -> None:
    own = UnconfirmedStores(limit=2)
    for uid in ("1", "2", "3"):
        own.add(uid)
    assert "1" not in own and "2" in own and "3" in own and len(own) == 2
    own.discard("2")
    assert len(own) == 1


def test_a_file_found_in_the_spool_answered_409_is_looked_up_and_done(
    entry: Path, transport: HttpTransport
) -> None:
    """Recovered at start, its upload may have been under way when the last process stopped."""
    release = threading.Event()
    responder = _store(_uid(entry), stall_first_post=False, qido_found=True, release=release)
    with RawHttpServer(responder) as server:
        unconfirmed, new_uploader = _uploaders(server, transport)
        result = new_uploader().upload(entry, maybe_stored=True)
        assert result.kind is Kind.DONE and result.status.code == Status.SUCCESS
        assert _methods(server) == ["POST", "GET"]
        assert _uid(entry) not in unconfirmed
