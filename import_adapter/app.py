"""Wiring: build the import adapter's objects from an :class:`ImportConfig` and run them."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from types import FrameType

from common.auth import build_authenticator
from common.breaker import BreakerRegistry
from common.dicomweb.client import DicomwebClient
from common.health import (
    AdvisoryCheck,
    CheckResult,
    DicomwebCheck,
    FunctionCheck,
    HealthServer,
    ReadinessCheck,
)
from common.http import HttpTransport, Transport
from common.http2 import Http2Transport
from common.lifecycle import Lifecycle
from common.metrics import ImportMetrics, new_registry
from common.retry import NO_RETRY
from common.sinks import InstanceSink, StowSink
from import_adapter.access import Service
from import_adapter.associations import AssociationMetrics, log_association
from import_adapter.commitment.handlers import commitment_service
from import_adapter.commitment.known_studies import KnownStudies
from import_adapter.commitment.service import CommitmentService
from import_adapter.config import ImportConfig
from import_adapter.dimse_service import DimseService
from import_adapter.query.handlers import find_service
from import_adapter.query.service import FindService
from import_adapter.retrieve.handlers import retrieve_service
from import_adapter.retrieve.service import RetrieveService
from import_adapter.server import DimseServer
from import_adapter.spool.wiring import build_spooling
from import_adapter.store import StoreService
from import_adapter.store_handler import storage_service
from import_adapter.transform import TransformingSink

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
        self.registry = new_registry("import", _package_version())
        self.metrics = ImportMetrics(self.registry)
        auth = build_authenticator(config.auth, config.dicomweb.root)
        # One circuit breaker per DICOMweb root, shared by every client of it (STOW/QIDO/WADO,
        # the spool's uploads): a store known down fails requests at once instead of holding
        # each C-STORE for the whole retry budget.
        self.breakers = BreakerRegistry(config.breaker, self.metrics)
        self.client = DicomwebClient(
            config.dicomweb,
            self.transport,
            auth,
            config.retry,
            stow_transport=self.stow_transport,
            stop=self.lifecycle.stop_requested,
            on_retry=self.metrics.dicomweb_retry,
            breakers=self.breakers,
        )
        # The durable spool and router (None: no spool, no routing rules).
        self.spooling = build_spooling(
            settings=config.spool,
            routing=config.routing,
            default=config.dicomweb,
            auth=config.auth,
            transport=self.transport,
            stow_transport=self.stow_transport,
            calling_aet=config.dimse.ae_title,
            max_pdu_size=config.dimse.max_pdu_size,
            observer=self.metrics,
            breakers=self.breakers,
        )
        # With a spool, datasets are received next to its queues, so committing is a rename.
        receive_dir = self.spooling.manager.layout.incoming if self.spooling else config.spool_dir
        sink: InstanceSink = (
            self.spooling.sink if self.spooling else StowSink(self.client, config.dicomweb.root)
        )
        if config.transform.enabled:
            # Transformed files are written next to each received one (same file system).
            sink = TransformingSink(sink, config.transform)
        # The study of each instance received, for Storage Commitment's lookups; not kept when
        # de-identifying: the store then holds other UIDs than those received and committed.
        # Kept only where the commitment service is offered.
        access = config.access
        remember = access.enabled(Service.COMMIT) and config.transform.redaction is None
        self.known_studies = KnownStudies() if remember else None
        store = StoreService(sink, self.lifecycle, self.metrics, known_studies=self.known_studies)
        services = [
            storage_service(store),
            DimseService("log", notify=log_association),
            DimseService("metrics", notify=AssociationMetrics(self.metrics)),
        ]
        # A switched-off service is not offered at all: its presentation contexts are refused.
        if access.enabled(Service.QUERY):
            services.append(
                find_service(FindService(self.client, config.query, self.lifecycle, self.metrics))
            )
        if access.enabled(Service.RETRIEVE):
            services.append(
                retrieve_service(
                    RetrieveService(
                        self.client,
                        config.aet_dictionary,
                        # C-MOVE sub-operations call as --dimse_cmove_aet, else as we answer.
                        replace(
                            config.retrieve,
                            calling_aet=config.retrieve.calling_aet or config.dimse.ae_title,
                        ),
                        self.lifecycle,
                        self.metrics,
                    )
                )
            )
        self.commitment = CommitmentService(
            self.client,
            config.aet_dictionary,
            config.commitment,
            self.spooling.manager if self.spooling else None,
            observer=self.metrics,
            known_studies=self.known_studies,
        )
        if access.enabled(Service.COMMIT):
            services.append(commitment_service(self.commitment))
        self.server = DimseServer(
            config.dimse, services, self.lifecycle, access, receive_dir=receive_dir
        )
        self._listening = threading.Event()
        # Readiness probes get their own small pool, short timeouts and no retries.
        self.probe_transport = HttpTransport(
            replace(
                config.http,
                connect_timeout=min(config.http.connect_timeout, config.health.check_timeout),
                read_timeout=config.health.check_timeout,
                pool_size=1,
            )
        )
        self.health = HealthServer(
            config.health,
            self.registry,
            [
                # Not cached: /readyz turns 503 the moment SIGTERM arrives.
                FunctionCheck("dimse_listener", self._listener_state, instant=True),
                self._store_check(
                    DicomwebCheck(
                        # Not through the breaker (a slow probe must not open it), but it
                        # reports the breaker open as not ready.
                        DicomwebClient(config.dicomweb, self.probe_transport, auth, NO_RETRY),
                        self.breakers.get(config.dicomweb),
                    )
                ),
            ],
        )

    def _store_check(self, check: DicomwebCheck) -> ReadinessCheck:
        """The store gates readiness unless images are acknowledged once spooled."""
        spool = self.config.spool
        if spool is not None and spool.auto_ack:
            return AdvisoryCheck(check, "durable spool with --auto_ack_cstore")
        return check

    def _listener_state(self) -> CheckResult:
        if self.lifecycle.stop_requested.is_set():
            return CheckResult(False, "shutting down: draining")
        if not self._listening.is_set():
            return CheckResult(False, "DIMSE listener not started")
        return CheckResult(True, f"listening on port {self.server.port}")

    def start(self) -> None:
        """Start listening (non-blocking); then serve metrics and health if configured."""
        if self.spooling is not None:
            self.spooling.manager.start()  # recovery first: it empties incoming/
        self.server.start()
        self._listening.set()
        if self.config.health.enabled:
            self.health.start()

    def stop(self) -> None:
        """Drain and stop (``/healthz`` keeps answering until the very end, ``/readyz`` is 503).

        1. the listener stops accepting; open associations get ``--shutdown_grace`` seconds,
           in-flight operations up to 60 s more;
        2. the spool keeps uploading until its queues are empty or ``--spool_drain_timeout``
           ends (what is left stays on disk for the next start, logged in one line);
        3. every Storage Commitment transaction not yet reported gets its final check and
           report (within ``CommitmentSettings.shutdown_window``).
        """
        self.lifecycle.stop_requested.set()  # readiness is false from now on, if not already
        self._listening.clear()
        self.server.stop(self.config.shutdown_grace)
        if self.spooling is not None:
            self.spooling.manager.drain(self.config.spool_drain_timeout)
        self.commitment.stop()
        if self.spooling is not None:
            self.spooling.manager.stop()  # what is still queued stays for the next start
        self.breakers.close()  # probes end before their transport closes
        self.transport.close()
        if self.stow_transport is not None:
            self.stow_transport.close()
        self.health.stop()
        self.probe_transport.close()


def _package_version() -> str:
    try:
        return version("dicom-adapter")
    except PackageNotFoundError:
        return "unknown"


def run(config: ImportConfig) -> int:
    """Run until SIGTERM/SIGINT, then shut down cleanly; returns the exit status."""
    adapter = ImportAdapter(config)
    stop = adapter.lifecycle.stop_requested

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        LOG.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    # Before the listener opens: a SIGTERM that arrives as soon as the port answers (or during
    # spool recovery) must drain and exit 0, not kill the process with the default action.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    adapter.start()
    while not stop.wait(0.5):  # a timed wait keeps signal delivery prompt
        pass
    adapter.stop()
    return 0
