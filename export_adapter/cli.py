"""``dicom-adapter export``: flags (reference spellings, dashed spellings, env vars) -> config.

Each flag is accepted as the reference adapter spells it (``--peer_dimse_aet``), dashed
(``--peer-dimse-aet``), and from the environment (``DICOM_ADAPTER_PEER_DIMSE_AET``). Exactly one
peer mode must be given: C-STORE (``--peer_dimse_*``) or STOW-RS (``--peer_dicomweb_address``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from common.cli.compat import explain_monitoring, monitoring_option
from common.cli.options import (
    auth_config,
    auth_options,
    option,
    proxy_settings,
    resolve_dicomweb_address,
)
from common.cli.params import AE_TITLE, DICOMWEB_ADDRESS, PORT
from common.dicomweb.address import DicomwebAddress
from common.dimse.sender import PeerAddress, SenderSettings
from common.dimse.tls import TlsSettings, client_context
from common.errors import ConfigError
from common.health import HealthConfig
from common.http import HttpSettings
from common.logs import configure_logging
from common.retry import RetryPolicy
from export_adapter.config import (
    DimsePeerConfig,
    ExportConfig,
    StowPeerConfig,
    subscription_path,
    topic_path,
)
from export_adapter.source import GOOGLE_API_BASE, parse_source_address
from export_adapter.subscriber import FlowSettings

_PEM = click.Path(exists=True, dir_okay=False, path_type=Path)
_DIMSE_FLAGS = ("peer_dimse_aet", "peer_dimse_ip", "peer_dimse_port")
_STOW_FLAGS = ("peer_dicomweb_address", "peer_dicomweb_addr", "peer_dicomweb_stow_path")


def _given(params: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    return [name for name in names if params.get(name) not in (None, "")]


def resolve_stow_address(
    address: DicomwebAddress | None, deprecated_addr: str | None, stow_path: str | None
) -> DicomwebAddress:
    """The peer's DICOMweb root from ``--peer_dicomweb_address`` or the deprecated pair."""
    return resolve_dicomweb_address(address, deprecated_addr, stow_path, prefix="peer_")


def resolve_peer(params: dict[str, Any]) -> DimsePeerConfig | StowPeerConfig:
    """The peer of exactly one mode, or a usage error."""
    dimse, stow = _given(params, _DIMSE_FLAGS), _given(params, _STOW_FLAGS)
    if dimse and stow:
        raise click.UsageError(
            "give either a C-STORE peer (--peer_dimse_aet/--peer_dimse_ip/--peer_dimse_port) "
            "or a STOW-RS peer (--peer_dicomweb_address), not both"
        )
    if stow:
        scopes = tuple(s.strip() for s in params["oauth_scopes"].split(",") if s.strip())
        return StowPeerConfig(
            address=resolve_stow_address(
                params["peer_dicomweb_address"],
                params["peer_dicomweb_addr"],
                params["peer_dicomweb_stow_path"],
            ),
            use_adc=params["use_gcp_application_default_credentials"],
            scopes=scopes,
        )
    if not dimse:
        raise click.UsageError(
            "missing peer: give --peer_dimse_aet, --peer_dimse_ip and --peer_dimse_port "
            "(C-STORE) or --peer_dicomweb_address (STOW-RS)"
        )
    missing = [f"--{name}" for name in _DIMSE_FLAGS if name not in dimse]
    if missing:
        raise click.UsageError(f"C-STORE mode also needs {', '.join(missing)}")
    return DimsePeerConfig(
        peer=PeerAddress(
            params["peer_dimse_aet"],
            params["peer_dimse_ip"].strip(),
            params["peer_dimse_port"],
            peer_tls(params),
        ),
        sender=SenderSettings(
            calling_aet=params["client_aet"],
            dimse_timeout=params["peer_dimse_timeout"],
            network_timeout=params["peer_dimse_timeout"],
        ),
        max_associations=params["max_peer_associations"],
    )


def peer_tls(params: dict[str, Any]) -> TlsSettings | None:
    """DICOM TLS to the C-STORE peer (None: plain TCP), loaded once to fail early.

    Raises:
        click.BadParameter: TLS details without --peer_tls, half a client certificate, or a
            file that cannot be loaded.
    """
    ca, cert, key = params["peer_tls_ca"], params["peer_tls_cert"], params["peer_tls_key"]
    if not params["peer_tls"]:
        if ca or cert or key:
            raise click.BadParameter("needs --peer_tls", param_hint="--peer_tls_ca/cert/key")
        return None
    if (cert is None) != (key is None):
        raise click.BadParameter("give both --peer_tls_cert and --peer_tls_key",
                                 param_hint="--peer_tls_cert")
    settings = TlsSettings(cert=cert, key=key, ca=ca)
    try:
        client_context(settings)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--peer_tls") from exc
    return settings


def build_config(params: dict[str, Any]) -> ExportConfig:
    """The :class:`ExportConfig` from parsed flags (usage errors for bad combinations)."""
    peer = resolve_peer(params)
    try:
        source = parse_source_address(params["dicomweb_addr"])
        subscription = subscription_path(params["project_id"], params["subscription_id"])
        dead_letter = (
            topic_path(params["project_id"], params["dead_letter_topic"])
            if params["dead_letter_topic"]
            else None
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    workers = params["workers"]
    proxy = proxy_settings()
    return ExportConfig(
        subscription_path=subscription,
        source=source,
        peer=peer,
        source_auth=auth_config(params, proxy),
        http=HttpSettings(
            read_timeout=params["http_timeout"],
            pool_size=max(8, workers * 2),
            ca_bundle=params["ca_bundle"],
            proxy=proxy,
        ),
        retry=RetryPolicy(budget=params["dicomweb_retry_budget"]),
        flow=FlowSettings(
            workers=workers,
            max_messages=params["max_outstanding_messages"] or workers * 4,
            max_bytes=params["max_outstanding_bytes"],
        ),
        dead_letter_topic=dead_letter,
        transient_backoff=params["transient_backoff"],
        spool_dir=params["spool_dir"],
        shutdown_grace=params["shutdown_grace"],
        health=HealthConfig(port=params["metrics_port"]),
    )


@click.command(name="export", context_settings={"max_content_width": 100})
@option("peer_dimse_aet", type=AE_TITLE, help="C-STORE mode: AE title of the peer.")
@option("peer_dimse_ip", help="C-STORE mode: host name or IP address of the peer.")
@option("peer_dimse_port", type=PORT, help="C-STORE mode: DIMSE port of the peer.")
@option("peer_tls", is_flag=True, default=False,
        help="C-STORE mode: DICOM TLS (1.2+) to the peer, verifying its certificate.")
@option("peer_tls_ca", type=_PEM,
        help="C-STORE mode: PEM CA certificates to verify the peer with (default: system).")
@option("peer_tls_cert", type=_PEM,
        help="C-STORE mode: PEM client certificate, for peers that require one.")
@option("peer_tls_key", type=_PEM, help="C-STORE mode: PEM private key of --peer_tls_cert.")
@option("client_aet", type=AE_TITLE, default="EXPORTADAPTER", show_default=True,
        help="C-STORE mode: our AE title on associations to the peer.")
@option("peer_dicomweb_address", type=DICOMWEB_ADDRESS,
        help="STOW-RS mode: DICOMweb root of the peer, e.g. http://host:8042/dicom-web.")
@option("peer_dicomweb_addr", help="Deprecated: peer base address; use --peer_dicomweb_address.")
@option("peer_dicomweb_stow_path",
        help="Deprecated: STOW path appended to --peer_dicomweb_addr.")
@option("use_gcp_application_default_credentials", is_flag=True, default=False,
        help="STOW-RS mode: authenticate to the peer with Google Application Default "
             "Credentials (otherwise requests to the peer carry no credentials).")
@option("project_id", required=True, help="Google Cloud project of the subscription.")
@option("subscription_id", required=True,
        help="Pub/Sub subscription to pull (an id, or projects/P/subscriptions/S).")
@option("dicomweb_addr", default=GOOGLE_API_BASE, show_default=True,
        help="Source of the instances: the API base (whole resource names are appended) or "
             "a DICOMweb root such as http://host:8042/dicom-web (studies/... is appended).")
@auth_options
@option("dead_letter_topic",
        help="Pub/Sub topic (id or projects/P/topics/T) receiving a copy of every message that "
             "can never be exported (malformed, instance gone, refused by the peer).")
@option("workers", type=click.IntRange(1, 256), default=8, show_default=True,
        help="Exports run in parallel (retrieves overlap; sends share the associations).")
@option("max_outstanding_messages", type=click.IntRange(0, 100000), default=0,
        help="Flow control: messages held at once [default: 4 x workers].")
@option("max_outstanding_bytes", type=click.IntRange(1024), default=64 * 1024 * 1024,
        show_default=True, help="Flow control: message bytes held at once.")
@option("max_peer_associations", type=click.IntRange(1, 64), default=1, show_default=True,
        help="C-STORE mode: associations open to the peer at once, each reused for many "
             "instances (DCMTK storescp without --fork serves one at a time).")
@option("peer_dimse_timeout", type=click.FloatRange(1), default=120.0, show_default=True,
        help="C-STORE mode: seconds to wait for the peer's answer.")
@option("dicomweb_retry_budget", type=click.FloatRange(0), default=10.0, show_default=True,
        help="Seconds during which a DICOMweb failure retried at once (connection, timeout, "
             "408, 425, 429, 5xx but 501: the README's failure table) is retried before the "
             "message is nacked for redelivery.")
@option("transient_backoff", type=click.FloatRange(0), default=1.0, show_default=True,
        help="Seconds a worker waits before nacking after a transient failure.")
@option("http_timeout", type=click.FloatRange(0.1), default=120.0, show_default=True,
        help="Seconds to wait for a DICOMweb server's response.")
@option("spool_dir", type=click.Path(file_okay=False, path_type=Path),
        help="Directory for retrieved instances while they are sent (default: TMPDIR).")
@option("shutdown_grace", type=click.FloatRange(0), default=30.0, show_default=True,
        help="Seconds in-flight exports get to finish after SIGTERM.")
@option("metrics_port", type=click.IntRange(0, 65535), default=0, show_default=True,
        help="Port of /metrics (Prometheus), /healthz and /readyz, on all interfaces "
             "(0 = not served).")
@monitoring_option
@option("verbose", is_flag=True, default=False, help="Debug logging.")
@option("log_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
        help="Log line format (json: one object per line for Cloud Logging).")
def command(**params: Any) -> int:
    """Export adapter: Pub/Sub notifications -> WADO-RS -> C-STORE or STOW-RS to a peer."""
    config = build_config(params)
    configure_logging(verbose=params["verbose"], json_format=params["log_format"] == "json")
    explain_monitoring(params)
    from export_adapter.app import run

    return run(config)
