"""The export adapter's configuration: built once from flags, then passed to constructors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from common.auth import DEFAULT_SCOPES, AuthConfig
from common.breaker import BreakerSettings
from common.dicomweb.address import DicomwebAddress
from common.dimse.sender import PeerAddress, SenderSettings
from common.errors import ConfigError
from common.health import HealthConfig
from common.http import HttpSettings
from common.retry import RetryPolicy
from export_adapter.source import SourceLocator
from export_adapter.subscriber import FlowSettings

_RESOURCE_ID = re.compile(r"^[A-Za-z0-9._~+%-]{1,255}$")


@dataclass(frozen=True)
class DimsePeerConfig:
    """C-STORE mode: the DIMSE peer and how associations to it are requested.

    Attributes:
        peer: the peer's AE title, host and port.
        sender: association settings (our calling AE title, timeouts).
        max_associations: associations open to the peer at once (workers share them).
    """

    peer: PeerAddress
    sender: SenderSettings = field(default_factory=SenderSettings)
    max_associations: int = 1


@dataclass(frozen=True)
class StowPeerConfig:
    """STOW-RS mode: the DICOMweb server that receives the instances.

    Attributes:
        address: its DICOMweb root.
        use_adc: authenticate with Google Application Default Credentials (else no auth).
        scopes: OAuth scopes for those credentials.
    """

    address: DicomwebAddress
    use_adc: bool = False
    scopes: tuple[str, ...] = DEFAULT_SCOPES


@dataclass(frozen=True)
class ExportConfig:
    """Everything the export adapter needs to run.

    Attributes:
        subscription_path: ``projects/P/subscriptions/S``.
        source: the source DICOMweb service and how notification paths are appended.
        peer: where instances go (C-STORE or STOW-RS mode).
        source_auth: how requests to the source are authenticated.
        http: the shared HTTP transport settings.
        retry: how transient DICOMweb failures are retried before the message is nacked.
        breaker: when the source or STOW-RS peer is known down (requests to it then fail at
            once, and the message is nacked without waiting out ``retry``).
        flow: flow control and the worker pool.
        dead_letter_topic: ``projects/P/topics/T`` for permanent failures, or None.
        transient_backoff: seconds a worker waits before nacking after a transient failure.
        spool_dir: where retrieved instances are written (None: the system temp directory).
        shutdown_grace: seconds in-flight exports get to finish after SIGTERM.
        health: the ``/metrics``, ``/healthz``, ``/readyz`` endpoint (port 0: not served).
    """

    subscription_path: str
    source: SourceLocator
    peer: DimsePeerConfig | StowPeerConfig
    source_auth: AuthConfig = field(default_factory=AuthConfig)
    http: HttpSettings = field(default_factory=HttpSettings)
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(budget=10.0))
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    flow: FlowSettings = field(default_factory=FlowSettings)
    dead_letter_topic: str | None = None
    transient_backoff: float = 1.0
    spool_dir: Path | None = None
    shutdown_grace: float = 30.0
    health: HealthConfig = field(default_factory=HealthConfig)


def _resource_path(project_id: str, kind: str, value: str) -> str:
    text = value.strip()
    if text.startswith("projects/"):
        parts = text.split("/")
        if len(parts) != 4 or parts[2] != kind or not all(parts):
            raise ConfigError(f"{value!r} is not of the form projects/PROJECT/{kind}/ID")
        return text
    if not _RESOURCE_ID.match(project_id.strip()):
        raise ConfigError(f"project id {project_id!r} is not valid")
    if not _RESOURCE_ID.match(text):
        raise ConfigError(f"{kind[:-1]} id {value!r} is not valid")
    return f"projects/{project_id.strip()}/{kind}/{text}"


def subscription_path(project_id: str, subscription_id: str) -> str:
    """``projects/P/subscriptions/S`` from the two flags (a full path is taken as is)."""
    return _resource_path(project_id, "subscriptions", subscription_id)


def topic_path(project_id: str, topic_id: str) -> str:
    """``projects/P/topics/T`` from a topic id (a full path is taken as is)."""
    return _resource_path(project_id, "topics", topic_id)
