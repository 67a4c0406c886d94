"""The DIMSE listener: one pynetdicom AE serving the import adapter's services.

Services contribute presentation contexts and event handlers (:class:`DimseService`); the server
sets the association policy (called AE title, limits, timeouts, ``TCP_NODELAY``), receives
C-STORE datasets straight to spool files, and drains on shutdown.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from common.dimse.sockets import SOCKET_HANDLERS
from common.errors import ConfigError
from common.lifecycle import Lifecycle
from import_adapter.config import DimseServerConfig
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
            self._server = self._ae.start_server(
                address, block=False, evt_handlers=self._handlers()  # type: ignore[arg-type]
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}"
            ) from exc
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
        """Associations currently open."""
        return list(self._server.active_associations) if self._server else []

    def stop(self, grace: float, inflight_timeout: float = 60.0) -> None:
        """Drain and stop the listener.

        Stop accepting; give open associations ``grace`` seconds to finish; then refuse new
        requests, wait up to ``inflight_timeout`` for in-flight ones, and abort what is left.
        """
        if self._server is None:
            return
        server, self._server = self._server, None
        server.shutdown()
        LOG.info("stopped accepting associations; draining %d", len(server.active_associations))
        deadline = time.monotonic() + grace
        # Only established associations are waited for: a connection that has not even sent
        # its A-ASSOCIATE-RQ (a port probe, a stalled peer) must not hold up the shutdown.
        while time.monotonic() < deadline and any(
            assoc.is_established for assoc in server.active_associations
        ):
            time.sleep(0.05)
        self._lifecycle.start_draining()
        if not self._lifecycle.wait_idle(inflight_timeout):
            LOG.warning("%d operations still running at shutdown", self._lifecycle.inflight)
        for assoc in list(server.active_associations):
            requestor = assoc.requestor
            LOG.warning(
                "aborting association from %s@%s:%s at shutdown",
                requestor.ae_title or "-",
                requestor.address,
                requestor.port,
            )
            assoc.abort()
        LOG.info("DIMSE listener stopped")
