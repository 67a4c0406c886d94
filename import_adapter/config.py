"""The import adapter's configuration: built once from flags, then passed to constructors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.auth import AuthConfig
from common.breaker import BreakerSettings
from common.dicomweb.address import DicomwebAddress
from common.dimse.aet_dictionary import AetDictionary
from common.dimse.fast.limits import DEFAULT_MIN_RECEIVE_RATE
from common.dimse.tls import TlsSettings
from common.health import HealthConfig
from common.http import HttpSettings
from common.retry import RetryPolicy
from import_adapter.access import AccessPolicy
from import_adapter.commitment.service import CommitmentSettings
from import_adapter.query.service import QuerySettings
from import_adapter.retrieve.service import RetrieveSettings
from import_adapter.routing.router import RoutingConfig
from import_adapter.spool.manager import SpoolSettings
from import_adapter.transform import TransformConfig


@dataclass(frozen=True)
class DimseServerConfig:
    """The DIMSE listener.

    Attributes:
        ae_title: our AE title; associations must call it.
        port: the TCP port to listen on.
        bind_address: the interface to listen on.
        max_associations: associations served at once; more are rejected (transient).
        max_pdu_size: the Maximum Length Received we announce (0 = unlimited); a longer
            P-DATA-TF aborts the association (both engines).
        acse_timeout: seconds to wait for association messages; the whole association request
            (and the TLS handshake) must arrive within it.
        dimse_timeout: seconds to wait for each part of a DIMSE message once it started: the
            slack of ``min_receive_rate`` (:class:`common.dimse.fast.limits.TransferPace`).
        network_timeout: seconds an association may stay idle before it is aborted.
        max_associations_per_aet: associations one calling AE title may have open at once
            (0 = no limit beyond ``max_associations``); more are rejected (transient).
        max_pending_connections: connections that have not yet sent their association request;
            beyond it new connections are closed at once (a connect flood cannot pile up).
        max_instance_size: the largest C-STORE dataset accepted, in bytes (0 = unlimited).
        min_receive_rate: bytes per second a PDU or DIMSE message must average once started
            (0: no floor, only ``dimse_timeout`` per read); slower peers are aborted.
        tls: DICOM TLS for the listener (None: plain TCP).
    """

    ae_title: str = "IMPORTADAPTER"
    port: int = 2575
    bind_address: str = "0.0.0.0"
    max_associations: int = 64
    max_pdu_size: int = 1 << 20
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 120.0
    max_associations_per_aet: int = 0
    max_pending_connections: int = 256
    max_instance_size: int = 0
    min_receive_rate: int = DEFAULT_MIN_RECEIVE_RATE
    tls: TlsSettings | None = None


@dataclass(frozen=True)
class ImportConfig:
    """Everything the import adapter needs to run.

    Attributes:
        dimse: the DIMSE listener.
        dicomweb: the DICOMweb store that receives instances.
        auth: how to authenticate to it.
        http: the HTTP transport settings.
        retry: how transient STOW-RS failures are retried before a C-STORE fails.
        breaker: when a DICOMweb store is known down (requests to it then fail at once) and
            how it is probed meanwhile; one breaker per root, shared by every client.
        spool_dir: where received datasets are written as they arrive (None: system temp).
        shutdown_grace: seconds open associations get to finish after SIGTERM.
        stow_http2: use HTTP/2 for STOW-RS (reference adapter flag).
        query: how C-FIND is answered with QIDO-RS.
        retrieve: how C-MOVE/C-GET are served with QIDO-RS and WADO-RS.
        aet_dictionary: C-MOVE destinations by AE title.
        transform: de-identification and transcoding of received instances before storing.
        health: the ``/metrics``, ``/healthz``, ``/readyz`` endpoint (port 0: not served).
        spool: the durable spool (None: C-STOREs are stored synchronously, not spooled, unless
            routing rules need a queue per destination).
        spool_drain_timeout: at shutdown, once the listener has stopped, the longest the spool
            keeps uploading what is queued (0: not at all); the rest stays for the next start.
        routing: destination rules besides the default ``dicomweb`` store.
        commitment: Storage Commitment Push Model (requesters come from ``aet_dictionary``).
        access: which calling AEs / networks may use which service; which services are on.
    """

    dimse: DimseServerConfig
    dicomweb: DicomwebAddress
    auth: AuthConfig = field(default_factory=AuthConfig)
    http: HttpSettings = field(default_factory=HttpSettings)
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(budget=10.0))
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    spool_dir: Path | None = None
    shutdown_grace: float = 30.0
    stow_http2: bool = False
    query: QuerySettings = field(default_factory=QuerySettings)
    retrieve: RetrieveSettings = field(default_factory=RetrieveSettings)
    aet_dictionary: AetDictionary = field(default_factory=AetDictionary)
    transform: TransformConfig = field(default_factory=TransformConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    spool: SpoolSettings | None = None
    spool_drain_timeout: float = 60.0
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    commitment: CommitmentSettings = field(default_factory=CommitmentSettings)
    access: AccessPolicy = field(default_factory=AccessPolicy)
