"""A threaded HTTP/1.1 server whose answers the test writes byte for byte (for client tests).

:class:`RawHttpServer` listens on a free 127.0.0.1 port (optionally with TLS), reads each request
(head, and a body framed by Content-Length or chunked coding) and hands it to the test's
``responder``, which writes whatever it wants on the socket - well-formed or not - and returns
whether to keep the connection open for another request. Every request is recorded with the
number of the TCP connection it came on, so tests can count connections.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType

from tests.support.ports import free_port

__all__ = ["KEEP_BODY", "RawHttpServer", "ReceivedRequest", "Responder", "answer"]

#: Request bodies up to this size are kept; of longer ones only their size and SHA-256.
KEEP_BODY = 1 << 20
_BLOCK = 256 * 1024


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the server read it."""

    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-case names
    body: bytes  # empty when longer than KEEP_BODY (see body_size, body_sha256)
    body_size: int
    body_sha256: str
    connection: int  # 1 for the first TCP connection accepted, 2 for the next...
    number: int  # 1 for the first request on its connection, 2 for the next...


#: Writes the answer to a request on the socket; returns True to keep the connection open.
Responder = Callable[[ReceivedRequest, socket.socket], bool]


def answer(
    sock: socket.socket,
    status: int = 200,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    *,
    reason: str = "OK",
    version: str = "HTTP/1.1",
) -> None:
    """Write a response with a Content-Length (unless ``headers`` has one)."""
    fields = {"Content-Type": "application/octet-stream", **(headers or {})}
    if not any(name.lower() in ("content-length", "transfer-encoding") for name in fields):
        fields["Content-Length"] = str(len(body))
    head = f"{version} {status} {reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in fields.items()
    )
    sock.sendall(head.encode("latin-1") + b"\r\n" + body)


class RawHttpServer:
    """A test HTTP server answering through ``responder``; use as a context manager."""

    def __init__(self, responder: Responder, *, tls: ssl.SSLContext | None = None) -> None:
        self.responder = responder
        self.tls = tls
        self.port = free_port()
        self.requests: list[ReceivedRequest] = []
        self.connections = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._idle: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def __enter__(self) -> RawHttpServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def close_idle(self) -> int:
        """Close every connection waiting for its next request (as servers do after a while)."""
        with self._lock:
            idle = list(self._idle)
        for connection in idle:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        return len(idle)

    @property
    def idle_count(self) -> int:
        """Connections currently waiting for a request."""
        with self._lock:
            return len(self._idle)

    # -- serving

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._serve, args=(sock, number), daemon=True).start()

    def _serve(self, sock: socket.socket, connection: int) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
        except (OSError, ssl.SSLError):
            sock.close()
            return
        with self._lock:
            self._open.add(sock)
        reader = sock.makefile("rb")
        try:
            number = 0
            while True:
                with self._lock:
                    self._idle.add(sock)
                request_line = reader.readline(65536)
                with self._lock:
                    self._idle.discard(sock)
                if not request_line.strip():
                    return
                number += 1
                request = self._read_request(request_line, reader, connection, number)
                with self._lock:
                    self.requests.append(request)
                if not self.responder(request, sock):
                    return
        except (OSError, ValueError):
            return
        except BaseException as exc:  # a failing responder: keep it for the test to see
            self.errors.append(exc)
        finally:
            with self._lock:
                self._open.discard(sock)
                self._idle.discard(sock)
            reader.close()
            with contextlib.suppress(OSError):
                sock.close()

    @staticmethod
    def _read_request(
        request_line: bytes, reader: io.BufferedIOBase, connection: int, number: int
    ) -> ReceivedRequest:
        read_line = reader.readline
        read = reader.read
        method, target, version = request_line.decode("latin-1").split()
        headers: dict[str, str] = {}
        while (line := read_line(65536)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        digest = hashlib.sha256()
        kept = bytearray()
        size = 0

        def take(count: int) -> None:
            nonlocal size
            while count:
                data = read(min(count, _BLOCK))
                if not data:
                    raise ValueError("client closed in the middle of the body")
                count -= len(data)
                size += len(data)
                digest.update(data)
                if len(kept) <= KEEP_BODY:
                    kept.extend(data)

        if "chunked" in headers.get("transfer-encoding", "").lower():
            while chunk_size := int(read_line(1024).split(b";")[0].strip(), 16):
                take(chunk_size)
                read_line(1024)
            while read_line(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
        elif headers.get("content-length"):
            take(int(headers["content-length"]))
        body = bytes(kept) if size <= KEEP_BODY else b""
        return ReceivedRequest(
            method, target, version, headers, body, size, digest.hexdigest(), connection, number
        )
