"""A small forward HTTP proxy on loopback for tests: CONNECT tunnels and absolute-form requests.

It does what the proxies of hospital networks do for the adapters: a ``CONNECT host:port``
opens a tunnel (our DICOMweb transport, for https and http alike), and a request whose target
is an absolute ``http://`` URL is forwarded (urllib3's ProxyManager, used for google-auth's
token requests, sends plain-http requests so). It can demand basic credentials (407 without
them) and records what it was asked for. Every socket it opens or accepts has ``TCP_NODELAY``.
"""

from __future__ import annotations

import base64
import contextlib
import select
import socket
import threading
from types import TracebackType
from urllib.parse import urlsplit

_HEAD_LIMIT = 64 * 1024


def _nodelay(sock: socket.socket) -> socket.socket:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _relay(one: socket.socket, other: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    sockets = [one, other]
    while True:
        readable, _, _ = select.select(sockets, [], [], 30)
        if not readable:
            return
        for source in readable:
            data = source.recv(65536)
            if not data:
                return
            (other if source is one else one).sendall(data)


class HttpProxy:
    """A threaded forward proxy on ``127.0.0.1``; use as a context manager.

    Attributes:
        requests: ``(method, target)`` of every request it was sent, in order.
    """

    def __init__(self, *, credentials: tuple[str, str] | None = None) -> None:
        self._credentials = credentials
        self._listener = _nodelay(socket.create_server(("127.0.0.1", 0)))
        self.port: int = self._listener.getsockname()[1]
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (without credentials)."""
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        """The proxy URL carrying basic credentials."""
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    def targets(self, method: str) -> list[str]:
        """The targets of the requests with ``method`` (e.g. every CONNECT authority)."""
        with self._lock:
            return [target for seen, target in self.requests if seen == method]

    def __enter__(self) -> HttpProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(_nodelay(client),), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.closing(client), contextlib.suppress(OSError):
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk or len(head) > _HEAD_LIMIT:
                    return
                head += chunk
            text, _, early = head.partition(b"\r\n\r\n")
            request_line, *header_lines = text.decode("latin-1").split("\r\n")
            method, target, _version = request_line.split(" ", 2)
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in header_lines)
            }
            with self._lock:
                self.requests.append((method, target))
            if not self._authorized(headers.get("proxy-authorization", "")):
                client.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n'
                    b"Connection: close\r\n\r\n"
                )
                return
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                upstream = self._open(host.strip("[]"), int(port))
                if upstream is None:
                    client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                    return
                with contextlib.closing(upstream):
                    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    _relay(client, upstream)
                return
            self._forward(client, method, target, header_lines, early)

    def _forward(
        self,
        client: socket.socket,
        method: str,
        target: str,
        header_lines: list[str],
        early: bytes,
    ) -> None:
        """Send an absolute-form request on to its origin (one request per connection)."""
        url = urlsplit(target)
        upstream = self._open(url.hostname or "", url.port or 80) if url.scheme == "http" else None
        if upstream is None:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        path = url.path or "/"
        if url.query:
            path += f"?{url.query}"
        kept = [
            line
            for line in header_lines
            if not line.lower().startswith(("proxy-", "connection:", "keep-alive:"))
        ]
        head = "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close", "", ""])
        with contextlib.closing(upstream):
            upstream.sendall(head.encode("latin-1") + early)
            _relay(client, upstream)

    def _authorized(self, header: str) -> bool:
        if self._credentials is None:
            return True
        expected = base64.b64encode(":".join(self._credentials).encode()).decode()
        return header == f"Basic {expected}"

    @staticmethod
    def _open(host: str, port: int) -> socket.socket | None:
        try:
            return _nodelay(socket.create_connection((host, port), timeout=10))
        except OSError:
            return None
