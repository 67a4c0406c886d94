"""HttpTransport against real loopback servers: keep-alive, framing, streaming both ways, stale
connections, errors, timeouts, TLS and many threads at once."""

from __future__ import annotations

import hashlib
import io
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, cast

import pytest

from common.auth import NoAuth
from common.dicomweb.address import parse_dicomweb_address
from common.dicomweb.client import DicomwebClient
from common.errors import (
    DicomwebConnectionError,
    DicomwebError,
    DicomwebHttpError,
    DicomwebTimeoutError,
)
from common.http import (
    USER_AGENT,
    Body,
    FileRange,
    HttpSettings,
    HttpTransport,
    redact_url,
    retry_after_seconds,
)
from common.retry import RetryPolicy
from common.status import rule_for_error
from tests.support.ports import free_port, wait_until
from tests.support.raw_http_server import RawHttpServer, ReceivedRequest, answer
from tests.support.tls_certs import make_pki

_MB = 1 << 20


def echo(request: ReceivedRequest, sock: socket.socket) -> bool:
    """Answer with the method, target and body size seen (Content-Length framing)."""
    answer(sock, 200, f"{request.method} {request.target} {request.body_size}".encode())
    return True


@pytest.fixture
def transport() -> Iterator[HttpTransport]:
    client = HttpTransport(HttpSettings(connect_timeout=5, read_timeout=10))
    yield client
    client.close()


def pattern(size: int) -> Iterator[bytes]:
    """``size`` bytes of a repeating pattern in blocks of 256 KiB (never all in memory)."""
    block = bytes(range(256)) * 1024
    while size > 0:
        yield block[:size]
        size -= len(block)


def digest(chunks: Iterator[bytes]) -> str:
    sha = hashlib.sha256()
    for chunk in chunks:
        sha.update(chunk)
    return sha.hexdigest()


# --------------------------------------------------------------------------- keep-alive, head


def test_many_requests_share_one_keep_alive_connection(transport: HttpTransport) -> None:
    with RawHttpServer(echo) as server:
        for index in range(50):
            response = transport.request(
                "POST" if index % 2 else "GET",
                f"{server.url}/dicom-web/studies?i={index}",
                headers={"Accept": "application/dicom+json"},
                body=b"x" * index if index % 2 else None,
            )
            assert response.status == 200
            method = "POST" if index % 2 else "GET"
            size = index if index % 2 else 0
            assert response.data == f"{method} /dicom-web/studies?i={index} {size}".encode()
        assert server.connections == 1
        assert len(server.requests) == 50


def test_request_head(transport: HttpTransport) -> None:
    with RawHttpServer(echo) as server:
        transport.request("POST", f"{server.url}/a%20b/c?x=1&y=2", headers={"X-Mine": "v"})
        transport.request("GET", f"{server.url}", headers={"User-Agent": "their-agent/1"})
        first, second = server.requests
    assert (first.method, first.target, first.version) == ("POST", "/a%20b/c?x=1&y=2", "HTTP/1.1")
    assert first.headers["host"] == f"127.0.0.1:{server.port}"
    assert first.headers["user-agent"] == USER_AGENT
    assert first.headers["content-length"] == "0"  # a POST without a body says so
    assert first.headers["x-mine"] == "v"
    assert second.target == "/"
    assert second.headers["user-agent"] == "their-agent/1"
    assert "content-length" not in second.headers


def test_a_header_value_cannot_forge_header_lines(transport: HttpTransport) -> None:
    with RawHttpServer(echo) as server:
        with pytest.raises(ValueError, match="line break"):
            transport.request("GET", server.url, headers={"X-Evil": "a\r\nX-Forged: 1"})
        with pytest.raises(ValueError, match="Content-Length differs"):
            transport.request("POST", server.url, headers={"Content-Length": "4"}, body=b"abc")
        assert server.requests == []


def test_idle_connections_are_capped_by_pool_size() -> None:
    transport = HttpTransport(HttpSettings(pool_size=2))
    try:
        with RawHttpServer(echo) as server:
            # Eight responses held open at once need eight connections...
            held = [
                transport.request("GET", f"{server.url}/{index}", headers={}, stream=True)
                for index in range(8)
            ]
            assert server.connections == 8
            # ...but only two stay open once they are all given back.
            for response in held:
                response.read()
                response.release_conn()
            wait_until(lambda: len(server.requests) == 8 and server.idle_count == 2, timeout=5)
            time.sleep(0.1)
            assert server.idle_count == 2
            for index in range(4):  # later requests use the two kept connections
                transport.request("GET", f"{server.url}/again{index}", headers={})
            assert server.connections == 8
    finally:
        transport.close()


def test_close_closes_idle_connections_and_the_transport_stays_usable() -> None:
    transport = HttpTransport()
    with RawHttpServer(echo) as server:
        transport.request("GET", server.url, headers={})
        wait_until(lambda: server.idle_count == 1, timeout=5)
        transport.close()
        wait_until(lambda: server.idle_count == 0, timeout=5)
        assert transport.request("GET", server.url, headers={}).status == 200
        assert server.connections == 2
    transport.close()


# --------------------------------------------------------------------------- response framing

_BODY = b"The quick brown fox jumps over the lazy dog. " * 40


def _content_length(request: ReceivedRequest, sock: socket.socket) -> bool:
    answer(sock, 200, _BODY)
    return True


def _chunked(request: ReceivedRequest, sock: socket.socket) -> bool:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
    pieces = [_BODY[:1], _BODY[1:700], _BODY[700:]]
    chunks = b"".join(
        b"%x;ext=1\r\n%s\r\n" % (len(piece), piece) if index else b"%X\r\n%s\r\n" % (len(piece), piece)
        for index, piece in enumerate(pieces)
    )
    sock.sendall(head + chunks + b"0\r\nX-Sum: 1\r\n\r\n")
    return True


def _until_close(request: ReceivedRequest, sock: socket.socket) -> bool:
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + _BODY)
    return False


def _http10(request: ReceivedRequest, sock: socket.socket) -> bool:
    answer(sock, 200, _BODY, version="HTTP/1.0")
    return True  # the server would keep it; the client must not (HTTP/1.0)


def _connection_close(request: ReceivedRequest, sock: socket.socket) -> bool:
    answer(sock, 200, _BODY, {"Connection": "close"})
    return False


@pytest.mark.parametrize(
    ("responder", "connections"),
    [
        (_content_length, 1),
        (_chunked, 1),
        (_until_close, 3),
        (_http10, 3),
        (_connection_close, 3),
    ],
    ids=["content-length", "chunked", "read-until-close", "http-1.0", "connection-close"],
)
@pytest.mark.parametrize("stream", [False, True])
def test_response_framing(
    transport: HttpTransport,
    responder: Callable[[ReceivedRequest, socket.socket], bool],
    connections: int,
    stream: bool,
) -> None:
    with RawHttpServer(responder) as server:
        for _ in range(3):
            response = transport.request("GET", server.url, headers={}, stream=stream)
            if stream:
                # Odd sizes cross chunk boundaries; each read is full until the end.
                pieces = list(response.stream(333))
                assert all(len(piece) == 333 for piece in pieces[:-1])
                assert b"".join(pieces) == _BODY
                response.release_conn()
            else:
                assert response.data == _BODY
        assert server.connections == connections


@pytest.mark.parametrize(
    ("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)]
)
def test_responses_without_a_body(transport: HttpTransport, method: str, status: int) -> None:
    def respond(request: ReceivedRequest, sock: socket.socket) -> bool:
        # A HEAD answer announces the length of the body it does not carry.
        sock.sendall(f"HTTP/1.1 {status} X\r\nContent-Length: 100\r\n\r\n".encode())
        return True

    with RawHttpServer(respond) as server:
        for _ in range(3):
            assert transport.request(method, server.url, headers={}).data == b""
        assert server.connections == 1


def test_interim_responses_are_skipped(transport: HttpTransport) -> None:
    def respond(request: ReceivedRequest, sock: socket.socket) -> bool:
        sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
        answer(sock, 201, b"made", reason="Created")
        return True

    with RawHttpServer(respond) as server:
        response = transport.request("POST", server.url, headers={}, body=b"abc")
        assert (response.status, response.data) == (201, b"made")
        assert "link" not in response.headers
        assert transport.request("POST", server.url, headers={}, body=b"abc").data == b"made"
        assert server.connections == 1


def test_headers_are_case_insensitive_and_repeated_fields_joined(transport: HttpTransport) -> None:
    def respond(request: ReceivedRequest, sock: socket.socket) -> bool:
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nX-Multi: a\r\n"
            b"x-multi:b \r\nX-Folded: one\r\n two\r\nContent-Length: 2\r\n\r\n[]"
        )
        return True

    with RawHttpServer(respond) as server:
        headers = transport.request("GET", server.url, headers={}).headers
    assert headers["CONTENT-TYPE"] == headers.get("content-type") == "application/dicom+json"
    assert headers.get("X-Multi") == "a, b"
    assert headers.get("x-folded") == "one two"
    assert "Content-Length" in headers
    assert headers.get("missing") is None
    assert headers.get("missing", "") == ""
    assert dict(headers)["content-length"] == "2"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"HTTP/1.1 2xx OK\r\n\r\n", "bad status line"),
        ("HTTP/1.1 2\u00b2\u00b2 OK\r\n\r\n".encode("latin-1"), "bad status line"),
        ("HTTP/1.1 200 OK\r\nContent-Length: \u00b2\r\n\r\n".encode("latin-1"), "bad Content-Length"),
        (b"ICY 200 OK\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", "before the end of the body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", "chunked body"),
        (b"HTTP/1.1 200 OK\r\nContent-", "response head"),
    ],
)
def test_malformed_or_truncated_responses(
    transport: HttpTransport, raw: bytes, reason: str
) -> None:
    def respond(request: ReceivedRequest, sock: socket.socket) -> bool:
        sock.sendall(raw)
        return False

    with RawHttpServer(respond) as server:
        with pytest.raises(DicomwebConnectionError, match=reason):
            transport.request("GET", server.url, headers={})
        assert server.connections == 1  # not a stale connection: not sent again


# --------------------------------------------------------------------------- streamed bodies


def _file_body(tmp_path: Path, size: int) -> tuple[Path, str]:
    path = tmp_path / "body.bin"
    with path.open("wb") as out:
        for block in pattern(size):
            out.write(block)
    return path, digest(pattern(size))


class _ReadOnly:
    """A file-like object with read() only (no readinto(), not seekable)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    "kind", ["bytesio", "read-only-file", "disk-file", "generator", "list-with-empty-chunks"]
)
def test_streamed_request_bodies(
    transport: HttpTransport, tmp_path: Path, kind: str, declare_length: bool
) -> None:
    size = 3 * _MB + 17
    data = b"".join(pattern(size))
    path, expected = _file_body(tmp_path, size)
    with RawHttpServer(echo) as server:
        for _ in range(2):  # and the connection serves the next request
            body: Body
            if kind == "bytesio":
                body = io.BytesIO(data)
            elif kind == "read-only-file":
                # Duck-typed on purpose: a file-like object that has read() and nothing else.
                body = cast(IO[bytes], _ReadOnly(data))
            elif kind == "disk-file":
                body = path.open("rb")
            elif kind == "generator":
                body = pattern(size)
            else:
                body = [b"", data[:10], b"", data[10:]]
            headers = {"Content-Length": str(size)} if declare_length else {}
            response = transport.request(
                "POST", f"{server.url}/up", headers=headers, body=body
            )
            assert response.data == f"POST /up {size}".encode()
            if kind == "disk-file":
                assert isinstance(body, io.BufferedReader)
                body.close()
        for request in server.requests:
            assert request.body_sha256 == expected
            assert ("transfer-encoding" in request.headers) is not declare_length
        assert server.connections == 1


def test_a_body_shorter_than_its_content_length_is_refused(transport: HttpTransport) -> None:
    with RawHttpServer(echo) as server:
        with pytest.raises(Exception, match="not 10 as its Content-Length said"):
            transport.request(
                "POST", server.url, headers={"Content-Length": "10"}, body=iter([b"12345"])
            )
        assert transport.request("GET", server.url, headers={}).status == 200


def test_a_large_upload_streams_in_bounded_memory(transport: HttpTransport, tmp_path: Path) -> None:
    size = 48 * _MB
    path, expected = _file_body(tmp_path, size)
    with RawHttpServer(echo) as server:
        tracemalloc.start()
        try:
            with path.open("rb") as body:
                response = transport.request(
                    "POST", server.url, headers={"Content-Length": str(size)}, body=body
                )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.status == 200
        assert server.requests[0].body_sha256 == expected
    assert peak < 4 * _MB


class _Segmented(io.RawIOBase):
    """A body over [head, a range of a file, tail] that counts how it was read."""

    def __init__(self, path: Path, offset: int, count: int) -> None:
        super().__init__()
        self.path, self.offset, self.count = path, offset, count
        with path.open("rb") as file:
            file.seek(offset)
            middle = file.read(count)
        self._whole = io.BytesIO(b"head|" + middle + b"|tail")
        self.read_calls = 0
        self.segment_calls = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        self.read_calls += 1
        return self._whole.readinto(target)

    def segments(self) -> Iterator[bytes | FileRange]:
        self.segment_calls += 1
        yield b"head|"
        yield FileRange(self.path.open("rb"), 0, 0)  # empty: skipped, not "to the end"
        with self.path.open("rb") as file:
            yield FileRange(file, self.offset, self.count)
        yield b"|tail"


def test_a_segmented_body_goes_out_by_sendfile_on_plain_tcp(
    transport: HttpTransport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 5 * _MB
    path, _ = _file_body(tmp_path, size)
    data = b"".join(pattern(size))
    sendfiles: list[int] = []
    real_sendfile = socket.socket.sendfile

    def counting_sendfile(self: socket.socket, *args: object, **kwargs: object) -> int:
        sent: int = real_sendfile(self, *args, **kwargs)  # type: ignore[arg-type]
        sendfiles.append(sent)
        return sent

    monkeypatch.setattr(socket.socket, "sendfile", counting_sendfile)
    offset, count = 1000, size - 3000
    expected = hashlib.sha256(b"head|" + data[offset : offset + count] + b"|tail").hexdigest()
    with RawHttpServer(echo) as server:
        for _ in range(2):
            body = _Segmented(path, offset, count)
            length = count + 10
            response = transport.request(
                "POST", server.url, headers={"Content-Length": str(length)}, body=body
            )
            assert response.data == f"POST / {length}".encode()
            assert (body.segment_calls, body.read_calls) == (1, 0)
        assert [request.body_sha256 for request in server.requests] == [expected] * 2
        assert server.connections == 1
    assert sendfiles == [count, count]


def test_a_segmented_body_is_read_where_sendfile_cannot_serve(
    tmp_path: Path, transport: HttpTransport
) -> None:
    path, _ = _file_body(tmp_path, 300_000)
    context, settings = _tls_setup(tmp_path)
    tls_transport = HttpTransport(settings)
    try:
        with RawHttpServer(echo, tls=context) as server:
            body = _Segmented(path, 7, 200_000)
            url = f"https://127.0.0.1:{server.port}/up"
            response = tls_transport.request(
                "POST", url, headers={"Content-Length": "200010"}, body=body
            )
            assert response.data == b"POST /up 200010"
            assert body.segment_calls == 0 and body.read_calls > 0
    finally:
        tls_transport.close()
    with RawHttpServer(echo) as server:  # chunked coding: no Content-Length to send by
        body = _Segmented(path, 7, 200_000)
        response = transport.request("POST", server.url, headers={}, body=body)
        assert response.data == b"POST / 200010"
        assert body.segment_calls == 0 and body.read_calls > 0
        assert "transfer-encoding" in server.requests[0].headers


def test_a_file_that_shrank_under_a_segmented_body_fails_the_request(
    transport: HttpTransport, tmp_path: Path
) -> None:
    path, _ = _file_body(tmp_path, 100_000)
    body = _Segmented(path, 0, 100_000)
    with path.open("r+b") as file:
        file.truncate(60_000)  # as a spool file cut short under the upload
    with RawHttpServer(echo) as server:
        with pytest.raises(DicomwebError, match="ended 40000 bytes early"):
            transport.request(
                "POST", server.url, headers={"Content-Length": "100010"}, body=body
            )
        assert transport.request("GET", server.url, headers={}).status == 200


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_large_response_streams_in_bounded_memory(
    transport: HttpTransport, chunked: bool
) -> None:
    size = 64 * _MB + 5

    def respond(request: ReceivedRequest, sock: socket.socket) -> bool:
        if chunked:
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for block in pattern(size):
                sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
            sock.sendall(b"0\r\n\r\n")
        else:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for block in pattern(size):
                sock.sendall(block)
        return True

    with RawHttpServer(respond) as server:
        tracemalloc.start()
        try:
            response = transport.request("GET", server.url, headers={}, stream=True)
            sizes: list[int] = []
            sha = hashlib.sha256()
            for chunk in response.stream(256 * 1024):
                sizes.append(len(chunk))
                sha.update(chunk)
            response.release_conn()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert sum(sizes) == size
        assert sha.hexdigest() == digest(pattern(size))
        assert peak < 8 * _MB
        # Read to the end: the connection serves the next request.
        transport.request("GET", server.url, headers={}, stream=True).close()
        assert server.connections == 1


def test_release_conn_and_close_of_streamed_responses(transport: HttpTransport) -> None:
    big = 8 * _MB

    def respond(request: ReceivedRequest, sock: socket.socket) -> bool:
        if request.target == "/big":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % big)
            for block in pattern(big):
                sock.sendall(block)
        else:
            answer(sock, 200, b"small body")
        return True

    with RawHttpServer(respond) as server:
        # Not read at all, but small: release_conn() drains it and keeps the connection.
        transport.request("GET", f"{server.url}/small", headers={}, stream=True).release_conn()
        assert transport.request("GET", f"{server.url}/small", headers={}).data == b"small body"
        assert server.connections == 1
        # Abandoned mid-body: the connection is closed, the next request opens another.
        response = transport.request("GET", f"{server.url}/big", headers={}, stream=True)
        assert len(response.read(1000)) == 1000
        response.close()
        assert response.read(10) == b""
        assert transport.request("GET", f"{server.url}/small", headers={}).status == 200
        assert server.connections == 2
        # release_conn() with most of a big body unread closes it rather than reading it all.
        response = transport.request("GET", f"{server.url}/big", headers={}, stream=True)
        response.read(1000)
        response.release_conn()
        assert transport.request("GET", f"{server.url}/small", headers={}).status == 200
        assert server.connections == 3
        # .data of a streamed response is the rest of the body.
        response = transport.request("GET", f"{server.url}/small", headers={}, stream=True)
        assert response.read(6) == b"small "
        assert response.data == b"body"


def test_wado_rs_retrieve_over_the_transport(transport: HttpTransport) -> None:
    boundary = "b0undary"
    parts = [b"A" * 100_000, b"B" * 10, b"C" * 300_000]
    body = b"".join(
        b"--%s\r\nContent-Type: application/dicom\r\n\r\n%s\r\n" % (boundary.encode(), part)
        for part in parts
    ) + b"--%s--\r\n" % boundary.encode()

    def respond(request: ReceivedRequest, sock: socket.socket) -> bool:
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: multipart/related; "
            b'type="application/dicom"; boundary=' + boundary.encode() + b"\r\n\r\n"
        )
        for start in range(0, len(body), 65_000):
            piece = body[start : start + 65_000]
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        sock.sendall(b"0\r\n\r\n")
        return True

    with RawHttpServer(respond) as server:
        client = DicomwebClient(
            parse_dicomweb_address(f"{server.url}/dicom-web"), transport, NoAuth(), RetryPolicy()
        )
        for _ in range(3):
            received = [b"".join(part.body) for part in client.retrieve(["studies", "1.2.3"])]
            assert received == parts
        assert server.connections == 1
        assert server.requests[0].target == "/dicom-web/studies/1.2.3"


# --------------------------------------------------------------------------- stale connections


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("body_kind", ["none", "bytes", "one-shot-iterator"])
def test_an_idle_connection_closed_by_the_server_is_replaced(
    tmp_path: Path, tls: bool, body_kind: str
) -> None:
    context, settings = _tls_setup(tmp_path) if tls else (None, HttpSettings())
    transport = HttpTransport(settings)
    try:
        with RawHttpServer(echo, tls=context) as server:
            assert transport.request("GET", server.url, headers={}).status == 200
            wait_until(lambda: server.idle_count == 1, timeout=5)
            assert server.close_idle() == 1
            time.sleep(0.2)  # the FIN reaches the client's idle socket
            body = {"none": None, "bytes": b"abc", "one-shot-iterator": iter([b"a", b"bc"])}
            headers = {"Content-Length": "3"} if body_kind != "none" else {}
            response = transport.request(
                "POST", server.url, headers=headers, body=body[body_kind]
            )
            assert response.data == f"POST / {0 if body_kind == 'none' else 3}".encode()
            assert server.connections == 2
    finally:
        transport.close()


def _closes_kept_connections(request: ReceivedRequest, sock: socket.socket) -> bool:
    """Answers the first request of a connection; closes it when the next one arrives."""
    if request.number > 1:
        return False
    answer(sock, 200, f"{request.method} {request.body_size}".encode())
    return True


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("body_kind", ["none", "bytes", "large-bytes", "bytesio", "disk-file"])
def test_a_request_failing_on_a_kept_connection_is_sent_again_once(
    tmp_path: Path, tls: bool, body_kind: str
) -> None:
    context, settings = _tls_setup(tmp_path) if tls else (None, HttpSettings())
    transport = HttpTransport(settings)
    payload = b"".join(pattern(2 * _MB)) if body_kind == "large-bytes" else b"payload" * 100
    path = tmp_path / "payload"
    path.write_bytes(payload)
    try:
        with RawHttpServer(_closes_kept_connections, tls=context) as server:
            for round_ in range(1, 4):
                if body_kind == "none":
                    body: Body = None
                elif body_kind in ("bytes", "large-bytes"):
                    body = payload
                elif body_kind == "bytesio":
                    body = io.BytesIO(payload)
                else:
                    body = path.open("rb")
                expected = 0 if body is None else len(payload)
                response = transport.request(
                    "POST",
                    server.url,
                    headers={"Content-Length": str(expected)} if body is not None else {},
                    body=body,
                )
                assert response.data == f"POST {expected}".encode()
                assert server.connections == round_  # sent again on a new connection
                if isinstance(body, io.IOBase):
                    body.close()
            answered = [r for r in server.requests if r.number == 1]
            assert len(answered) == 3
            assert all(r.body_size == expected for r in answered)
            if body is not None:
                digest_of_payload = hashlib.sha256(payload).hexdigest()
                assert all(r.body_sha256 == digest_of_payload for r in answered)
    finally:
        transport.close()


def test_a_one_shot_body_is_not_sent_again(transport: HttpTransport) -> None:
    with RawHttpServer(_closes_kept_connections) as server:
        transport.request("GET", server.url, headers={})
        with pytest.raises(DicomwebConnectionError, match="closed before an answer"):
            transport.request(
                "POST", server.url, headers={"Content-Length": "3"}, body=iter([b"a", b"bc"])
            )
        assert server.connections == 1


def test_a_request_is_sent_again_at_most_once(transport: HttpTransport) -> None:
    def respond(request: ReceivedRequest, sock: socket.socket) -> bool:
        if request.connection == 1 and request.number == 1:
            answer(sock, 200, b"ok")
            return True
        return False  # closes without answering

    with RawHttpServer(respond) as server:
        transport.request("GET", server.url, headers={})
        with pytest.raises(DicomwebConnectionError, match="closed before an answer"):
            transport.request("GET", server.url, headers={})
        assert server.connections == 2
        # On a new connection a failure is not retried either.
        with pytest.raises(DicomwebConnectionError):
            transport.request("GET", server.url, headers={})
        assert server.connections == 3


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("stream", [False, True])
def test_error_statuses_raise_with_excerpt_and_retry_after(
    transport: HttpTransport, stream: bool
) -> None:
    def respond(request: ReceivedRequest, sock: socket.socket) -> bool:
        if request.target.startswith("/busy"):
            answer(sock, 503, b"store  busy,\n try later" + b"." * 100_000,
                   {"Retry-After": "7"}, reason="Service Unavailable")
        elif request.target.startswith("/chunked"):
            sock.sendall(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"9\r\nno study.\r\n0\r\n\r\n")
        else:
            answer(sock, 200, b"fine")
        return True

    with RawHttpServer(respond) as server:
        url = server.url.replace("http://", "http://user:secret@") + "/busy?token=abc"
        with pytest.raises(DicomwebHttpError) as caught:
            transport.request("POST", url, headers={}, body=b"x", stream=stream)
        error = caught.value
        assert error.status == 503
        assert rule_for_error(error).transient
        assert error.retry_after == 7.0
        assert error.body_excerpt.startswith("store busy, try later...")
        assert "secret" not in str(error) and "token" not in error.url
        assert error.url == f"{server.url}/busy"
        with pytest.raises(DicomwebHttpError) as caught:
            transport.request("GET", f"{server.url}/chunked", headers={}, stream=stream)
        assert (caught.value.status, caught.value.body_excerpt) == (404, "no study.")
        assert not rule_for_error(caught.value).transient
        assert transport.request("GET", server.url, headers={}).data == b"fine"
        # The 503's 100 kB body is drained (under 64 KiB left) and every answer was read:
        # one connection throughout.
        assert server.connections == 1


def test_connection_refused() -> None:
    transport = HttpTransport(HttpSettings(connect_timeout=2))
    port = free_port()
    with pytest.raises(DicomwebConnectionError) as caught:
        transport.request("GET", f"http://me:pw@127.0.0.1:{port}/x?key=1", headers={})
    message = str(caught.value)
    assert "Connection refused" in message
    assert "pw" not in message and "key" not in message
    assert caught.value.url == f"http://127.0.0.1:{port}/x"


def test_unsupported_scheme_is_a_connection_error(transport: HttpTransport) -> None:
    with pytest.raises(DicomwebConnectionError, match="unsupported URL scheme"):
        transport.request("GET", "ftp://127.0.0.1/x", headers={})


def _stalling(release: threading.Event) -> Callable[[ReceivedRequest, socket.socket], bool]:
    def respond(request: ReceivedRequest, sock: socket.socket) -> bool:
        if request.target == "/mid-body":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        release.wait(10)
        return False

    return respond


def test_read_timeout() -> None:
    release = threading.Event()
    transport = HttpTransport(HttpSettings(read_timeout=0.3))
    try:
        with RawHttpServer(_stalling(release)) as server:
            started = time.monotonic()
            with pytest.raises(DicomwebTimeoutError, match="timed out"):
                transport.request("GET", f"{server.url}/slow?secret=1", headers={})
            assert time.monotonic() - started < 3
            response = transport.request("GET", f"{server.url}/mid-body", headers={}, stream=True)
            assert response.read(10) == b"0123456789"
            with pytest.raises(DicomwebTimeoutError, match=r"reading .*/mid-body timed out"):
                response.read(10)
            release.set()
    finally:
        release.set()
        transport.close()


def test_read_timeout_per_request(transport: HttpTransport) -> None:
    release = threading.Event()
    try:
        with RawHttpServer(_stalling(release)) as server:
            started = time.monotonic()
            with pytest.raises(DicomwebTimeoutError):
                transport.request("GET", server.url, headers={}, timeout=0.3)
            assert time.monotonic() - started < 3
            release.set()
    finally:
        release.set()


# --------------------------------------------------------------------------- TLS


def _tls_setup(tmp_path: Path) -> tuple[ssl.SSLContext, HttpSettings]:
    pki = make_pki(tmp_path / "pki")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    return context, HttpSettings(ca_bundle=str(pki.ca), connect_timeout=5, read_timeout=10)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_with_a_trusted_certificate(tmp_path: Path, host: str) -> None:
    context, settings = _tls_setup(tmp_path)
    transport = HttpTransport(settings)
    try:
        with RawHttpServer(echo, tls=context) as server:
            url = f"https://{host}:{server.port}/dicom-web/studies"
            for _ in range(5):
                response = transport.request("POST", url, headers={}, body=b"x" * 70_000)
                assert response.data == b"POST /dicom-web/studies 70000"
            assert server.connections == 1
    finally:
        transport.close()


def test_new_tls_connections_resume_the_session(tmp_path: Path) -> None:
    context, settings = _tls_setup(tmp_path)
    transport = HttpTransport(settings)
    url_of = "https://localhost:{}/dicom-web/studies".format
    try:
        with RawHttpServer(echo, tls=context) as server:
            first = transport.request("POST", url_of(server.port), headers={}, body=b"x" * 10)
            assert first.data
            # Two requests at once: the second needs a connection of its own.
            held = transport.request("GET", url_of(server.port), headers={}, stream=True)
            second = transport.request("GET", url_of(server.port), headers={}, stream=True)
            sockets = [r._connection.sock for r in (held, second)]  # type: ignore[attr-defined]
            resumed = [s.session_reused for s in sockets]
            held.data  # noqa: B018
            second.data  # noqa: B018
            assert server.connections == 2
            assert resumed.count(True) == 1, resumed
    finally:
        transport.close()


@pytest.mark.parametrize("trust", ["system-store", "other-ca"])
def test_tls_with_an_untrusted_certificate(tmp_path: Path, trust: str) -> None:
    context, settings = _tls_setup(tmp_path)
    if trust == "system-store":
        settings = HttpSettings()
    else:
        settings = HttpSettings(ca_bundle=str(tmp_path / "pki" / "rogue-ca.pem"))
    transport = HttpTransport(settings)
    with RawHttpServer(echo, tls=context) as server:
        with pytest.raises(DicomwebConnectionError, match="TLS failure") as caught:
            transport.request("GET", f"https://localhost:{server.port}/x?k=v", headers={})
        assert "certificate verify failed" in str(caught.value)
        assert "k=v" not in str(caught.value)
        assert server.requests == []


def test_plain_http_to_a_tls_server_fails_cleanly(tmp_path: Path) -> None:
    context, _ = _tls_setup(tmp_path)
    transport = HttpTransport(HttpSettings(read_timeout=5))
    with RawHttpServer(echo, tls=context) as server, pytest.raises(DicomwebConnectionError):
        transport.request("GET", f"http://127.0.0.1:{server.port}/", headers={})


# --------------------------------------------------------------------------- threads


def test_many_threads_share_one_transport() -> None:
    transport = HttpTransport(HttpSettings(pool_size=16))
    threads, per_thread = 16, 40
    failures: list[BaseException] = []

    def respond(request: ReceivedRequest, sock: socket.socket) -> bool:
        if request.target.endswith("/chunked"):
            payload = request.target.encode() * 50
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload))
        else:
            answer(sock, 200, request.target.encode() + b"|" + request.body)
        return True

    def work(worker: int) -> None:
        try:
            for index in range(per_thread):
                path = f"/w{worker}/r{index}"
                if index % 3 == 0:
                    response = transport.request(
                        "GET", f"{server.url}{path}/chunked", headers={}, stream=True
                    )
                    assert b"".join(response.stream(100)) == f"{path}/chunked".encode() * 50
                    response.release_conn()
                else:
                    body = f"{worker}-{index}".encode()
                    response = transport.request("POST", server.url + path, headers={}, body=body)
                    assert response.data == path.encode() + b"|" + body
        except BaseException as exc:
            failures.append(exc)

    try:
        with RawHttpServer(respond) as server:
            workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
            for thread in workers:
                thread.start()
            for thread in workers:
                thread.join(60)
            assert not failures, failures[:3]
            assert len(server.requests) == threads * per_thread
            assert server.connections <= threads
            assert not server.errors
    finally:
        transport.close()


# --------------------------------------------------------------------------- helpers


def test_redact_url_and_retry_after() -> None:
    assert redact_url("https://u:p@h.example:8443/a/b?token=x#f") == "https://h.example:8443/a/b"
    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("\u00b2") is None
    later = retry_after_seconds("Wed, 21 Oct 2099 07:28:00 GMT")
    assert later is not None and later > 0
