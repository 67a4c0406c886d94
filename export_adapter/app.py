"""Wiring: build the export adapter's objects from an :class:`ExportConfig` and run them.

Shutdown (SIGTERM/SIGINT): stop pulling; exports already running finish (retry waits are cut
short), messages received but not started are nacked; then associations are released.

Operations endpoint (``--metrics_port``): ``/metrics`` (:class:`~common.metrics.ExportMetrics`
on this process's own registry), ``/healthz``, and ``/readyz``: ready while the streaming pull
runs and the source answers. A DICOMweb-root source is probed with an authenticated
``QIDO-RS studies?limit=1`` (own small transport, no retries); with the Google API base the
source store is only named by each notification, so the probe checks that credentials for it
can be obtained.

The source and a STOW-RS peer each get a circuit breaker (:mod:`common.breaker`): once one is
known down, exports fail at once (the message is nacked, transient) until a probe is answered,
and ``/readyz`` says so; ``dicomadapter_export_dicomweb_store_up{destination}`` follows it.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from types import FrameType

from common.auth import Authenticator, GoogleAuth, NoAuth, build_authenticator, is_google_address
from common.breaker import BreakerRegistry
from common.dicomweb.client import DicomwebClient
from common.dimse.sender import PeerAddress
from common.health import (
    CheckResult,
    DicomwebCheck,
    FunctionCheck,
    HealthServer,
    ReadinessCheck,
)
from common.http import HttpTransport
from common.lifecycle import Lifecycle
from common.metrics import ExportMetrics, new_registry
from common.proxy import ProxySettings
from common.retry import NO_RETRY, RetryPolicy
from common.sinks import DimseSink, InstanceSink, StowSink
from export_adapter.config import DimsePeerConfig, ExportConfig, StowPeerConfig
from export_adapter.counters import ExportCounters
from export_adapter.deadletter import DeadLetterSink, NoDeadLetter, PubSubDeadLetter
from export_adapter.exporter import Exporter
from export_adapter.fetch import InstanceFetcher
from export_adapter.source import SourceMode
from export_adapter.subscriber import NotificationSubscriber

LOG = logging.getLogger(__name__)
#: Seconds to wait for the streaming pull to close once running exports are done.
_CANCEL_TIMEOUT = 10.0


def peer_authenticator(peer: StowPeerConfig, proxy: ProxySettings) -> Authenticator:
    """Google ADC when ``--use_gcp_application_default_credentials`` is set, else none.

    ``proxy``: the outbound proxies that token requests go through.
    """
    if peer.use_adc:
        return GoogleAuth.from_environment(peer.scopes, proxy)
    if is_google_address(peer.address.root):
        LOG.warning(
            "the STOW-RS peer is a Google API but --use_gcp_application_default_credentials "
            "is not set: requests carry no credentials"
        )
    return NoAuth()


def build_sink(
    peer: DimsePeerConfig | StowPeerConfig,
    transport: HttpTransport,
    retry: RetryPolicy,
    stop: threading.Event,
    breakers: BreakerRegistry | None = None,
) -> InstanceSink:
    """The C-STORE or STOW-RS sink for the configured peer."""
    if isinstance(peer, DimsePeerConfig):
        return DimseSink(peer.peer, peer.sender, max_associations=peer.max_associations)
    authenticator = peer_authenticator(peer, transport.settings.proxy)
    client = DicomwebClient(
        peer.address, transport, authenticator, retry, stop=stop, breakers=breakers
    )
    return StowSink(client, peer.address.root)


def destination_label(peer: DimsePeerConfig | StowPeerConfig) -> str:
    """The peer as a metrics label: its AE title (C-STORE) or DICOMweb root (STOW-RS)."""
    if isinstance(peer, DimsePeerConfig):
        return peer.peer.ae_title
    return peer.address.root


def describe_peer(peer: DimsePeerConfig | StowPeerConfig) -> str:
    """The peer for the start-up log line."""
    if isinstance(peer, DimsePeerConfig):
        address: PeerAddress = peer.peer
        return f"C-STORE to {address} as {peer.sender.calling_aet}"
    return f"STOW-RS to {peer.address.root}"


class ExportAdapter:
    """The export adapter: a subscriber feeding an exporter that feeds a peer."""

    def __init__(self, config: ExportConfig, *, counters: ExportCounters | None = None) -> None:
        self.config = config
        self.lifecycle = Lifecycle()
        self.counters = counters if counters is not None else ExportCounters()
        self.registry = new_registry("export", _package_version())
        self.metrics = ExportMetrics(self.registry)
        stop = self.lifecycle.stop_requested
        self.transport = HttpTransport(config.http)
        source_auth = build_authenticator(config.source_auth, config.source.address.root)
        self.breakers = BreakerRegistry(config.breaker, self.metrics)
        source_client = DicomwebClient(
            config.source.address,
            self.transport,
            source_auth,
            config.retry,
            stop=stop,
            breakers=self.breakers,
        )
        self.sink = build_sink(config.peer, self.transport, config.retry, stop, self.breakers)
        self.dead_letter: DeadLetterSink = (
            PubSubDeadLetter.create(config.dead_letter_topic)
            if config.dead_letter_topic
            else NoDeadLetter()
        )
        self.exporter = Exporter(
            InstanceFetcher(source_client, config.source),
            self.sink,
            self.counters,
            self.dead_letter,
            self.lifecycle,
            spool_dir=config.spool_dir,
            transient_backoff=config.transient_backoff,
            observer=self.metrics,
            destination=destination_label(config.peer),
        )
        self.subscriber = NotificationSubscriber(
            config.subscription_path, self.exporter.handle, config.flow
        )
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
            [FunctionCheck("subscriber", self._subscriber_state), self._source_check(source_auth)],
        )

    def _source_check(self, auth: Authenticator) -> ReadinessCheck:
        """QIDO-RS on a DICOMweb-root source; with the API base, only the credentials."""
        source = self.config.source
        if source.mode is SourceMode.DICOMWEB_ROOT:
            return DicomwebCheck(
                DicomwebClient(source.address, self.probe_transport, auth, NO_RETRY),
                self.breakers.get(source.address),
            )

        def credentials() -> CheckResult:
            auth.headers()  # raises AuthError when no credentials can be obtained
            return CheckResult(
                True,
                "credentials available (the API base names no store; each notification does)",
            )

        return FunctionCheck("dicomweb", credentials)

    def _subscriber_state(self) -> CheckResult:
        if self.lifecycle.stop_requested.is_set():
            return CheckResult(False, "shutting down")
        failure = self.subscriber.failure()
        if failure is not None:
            return CheckResult(False, str(failure))
        if not self.subscriber.running:
            return CheckResult(False, "not pulling")
        return CheckResult(True, f"pulling {self.config.subscription_path}")

    def start(self) -> None:
        """Start pulling (non-blocking)."""
        LOG.info(
            "export adapter: %s from %s (%s), %s",
            self.config.subscription_path,
            self.config.source.address.root,
            self.config.source.mode.value,
            describe_peer(self.config.peer),
        )
        self.subscriber.start()
        if self.config.health.enabled:
            self.health.start()

    def stop(self) -> None:
        """Stop pulling, let running exports finish, nack the rest, release connections."""
        self.lifecycle.stop_requested.set()
        self.lifecycle.start_draining()
        # Running exports finish and are acked while the stream is still open (acks and nacks
        # sent after it closed are not reliably honoured); new deliveries are nacked meanwhile.
        if not self.lifecycle.wait_idle(self.config.shutdown_grace):
            LOG.warning(
                "%d exports still running after %.0f s; their messages will be redelivered",
                self.lifecycle.inflight,
                self.config.shutdown_grace,
            )
        self.subscriber.stop(_CANCEL_TIMEOUT)
        self.sink.close()
        if isinstance(self.dead_letter, PubSubDeadLetter):
            self.dead_letter.close()
        self.breakers.close()  # probes end before their transport closes
        self.transport.close()
        self.health.stop()
        self.probe_transport.close()
        LOG.info("export adapter stopped: %s", self.counters.snapshot())


def _package_version() -> str:
    try:
        return version("dicom-adapter")
    except PackageNotFoundError:
        return "unknown"


def run(config: ExportConfig) -> int:
    """Run until SIGTERM/SIGINT, then shut down cleanly; returns the exit status."""
    adapter = ExportAdapter(config)
    stop = adapter.lifecycle.stop_requested

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        LOG.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    adapter.start()
    status = 0
    while not stop.wait(0.5):  # a timed wait keeps signal delivery prompt
        failure = adapter.subscriber.failure()
        if failure is not None:
            LOG.error("%s", failure)
            status = 1
            break
    adapter.stop()
    return status
