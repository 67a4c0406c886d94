"""The import adapter's security flags: DICOM TLS, access control, limits -> config objects.

Key material is read from files named by flags (never passed on the command line itself), and
error messages name files, not their contents.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from common.cli.options import option
from common.dimse.fast.limits import DEFAULT_MIN_RECEIVE_RATE
from common.dimse.tls import TlsSettings, server_context
from common.errors import ConfigError
from import_adapter.access import AccessPolicy, Service, load_access_policy

F = TypeVar("F", bound=Callable[..., Any])

_PEM = click.Path(exists=True, dir_okay=False, path_type=Path)

#: Flags switching one service off, by service.
DISABLE_FLAGS: dict[Service, str] = {
    Service.STORE: "disable_cstore",
    Service.QUERY: "disable_cfind",
    Service.RETRIEVE: "disable_cmove_cget",
    Service.COMMIT: "disable_storage_commitment",
}


def security_options(func: F) -> F:
    """TLS, access-control and limit flags of the import command."""
    decorators = [
        option("tls_cert", type=_PEM,
               help="PEM certificate (chain) of the DIMSE listener: with --tls_key, the "
                    "listener speaks DICOM TLS only (TLS 1.2+)."),
        option("tls_key", type=_PEM, help="PEM private key of --tls_cert (unencrypted)."),
        option("tls_ca", type=_PEM,
               help="PEM CA certificates: clients must present a certificate they signed "
                    "(mutual TLS); without it no client certificate is asked for."),
        option("allowed_calling_aets",
               help="Comma-separated calling AE titles allowed to use the services "
                    "(default: any); others are rejected at association time."),
        option("allowed_networks",
               help="Comma-separated source addresses or CIDRs allowed (default: any), "
                    "e.g. 10.0.0.0/8,192.168.1.7."),
        option("access_policy", type=click.Path(dir_okay=False, path_type=Path),
               help='JSON file of per-service rules: {"store": {"calling_aets": [...], '
                    '"networks": [...], "enabled": true}, "query": ..., "retrieve": ..., '
                    '"commit": ...}; services it omits follow the two flags above.'),
        option(DISABLE_FLAGS[Service.STORE], is_flag=True, default=False,
               help="Refuse every C-STORE (0x0124)."),
        option(DISABLE_FLAGS[Service.QUERY], is_flag=True, default=False,
               help="Do not offer C-FIND."),
        option(DISABLE_FLAGS[Service.RETRIEVE], is_flag=True, default=False,
               help="Do not offer C-MOVE and C-GET."),
        option(DISABLE_FLAGS[Service.COMMIT], is_flag=True, default=False,
               help="Do not offer Storage Commitment (with the three above off: a "
                    "C-STORE-only ingest point)."),
        option("max_associations_per_aet", type=click.IntRange(0, 10000), default=0,
               show_default=True,
               help="Associations one calling AE title may hold at once (0 = no limit); more "
                    "are rejected (transient, local limit exceeded)."),
        option("max_pending_connections", type=click.IntRange(1, 100000), default=256,
               show_default=True,
               help="Connections allowed to wait for their association request at once; "
                    "beyond it new connections are closed immediately."),
        option("max_instance_size_mb", type=click.IntRange(0, 1 << 20), default=0,
               show_default=True,
               help="Largest C-STORE dataset accepted, in MiB (0 = no limit); larger ones are "
                    "read and dropped and get 0xA700 (past twice the limit: A-ABORT)."),
        option("min_receive_rate", type=click.IntRange(0, 1 << 30),
               default=DEFAULT_MIN_RECEIVE_RATE, show_default=True,
               help="Bytes per second a PDU or DIMSE message must average once its first byte "
                    "arrived, with --dimse_timeout of slack (a pause up to it is fine); a "
                    "slower peer (slow loris) is aborted. 0 = no floor."),
        option("max_cfind_results", type=click.IntRange(0, 10_000_000), default=0,
               show_default=True,
               help="Most matches one C-FIND returns (0 = no limit); then 0xA700."),
        option("max_cmove_instances", type=click.IntRange(0, 65535), default=0,
               show_default=True,
               help="Most instances one C-MOVE or C-GET may send (0 = 65535); larger requests "
                    "get 0xA701 before anything is sent."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def listener_tls(params: dict[str, Any]) -> TlsSettings | None:
    """The listener's TLS settings (None: plain TCP), loaded once to fail early.

    Raises:
        click.BadParameter: only one of cert and key, a CA without them, or unloadable files.
    """
    cert, key, ca = params["tls_cert"], params["tls_key"], params["tls_ca"]
    if cert is None and key is None:
        if ca is not None:
            raise click.BadParameter("needs --tls_cert and --tls_key", param_hint="--tls_ca")
        return None
    if cert is None or key is None:
        raise click.BadParameter("give both --tls_cert and --tls_key", param_hint="--tls_cert")
    settings = TlsSettings(cert=cert, key=key, ca=ca)
    try:
        server_context(settings)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--tls_cert") from exc
    return settings


def access_policy(params: dict[str, Any]) -> AccessPolicy:
    """The access policy from the policy file, allow-list and disable flags.

    Raises:
        click.BadParameter: an invalid file, AE title or network.
    """
    try:
        return load_access_policy(
            params["access_policy"],
            allowed_calling_aets=params["allowed_calling_aets"],
            allowed_networks=params["allowed_networks"],
            disabled=[service for service, flag in DISABLE_FLAGS.items() if params[flag]],
        )
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--access_policy") from exc
