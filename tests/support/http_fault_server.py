"""A threaded HTTP/1.1 server that is a DICOMweb sink or a fault-injecting reverse proxy.

Two uses, one class (:class:`HttpFaultServer`):

- **Sink** (no upstream): every ``POST .../studies`` (or ``.../studies/{uid}``) is drained and
  answered ``200 application/dicom+json`` with a minimal STOW-RS response whose
  ReferencedSOPSequence (0008,1199) lists the SOP Class/Instance UIDs read cheaply from the file
  meta of each uploaded part. Other requests get ``404``.
- **Proxy** (``upstream="http://127.0.0.1:PORT"``): requests are streamed to the upstream server
  (the request path is appended to the upstream URL's path) and the answer streamed back.

In both modes a scripted queue of :class:`Fault` objects can make the next matching requests
return a given status (with optional body, headers such as ``Retry-After``), wait first, drop
the connection with a TCP reset, or lose the answer: handle the request (forward it, or store
it) and then reset the connection instead of answering. Every request is recorded (:class:`RecordedRequest`) with its
headers and body size; bodies are drained in constant memory (only the first bytes of each
multipart part are kept, unless ``keep_bodies=True``).

Connections are persistent (HTTP/1.1, correct ``Content-Length``), request bodies may be sent
with ``Content-Length`` or ``Transfer-Encoding: chunked``.

The module also holds small multipart helpers (:func:`parse_multipart_related`,
:func:`dicom_file_meta_uids`) shared with the Orthanc helpers.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import struct
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from tests.support.ports import free_port

__all__ = [
    "Fault",
    "HttpFaultServer",
    "MultipartPart",
    "RecordedRequest",
    "dicom_file_meta_uids",
    "encode_multipart_related",
    "multipart_boundary",
    "parse_multipart_related",
    "stow_response",
]

_CHUNK = 256 * 1024
_PART_HEAD_LIMIT = 64 * 1024
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


# --------------------------------------------------------------------------- multipart helpers


@dataclass(frozen=True)
class MultipartPart:
    """One part of a multipart body: lower-cased headers and (possibly truncated) content."""

    headers: dict[str, str]
    content: bytes

    @property
    def content_type(self) -> str:
        """The part's Content-Type header, or an empty string."""
        return self.headers.get("content-type", "")


def multipart_boundary(content_type: str) -> str | None:
    """Return the ``boundary`` parameter of a multipart Content-Type header, if any."""
    message = Message()
    message["content-type"] = content_type
    boundary = message.get_param("boundary")
    return boundary if isinstance(boundary, str) and boundary else None


class _PartCollector:
    """Split a multipart body fed in chunks, keeping at most ``limit`` bytes of each part.

    Used to read the DICOM file meta of each uploaded part in constant memory.
    """

    def __init__(self, boundary: str, limit: int | None) -> None:
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._limit = limit
        self._buffer = bytearray(b"\r\n")  # lets a delimiter at the very start match
        self._current: bytearray | None = None  # None while in the preamble
        self._raw_parts: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        """Consume the next bytes of the body."""
        self._buffer += chunk
        while True:
            index = self._buffer.find(self._delimiter)
            if index < 0:
                safe = len(self._buffer) - (len(self._delimiter) - 1)
                if safe > 0:
                    self._append(self._buffer[:safe])
                    del self._buffer[:safe]
                return
            self._append(self._buffer[:index])
            self._close_part()
            self._current = bytearray()
            del self._buffer[: index + len(self._delimiter)]

    def finish(self) -> list[MultipartPart]:
        """Return the parts seen (the closing delimiter's epilogue is dropped)."""
        self._append(self._buffer)
        self._buffer.clear()
        self._close_part()
        parts: list[MultipartPart] = []
        for raw_part in self._raw_parts:
            if raw_part.startswith(b"--"):
                continue  # "--" after the delimiter: end of the multipart body
            line_end = raw_part.find(b"\r\n")  # rest of the delimiter line (transport padding)
            if line_end >= 0:
                parts.append(_split_part(raw_part[line_end + 2 :]))
        return parts

    def _append(self, data: bytes | bytearray) -> None:
        if self._current is None:
            return
        if self._limit is None:
            self._current += data
        elif len(self._current) < self._limit:
            self._current += data[: self._limit - len(self._current)]

    def _close_part(self) -> None:
        if self._current is not None:
            self._raw_parts.append(bytes(self._current))
            self._current = None


def parse_multipart_related(body: bytes, content_type: str) -> list[MultipartPart]:
    """Split a complete multipart body (e.g. a WADO-RS answer) into its parts."""
    boundary = multipart_boundary(content_type)
    if boundary is None:
        raise ValueError(f"no boundary in Content-Type {content_type!r}")
    delimiter = b"--" + boundary.encode("latin-1")
    if body.startswith(delimiter):
        position = 0
    else:
        found = body.find(b"\r\n" + delimiter)  # after a preamble
        if found < 0:
            return []
        position = found + 2
    parts: list[MultipartPart] = []
    while True:
        position += len(delimiter)
        if body.startswith(b"--", position):
            return parts  # closing delimiter
        line_end = body.find(b"\r\n", position)
        if line_end < 0:
            return parts
        following = body.find(b"\r\n" + delimiter, line_end)
        if following < 0:
            following = len(body)
        parts.append(_split_part(body[line_end + 2 : following]))
        position = following + 2
        if position >= len(body):
            return parts


def _split_part(raw: bytes) -> MultipartPart:
    """Split one part (after its delimiter line) into headers and content."""
    header_end = raw.find(b"\r\n\r\n")
    if raw.startswith(b"\r\n"):
        header_blob, content = b"", raw[2:]  # a part without headers
    elif header_end < 0:
        header_blob, content = raw, b""
    else:
        header_blob, content = raw[:header_end], raw[header_end + 4 :]
    headers: dict[str, str] = {}
    for line in header_blob.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return MultipartPart(headers=headers, content=content)


def dicom_file_meta_uids(head: bytes) -> tuple[str, str] | None:
    """Return (MediaStorageSOPClassUID, MediaStorageSOPInstanceUID) from a Part 10 file's start.

    Only the preamble and the explicit-VR-little-endian group 0002 are read, so the first few
    hundred bytes of a file are enough. Returns None if they are not there.
    """
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    position = 132
    sop_class: str | None = None
    sop_instance: str | None = None
    while position + 8 <= len(head):
        group, element = struct.unpack_from("<HH", head, position)
        if group != 0x0002:
            break
        vr = bytes(head[position + 4 : position + 6])
        if vr in _LONG_VRS:
            if position + 12 > len(head):
                break
            (length,) = struct.unpack_from("<I", head, position + 8)
            start = position + 12
        else:
            (length,) = struct.unpack_from("<H", head, position + 6)
            start = position + 8
        value = head[start : start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        if element == 0x0002:
            sop_class = value
        elif element == 0x0003:
            sop_instance = value
        position = start + length
    if sop_class and sop_instance:
        return sop_class, sop_instance
    return None


# --------------------------------------------------------------------------- faults and records


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, applied to the next request(s) that match.

    ``status`` None means "answer normally" (useful with ``delay``). ``drop`` resets the TCP
    connection right after the request headers, without reading the body or answering.
    ``lose_answer`` handles the request normally (forwarded to the upstream and its answer read,
    or stored by the sink), then resets the connection instead of answering: the request took
    effect, the client never hears of it. ``method``/``path_contains`` restrict which requests
    the fault applies to.
    """

    status: int | None = None
    body: bytes = b""
    content_type: str = "text/plain"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    method: str | None = None
    path_contains: str | None = None
    lose_answer: bool = False

    def matches(self, method: str, path: str) -> bool:
        """Return True if this fault applies to a request with this method and path."""
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_contains is None or self.path_contains in path


@dataclass
class RecordedRequest:
    """What the server saw of one request and what it did with it."""

    method: str
    path: str
    headers: dict[str, str]
    body_size: int = 0
    status: int | None = None  # None: connection dropped or failed before answering
    fault: Fault | None = None
    sop_instances: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None  # only with keep_bodies=True
    upstream_status: int | None = None  # the answer a ``lose_answer`` fault kept back
    at: float = field(default_factory=time.monotonic)  # when its head was read

    def header(self, name: str) -> str | None:
        """Return a request header by case-insensitive name."""
        return self.headers.get(name.lower())


# --------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], owner: HttpFaultServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle plus the
        # client's delayed ACK adds ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        """Handle GET."""
        self._handle()

    def do_HEAD(self) -> None:
        """Handle HEAD."""
        self._handle()

    def do_POST(self) -> None:
        """Handle POST."""
        self._handle()

    def do_PUT(self) -> None:
        """Handle PUT."""
        self._handle()

    def do_DELETE(self) -> None:
        """Handle DELETE."""
        self._handle()

    def do_OPTIONS(self) -> None:
        """Handle OPTIONS."""
        self._handle()

    # -- request body

    def _body_chunks(
        self, record: RecordedRequest, scanner: _PartCollector | None
    ) -> Iterator[bytes]:
        """Yield the request body (Content-Length or chunked), counting and scanning it."""
        kept: bytearray | None = bytearray() if self.server.owner.keep_bodies else None
        for chunk in self._raw_body_chunks():
            record.body_size += len(chunk)
            self.server.owner._count_bytes(len(chunk))
            if scanner is not None:
                scanner.feed(chunk)
            if kept is not None:
                kept += chunk
            yield chunk
        if kept is not None:
            record.body = bytes(kept)

    def _raw_body_chunks(self) -> Iterator[bytes]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size_line = self.rfile.readline(1024)
                if not size_line:
                    raise ConnectionError("client closed during chunked body")
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                remaining = size
                while remaining:
                    data = self.rfile.read(min(remaining, _CHUNK))
                    if not data:
                        raise ConnectionError("client closed during chunked body")
                    remaining -= len(data)
                    yield data
                self.rfile.readline(1024)  # CRLF after the chunk
            return
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining:
            data = self.rfile.read(min(remaining, _CHUNK))
            if not data:
                raise ConnectionError("client closed during body")
            remaining -= len(data)
            yield data

    def _has_body(self) -> bool:
        return (
            bool(self.headers.get("Content-Length"))
            or "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        )

    def _make_scanner(self) -> _PartCollector | None:
        content_type = self.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/"):
            boundary = multipart_boundary(content_type)
            if boundary:
                return _PartCollector(boundary, limit=_PART_HEAD_LIMIT)
        return None

    @staticmethod
    def _scan_result(
        scanner: _PartCollector | None, single_head: bytes | None
    ) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        if scanner is not None:
            for part in scanner.finish():
                uids = dicom_file_meta_uids(part.content)
                if uids is not None:
                    found.append(uids)
        elif single_head is not None:
            uids = dicom_file_meta_uids(single_head)
            if uids is not None:
                found.append(uids)
        return found

    def _drain(self, record: RecordedRequest) -> None:
        """Read and discard the request body, recording its size and DICOM UIDs."""
        scanner = self._make_scanner()
        single_head = bytearray() if scanner is None and self._is_single_dicom() else None
        for chunk in self._body_chunks(record, scanner):
            if single_head is not None and len(single_head) < _PART_HEAD_LIMIT:
                single_head += chunk[: _PART_HEAD_LIMIT - len(single_head)]
        record.sop_instances = self._scan_result(
            scanner, bytes(single_head) if single_head is not None else None
        )

    def _is_single_dicom(self) -> bool:
        return self.headers.get("Content-Type", "").lower().startswith("application/dicom")

    # -- responses

    def _respond(
        self,
        record: RecordedRequest,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str],
    ) -> None:
        record.status = status  # before answering: the client may look as soon as it has the answer
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _drop(self, record: RecordedRequest) -> None:
        """Reset the connection (SO_LINGER 0 makes close() send RST)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        record.status = None

    def _sink(self, record: RecordedRequest, *, answer: bool = True) -> None:
        self._drain(record)
        path = urllib.parse.urlsplit(self.path).path.rstrip("/")
        segments = path.split("/")
        is_stow = self.command == "POST" and (
            segments[-1] == "studies" or (len(segments) >= 2 and segments[-2] == "studies")
        )
        if not is_stow:
            self._respond(record, 404, b"not found", "text/plain", {})
            return
        self.server.owner._add_stored(record.sop_instances)
        if not answer:
            record.upstream_status = 200
            self._drop(record)
            return
        body = json.dumps(stow_response(record.sop_instances)).encode()
        self._respond(record, 200, body, "application/dicom+json", {})

    def _proxy(
        self, record: RecordedRequest, upstream: urllib.parse.SplitResult, *, relay: bool = True
    ) -> None:
        owner = self.server.owner
        connection = http.client.HTTPConnection(
            upstream.hostname or "127.0.0.1", upstream.port or 80, timeout=owner.upstream_timeout
        )
        try:
            target = upstream.path.rstrip("/") + self.path
            connection.putrequest(self.command, target, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    connection.putheader(name, value)
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            if chunked:
                connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            scanner = self._make_scanner()
            single_head = bytearray() if scanner is None and self._is_single_dicom() else None
            if self._has_body():
                for chunk in self._body_chunks(record, scanner):
                    if single_head is not None and len(single_head) < _PART_HEAD_LIMIT:
                        single_head += chunk[: _PART_HEAD_LIMIT - len(single_head)]
                    connection.send(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                if chunked:
                    connection.send(b"0\r\n\r\n")
            record.sop_instances = self._scan_result(
                scanner, bytes(single_head) if single_head is not None else None
            )
            try:
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                self._respond(record, 502, f"upstream error: {exc}".encode(), "text/plain", {})
                return
            if not relay:
                response.read()  # the upstream finishes its work; its answer is lost
                record.upstream_status = response.status
                self._drop(record)
                return
            self._relay(record, response)
        finally:
            connection.close()

    def _relay(self, record: RecordedRequest, response: http.client.HTTPResponse) -> None:
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        record.status = response.status
        length = response.getheader("Content-Length")
        if self.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200:
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            return
        if length is not None and not response.chunked:
            self.send_header("Content-Length", length)
            self.end_headers()
            while data := response.read(_CHUNK):
                self.wfile.write(data)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while data := response.read(_CHUNK):
            self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")

    def _handle(self) -> None:
        owner = self.server.owner
        record = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
        )
        owner._record(record)
        fault = owner._take_fault(self.command, self.path)
        record.fault = fault
        try:
            if fault is not None and fault.drop:
                self._drop(record)
                return
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            relay = fault is None or not fault.lose_answer
            if fault is not None and fault.status is not None:
                self._drain(record)
                self._respond(record, fault.status, fault.body, fault.content_type, fault.headers)
            elif owner.upstream is not None:
                self._proxy(record, owner.upstream, relay=relay)
            else:
                self._sink(record, answer=relay)
        except (ConnectionError, OSError, ValueError):
            self.close_connection = True


def stow_response(sop_instances: list[tuple[str, str]]) -> dict[str, Any]:
    """Build a minimal STOW-RS DICOM JSON response referencing the given (class, instance) UIDs."""
    items = [
        {
            "00081150": {"vr": "UI", "Value": [sop_class]},
            "00081155": {"vr": "UI", "Value": [sop_instance]},
        }
        for sop_class, sop_instance in sop_instances
    ]
    sequence: dict[str, Any] = {"vr": "SQ"}
    if items:
        sequence["Value"] = items
    return {"00081199": sequence}


class HttpFaultServer:
    """A DICOMweb sink (no ``upstream``) or a fault-injecting reverse proxy to ``upstream``.

    Use as a context manager or call :meth:`start`/:meth:`stop`. Thread-safe.
    """

    def __init__(
        self,
        upstream: str | None = None,
        *,
        keep_bodies: bool = False,
        upstream_timeout: float = 60.0,
    ) -> None:
        """Prepare the server on a free 127.0.0.1 port (not listening until :meth:`start`)."""
        self.upstream = urllib.parse.urlsplit(upstream) if upstream else None
        self.keep_bodies = keep_bodies
        self.upstream_timeout = upstream_timeout
        self.port = free_port()
        self._lock = threading.Lock()
        self._faults: list[list[Any]] = []  # [fault, remaining count]
        self._requests: list[RecordedRequest] = []
        self._stored: list[tuple[str, str]] = []
        self._bytes = 0
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (request paths are forwarded as-is)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HttpFaultServer:
        """Start serving in a background thread."""
        if self._server is not None:
            return self
        self._server = _Server(("127.0.0.1", self.port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and reset open connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HttpFaultServer:
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    # -- scripting faults

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` matching requests (faults are tried in order)."""
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append([fault, times])

    def fail_next(
        self,
        status: int,
        times: int = 1,
        *,
        body: bytes = b"",
        content_type: str = "text/plain",
        retry_after: float | None = None,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (optionally Retry-After)."""
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        self.inject(
            Fault(
                status=status,
                body=body,
                content_type=content_type,
                headers=headers,
                method=method,
                path_contains=path_contains,
            ),
            times,
        )

    def drop_next(
        self, times: int = 1, *, method: str | None = None, path_contains: str | None = None
    ) -> None:
        """Reset the connection of the next ``times`` matching requests without answering."""
        self.inject(Fault(drop=True, method=method, path_contains=path_contains), times)

    def lose_answer_next(
        self, times: int = 1, *, method: str | None = None, path_contains: str | None = None
    ) -> None:
        """Handle the next ``times`` matching requests, then reset instead of answering.

        The request is forwarded to the upstream (whose answer is read and recorded as
        ``upstream_status``), or stored by the sink: it took effect, but the client hears only
        a connection reset, as when a store's answer is lost on the way.
        """
        self.inject(Fault(lose_answer=True, method=method, path_contains=path_contains), times)

    def delay_next(
        self,
        seconds: float,
        times: int = 1,
        *,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Wait ``seconds`` before handling the next ``times`` matching requests normally."""
        self.inject(Fault(delay=seconds, method=method, path_contains=path_contains), times)

    def clear_faults(self) -> None:
        """Forget all faults not yet applied."""
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        """How many fault applications remain queued."""
        with self._lock:
            return sum(int(entry[1]) for entry in self._faults)

    # -- observations

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the list of requests seen so far (oldest first)."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """Number of requests seen."""
        with self._lock:
            return len(self._requests)

    @property
    def bytes_received(self) -> int:
        """Total request body bytes read."""
        with self._lock:
            return self._bytes

    @property
    def stored_instances(self) -> list[tuple[str, str]]:
        """(SOP Class UID, SOP Instance UID) of every part accepted by the sink."""
        with self._lock:
            return list(self._stored)

    def reset(self) -> None:
        """Forget recorded requests, counters and queued faults."""
        with self._lock:
            self._faults.clear()
            self._requests.clear()
            self._stored.clear()
            self._bytes = 0

    # -- called from handler threads

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for index, entry in enumerate(self._faults):
                fault: Fault = entry[0]
                if fault.matches(method, path):
                    entry[1] -= 1
                    if entry[1] <= 0:
                        del self._faults[index]
                    return fault
        return None

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(record)

    def _count_bytes(self, count: int) -> None:
        with self._lock:
            self._bytes += count

    def _add_stored(self, instances: list[tuple[str, str]]) -> None:
        with self._lock:
            self._stored.extend(instances)

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


def encode_multipart_related(
    parts: Iterable[bytes], part_content_type: str = "application/dicom"
) -> tuple[bytes, str]:
    """Build a ``multipart/related`` body (e.g. a STOW-RS request) and its Content-Type header."""
    boundary = f"boundary-{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for part in parts:
        chunks += [
            f"--{boundary}\r\nContent-Type: {part_content_type}\r\n\r\n".encode(),
            part,
            b"\r\n",
        ]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="{part_content_type}"; boundary={boundary}'
