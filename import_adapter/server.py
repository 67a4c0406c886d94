"""The DIMSE listener: one engine (:mod:`common.dimse.fast`) serves every association.

Built from parts with one job each:

- :mod:`import_adapter.listener` accepts connections, each served in a thread of its own;
- here, per connection: ``TCP_NODELAY``, the bound on connections still waiting to send their
  association request, and with DICOM TLS the handshake (under the ACSE timeout, in the
  connection's thread, so one silent client stalls nobody else); then an
  :class:`~common.dimse.fast.scp.AcceptorAssociation` serves the association;
- :mod:`import_adapter.admission` admits or rejects each request (access policy, limits);
- :mod:`import_adapter.dispatch` routes each request to its service's handler;
- :mod:`import_adapter.drain` ends the associations at shutdown.

Services (:class:`~import_adapter.dimse_service.DimseService`) contribute the SOP classes they
serve and their handlers; every storage-like SOP class is accepted in the SCU's first transfer
syntax. C-STORE datasets are received into memory when small, else into a file in
``receive_dir`` as they arrive (deleted if the association fails mid-dataset).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

from common.dimse.fast.scp import AcceptorAssociation, AcceptorPolicy
from common.dimse.tls import server_context, server_handshake
from common.lifecycle import Lifecycle
from import_adapter.access import AccessPolicy
from import_adapter.admission import AdmissionControl
from import_adapter.config import DimseServerConfig
from import_adapter.dimse_service import DimseService
from import_adapter.dispatch import Dispatcher
from import_adapter.drain import drain
from import_adapter.listener import Listener

LOG = logging.getLogger(__name__)


class DimseServer:
    """A non-blocking DIMSE listener.

    Args:
        config: the listener's settings.
        services: what it serves.
        lifecycle: the process's operations (drained at shutdown).
        access: who may use which service (default: everyone, everything).
        receive_dir: where large C-STORE datasets are written as they arrive (None: the
            system's temporary directory); the spool's ``incoming/`` when there is a spool,
            so that queueing a received file is a rename.
    """

    def __init__(
        self,
        config: DimseServerConfig,
        services: Sequence[DimseService],
        lifecycle: Lifecycle,
        access: AccessPolicy | None = None,
        *,
        receive_dir: Path | None = None,
    ) -> None:
        self._config = config
        self._lifecycle = lifecycle
        access = access or AccessPolicy()
        # Built now, so a bad certificate or key is a startup error, not a per-connection one.
        self._ssl_context = server_context(config.tls) if config.tls is not None else None
        if receive_dir is not None:
            receive_dir.mkdir(parents=True, exist_ok=True)
        self._policy = AcceptorPolicy(
            ae_title=config.ae_title,
            max_pdu_size=config.max_pdu_size,
            acse_timeout=config.acse_timeout,
            dimse_timeout=config.dimse_timeout,
            network_timeout=config.network_timeout,
            max_instance_size=config.max_instance_size,
            served_syntaxes={
                str(cx.abstract_syntax): tuple(str(ts) for ts in cx.transfer_syntaxes)
                for service in services
                for cx in service.contexts
            },
            min_receive_rate=config.min_receive_rate,
            receive_dir=receive_dir,
        )
        admission = AdmissionControl(
            services,
            access,
            self._established,
            max_associations=config.max_associations,
            max_associations_per_aet=config.max_associations_per_aet,
        )
        self._dispatcher = Dispatcher(services, access, admission.admit)
        self._listener = Listener(config.bind_address, config.port, self._serve_connection)
        self._lock = threading.Lock()
        self._associations: set[AcceptorAssociation] = set()
        # Connections in their TLS handshake (closed at shutdown).
        self._handshaking: set[socket.socket] = set()

    def start(self) -> None:
        """Bind and start serving in background threads.

        Raises:
            ConfigError: the address cannot be bound (in use, not permitted).
        """
        self._listener.start()
        LOG.info(
            "DIMSE listener %s on %s:%d (max %d associations)",
            self._config.ae_title,
            self._config.bind_address,
            self.port,
            self._config.max_associations,
        )

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        return self._listener.port

    @property
    def active_associations(self) -> list[AcceptorAssociation]:
        """The connections being served (in negotiation, established, or ending)."""
        with self._lock:
            return list(self._associations)

    def _established(self) -> list[AcceptorAssociation]:
        return [assoc for assoc in self.active_associations if assoc.is_established]

    def _pending(self) -> int:
        """Connections that have not had their association request answered yet."""
        with self._lock:
            return len(self._handshaking) + sum(
                1 for assoc in self._associations if not assoc.negotiated
            )

    def _serve_connection(self, sock: socket.socket, address: tuple[str, int]) -> None:
        """Serve one accepted connection (in its own thread) until its association ends."""
        config = self._config
        with contextlib.suppress(OSError):  # already reset by the peer; reading will notice
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._pending() >= config.max_pending_connections:
            LOG.warning("connection from %s:%s closed: %d connections already await their "
                        "association request", address[0], address[1],
                        config.max_pending_connections)
            _close(sock)
            return
        if self._ssl_context is not None:
            raw = sock
            with self._lock:
                self._handshaking.add(raw)
            try:
                sock = server_handshake(raw, self._ssl_context, config.acse_timeout)
            except TimeoutError:
                LOG.warning("connection from %s:%s: no TLS handshake in %ss; dropping",
                            address[0], address[1], config.acse_timeout)
                _close(raw)
                return
            except OSError as exc:  # also ssl.SSLError: untrusted certificate, not TLS at all
                LOG.info("connection from %s:%s closed in its TLS handshake: %s",
                         address[0], address[1], exc or type(exc).__name__)
                _close(raw)
                return
            finally:
                with self._lock:
                    self._handshaking.discard(raw)
        local = sock.getsockname()
        assoc = AcceptorAssociation(
            sock, address, (str(local[0]), int(local[1])), self._policy, self._dispatcher
        )
        with self._lock:
            self._associations.add(assoc)
        try:
            assoc.serve()
        finally:
            with self._lock:
                self._associations.discard(assoc)

    def stop(self, grace: float, inflight_timeout: float = 60.0) -> None:
        """Drain and stop the listener (see :mod:`import_adapter.drain`)."""
        if not self._listener.listening:
            return
        self._listener.stop()
        with self._lock:
            handshaking = list(self._handshaking)
            unanswered = [assoc for assoc in self._associations if not assoc.negotiated]
        for sock in handshaking:  # connections that have not even sent a request
            _shutdown(sock)
        for assoc in unanswered:
            assoc.disconnect()
        drain(lambda: self.active_associations, self._lifecycle, grace, inflight_timeout)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already disconnected
        sock.shutdown(socket.SHUT_RDWR)


def _close(sock: socket.socket) -> None:
    _shutdown(sock)
    with contextlib.suppress(OSError):  # already closed
        sock.close()
