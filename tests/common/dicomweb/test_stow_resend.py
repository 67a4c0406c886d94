"""A STOW-RS that may have been stored by an earlier try is not called a duplicate blindly.

Over raw loopback servers: the transport marks a request it sent again after writing it whole
(``resent``), and ``DicomwebClient.store()`` checks a 409 that follows such a resend, or a
retry after a timeout, with QIDO-RS, while a 409 to a first, clean try stays 0x0111.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from pydicom.filereader import read_file_meta_info

from common.auth import NoAuth
from common.dicom.part10 import Part10Instance
from common.dicomweb.address import parse_dicomweb_address
from common.dicomweb.client import DicomwebClient
from common.dicomweb.stow import stow_status
from common.errors import DicomwebHttpError
from common.http import HttpSettings, HttpTransport, was_resent
from common.retry import RetryPolicy
from common.status import Status, store_status_for_error
from tests.support.ports import free_port
from tests.support.raw_http_server import RawHttpServer, ReceivedRequest, answer
from tests.support.samples import pydicom_test_file

_FAST_RETRY = RetryPolicy(initial_delay=0.01, max_delay=0.05, budget=5.0)
_DICOM_JSON = {"Content-Type": "application/dicom+json"}


@pytest.fixture
def instance(tmp_path: Path) -> Part10Instance:
    path = tmp_path / "ct.dcm"
    shutil.copy(pydicom_test_file("CT_small.dcm"), path)
    meta = read_file_meta_info(path)
    return Part10Instance.from_spooled(
        path,
        sop_class_uid=str(meta.MediaStorageSOPClassUID),
        sop_instance_uid=str(meta.MediaStorageSOPInstanceUID),
        transfer_syntax_uid=str(meta.TransferSyntaxUID),
    )


@pytest.fixture
def transport() -> Iterator[HttpTransport]:
    client = HttpTransport(HttpSettings(connect_timeout=5, read_timeout=10))
    yield client
    client.close()


def _qido_result(uid: str) -> bytes:
    return json.dumps([{"00080018": {"vr": "UI", "Value": [uid]}}]).encode()


def _stow_duplicate(uid: str) -> bytes:
    """A STOW-RS response listing the instance in FailedSOPSequence with 0x0111."""
    return json.dumps({"00081198": {"vr": "SQ", "Value": [{
        "00081155": {"vr": "UI", "Value": [uid]},
        "00081197": {"vr": "US", "Value": [0x0111]},
    }]}}).encode()


def _store(
    uid: str,
    *,
    lose_first_post: bool,
    duplicate: Callable[[socket.socket], None],
    qido: str = "found",
    stall: threading.Event | None = None,
) -> Callable[[ReceivedRequest, socket.socket], bool]:
    """A store that answers GET /warm 200 and QIDO-RS by ``qido``; its first POST is read
    whole and then closed on without an answer (``lose_first_post``) or answered only when
    ``stall`` is set; later POSTs get ``duplicate``."""
    posts = 0
    lock = threading.Lock()

    def respond(request: ReceivedRequest, sock: socket.socket) -> bool:
        nonlocal posts
        if request.method == "GET" and request.target.startswith("/dicom-web/instances"):
            if qido == "found":
                answer(sock, 200, _qido_result(uid), _DICOM_JSON)
            elif qido == "other":  # a server that ignores the key: another instance
                answer(sock, 200, _qido_result("1.2.3.999"), _DICOM_JSON)
            elif qido == "empty":
                answer(sock, 200, b"[]", _DICOM_JSON)
            else:  # a store that refuses the search (not retried)
                answer(sock, 400, b"search not supported", reason="Bad Request")
            return True
        if request.method == "POST":
            with lock:
                posts += 1
                first = posts == 1
            if first and lose_first_post:
                return False  # the whole request was read: close without an answer
            if first and stall is not None:
                stall.wait(10)
                return False
            duplicate(sock)
            return True
        answer(sock, 200, b"ok")
        return True

    return respond


def _conflict(sock: socket.socket) -> None:
    answer(sock, 409, b'{"error": "instance exists"}', reason="Conflict")


def _client(server: RawHttpServer, transport: HttpTransport) -> DicomwebClient:
    address = parse_dicomweb_address(f"{server.url}/dicom-web")
    return DicomwebClient(address, transport, NoAuth(), _FAST_RETRY)


def _qido_requests(server: RawHttpServer) -> list[ReceivedRequest]:
    return [r for r in server.requests if r.target.startswith("/dicom-web/instances")]


# --------------------------------------------------------------------------- transport


def test_a_request_read_whole_then_unanswered_is_resent_and_marked(
    transport: HttpTransport, instance: Part10Instance
) -> None:
    uid = instance.sop_instance_uid
    with RawHttpServer(_store(uid, lose_first_post=True, duplicate=_conflict)) as server:
        transport.request("GET", f"{server.url}/warm", headers={})  # a kept connection
        with pytest.raises(DicomwebHttpError) as raised:
            transport.request(
                "POST", f"{server.url}/dicom-web/studies", headers={}, body=b"x" * 1000
            )
        assert raised.value.status == 409
        assert raised.value.resent and was_resent(raised.value)
        first, second = (r for r in server.requests if r.method == "POST")
        assert (first.connection, first.number, first.body_size) == (1, 2, 1000)
        assert (second.connection, second.number, second.body_size) == (2, 1, 1000)
        # The same on a 2xx answer; and a request answered at once is not marked.
        response = transport.request("GET", f"{server.url}/warm", headers={})
        assert response.status == 200 and not was_resent(response)


def test_a_resent_2xx_response_is_marked(transport: HttpTransport) -> None:
    def respond(request: ReceivedRequest, sock: socket.socket) -> bool:
        if request.connection == 1 and request.number == 2:
            return False
        answer(sock, 200, b"ok")
        return True

    with RawHttpServer(respond) as server:
        first = transport.request("GET", server.url, headers={})
        assert not was_resent(first) and not first.resent  # type: ignore[attr-defined]
        again = transport.request("POST", server.url, headers={}, body=b"abc")
        assert again.data == b"ok" and was_resent(again)
        assert server.connections == 2


class _ResetWhileSending:
    """Answers the first request of its first connection; at the head of the second request
    it resets that connection (without reading its body). Later connections: one 409."""

    def __init__(self) -> None:
        self.port = free_port()
        self.heads: list[bytes] = []
        self.bodies: list[int] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        first, _ = self._listener.accept()
        with first:
            buffer = self._read_head(first, b"")
            first.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            self._read_head(first, buffer)
            first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        second, _ = self._listener.accept()
        with second:
            received = len(self._read_head(second, b""))
            length = int(self.heads[-1].lower().split(b"content-length:")[1].split(b"\r\n")[0])
            while received < length:
                chunk = second.recv(1 << 20)
                if not chunk:
                    break
                received += len(chunk)
            self.bodies.append(received)
            second.sendall(
                b"HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )

    def _read_head(self, sock: socket.socket, buffer: bytes) -> bytes:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            buffer += chunk
        head, _, rest = buffer.partition(b"\r\n\r\n")
        self.heads.append(head)
        return rest

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=5)


def test_a_resend_after_writing_failed_part_way_is_not_marked(transport: HttpTransport) -> None:
    """The server cannot have acted on a request whose body it never got whole: no mark."""
    server = _ResetWhileSending()
    try:
        url = f"http://127.0.0.1:{server.port}"
        transport.request("GET", url, headers={})
        body = b"\0" * (64 << 20)  # far more than the socket buffers hold
        with pytest.raises(DicomwebHttpError) as raised:
            transport.request("POST", f"{url}/dicom-web/studies", headers={}, body=body)
        assert raised.value.status == 409 and not raised.value.resent
        assert len(server.heads) == 3 and server.bodies == [len(body)]
    finally:
        server.close()


# --------------------------------------------------------------------------- DicomwebClient.store


@pytest.mark.parametrize(
    ("qido", "expected"),
    [
        ("found", Status.SUCCESS),
        ("empty", Status.DUPLICATE_SOP_INSTANCE),
        ("other", Status.DUPLICATE_SOP_INSTANCE),
        ("fails", Status.DUPLICATE_SOP_INSTANCE),
    ],
)
def test_409_after_a_transport_resend_is_checked(
    transport: HttpTransport,
    instance: Part10Instance,
    caplog: pytest.LogCaptureFixture,
    qido: str,
    expected: Status,
) -> None:
    uid = instance.sop_instance_uid
    responder = _store(uid, lose_first_post=True, duplicate=_conflict, qido=qido)
    with RawHttpServer(responder) as server:
        client = _client(server, transport)
        transport.request("GET", f"{server.url}/warm", headers={})  # a kept connection
        caplog.set_level("INFO", logger="common.dicomweb.client")
        if expected == Status.SUCCESS:
            result = client.store(instance)
            assert result.status.code == Status.SUCCESS and result.http_status == 409
            assert f"409 after a resend: instance is in the store (SOP Instance UID '{uid}')" in (
                caplog.text
            )
        else:
            with pytest.raises(DicomwebHttpError) as raised:
                client.store(instance)
            assert store_status_for_error(raised.value).code == expected
        (check,) = _qido_requests(server)
        query = parse_qs(urlsplit(check.target).query)
        assert urlsplit(check.target).path == "/dicom-web/instances"
        assert query["SOPInstanceUID"] == [uid]
        assert [r.method for r in server.requests] == ["GET", "POST", "POST", "GET"]


def test_409_to_a_first_clean_try_stays_a_duplicate_without_a_search(
    transport: HttpTransport, instance: Part10Instance
) -> None:
    responder = _store(instance.sop_instance_uid, lose_first_post=False, duplicate=_conflict)
    with RawHttpServer(responder) as server:
        client = _client(server, transport)
        transport.request("GET", f"{server.url}/warm", headers={})
        with pytest.raises(DicomwebHttpError) as raised:
            client.store(instance)
        assert store_status_for_error(raised.value).code == Status.DUPLICATE_SOP_INSTANCE
        assert not raised.value.resent
        assert _qido_requests(server) == []
        assert [r.method for r in server.requests] == ["GET", "POST"]


def test_409_after_a_retry_that_followed_a_timeout_is_checked(instance: Part10Instance) -> None:
    uid = instance.sop_instance_uid
    stall = threading.Event()
    transport = HttpTransport(HttpSettings(connect_timeout=5, read_timeout=0.3))
    responder = _store(uid, lose_first_post=False, duplicate=_conflict, stall=stall)
    try:
        with RawHttpServer(responder) as server:
            result = _client(server, transport).store(instance)
            assert result.status.code == Status.SUCCESS
            assert [r.method for r in server.requests] == ["POST", "POST", "GET"]
            stall.set()
    finally:
        stall.set()
        transport.close()


def test_failed_sop_sequence_0111_after_a_resend_is_checked(
    transport: HttpTransport, instance: Part10Instance
) -> None:
    uid = instance.sop_instance_uid

    def duplicate(sock: socket.socket) -> None:
        answer(sock, 200, _stow_duplicate(uid), _DICOM_JSON)

    assert stow_status(_stow_duplicate(uid), "application/dicom+json", uid).code == 0x0111
    for lose_first_post, expected in ((True, Status.SUCCESS), (False, 0x0111)):
        responder = _store(uid, lose_first_post=lose_first_post, duplicate=duplicate)
        with RawHttpServer(responder) as server:
            client = _client(server, transport)
            transport.request("GET", f"{server.url}/warm", headers={})
            assert client.store(instance).status.code == expected
            assert len(_qido_requests(server)) == (1 if lose_first_post else 0)
        transport.close()
