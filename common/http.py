"""The HTTP/1.1 transport: a small, thread-safe keep-alive client of our own.

Every DICOMweb request of a process goes through one :class:`HttpTransport`, so associations
share warm connections (no TCP/TLS handshake per instance). It speaks only what DICOMweb needs,
without the general machinery of urllib3/``http.client``, whose response header parsing (the
``email`` package) cost a fifth of the adapters' CPU per small instance:

- connections: per (scheme, host, port) a LIFO stack of at most ``pool_size`` idle keep-alive
  connections; more concurrent requests open more connections, closed instead of kept when the
  stack is full. ``TCP_NODELAY`` on every socket; https with certificate and host name
  verification (TLS 1.2+), trusting ``ca_bundle`` when given; a new connection resumes the TLS
  session of the last one (one round trip less to a far store).
- proxies (:mod:`common.proxy`): a connection to a host that ``proxy`` sends through an
  ``http://`` proxy starts with a CONNECT tunnel (with the proxy's basic credentials, if any),
  for https and plain http alike; a proxy that refuses the tunnel is a connection error that
  names the proxy and its answer.
- requests: the body is bytes (sent with the head in one write when small), a readable binary
  file or an iterable of chunks, streamed block by block: with the caller's ``Content-Length``,
  else with chunked transfer coding. A file body that is a :class:`SegmentedBody` (a STOW-RS
  body over a spooled dataset) goes out with ``sendfile`` on a plain-TCP connection: the
  kernel copies the dataset from the page cache to the socket, without a pass through Python.
- responses: headers in a case-insensitive mapping (repeated names joined with ", "), 1xx
  skipped, a body framed by Content-Length, chunked coding or the end of the connection. A
  connection goes back to its stack as soon as its response body has been read to the end.
- stale connections: an idle connection the server has closed is noticed before use; if a
  request on a reused connection still fails before any byte of an answer (the server closed
  it meanwhile), the request is sent once more on a new connection when its body can be sent
  again (bytes, or a seekable file). When the first try had been written out whole (so the
  server may have acted on it before closing), the response, or the :class:`DicomwebHttpError`,
  says ``resent`` (:func:`was_resent`): a 409 to a resent STOW-RS may be about our own first
  copy. A resend after writing failed part-way is not marked: a request whose body did not
  arrive whole (Content-Length or chunked framing) cannot have been acted on.

Socket and TLS errors are translated here into :mod:`common.errors` and never reach callers::

    TimeoutError (connect, read, write)      -> DicomwebTimeoutError
    proxy refused the CONNECT tunnel         -> DicomwebConnectionError "proxy ... refused ..."
    ... with 407 (our proxy credentials)     -> AuthError (not retried: it cannot heal itself)
    ssl.SSLError (handshake, certificates)   -> DicomwebConnectionError "TLS failure ..."
    other OSError, malformed response        -> DicomwebConnectionError "... failed: <reason>"
    status >= 400                            -> DicomwebHttpError (body excerpt, Retry-After)
"""

from __future__ import annotations

import email.utils
import functools
import logging
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import IO, Any, Protocol, TypeVar, overload
from urllib.parse import quote, urlsplit, urlunsplit

from common.errors import (
    AuthError,
    DicomwebConnectionError,
    DicomwebError,
    DicomwebHttpError,
    DicomwebTimeoutError,
)
from common.proxy import ProxySettings, ProxyUrl

LOG = logging.getLogger(__name__)
_T = TypeVar("_T")

USER_AGENT = "dicom-adapter/0.1"
#: How many bytes of an error body are kept for messages.
_ERROR_EXCERPT = 300
#: How much of an error body is read (the rest is drained or the connection closed).
_ERROR_READ = 64 * 1024
#: The most of an unread response body :meth:`_Response.release_conn` reads to keep the
#: connection; with more left it closes the connection instead.
_DRAIN_LIMIT = 64 * 1024
#: Request bodies up to this size go out in the same write as the head.
_INLINE_BODY = 64 * 1024
#: Bytes asked of the socket per receive.
_RECV_SIZE = 64 * 1024
_MAX_RECV = 256 * 1024
#: Limits on a response head (status line and headers) and on a chunk-size or trailer line.
_MAX_HEAD = 64 * 1024
_MAX_HEADERS = 100
_MAX_LINE = 8 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_HEX_DIGITS = b"0123456789abcdefABCDEF"
#: Characters that may not appear raw in a request target.
_UNSAFE_TARGET = re.compile(r"[\x00-\x20\x7f-\U0010ffff]")
#: Send-side errors that mean "the server closed this connection" (it may have been idle).
_CLOSED_ERRORS = (
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)


@dataclass(frozen=True)
class HttpSettings:
    """Settings of the shared HTTP transport.

    Attributes:
        connect_timeout: seconds to establish a connection (TCP and TLS handshake).
        read_timeout: seconds to wait for any bytes of a response (or to send request bytes).
        pool_size: idle keep-alive connections kept per host (at least the number of
            concurrent requests; more requests at once open more connections).
        ca_bundle: a PEM file of CA certificates to trust instead of the system store.
        block_size: bytes sent per write when streaming a request body.
        proxy: outbound proxies; a request through one goes through a CONNECT tunnel.
    """

    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    pool_size: int = 32
    ca_bundle: str | None = None
    block_size: int = 256 * 1024
    proxy: ProxySettings = field(default_factory=ProxySettings)


class Response(Protocol):
    """The parts of an HTTP response the DICOMweb client uses."""

    @property
    def status(self) -> int:
        """HTTP status code."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Response headers (case-insensitive)."""
        ...

    @property
    def data(self) -> bytes:
        """The whole body of a response requested with ``stream=False``."""
        ...

    def read(self, amt: int | None = None) -> bytes:
        """Read body bytes of a streamed response."""
        ...

    def stream(self, amt: int) -> Iterator[bytes]:
        """Iterate over body chunks."""
        ...

    def release_conn(self) -> None:
        """Return the connection to the pool (only after the body was read)."""
        ...

    def close(self) -> None:
        """Close the connection (when abandoning a body half-read)."""
        ...

    @property
    def url(self) -> str | None:
        """The request URL."""
        ...


Body = bytes | IO[bytes] | Iterable[bytes] | None


def redact_url(url: str) -> str:
    """The URL without user info or query (safe to log)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_status(
    status: int,
    safe_url: str,
    reason: str | None,
    body: bytes,
    retry_after: str | None,
    *,
    resent: bool = False,
) -> DicomwebHttpError:
    """The error for an HTTP error response (with a short, whitespace-folded body excerpt)."""
    excerpt = " ".join(body[:_ERROR_EXCERPT].decode("utf-8", "replace").split())
    return DicomwebHttpError(
        status,
        url=safe_url,
        reason=reason or "",
        body_excerpt=excerpt,
        retry_after=retry_after_seconds(retry_after),
        resent=resent,
    )


def was_resent(outcome: Response | DicomwebHttpError) -> bool:
    """Whether the request behind a response or HTTP error was sent twice.

    That is: sent again after its first try had been written out whole, so the server may
    have acted on both. Only :class:`HttpTransport` sends a request again by itself.
    """
    return bool(getattr(outcome, "resent", False))


class Transport(Protocol):
    """Sends HTTP requests; :class:`HttpTransport` (HTTP/1.1) and ``Http2Transport``."""

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: Body = None,
        stream: bool = False,
        timeout: float | None = None,
    ) -> Response:
        """Send a request; raise :class:`DicomwebError` subclasses for failures."""
        ...

    def close(self) -> None:
        """Close pooled connections."""
        ...


class Headers(Mapping[str, str]):
    """Response headers: a mapping with case-insensitive names (iterated lower-case)."""

    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, str]) -> None:
        self._fields = fields  # lower-case name -> value

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    @overload
    def get(self, name: str, /) -> str | None: ...

    @overload
    def get(self, name: str, /, default: str | _T) -> str | _T: ...

    def get(self, name: str, /, default: object = None) -> object:
        """The value of header ``name`` (any case), else ``default``."""
        return self._fields.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


class HttpProtocolError(ConnectionError):
    """The server's answer is not well-formed HTTP/1.1, or it ended in the middle."""


class _RemoteDisconnected(HttpProtocolError):
    """The connection ended before any byte of an answer (a closed keep-alive connection)."""


# --------------------------------------------------------------------------- connections


class _Connection:
    """One socket with a receive buffer; owned by one request at a time."""

    __slots__ = ("_buf", "_pos", "pool", "sock", "timeout")

    def __init__(self, sock: socket.socket, pool: _Pool, timeout: float) -> None:
        self.sock = sock
        self.pool = pool
        self.timeout = timeout
        self._buf = b""  # received, unconsumed from _pos on
        self._pos = 0

    def set_timeout(self, timeout: float) -> None:
        if timeout != self.timeout:
            self.sock.settimeout(timeout)
            self.timeout = timeout

    def fill(self) -> bool:
        """Receive more bytes into the buffer; False at the end of the connection."""
        data = self.sock.recv(_RECV_SIZE)
        if not data:
            return False
        if self._pos < len(self._buf):
            self._buf = self._buf[self._pos :] + data
        else:
            self._buf = data
        self._pos = 0
        return True

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def read_head(self, first: bool) -> str:
        """The next response head (status line and headers), without its final empty line.

        Args:
            first: no byte of an answer to the request has been received yet.
        """
        while True:
            buf, pos = self._buf, self._pos
            end = buf.find(b"\r\n\r\n", pos)
            # Bare LF line ends are tolerated (an earlier blank line ends the head).
            bare = buf.find(b"\n\n", pos, len(buf) if end < 0 else end)
            if bare >= 0:
                self._pos = bare + 2
                return buf[pos:bare].decode("latin-1")
            if end >= 0:
                self._pos = end + 4
                return buf[pos:end].decode("latin-1")
            if len(buf) - pos > _MAX_HEAD:
                raise HttpProtocolError("response head too long")
            if first and not self.buffered:
                # Nothing of an answer yet: an error now means the server closed the
                # connection before answering, which the caller may retry on another one.
                try:
                    received = self.fill()
                except _CLOSED_ERRORS as exc:
                    raise _RemoteDisconnected("connection closed before an answer") from exc
                if not received:
                    raise _RemoteDisconnected("connection closed before an answer")
            elif not self.fill():
                raise HttpProtocolError("connection closed in the middle of a response head")

    def readline(self) -> bytes:
        """The next line (with its line end) of a chunked body."""
        while True:
            end = self._buf.find(b"\n", self._pos)
            if end >= 0:
                line = self._buf[self._pos : end + 1]
                self._pos = end + 1
                return line
            if self.buffered > _MAX_LINE:
                raise HttpProtocolError("chunked body line too long")
            if not self.fill():
                raise HttpProtocolError("connection closed in the middle of a chunked body")

    def read_some(self, size: int) -> bytes:
        """Up to ``size`` (> 0) bytes: buffered ones, else one receive; b'' at the end."""
        pos = self._pos
        if pos < len(self._buf):
            chunk = self._buf[pos : pos + size]
            self._pos = pos + len(chunk)
            return chunk
        return self.sock.recv(min(size, _MAX_RECV))

    def dropped(self) -> bool:
        """Whether an idle connection is unusable: closed by the server, or holding bytes."""
        if self.buffered:
            return True
        sock = self.sock
        try:
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return True
            if _poll is not None:
                poller = _poll()
                poller.register(sock, select.POLLIN)
                return bool(poller.poll(0))
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        with suppress(OSError):
            self.sock.close()


_poll = getattr(select, "poll", None)


class _Pool:
    """The idle keep-alive connections to one (scheme, host, port), most recent on top."""

    __slots__ = ("_idle", "_lock", "closed", "key", "size", "tls_session")

    def __init__(self, key: tuple[str, str, int], size: int) -> None:
        self.key = key
        self.size = size
        self.closed = False
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        # The TLS session of the last connection given back: a new connection resumes it, so
        # a far store costs one round trip for its handshake, not two, and no certificate.
        self.tls_session: ssl.SSLSession | None = None

    def get(self) -> _Connection | None:
        """The most recently used idle connection still open, or None."""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                connection = self._idle.pop()
            if not connection.dropped():
                return connection
            connection.close()

    def put(self, connection: _Connection) -> None:
        """Keep an idle connection, or close it when the pool is full or closed."""
        if isinstance(connection.sock, ssl.SSLSocket):
            # Read after a whole response: TLS 1.3 session tickets have arrived by then.
            session = connection.sock.session
            if session is not None:
                self.tls_session = session
        with self._lock:
            if not self.closed and len(self._idle) < self.size:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


@functools.lru_cache(maxsize=512)
def _parse_url(url: str) -> tuple[tuple[str, str, int], str, str]:
    """(pool key, Host header value, request target) of a URL.

    Raises:
        ValueError: not an http(s) URL with a host.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {scheme!r}")
    host = parts.hostname
    if not host:
        raise ValueError("URL without a host")
    default_port = 443 if scheme == "https" else 80
    port = parts.port or default_port
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header = f"{host_header}:{port}"
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    if _UNSAFE_TARGET.search(target):
        target = quote(target, safe="/?&=;:@!$'()*+,~%-._")
    return (scheme, host, port), host_header, target


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class FileRange:
    """``count`` bytes of an open regular file from ``offset``, sent as they are."""

    file: IO[bytes]
    offset: int
    count: int


class SegmentedBody(Protocol):
    """A file body that can also list itself as byte strings and ranges of regular files.

    It is still read like a file where ``sendfile`` cannot serve (TLS, chunked coding).
    """

    def read(self, size: int = -1, /) -> bytes | None:
        """Up to ``size`` bytes of the body, as a file body is read."""
        ...

    def segments(self) -> Iterator[bytes | FileRange]:
        """The body in order; files it opens for this are closed when the iterator ends."""
        ...

_NO_BODY, _BYTES, _FILE, _ITERABLE = range(4)


class _Request:
    """A request as it goes out: its encoded head and how its body follows."""

    __slots__ = ("body", "chunked", "head", "keep_alive", "kind", "length", "method", "url")

    def __init__(
        self,
        method: str,
        url: str,
        host_header: str,
        target: str,
        headers: Mapping[str, str],
        body: Body,
    ) -> None:
        self.method = method
        self.url = url
        self.body = body
        self.kind = _body_kind(body)
        #: The Content-Length the caller gave for a streamed body (checked when sent).
        self.length: int | None = None
        self.chunked = False
        names = {name.lower() for name in headers}
        lines = [f"{method} {target} HTTP/1.1\r\n"]
        if "host" not in names:
            lines.append(f"Host: {host_header}\r\n")
        if "user-agent" not in names:
            lines.append(f"User-Agent: {USER_AGENT}\r\n")
        if "accept-encoding" not in names:
            lines.append("Accept-Encoding: identity\r\n")  # no content coding to undo
        lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        self.keep_alive = True
        if "connection" in names or "transfer-encoding" in names or "content-length" in names:
            fields = {name.lower(): str(value) for name, value in headers.items()}
            self.keep_alive = "close" not in fields.get("connection", "").lower()
            if "transfer-encoding" in fields:
                self.chunked = True  # the caller asked for it: the body is chunk-coded
            elif "content-length" in fields:
                self.length = int(fields["content-length"])
                if self.kind == _BYTES and self.length != len(body):  # type: ignore[arg-type]
                    raise ValueError("Content-Length differs from the length of the body")
        elif self.kind == _BYTES:
            lines.append(f"Content-Length: {len(body)}\r\n")  # type: ignore[arg-type]
        elif self.kind != _NO_BODY:
            lines.append("Transfer-Encoding: chunked\r\n")
            self.chunked = True
        elif method in _BODY_METHODS:
            lines.append("Content-Length: 0\r\n")
        lines.append("\r\n")
        text = "".join(lines)
        if text.count("\n") != len(lines) or text.count("\r") != len(lines):
            raise ValueError("line break in a request header")  # it would forge header lines
        self.head = text.encode("latin-1")

    def rewind_point(self) -> int | None:
        """Where to seek a file body back to, to send it again (None: it cannot be)."""
        if self.kind != _FILE:
            return None
        try:
            return self.body.tell() if self.body.seekable() else None  # type: ignore[union-attr]
        except (OSError, ValueError, AttributeError):
            return None

    def can_resend(self, position: int | None) -> bool:
        """Whether the body can be sent again (rewinding a file body to ``position``)."""
        if self.kind in (_NO_BODY, _BYTES) or isinstance(self.body, list | tuple):
            return True
        if self.kind == _FILE and position is not None:
            try:
                self.body.seek(position)  # type: ignore[union-attr]
            except (OSError, ValueError):
                return False
            return True
        return False

    def send(self, sock: socket.socket, block_size: int) -> None:
        """Write the head and the body (streamed block by block unless it is bytes)."""
        kind = self.kind
        if kind == _BYTES and not self.chunked:
            data: Any = self.body
            if len(data) <= _INLINE_BODY:
                sock.sendall(b"".join((self.head, data)))
            else:
                sock.sendall(self.head)
                sock.sendall(data)
            return
        if kind == _NO_BODY:
            sock.sendall(self.head + b"0\r\n\r\n" if self.chunked else self.head)
            return
        segments = getattr(self.body, "segments", None)
        if kind == _FILE and segments is not None and not self.chunked and _sends_files(sock):
            self._send_segments(sock, segments())
            return
        sock.sendall(self.head)
        blocks: Iterable[bytes | memoryview]
        if kind == _BYTES:
            blocks = [self.body]  # type: ignore[list-item]
        elif kind == _FILE:
            blocks = _file_blocks(self.body, block_size)
        else:
            blocks = self.body  # type: ignore[assignment]
        sent = 0
        for block in blocks:
            size = len(block)
            if not size:
                continue  # an empty chunk would end a chunked body
            if self.chunked:
                sock.sendall(b"".join((b"%x\r\n" % size, block, b"\r\n")))
            else:
                sock.sendall(block)
            sent += size
        if self.chunked:
            sock.sendall(b"0\r\n\r\n")
        else:
            self._check_length(sent)

    def _send_segments(self, sock: socket.socket, segments: Iterator[bytes | FileRange]) -> None:
        """Write the head and a :class:`SegmentedBody`: bytes coalesced, file ranges by sendfile."""
        pending = [self.head]
        sent = 0
        try:
            for segment in segments:
                if isinstance(segment, FileRange):
                    if segment.count <= 0:
                        continue  # sendfile would read a count of 0 as "to the end"
                    sock.sendall(b"".join(pending))
                    pending = []
                    count = sock.sendfile(segment.file, segment.offset, segment.count)
                    sent += count
                    if count != segment.count:
                        raise DicomwebError(
                            f"the file behind the request body ended {segment.count - count} "
                            "bytes early while it was sent"
                        )
                else:
                    pending.append(segment)
                    sent += len(segment)
            if pending:
                sock.sendall(b"".join(pending))
        finally:
            close = getattr(segments, "close", None)
            if close is not None:
                close()  # a generator's files close now, not whenever it is collected
        self._check_length(sent)

    def _check_length(self, sent: int) -> None:
        if self.length is not None and sent != self.length:
            raise DicomwebError(
                f"the request body was {sent} bytes, not {self.length} as its Content-Length said"
            )


def _sends_files(sock: socket.socket) -> bool:
    """Whether ``sendfile`` serves this socket (a TLS socket would copy 8 KiB at a time)."""
    return not isinstance(sock, ssl.SSLSocket)


def _body_kind(body: Body) -> int:
    if body is None:
        return _NO_BODY
    if isinstance(body, bytes | bytearray | memoryview):
        return _BYTES
    if hasattr(body, "read"):
        return _FILE
    if isinstance(body, str):
        raise TypeError("a request body must be bytes, a binary file or an iterable of bytes")
    return _ITERABLE


def _file_blocks(body: Any, block_size: int) -> Iterator[bytes | memoryview]:
    """The blocks of a readable file, read into one reused buffer when it can."""
    readinto = getattr(body, "readinto", None)
    if readinto is None:
        while block := body.read(block_size):
            yield block
        return
    buffer = memoryview(bytearray(block_size))
    while count := readinto(buffer):
        yield buffer[:count]


# --------------------------------------------------------------------------- responses


class _Response:
    """A response on a connection; the connection is given back when the body ends."""

    __slots__ = (
        "_chunked",
        "_connection",
        "_crlf_pending",
        "_data",
        "_remaining",
        "_reusable",
        "headers",
        "reason",
        "resent",
        "status",
        "url",
        "version",
    )

    def __init__(
        self,
        connection: _Connection,
        url: str,
        version: str,
        status: int,
        reason: str,
        headers: Headers,
        *,
        has_body: bool,
        reusable: bool,
        resent: bool = False,
    ) -> None:
        self.url = url
        #: The request was sent again after a first try written out whole (see was_resent).
        self.resent = resent
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self._data: bytes | None = None
        self._chunked = False
        self._crlf_pending = False
        #: Content-Length bytes left, or bytes left in the current chunk; -1: until closed.
        self._remaining = 0
        self._reusable = reusable
        self._connection: _Connection | None = connection
        if has_body:
            try:
                self._frame(headers)
            except HttpProtocolError:
                self.close()
                raise
        if not self._chunked and self._remaining == 0:
            self._finish()

    def _frame(self, headers: Headers) -> None:
        """Find how the body is delimited (RFC 9112 6.3)."""
        coding = headers.get("transfer-encoding")
        if coding is not None:
            if coding.rsplit(",", 1)[-1].strip().lower() == "chunked":
                self._chunked = True
            else:
                self._remaining = -1
                self._reusable = False
            return
        length = headers.get("content-length")
        if length is None:
            self._remaining = -1
            self._reusable = False
            return
        values = {value.strip() for value in length.split(",")}
        value = values.pop() if len(values) == 1 else ""
        if not (value.isascii() and value.isdigit()):
            raise HttpProtocolError(f"bad Content-Length {length!r}")
        self._remaining = int(value)

    def __repr__(self) -> str:
        return f"<Response {self.status} {redact_url(self.url)}>"

    @property
    def data(self) -> bytes:
        """The whole body (what is left of it, for a streamed response)."""
        if self._data is None:
            self._data = self.read()
        return self._data

    def read(self, amt: int | None = None) -> bytes:
        """Up to ``amt`` body bytes (fewer only at the end of the body); all with None.

        Raises:
            DicomwebTimeoutError, DicomwebConnectionError: the body could not be read.
        """
        if self._connection is None:
            return b""
        if amt is not None and amt < 0:
            amt = None
        try:
            if self._chunked:
                return self._read_chunked(amt)
            if self._remaining < 0:
                return self._read_to_close(amt)
            return self._read_length(amt)
        except TimeoutError as exc:
            self.close()
            safe_url = redact_url(self.url)
            raise DicomwebTimeoutError(f"reading {safe_url} timed out", url=safe_url) from exc
        except OSError as exc:
            self.close()
            safe_url = redact_url(self.url)
            raise DicomwebConnectionError(
                f"reading {safe_url} failed: {_describe(exc)}", url=safe_url
            ) from exc

    def stream(self, amt: int = 64 * 1024) -> Iterator[bytes]:
        """Body chunks of ``amt`` bytes (the last may be shorter) until the end."""
        while data := self.read(amt):
            yield data

    def release_conn(self) -> None:
        """Give the connection back when the body was read (or little is left to drain)."""
        if self._connection is None:
            return
        if 0 <= self._remaining <= _DRAIN_LIMIT:
            try:
                drained = 0
                while self._connection is not None and drained <= _DRAIN_LIMIT:
                    drained += len(self.read(_DRAIN_LIMIT))
            except DicomwebError:
                return  # read() closed the connection
        self.close()

    def close(self) -> None:
        """Close the connection (an unread body cannot be skipped)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _finish(self) -> None:
        """The body has been read: keep the connection for the next request, or close it."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._reusable:
            connection.pool.put(connection)
        else:
            connection.close()

    def _read_length(self, amt: int | None) -> bytes:
        remaining = self._remaining
        want = remaining if amt is None or amt > remaining else amt
        connection = self._connection
        assert connection is not None
        data = connection.read_some(want) if want else b""
        if len(data) < want:
            parts, got = [data], len(data)
            while got < want:
                chunk = connection.read_some(want - got)
                if not chunk:
                    raise HttpProtocolError(
                        f"connection closed {remaining - got} bytes before the end of the body"
                    )
                parts.append(chunk)
                got += len(chunk)
            data = b"".join(parts)
        self._remaining = remaining - want
        if self._remaining == 0:
            self._finish()
        return data

    def _read_to_close(self, amt: int | None) -> bytes:
        connection = self._connection
        assert connection is not None
        parts: list[bytes] = []
        got = 0
        while amt is None or got < amt:
            chunk = connection.read_some(_MAX_RECV if amt is None else amt - got)
            if not chunk:
                self._finish()
                break
            parts.append(chunk)
            got += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_chunked(self, amt: int | None) -> bytes:
        connection = self._connection
        assert connection is not None
        parts: list[bytes] = []
        got = 0
        while amt is None or got < amt:
            if self._remaining == 0:
                if self._crlf_pending:
                    if connection.readline().strip():
                        raise HttpProtocolError("chunk data longer than its size")
                    self._crlf_pending = False
                line = connection.readline()
                size_text = line.split(b";", 1)[0].strip()
                if not size_text or size_text.strip(_HEX_DIGITS):
                    raise HttpProtocolError(f"bad chunk size line {line[:40]!r}")
                size = int(size_text, 16)
                if size == 0:
                    self._skip_trailers(connection)
                    self._finish()
                    break
                self._remaining = size
            want = self._remaining if amt is None else min(self._remaining, amt - got)
            chunk = connection.read_some(want)
            if not chunk:
                raise HttpProtocolError("connection closed in the middle of a chunked body")
            parts.append(chunk)
            got += len(chunk)
            self._remaining -= len(chunk)
            if self._remaining == 0:
                self._crlf_pending = True
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @staticmethod
    def _skip_trailers(connection: _Connection) -> None:
        for _ in range(_MAX_HEADERS + 1):
            if not connection.readline().strip():
                return
        raise HttpProtocolError("too many trailer fields")


def _parse_head(head: str) -> tuple[str, int, str, Headers]:
    """(version, status, reason, headers) of a response head."""
    lines = head.split("\n")
    status_line = lines[0].rstrip("\r")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if (
        not version.startswith("HTTP/1.")
        or not (code.isascii() and code.isdigit())
        or rest[3:4] not in ("", " ")
    ):
        raise HttpProtocolError(f"bad status line {status_line[:80]!r}")
    if len(lines) > _MAX_HEADERS + 1:
        raise HttpProtocolError("too many response header fields")
    fields: dict[str, str] = {}
    name = ""
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):  # obsolete line folding: continues the previous field
            if name:
                fields[name] = f"{fields[name]} {line.strip()}".strip()
            continue
        name, colon, value = line.partition(":")
        if not colon:
            name = ""
            continue  # not a header field; ignored, as http.client does
        name = name.strip().lower()
        value = value.strip()
        if name in fields:
            fields[name] = f"{fields[name]}, {value}"
        else:
            fields[name] = value
    return version, int(code), rest[4:].strip(), Headers(fields)


def _open_tunnel(sock: socket.socket, proxy: ProxyUrl, host: str, port: int) -> None:
    """Ask the proxy connected on ``sock`` for a tunnel to ``host:port`` (RFC 9110 9.3.6).

    Raises:
        AuthError: the proxy asked for (other) credentials: 407.
        DicomwebConnectionError: the proxy refused otherwise, or did not answer HTTP.
        OSError, TimeoutError: the connection to the proxy failed.
    """
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1\r\n", f"Host: {authority}\r\n"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}\r\n")
    lines.append(f"User-Agent: {USER_AGENT}\r\n\r\n")
    sock.sendall("".join(lines).encode("latin-1"))
    head = b""
    while b"\r\n\r\n" not in head:
        # Nothing follows the proxy's answer until we speak (TLS or our request), so reading
        # in chunks cannot take bytes of the tunnel.
        chunk = sock.recv(4096)
        if not chunk:
            raise DicomwebConnectionError(
                f"proxy {proxy.display} closed the connection before answering CONNECT"
            )
        head += chunk
        if len(head) > _MAX_HEAD:
            raise DicomwebConnectionError(f"proxy {proxy.display}: CONNECT answer too long")
    text, _, rest = head.partition(b"\r\n\r\n")
    try:
        _version, status, reason, _headers = _parse_head(text.decode("latin-1"))
    except HttpProtocolError as exc:
        raise DicomwebConnectionError(f"proxy {proxy.display}: {exc}") from exc
    if status == 407:
        raise AuthError(
            f"proxy {proxy.display} refused a tunnel to {authority}: HTTP 407 {reason} "
            "(check the credentials in the proxy URL)"
        )
    if not 200 <= status < 300:
        raise DicomwebConnectionError(
            f"proxy {proxy.display} refused a tunnel to {authority}: HTTP {status} {reason}"
        )
    if rest:
        raise DicomwebConnectionError(f"proxy {proxy.display} sent data before the tunnel")


# --------------------------------------------------------------------------- transport


class HttpTransport:
    """A pooled HTTP/1.1 client for DICOMweb requests (thread-safe)."""

    def __init__(self, settings: HttpSettings = HttpSettings()) -> None:
        self.settings = settings
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: Body = None,
        stream: bool = False,
        timeout: float | None = None,
    ) -> Response:
        """Send a request and return the response, raising our errors for failures.

        Args:
            method: HTTP method.
            url: full URL (query included).
            headers: request headers (Content-Length should be set for streamed bodies; without
                it they are sent with chunked transfer coding).
            body: bytes, a readable binary file, an iterable of chunks, or None.
            stream: when True the body is not read; the caller reads it and then calls
                ``release_conn()`` (or ``close()`` to abandon it).
            timeout: read timeout override in seconds.

        Raises:
            DicomwebHttpError: for a status >= 400 (the body is read and the connection freed).
            DicomwebConnectionError, DicomwebTimeoutError: transport failures.
            AuthError: the proxy refused our credentials (407).
        """
        try:
            key, host_header, target = _parse_url(url)
        except ValueError as exc:
            raise DicomwebConnectionError(
                f"{method} {_safe(url)} failed: {exc}", url=_safe(url)
            ) from exc
        outgoing = _Request(method, url, host_header, target, headers, body)
        try:
            response = self._exchange(
                key, outgoing, self.settings.read_timeout if timeout is None else timeout
            )
            if response.status >= 400:
                raise self._error(response)
            if not stream:
                response.data  # noqa: B018  (reads the body, giving the connection back)
        except TimeoutError as exc:
            raise DicomwebTimeoutError(
                f"{method} {_safe(url)} timed out", url=_safe(url)
            ) from exc
        except ssl.SSLError as exc:
            raise DicomwebConnectionError(
                f"TLS failure talking to {_safe(url)}: {exc}", url=_safe(url)
            ) from exc
        except OSError as exc:
            raise DicomwebConnectionError(
                f"{method} {_safe(url)} failed: {_describe(exc)}", url=_safe(url)
            ) from exc
        return response

    def close(self) -> None:
        """Close all idle connections (connections in use are closed when given back)."""
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.close()

    # -- internals

    def _exchange(
        self, key: tuple[str, str, int], outgoing: _Request, read_timeout: float
    ) -> _Response:
        """Send the request and read the response head, on a kept or a new connection."""
        pool = self._pools.get(key)
        if pool is None:
            with self._lock:
                pool = self._pools.setdefault(key, _Pool(key, self.settings.pool_size))
        position = outgoing.rewind_point()
        connection = pool.get()
        resent = False  # sent again after a try written out whole (see was_resent)
        while True:
            reused = connection is not None
            if connection is None:
                connection = self._connect(pool)
            sent = False
            try:
                connection.set_timeout(read_timeout)
                outgoing.send(connection.sock, self.settings.block_size)
                sent = True
                version, status, reason, headers = _parse_head(connection.read_head(True))
                while 100 <= status < 200:  # interim answers (100 Continue, 103...)
                    version, status, reason, headers = _parse_head(connection.read_head(False))
            except BaseException as exc:
                connection.close()
                closed = isinstance(exc, _RemoteDisconnected) or (
                    not sent and isinstance(exc, _CLOSED_ERRORS)
                )
                if reused and closed and outgoing.can_resend(position):
                    LOG.debug("kept connection to %s:%s was closed; sending again", *key[1:])
                    resent = sent
                    connection = None
                    continue
                raise
            break
        reusable = (
            outgoing.keep_alive
            and version == "HTTP/1.1"
            and "close" not in headers.get("connection", "").lower()
        )
        return _Response(
            connection,
            outgoing.url,
            version,
            status,
            reason,
            headers,
            has_body=outgoing.method != "HEAD" and status not in _NO_BODY_STATUSES,
            reusable=reusable,
            resent=resent,
        )

    def _connect(self, pool: _Pool) -> _Connection:
        scheme, host, port = pool.key
        proxy = self.settings.proxy.for_url(scheme, host, port)
        sock = socket.create_connection(
            (host, port) if proxy is None else (proxy.host, proxy.port),
            timeout=self.settings.connect_timeout,
        )
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if proxy is not None:
                _open_tunnel(sock, proxy, host, port)
            if scheme == "https":
                sock = self._tls_context().wrap_socket(
                    sock, server_hostname=host, session=pool.tls_session
                )
            sock.settimeout(self.settings.read_timeout)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock, pool, self.settings.read_timeout)

    def _tls_context(self) -> ssl.SSLContext:
        context = self._tls
        if context is None:
            with self._lock:
                if self._tls is None:
                    created = ssl.create_default_context(cafile=self.settings.ca_bundle)
                    created.minimum_version = ssl.TLSVersion.TLSv1_2
                    created.set_alpn_protocols(["http/1.1"])
                    self._tls = created
                context = self._tls
        return context

    @staticmethod
    def _error(response: _Response) -> DicomwebError:
        """The error for a status >= 400, its body excerpt read and the connection freed."""
        try:
            raw = response.read(_ERROR_READ)
        except DicomwebError:
            raw = b""
        response.release_conn()
        return error_from_status(
            response.status,
            redact_url(response.url),
            response.reason,
            raw,
            response.headers.get("retry-after"),
            resent=response.resent,
        )


@contextmanager
def translate_stream_errors(url: str) -> Iterator[None]:
    """Translate transport errors raised while reading a streamed response body.

    :class:`HttpTransport` responses raise our errors themselves; this covers socket errors of
    any other :class:`Response` implementation.
    """
    safe_url = redact_url(url)
    try:
        yield
    except TimeoutError as exc:
        raise DicomwebTimeoutError(f"reading {safe_url} timed out", url=safe_url) from exc
    except OSError as exc:
        raise DicomwebConnectionError(
            f"reading {safe_url} failed: {_describe(exc)}", url=safe_url
        ) from exc


def _safe(url: str) -> str:
    """:func:`redact_url`, or a placeholder for a URL that cannot be parsed."""
    try:
        return redact_url(url)
    except ValueError:
        return "<invalid URL>"


def _describe(exc: BaseException) -> str:
    """A short reason for a transport error (e.g. 'Connection refused')."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__

