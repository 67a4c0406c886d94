"""``dicom-adapter import``: flags (reference spellings, dashed spellings, env vars) -> config.

Each flag is accepted as the reference adapter spells it (``--dimse_aet``), dashed
(``--dimse-aet``), and from the environment (``DICOM_ADAPTER_DIMSE_AET``). Secrets are read from
files or the environment only, never from flags, so they do not show in ``ps``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from common.auth import DEFAULT_SCOPES, AuthConfig, AuthKind, env_secret
from common.cli.params import AE_TITLE, DICOMWEB_ADDRESS, PORT, env_name, spellings
from common.dicomweb.address import DicomwebAddress, address_from_deprecated
from common.errors import ConfigError
from common.http import HttpSettings
from common.logs import configure_logging
from common.retry import RetryPolicy
from import_adapter.config import DimseServerConfig, ImportConfig

F = TypeVar("F", bound=Callable[..., Any])

BEARER_TOKEN_ENV = "DICOM_ADAPTER_BEARER_TOKEN"
BASIC_PASSWORD_ENV = "DICOM_ADAPTER_BASIC_PASSWORD"


def option(name: str, **kwargs: Any) -> Callable[[F], F]:
    """A flag under its reference spelling and its dashed spelling, with an env variable."""
    names = dict.fromkeys(spellings(name))  # one spelling when the name has no underscore
    return click.option(*names, name, envvar=env_name(name), show_envvar=True, **kwargs)


def auth_options(func: F) -> F:
    """Options choosing how DICOMweb requests are authenticated (shared by both adapters)."""
    decorators = [
        option(
            "oauth_scopes",
            default=",".join(DEFAULT_SCOPES),
            show_default=True,
            help="Comma-separated OAuth scopes for Google credentials.",
        ),
        option(
            "auth",
            type=click.Choice([k.value for k in AuthKind]),
            default=AuthKind.AUTO.value,
            show_default=True,
            help="DICOMweb authentication: auto = Google ADC for *.googleapis.com, else none.",
        ),
        option(
            "bearer_token_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help=f"File holding a bearer token, re-read when it changes (or ${BEARER_TOKEN_ENV}).",
        ),
        option("basic_auth_user", help="HTTP basic user name."),
        option(
            "basic_auth_password_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help=f"File holding the HTTP basic password (or ${BASIC_PASSWORD_ENV}).",
        ),
        option(
            "ca_bundle",
            type=click.Path(exists=True, dir_okay=False),
            help="PEM file of CA certificates to trust for HTTPS (default: system store).",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def auth_config(params: dict[str, Any]) -> AuthConfig:
    """The :class:`AuthConfig` from parsed auth options and the environment."""
    scopes = tuple(s.strip() for s in params["oauth_scopes"].split(",") if s.strip())
    return AuthConfig(
        kind=AuthKind(params["auth"]),
        scopes=scopes or DEFAULT_SCOPES,
        bearer_token_file=params["bearer_token_file"],
        bearer_token=env_secret(BEARER_TOKEN_ENV),
        basic_user=params["basic_auth_user"],
        basic_password_file=params["basic_auth_password_file"],
        basic_password=env_secret(BASIC_PASSWORD_ENV),
    )


def resolve_address(
    address: DicomwebAddress | None, deprecated_addr: str | None, stow_path: str | None
) -> DicomwebAddress:
    """The DICOMweb root from ``--dicomweb_address`` or the deprecated pair."""
    if address is not None:
        if deprecated_addr or stow_path:
            raise click.UsageError(
                "give --dicomweb_address, or the deprecated --dicomweb_addr with "
                "--dicomweb_stow_path, not both"
            )
        return address
    if deprecated_addr and stow_path:
        try:
            return address_from_deprecated(deprecated_addr, stow_path)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
    if deprecated_addr or stow_path:
        raise click.UsageError("--dicomweb_addr and --dicomweb_stow_path go together")
    raise click.UsageError("missing --dicomweb_address (the DICOMweb root of the store)")


@click.command(name="import", context_settings={"max_content_width": 100})
@option("dimse_aet", type=AE_TITLE, default="IMPORTADAPTER", show_default=True,
        help="AE title of this adapter; associations calling another title are rejected.")
@option("dimse_port", type=PORT, default=2575, show_default=True, help="DIMSE listening port.")
@option("dimse_bind_address", default="0.0.0.0", show_default=True,
        help="Interface to listen on.")
@option("dicomweb_address", type=DICOMWEB_ADDRESS,
        help="DICOMweb root of the store, e.g. http://127.0.0.1:8042/dicom-web or "
             "https://healthcare.googleapis.com/v1/projects/P/locations/L/datasets/D/"
             "dicomStores/S/dicomWeb.")
@option("dicomweb_addr", help="Deprecated: base address; use --dicomweb_address.")
@option("dicomweb_stow_path", help="Deprecated: STOW path appended to --dicomweb_addr.")
@auth_options
@option("stow_http2", is_flag=True, default=False,
        help="Use HTTP/2 for STOW-RS requests (needs the http2 extra).")
@option("max_associations", type=click.IntRange(1, 10000), default=64, show_default=True,
        help="Associations served at once.")
@option("max_pdu_size", type=click.IntRange(0, 1 << 26), default=1 << 20, show_default=True,
        help="Largest PDU accepted, in bytes (0 = unlimited).")
@option("network_timeout", type=click.FloatRange(1), default=120.0, show_default=True,
        help="Seconds an idle association is kept before it is aborted.")
@option("stow_retry_budget", type=click.FloatRange(0), default=30.0, show_default=True,
        help="Seconds during which a transient STOW-RS failure (connection, 429, 5xx) is "
             "retried before the C-STORE fails.")
@option("http_timeout", type=click.FloatRange(0.1), default=120.0, show_default=True,
        help="Seconds to wait for a DICOMweb server's response.")
@option("spool_dir", type=click.Path(file_okay=False, path_type=Path),
        help="Directory where received datasets are written as they arrive (default: TMPDIR).")
@option("shutdown_grace", type=click.FloatRange(0), default=30.0, show_default=True,
        help="Seconds open associations get to finish after SIGTERM.")
@option("verbose", is_flag=True, default=False, help="Debug logging.")
@option("log_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
        help="Log line format (json: one object per line for Cloud Logging).")
def command(**params: Any) -> int:
    """Import adapter: a DIMSE SCP (C-ECHO, C-STORE) in front of a DICOMweb store."""
    address = resolve_address(
        params["dicomweb_address"], params["dicomweb_addr"], params["dicomweb_stow_path"]
    )
    config = ImportConfig(
        dimse=DimseServerConfig(
            ae_title=params["dimse_aet"],
            port=params["dimse_port"],
            bind_address=params["dimse_bind_address"],
            max_associations=params["max_associations"],
            max_pdu_size=params["max_pdu_size"],
            network_timeout=params["network_timeout"],
        ),
        dicomweb=address,
        auth=auth_config(params),
        http=HttpSettings(
            read_timeout=params["http_timeout"],
            pool_size=max(8, params["max_associations"]),
            ca_bundle=params["ca_bundle"],
        ),
        retry=RetryPolicy(budget=params["stow_retry_budget"]),
        spool_dir=params["spool_dir"],
        shutdown_grace=params["shutdown_grace"],
        stow_http2=params["stow_http2"],
    )
    configure_logging(verbose=params["verbose"], json_format=params["log_format"] == "json")
    from import_adapter.app import run

    return run(config)
