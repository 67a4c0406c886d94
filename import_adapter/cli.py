"""``dicom-adapter import``: flags (reference spellings, dashed spellings, env vars) -> config.

Each flag is accepted as the reference adapter spells it (``--dimse_aet``), dashed
(``--dimse-aet``), and from the environment (``DICOM_ADAPTER_DIMSE_AET``). Secrets are read from
files or the environment only, never from flags, so they do not show in ``ps``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from common.cli.options import auth_config, auth_options, option
from common.cli.params import AE_TITLE, DICOMWEB_ADDRESS, PORT
from common.dicomweb.address import DicomwebAddress, address_from_deprecated
from common.errors import ConfigError
from common.http import HttpSettings
from common.logs import configure_logging
from common.retry import RetryPolicy
from import_adapter.config import DimseServerConfig, ImportConfig


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
