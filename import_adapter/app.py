"""Wiring: build the import adapter's objects from an :class:`ImportConfig` and run them."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from common.auth import build_authenticator
from common.dicomweb.client import DicomwebClient
from common.http import HttpTransport, Transport
from common.http2 import Http2Transport
from common.lifecycle import Lifecycle
from import_adapter.config import ImportConfig
from import_adapter.handlers import store_handlers
from import_adapter.server import DimseServer, DimseService, configure_receive_spool
from import_adapter.store import StoreService, StowSink

LOG = logging.getLogger(__name__)


class ImportAdapter:
    """The import adapter: a DIMSE listener forwarding to a DICOMweb store."""

    def __init__(self, config: ImportConfig) -> None:
        self.config = config
        self.lifecycle = Lifecycle()
        self.transport = HttpTransport(config.http)
        self.stow_transport: Transport | None = (
            Http2Transport(config.http) if config.stow_http2 else None
        )
        auth = build_authenticator(config.auth, config.dicomweb.root)
        self.client = DicomwebClient(
            config.dicomweb,
            self.transport,
            auth,
            config.retry,
            stow_transport=self.stow_transport,
            stop=self.lifecycle.stop_requested,
        )
        configure_receive_spool(config.spool_dir)
        store = StoreService(StowSink(self.client), self.lifecycle)
        services = [DimseService("storage", handlers=store_handlers(store))]
        self.server = DimseServer(config.dimse, services, self.lifecycle)

    def start(self) -> None:
        """Start listening (non-blocking)."""
        self.server.start()

    def stop(self) -> None:
        """Drain and stop."""
        self.server.stop(self.config.shutdown_grace)
        self.transport.close()
        if self.stow_transport is not None:
            self.stow_transport.close()


def run(config: ImportConfig) -> int:
    """Run until SIGTERM/SIGINT, then shut down cleanly; returns the exit status."""
    adapter = ImportAdapter(config)
    adapter.start()
    stop = adapter.lifecycle.stop_requested

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        LOG.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(0.5):  # a timed wait keeps signal delivery prompt
        pass
    adapter.stop()
    return 0
