"""The DIMSE listener: the fast engine for storage, verification, C-FIND, C-MOVE; pynetdicom else.

Services contribute presentation contexts and event handlers (:class:`DimseService`); the server
sets the association policy (called AE title, limits, timeouts, ``TCP_NODELAY``), receives
C-STORE datasets straight to spool files, and drains on shutdown.

pynetdicom's server accepts the connections. Each one is then peeked at (``MSG_PEEK``: nothing
is consumed) until its A-ASSOCIATE-RQ is complete. A request that proposes only Verification,
storage-like, C-FIND and C-MOVE SOP classes, without extended negotiation, is served by
:mod:`common.dimse.fast` in that connection's thread (C-FIND and C-MOVE only when a service
supplies a :data:`FastFindHandler` / :data:`FastMoveHandler` and the access policy lets the
requester query / retrieve); any other (C-GET, storage commitment, role selection, user
identity...) goes, untouched, to pynetdicom exactly as before. Both engines call the same event
handlers (:mod:`import_adapter.fast_bridge`), so there is one C-STORE handler; C-FIND and
C-MOVE each have one core behind their two front ends (:mod:`import_adapter.query`,
:mod:`import_adapter.retrieve`).

With DICOM TLS the connection's thread first completes the handshake (under the ACSE timeout:
pynetdicom would do it in the accepting thread, where one silent client stalls every other),
then reads the request and puts it back (:class:`common.dimse.tls.ReplayableSSLSocket`), since
TLS cannot be peeked at.

Before either engine sees a request, the listener applies what holds for both: connections
still waiting for their request are bounded, the access policy
(:mod:`import_adapter.access`) rejects requesters that may use nothing, and the total and
per-calling-AE association limits reject (transient) what is over them. Afterwards both engines
enforce the same limits on what the peer sends and how slowly (:mod:`common.dimse.pdu_guard`):
the fast engine as it parses, pynetdicom through a read guard on the socket it is handed
(:class:`common.dimse.sockets.ReadGuard`), which aborts the association at the first PDU,
message or C-STORE dataset over its limit or its deadline.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientStudyOnlyQueryRetrieveInformationModelFind,
    PatientStudyOnlyQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from common.dimse.fast.acse import (
    AcceptedContext,
    AssociateRequest,
    canonical_associate_rq,
    decode_associate_rq,
    encode_associate_rj,
)
from common.dimse.fast.commands import CFindRq, CMoveRq
from common.dimse.fast.constants import AbortSource, RejectReason, RejectResult, RejectSource
from common.dimse.fast.scp import (
    AcceptorAssociation,
    AcceptorPolicy,
    QRResponse,
    fast_path_eligible,
    receive_associate_rq,
)
from common.dimse.fast.transport import DimseProtocolError, abort_pdu
from common.dimse.pdu_guard import PduGuard, PduLimits
from common.dimse.sockets import SOCKET_HANDLERS, GuardedSocket, ReadGuard
from common.dimse.tls import ReplayableSSLSocket, server_context, server_handshake
from common.errors import ConfigError
from common.lifecycle import Lifecycle
from import_adapter.access import AccessPolicy, Service, guard_handlers
from import_adapter.config import DimseServerConfig
from import_adapter.fast_bridge import PynetdicomHandlerBridge
from import_adapter.handlers import Handler, association_log_handlers, echo_handlers
from import_adapter.listener_ae import ListenerAE

LOG = logging.getLogger(__name__)

#: Serves a C-MOVE on the fast engine (see :meth:`common.dimse.fast.scp.AcceptorHandlers.c_move`).
FastMoveHandler = Callable[
    [AcceptorAssociation, CMoveRq, AcceptedContext, bytes, Callable[[], bool]],
    Iterator[QRResponse],
]
#: Serves a C-FIND on the fast engine (see :meth:`common.dimse.fast.scp.AcceptorHandlers.c_find`).
FastFindHandler = Callable[
    [AcceptorAssociation, CFindRq, AcceptedContext, bytes, Callable[[], bool]],
    Iterator[QRResponse],
]


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
        access: the access-policy service its requests belong to (None: not controlled).
        deny_at_negotiation: abstract syntaxes refused at negotiation to requesters the policy
            denies ``access`` (for requests whose handler protocol cannot answer 0x0124 first).
        fast_move: serves C-MOVE on the fast engine (its contexts among ``contexts`` are the
            MOVE SOP classes); None: C-MOVE stays with pynetdicom.
        fast_find: serves C-FIND on the fast engine; None: C-FIND stays with pynetdicom.
    """

    name: str
    contexts: Sequence[SupportedContext] = ()
    handlers: Sequence[Handler] = field(default_factory=list)
    access: Service | None = None
    deny_at_negotiation: frozenset[str] = frozenset()
    fast_move: FastMoveHandler | None = None
    fast_find: FastFindHandler | None = None


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


#: The Query/Retrieve MOVE SOP classes (the fast engine serves no other Q/R class).
_MOVE_CLASSES = frozenset(
    str(uid)
    for uid in (
        PatientRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelMove,
        PatientStudyOnlyQueryRetrieveInformationModelMove,
    )
)

#: The Query/Retrieve FIND SOP classes.
_FIND_CLASSES = frozenset(
    str(uid)
    for uid in (
        PatientRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelFind,
        PatientStudyOnlyQueryRetrieveInformationModelFind,
    )
)


def _syntaxes(service: DimseService | None, classes: frozenset[str]) -> dict[str, tuple[str, ...]]:
    """Transfer syntaxes ``service`` accepts for each of ``classes`` it supports."""
    return {
        str(cx.abstract_syntax): tuple(str(ts) for ts in cx.transfer_syntaxes)
        for cx in (service.contexts if service is not None else ())
        if str(cx.abstract_syntax) in classes
    }


#: Seconds a fast association may stay idle after shutdown asked it to end.
_STOP_LINGER = 0.5


class _DispatchingServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with each connection offered to the fast engine first."""

    # Fast associations live in the connection's thread: shutting the server down must not
    # wait for them (stop() drains them itself), nor may they keep the process alive.
    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog of 5 makes a burst of connects (a scan, a flood) push
    # legitimate clients into SYN retransmits of 1 s, 3 s...; accepting is cheap, and what a
    # connection may then hold is bounded (max_pending_connections, the ACSE timeout).
    request_queue_size = 512

    def __init__(self, *args: Any, dispatcher: DimseServer, **kwargs: Any) -> None:
        self._dispatcher = dispatcher
        super().__init__(*args, **kwargs)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve on the fast engine when it can; else hand the untouched socket to pynetdicom."""
        handed_on = self._dispatcher.serve_fast(request, client_address)
        if handed_on is None:
            return
        super().process_request_thread(handed_on, client_address)


class DimseServer:
    """A non-blocking DIMSE listener."""

    def __init__(
        self,
        config: DimseServerConfig,
        services: Sequence[DimseService],
        lifecycle: Lifecycle,
        access: AccessPolicy | None = None,
    ) -> None:
        self._config = config
        self._services = services
        self._lifecycle = lifecycle
        self._access = access or AccessPolicy()
        # Built now, so a bad certificate or key is a startup error, not a per-connection one.
        self._ssl_context = server_context(config.tls) if config.tls is not None else None
        # Calling AE of each connection handed to pynetdicom, by peer address, until its
        # EVT_CONN_OPEN handler applies the policy to the contexts it may negotiate.
        self._handed_on: dict[tuple[str, int], str] = {}
        self._server: ThreadedAssociationServer | None = None
        self._ae = self._build_ae()
        # The C-MOVE and C-FIND services the fast engine serves, their contexts and syntaxes.
        mover = next((service for service in services if service.fast_move is not None), None)
        finder = next((service for service in services if service.fast_find is not None), None)
        self._move_service = mover
        self._find_service = finder
        move_syntaxes = _syntaxes(mover, _MOVE_CLASSES)
        find_syntaxes = _syntaxes(finder, _FIND_CLASSES)
        self._move_served = frozenset(move_syntaxes)
        self._find_served = frozenset(find_syntaxes)
        self._bridge = PynetdicomHandlerBridge(
            self._handlers(),
            move=mover.fast_move if mover is not None else None,
            find=finder.fast_find if finder is not None else None,
        )
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
            max_instance_size=config.max_instance_size,
            served_syntaxes={**move_syntaxes, **find_syntaxes},
            min_receive_rate=config.min_receive_rate,
        )
        # What associations handed to pynetdicom may send (it announces max_pdu_size too).
        self._limits = PduLimits(
            max_receive=config.max_pdu_size, max_instance_size=config.max_instance_size
        )
        self._lock = threading.Lock()
        self._fast: set[AcceptorAssociation] = set()
        # Connections whose request is still being awaited (closed at shutdown).
        self._pending: set[socket.socket] = set()

    def _build_ae(self) -> AE:
        config = self._config
        ae = ListenerAE(config.ae_title)
        ae.require_called_aet = True
        ae.maximum_associations = config.max_associations
        ae.maximum_pdu_size = config.max_pdu_size
        ae.acse_timeout = config.acse_timeout
        ae.dimse_timeout = config.dimse_timeout
        ae.network_timeout = config.network_timeout
        # pynetdicom takes the first of these the requestor proposed: explicit VR first, as
        # the adapter's engine would take it (common.dimse.fast.acse.prefer_explicit_vr).
        ae.add_supported_context(Verification, [
            ExplicitVRLittleEndian,
            *(ts for ts in ALL_TRANSFER_SYNTAXES if ts != ExplicitVRLittleEndian),
        ])
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
        handlers.append((evt.EVT_CONN_OPEN, self._restrict_contexts))
        for service in self._services:
            service_handlers = list(service.handlers)
            if service.access is not None:
                service_handlers = guard_handlers(service_handlers, service.access, self._access)
            handlers += service_handlers
        return handlers

    def _restrict_contexts(self, event: Any) -> None:
        """EVT_CONN_OPEN (pynetdicom): drop contexts the policy denies this requester."""
        if isinstance(event.assoc, AcceptorAssociation):
            return  # the fast engine serves storage and verification only
        requestor = event.assoc.requestor
        with self._lock:
            calling = self._handed_on.pop((str(requestor.address), int(requestor.port)), None)
        if calling is None:
            return
        denied: set[str] = set()
        for service in self._services:
            if service.access is not None and service.deny_at_negotiation and not (
                self._access.allows(service.access, calling, str(requestor.address))
            ):
                denied |= service.deny_at_negotiation
        if denied:
            acceptor = event.assoc.acceptor
            acceptor.supported_contexts = [
                cx for cx in acceptor.supported_contexts if str(cx.abstract_syntax) not in denied
            ]

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

    def _active_for(self, calling_aet: str) -> int:
        """Associations open now (either engine) whose requestor called as ``calling_aet``."""
        with self._lock:
            titles = [a.requestor.ae_title for a in self._fast if a.is_established]
            handed = sum(1 for aet in self._handed_on.values() if aet == calling_aet)
        server = self._server
        if server is not None:
            titles += [str(a.requestor.ae_title or "") for a in server.active_associations]
        return handed + sum(1 for title in titles if title.strip() == calling_aet)

    def _admission(
        self, request: AssociateRequest, host: str
    ) -> tuple[RejectResult, RejectSource, int] | None:
        """The A-ASSOCIATE-RJ for a request the policy or a per-AE limit refuses, if any."""
        calling = request.calling_ae_title.strip()
        if not self._access.allows_any(calling, host):
            return (
                RejectResult.PERMANENT,
                RejectSource.SERVICE_USER,
                RejectReason.CALLING_AE_NOT_RECOGNIZED,
            )
        per_aet = self._config.max_associations_per_aet
        if per_aet and self._active_for(calling) >= per_aet:
            return (
                RejectResult.TRANSIENT,
                RejectSource.SERVICE_PROVIDER_PRESENTATION,
                RejectReason.LOCAL_LIMIT_EXCEEDED,
            )
        return None

    # -- the fast path ------------------------------------------------------------------------

    def serve_fast(self, sock: socket.socket, address: Any) -> socket.socket | None:
        """Serve a new connection on the fast engine if its request allows.

        Runs in the connection's own thread. Returns the socket to hand to pynetdicom (the TLS
        one when the listener speaks TLS), or None when the connection has been dealt with:
        served, rejected, or dropped - connections over the pending limit, that fail the TLS
        handshake, that never send a complete request within the ACSE timeout, or that send
        garbage (with an A-ABORT).
        """
        config = self._config
        with contextlib.suppress(OSError):  # already reset by the peer; the peek below will notice
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            crowded = len(self._pending) >= config.max_pending_connections
            if not crowded:
                self._pending.add(sock)
        if crowded:
            LOG.warning("connection from %s:%s closed: %d connections already await their "
                        "association request", address[0], address[1],
                        config.max_pending_connections)
            _close(sock)
            return None
        try:
            if self._ssl_context is not None:
                tls_sock = server_handshake(sock, self._ssl_context, config.acse_timeout)
                with self._lock:
                    self._pending.discard(sock)
                    self._pending.add(tls_sock)
                sock = tls_sock
            # Both engines read the request made canonical (NUL padding, syntax preference).
            request_pdu = canonical_associate_rq(receive_associate_rq(sock, config.acse_timeout))
            request = decode_associate_rq(request_pdu)
        except DimseProtocolError as exc:
            LOG.warning("connection from %s:%s sent garbage (%s); aborting",
                        address[0], address[1], exc)
            _abort_and_close(sock, exc)
            return None
        except TimeoutError:
            LOG.warning("connection from %s:%s sent no association request in %ss; dropping",
                        address[0], address[1], config.acse_timeout)
            _close(sock)
            return None
        except OSError as exc:  # also ssl.SSLError: untrusted certificate, not TLS at all
            LOG.info("connection from %s:%s closed before its request: %s",
                     address[0], address[1], exc or type(exc).__name__)
            _close(sock)
            return None
        finally:
            with self._lock:
                self._pending.discard(sock)
        rejection = self._admission(request, str(address[0]))
        if rejection is not None:
            result, source, reason = rejection
            LOG.warning(
                "rejecting association from %s@%s:%s (result %d, source %d, reason %d)",
                request.calling_ae_title.strip() or "-", address[0], address[1],
                result, source, reason,
            )
            _reject_and_close(sock, encode_associate_rj(result, source, reason))
            return None
        over_limit = self._active_count() >= config.max_associations
        served = self._served_for(request, str(address[0]))
        if not over_limit and not fast_path_eligible(request, self._reserved, served):
            guarded = self._guarded(sock, request, address, request_pdu)
            with self._lock:
                self._handed_on[(str(address[0]), int(address[1]))] = (
                    request.calling_ae_title.strip()
                )
            return guarded
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
        return None

    def _guarded(
        self, sock: socket.socket, request: AssociateRequest, address: Any, request_pdu: bytes
    ) -> socket.socket:
        """``sock`` for pynetdicom, its reads under a fresh PDU guard.

        pynetdicom reads ``request_pdu`` (the canonical request) in place of what was sent.

        Between guarded reads the socket times out after the network timeout, which bounds a
        send to a peer that stopped reading (pynetdicom's sockets otherwise block forever).
        """
        config = self._config
        guard = ReadGuard(
            PduGuard(self._limits, self._policy.pace),
            f"{request.calling_ae_title.strip() or '-'}@{address[0]}:{address[1]}",
            resting_timeout=config.network_timeout,
            head=request_pdu,
        )
        if isinstance(sock, ReplayableSSLSocket):
            sock.read_guard = guard
        elif isinstance(sock, ssl.SSLSocket):  # the listener's context makes Replayable ones
            raise TypeError("a TLS socket not made by common.dimse.tls.server_context")
        else:
            sock = GuardedSocket.adopt(sock, guard)
        sock.settimeout(config.network_timeout)
        return sock

    def _allowed(self, service: DimseService | None, calling_aet: str, host: str) -> bool:
        return service is not None and (
            service.access is None or self._access.allows(service.access, calling_aet, host)
        )

    def _served_for(self, request: AssociateRequest, host: str) -> frozenset[str]:
        """The Q/R classes the fast engine may serve this request.

        C-MOVE and C-FIND, each when the request proposes it and the policy lets the requester
        use it; a requester denied one goes to pynetdicom, which refuses it at negotiation (or
        answers it with Not Authorized).
        """
        calling = request.calling_ae_title.strip()
        proposed = {cx.abstract_syntax for cx in request.contexts}
        served: frozenset[str] = frozenset()
        if proposed & self._move_served and self._allowed(self._move_service, calling, host):
            served |= self._move_served
        if proposed & self._find_served and self._allowed(self._find_service, calling, host):
            served |= self._find_served
        return served

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


def _reject_and_close(sock: socket.socket, pdu: bytes) -> None:
    try:
        sock.settimeout(1.0)
        sock.sendall(pdu)
    except OSError:
        pass  # the peer is gone already
    _close(sock)


def _abort_and_close(sock: socket.socket, error: DimseProtocolError) -> None:
    try:
        sock.settimeout(1.0)
        sock.sendall(abort_pdu(AbortSource.SERVICE_PROVIDER, error.reason))
    except OSError:
        pass  # the peer is gone already
    _close(sock)
