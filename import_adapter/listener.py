"""The TCP listener: accepts connections and serves each in a thread of its own.

A burst of connects (a scan, a flood) must not push legitimate clients into SYN retransmits,
so the backlog is large; what a connection may then hold is bounded by the server
(``max_pending_connections``, the ACSE timeout). Connection threads are daemons: shutting
down waits for associations through the drain (:mod:`import_adapter.drain`), not here.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any

from common.errors import ConfigError

LOG = logging.getLogger(__name__)

#: Serves one accepted connection, in its own thread (the listener closes it afterwards).
ServeConnection = Callable[[socket.socket, tuple[str, int]], None]


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], serve: ServeConnection, family: int) -> None:
        self.address_family = family
        self._serve = serve
        super().__init__(address, socketserver.BaseRequestHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection (socketserver's hook; no request handler class is used)."""
        self._serve(request, (str(client_address[0]), int(client_address[1])))


class Listener:
    """Listens on one address; :meth:`start` binds and serves in a background thread."""

    def __init__(self, host: str, port: int, serve: ServeConnection) -> None:
        self._address = (host, port)
        self._serve = serve
        self._server: _Server | None = None

    def start(self) -> None:
        """Bind and start accepting.

        Raises:
            ConfigError: the address cannot be bound (in use, not permitted).
        """
        host, port = self._address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            server = _Server(self._address, self._serve, family)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        threading.Thread(
            target=server.serve_forever, name=f"DimseListener:{server.server_address[1]}",
            daemon=True,
        ).start()
        self._server = server

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        if self._server is None:
            return self._address[1]
        return int(self._server.server_address[1])

    @property
    def listening(self) -> bool:
        """Whether connections are being accepted."""
        return self._server is not None

    def stop(self) -> None:
        """Stop accepting and close the listening socket (open connections are not touched)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with contextlib.suppress(OSError):
            server.server_close()
