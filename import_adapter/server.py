"""The DIMSE listener: the fast engine for storage and verification, pynetdicom for the rest.

Services contribute presentation contexts and event handlers (:class:`DimseService`); the server
sets the association policy (called AE title, limits, timeouts, ``TCP_NODELAY``), receives
C-STORE datasets straight to spool files, and drains on shutdown.

pynetdicom's server accepts the connections. Each one is then peeked at (``MSG_PEEK``: nothing
is consumed) until its A-ASSOCIATE-RQ is complete. A request that proposes only Verification and
storage-like SOP classes, without extended negotiation, is served by :mod:`common.dimse.fast` in
that connection's thread; any other (C-FIND, C-MOVE, C-GET, storage commitment, role selection,
user identity...) goes, untouched, to pynetdicom exactly as before. Both engines call the same
event handlers (:mod:`import_adapter.fast_bridge`), so there is one C-STORE handler.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from common.dimse.fast.acse import decode_associate_rq
from common.dimse.fast.constants import AbortSource
from common.dimse.fast.scp import (
    AcceptorAssociation,
    AcceptorPolicy,
    fast_path_eligible,
    peek_associate_rq,
)
from common.dimse.fast.transport import DimseProtocolError, abort_pdu
from common.dimse.sockets import SOCKET_HANDLERS
from common.errors import ConfigError
from common.lifecycle import Lifecycle
from import_adapter.config import DimseServerConfig
from import_adapter.fast_bridge import PynetdicomHandlerBridge
from import_adapter.handlers import Handler, association_log_handlers, echo_handlers

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class SupportedContext:
    """A presentation context a service accepts (SCP side)."""

    abstract_syntax: str
    transfer_syntaxes: Sequence[str] = tuple(ALL_TRANSFER_SYNTAXES)
    scu_role: bool | None = None
    scp_role: bool | None = None


@dataclass(frozen=True)
class DimseService:
    """What one DIMSE service adds to the listener.

    Attributes:
        name: for logs.
        contexts: presentation contexts to accept (storage needs none: every storage-like
            abstract syntax is accepted in the SCU's preferred transfer syntax).
        handlers: pynetdicom event handlers.
    """

    name: str
    contexts: Sequence[SupportedContext] = ()
    handlers: Sequence[Handler] = field(default_factory=list)


def configure_receive_spool(spool_dir: Path | None) -> None:
    """Receive C-STORE datasets straight into files (constant memory, any size).

    pynetdicom writes each incoming dataset to a temporary file as its PDUs arrive when
    ``STORE_RECV_CHUNKED_DATASET`` is set; it creates that file in :mod:`tempfile`'s directory,
    which we point at the spool so later stages can rename files within one filesystem.
    ``UNRESTRICTED_STORAGE_SERVICE`` accepts every storage, private and unknown SOP class in
    the transfer syntax the SCU prefers. Both are documented pynetdicom settings.
    """
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    if spool_dir is not None:
        spool_dir.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = str(spool_dir)


#: Seconds a fast association may stay idle after shutdown asked it to end.
_STOP_LINGER = 0.5


class _DispatchingServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with each connection offered to the fast engine first."""

    # Fast associations live in the connection's thread: shutting the server down must not
    # wait for them (stop() drains them itself), nor may they keep the process alive.
    daemon_threads = True
    block_on_close = False

    def __init__(self, *args: Any, dispatcher: DimseServer, **kwargs: Any) -> None:
        self._dispatcher = dispatcher
        super().__init__(*args, **kwargs)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve on the fast engine when it can; else hand the untouched socket to pynetdicom."""
        if self._dispatcher.serve_fast(request, client_address):
            return
        super().process_request_thread(request, client_address)


class DimseServer:
    """A non-blocking DIMSE listener."""

    def __init__(
        self,
        config: DimseServerConfig,
        services: Sequence[DimseService],
        lifecycle: Lifecycle,
    ) -> None:
        self._config = config
        self._services = services
        self._lifecycle = lifecycle
        self._server: ThreadedAssociationServer | None = None
        self._ae = self._build_ae()
        self._bridge = PynetdicomHandlerBridge(self._handlers())
        # Abstract syntaxes a service negotiates itself: such requests stay with pynetdicom.
        self._reserved = frozenset(
            str(cx.abstract_syntax) for service in services for cx in service.contexts
        )
        self._policy = AcceptorPolicy(
            ae_title=config.ae_title,
            max_pdu_size=config.max_pdu_size,
            acse_timeout=config.acse_timeout,
            dimse_timeout=config.dimse_timeout,
            network_timeout=config.network_timeout,
        )
        self._lock = threading.Lock()
        self._fast: set[AcceptorAssociation] = set()
        # Connections whose request is still being awaited (closed at shutdown).
        self._pending: set[socket.socket] = set()

    def _build_ae(self) -> AE:
        config = self._config
        ae = AE(ae_title=config.ae_title)
        ae.require_called_aet = True
        ae.maximum_associations = config.max_associations
        ae.maximum_pdu_size = config.max_pdu_size
        ae.acse_timeout = config.acse_timeout
        ae.dimse_timeout = config.dimse_timeout
        ae.network_timeout = config.network_timeout
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        for service in self._services:
            for cx in service.contexts:
                ae.add_supported_context(
                    cx.abstract_syntax,
                    list(cx.transfer_syntaxes),
                    scu_role=cx.scu_role,
                    scp_role=cx.scp_role,
                )
        return ae

    def _handlers(self) -> list[Handler]:
        handlers: list[Handler] = [*SOCKET_HANDLERS, *echo_handlers()]
        handlers += association_log_handlers()
        for service in self._services:
            handlers += list(service.handlers)
        return handlers

    def start(self) -> None:
        """Bind and start serving in background threads.

        Raises:
            ConfigError: the address cannot be bound (in use, not permitted).
        """
        address = (self._config.bind_address, self._config.port)
        try:
            server = self._ae.make_server(
                address,
                evt_handlers=self._handlers(),  # type: ignore[arg-type]
                server_class=_DispatchingServer,
                dispatcher=self,
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}"
            ) from exc
        # What AE.start_server(block=False) does with its own server class: serve in a daemon
        # thread and register with the AE (AssociationServer.shutdown() unregisters).
        self._ae._servers.append(server)
        stamp = datetime.now().strftime("%Y%m%d%H%M%S")
        thread = threading.Thread(
            target=server.serve_forever, name=f"AcceptorServer@{stamp}", daemon=True
        )
        thread.start()
        self._server = server
        LOG.info(
            "DIMSE listener %s on %s:%d (max %d associations)",
            self._config.ae_title,
            address[0],
            self.port,
            self._config.max_associations,
        )

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        if self._server is None:
            return self._config.port
        return int(self._server.server_address[1])

    @property
    def active_associations(self) -> list[Any]:
        """Associations currently open (pynetdicom's and the fast engine's)."""
        with self._lock:
            fast: list[Any] = list(self._fast)
        pynetdicom = list(self._server.active_associations) if self._server else []
        return pynetdicom + fast

    def _active_count(self) -> int:
        """Associations that count against the limit (established fast ones, all pynetdicom)."""
        with self._lock:
            fast = sum(1 for assoc in self._fast if assoc.is_established)
        server = self._server
        return fast + (len(server.active_associations) if server else 0)

    # -- the fast path ------------------------------------------------------------------------

    def serve_fast(self, sock: socket.socket, address: Any) -> bool:
        """Serve a new connection on the fast engine if its request allows; False hands it on.

        Runs in the connection's own thread. Connections that never send a complete request
        within the ACSE timeout, or send garbage, are dropped here (with an A-ABORT for
        garbage) and count as handled.
        """
        config = self._config
        with contextlib.suppress(OSError):  # already reset by the peer; the peek below will notice
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._pending.add(sock)
        try:
            request = decode_associate_rq(peek_associate_rq(sock, config.acse_timeout))
        except DimseProtocolError as exc:
            LOG.warning("connection from %s:%s sent garbage (%s); aborting",
                        address[0], address[1], exc)
            _abort_and_close(sock, exc)
            return True
        except TimeoutError:
            LOG.warning("connection from %s:%s sent no association request in %ss; dropping",
                        address[0], address[1], config.acse_timeout)
            _close(sock)
            return True
        except OSError as exc:
            LOG.info("connection from %s:%s closed before its request: %s",
                     address[0], address[1], exc or type(exc).__name__)
            _close(sock)
            return True
        finally:
            with self._lock:
                self._pending.discard(sock)
        over_limit = self._active_count() >= config.max_associations
        if not over_limit and not fast_path_eligible(request, self._reserved):
            sock.settimeout(None)  # pynetdicom sets its own timeouts per wait
            return False
        local = sock.getsockname()
        assoc = AcceptorAssociation(
            sock, (address[0], address[1]), (local[0], local[1]), self._policy, self._bridge
        )
        with self._lock:
            self._fast.add(assoc)
        try:
            assoc.serve(self._active_count, config.max_associations)
        finally:
            with self._lock:
                self._fast.discard(assoc)
        return True

    def _fast_snapshot(self) -> list[AcceptorAssociation]:
        with self._lock:
            return list(self._fast)

    def _wait_fast(self, timeout: float, *, busy_only: bool) -> None:
        """Wait up to ``timeout`` s for fast associations (only busy ones) to end."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(
            assoc.is_busy or not busy_only for assoc in self._fast_snapshot()
        ):
            time.sleep(0.02)

    def stop(self, grace: float, inflight_timeout: float = 60.0) -> None:
        """Drain and stop the listener.

        Stop accepting; give open associations ``grace`` seconds to finish; then refuse new
        requests, wait up to ``inflight_timeout`` for in-flight ones, and abort what is left.
        """
        if self._server is None:
            return
        server, self._server = self._server, None
        server.shutdown()
        with self._lock:
            pending = list(self._pending)
        for sock in pending:  # connections that have not even sent a request
            _shutdown(sock)

        def open_associations() -> list[Any]:
            with self._lock:
                fast: list[Any] = list(self._fast)
            return list(server.active_associations) + fast

        LOG.info("stopped accepting associations; draining %d", len(open_associations()))
        deadline = time.monotonic() + grace
        # Only established associations are waited for: a connection that has not even sent
        # its A-ASSOCIATE-RQ (a port probe, a stalled peer) must not hold up the shutdown.
        while time.monotonic() < deadline and any(
            assoc.is_established for assoc in open_associations()
        ):
            time.sleep(0.05)
        self._lifecycle.start_draining()
        if not self._lifecycle.wait_idle(inflight_timeout):
            LOG.warning("%d operations still running at shutdown", self._lifecycle.inflight)
        for assoc in open_associations():
            requestor = assoc.requestor
            LOG.warning(
                "aborting association from %s@%s:%s at shutdown",
                requestor.ae_title or "-",
                requestor.address,
                requestor.port,
            )
            if isinstance(assoc, AcceptorAssociation):
                # Answer one more request (refused while draining) rather than drop it.
                assoc.request_stop()
            else:
                assoc.abort()
        # A fast association that stays idle this long gets no more chance.
        self._wait_fast(min(_STOP_LINGER, inflight_timeout), busy_only=False)
        for assoc in self._fast_snapshot():
            if not assoc.is_busy:
                assoc.abort()
        self._wait_fast(inflight_timeout, busy_only=True)
        for assoc in self._fast_snapshot():
            assoc.abort()
        LOG.info("DIMSE listener stopped")


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already disconnected
        sock.shutdown(socket.SHUT_RDWR)


def _close(sock: socket.socket) -> None:
    _shutdown(sock)
    with contextlib.suppress(OSError):  # already closed
        sock.close()


def _abort_and_close(sock: socket.socket, error: DimseProtocolError) -> None:
    try:
        sock.settimeout(1.0)
        sock.sendall(abort_pdu(AbortSource.SERVICE_PROVIDER, error.reason))
    except OSError:
        pass  # the peer is gone already
    _close(sock)
