"""``dicom-adapter import``: flags (reference spellings, dashed spellings, env vars) -> config.

Each flag is accepted as the reference adapter spells it (``--dimse_aet``), dashed
(``--dimse-aet``), and from the environment (``DICOM_ADAPTER_DIMSE_AET``). Secrets are read from
files or the environment only, never from flags, so they do not show in ``ps``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from common.breaker import BreakerSettings
from common.cli.compat import check_import_compat, explain_import_compat, import_compat_options
from common.cli.options import (
    auth_config,
    auth_options,
    option,
    proxy_settings,
    resolve_dicomweb_address,
)
from common.cli.params import AE_TITLE, DICOMWEB_ADDRESS, PORT
from common.dicomweb.address import DicomwebAddress
from common.dimse.aet_dictionary import AetDictionary, load_aet_dictionary
from common.errors import ConfigError
from common.health import HealthConfig
from common.http import HttpSettings
from common.logs import configure_logging
from common.retry import RetryPolicy
from import_adapter.config import DimseServerConfig, ImportConfig
from import_adapter.query.service import QuerySettings
from import_adapter.retrieve.service import RetrieveSettings
from import_adapter.security_options import access_policy, listener_tls, security_options
from import_adapter.spool.options import store_and_forward_config, store_and_forward_options
from import_adapter.transform_options import transform_config, transform_options


def resolve_address(
    address: DicomwebAddress | None, deprecated_addr: str | None, stow_path: str | None
) -> DicomwebAddress:
    """The DICOMweb root from ``--dicomweb_address`` or the deprecated pair."""
    return resolve_dicomweb_address(address, deprecated_addr, stow_path)


def resolve_aet_dictionary(path: Path | None, inline: str | None) -> AetDictionary:
    """The C-MOVE destinations from ``--aet_dictionary``, ``--aet_dictionary_inline`` or env."""
    try:
        return load_aet_dictionary(path=path, inline=inline, environ=os.environ)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--aet_dictionary") from exc


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
@option("acse_timeout", type=click.FloatRange(1), default=30.0, show_default=True,
        help="Seconds a connection has to complete its TLS handshake and association request "
             "(in total: a peer trickling bytes is dropped too).")
@option("dimse_timeout", type=click.FloatRange(1), default=60.0, show_default=True,
        help="Seconds to wait for each part of a DIMSE message once it started.")
@security_options
@option("stow_retry_budget", type=click.FloatRange(0), default=10.0, show_default=True,
        help="Seconds during which a STOW-RS failure retried at once (connection, timeout, "
             "408, 425, 429, 5xx but 501: the README's failure table) is retried before the "
             "C-STORE fails (keep it under the SCUs' DIMSE timeouts); "
             "without --auto_ack_cstore, also how long a spooled C-STORE waits for its uploads.")
@option("store_down_after_failures", type=click.IntRange(0), default=3, show_default=True,
        help="Connection failures or timeouts in a row after which a DICOMweb store is known "
             "down: C-STOREs then get 0xA700 at once, without a request, until a background "
             "probe is answered (0 = never).")
@option("http_timeout", type=click.FloatRange(0.1), default=120.0, show_default=True,
        help="Seconds to wait for a DICOMweb server's response.")
@option("spool_dir", type=click.Path(file_okay=False, path_type=Path),
        help="Directory where received datasets are written as they arrive (by our DIMSE "
             "engine only those over 1 MiB: smaller ones stay in memory; default: TMPDIR).")
@option("shutdown_grace", type=click.FloatRange(0), default=30.0, show_default=True,
        help="Seconds open associations get to finish after SIGTERM.")
@option("aet_dictionary", type=click.Path(dir_okay=False, path_type=Path),
        help='C-MOVE destinations: a JSON file [{"name": AET, "host": ..., "port": ...}] '
             "(else --aet_dictionary_inline, else $ENV_AETS_JSON).")
@option("aet_dictionary_inline", help="C-MOVE destinations as inline JSON (same format).")
@option("fuzzy_matching", is_flag=True, default=False,
        help="Ask the DICOMweb store for fuzzy matching of person names in C-FIND.")
@option("qido_page_size", type=click.IntRange(1, 100000), default=200, show_default=True,
        help="QIDO-RS results per page (limit); pages are fetched with offset until done. "
             "Smaller pages give a C-FIND its first matches sooner.")
@option("qido_parallel_pages", type=click.IntRange(1, 16), default=2, show_default=True,
        help="QIDO-RS pages of one C-FIND or C-MOVE/C-GET listing requested at once, once "
             "the first page came back full (1 = one page after another).")
@option("retrieve_prefetch", type=click.IntRange(1, 1000), default=8, show_default=True,
        help="Instances fetched with WADO-RS ahead of the C-STORE being sent (C-MOVE/C-GET).")
@option("metrics_port", type=click.IntRange(0, 65535), default=0, show_default=True,
        help="Port of /metrics (Prometheus), /healthz and /readyz, on --dimse_bind_address "
             "(0 = not served).")
@transform_options
@store_and_forward_options
@import_compat_options
@option("verbose", is_flag=True, default=False, help="Debug logging.")
@option("log_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
        help="Log line format (json: one object per line for Cloud Logging).")
def command(**params: Any) -> int:
    """Import adapter: a DIMSE SCP (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET) over DICOMweb."""
    check_import_compat(params)
    address = resolve_address(
        params["dicomweb_address"], params["dicomweb_addr"], params["dicomweb_stow_path"]
    )
    forwarding = store_and_forward_config(params)
    proxy = proxy_settings()
    config = ImportConfig(
        dimse=DimseServerConfig(
            ae_title=params["dimse_aet"],
            port=params["dimse_port"],
            bind_address=params["dimse_bind_address"],
            max_associations=params["max_associations"],
            max_pdu_size=params["max_pdu_size"],
            network_timeout=params["network_timeout"],
            acse_timeout=params["acse_timeout"],
            dimse_timeout=params["dimse_timeout"],
            max_associations_per_aet=params["max_associations_per_aet"],
            max_pending_connections=params["max_pending_connections"],
            max_instance_size=params["max_instance_size_mb"] << 20,
            min_receive_rate=params["min_receive_rate"],
            tls=listener_tls(params),
        ),
        dicomweb=address,
        auth=auth_config(params, proxy),
        http=HttpSettings(
            read_timeout=params["http_timeout"],
            pool_size=max(8, params["max_associations"]),
            ca_bundle=params["ca_bundle"],
            proxy=proxy,
        ),
        retry=RetryPolicy(budget=params["stow_retry_budget"]),
        breaker=BreakerSettings(failure_threshold=params["store_down_after_failures"]),
        spool_dir=params["spool_dir"],
        shutdown_grace=params["shutdown_grace"],
        stow_http2=params["stow_http2"],
        query=QuerySettings(
            retrieve_aet=params["dimse_aet"],
            page_size=params["qido_page_size"],
            parallel_pages=params["qido_parallel_pages"],
            fuzzy_matching=params["fuzzy_matching"],
            max_results=params["max_cfind_results"],
        ),
        retrieve=RetrieveSettings(
            page_size=params["qido_page_size"],
            parallel_pages=params["qido_parallel_pages"],
            prefetch=params["retrieve_prefetch"],
            spool_dir=params["spool_dir"],
            max_pdu_size=params["max_pdu_size"],
            max_instances=params["max_cmove_instances"],
            calling_aet=params["dimse_cmove_aet"] or "",
        ),
        aet_dictionary=resolve_aet_dictionary(
            params["aet_dictionary"], params["aet_dictionary_inline"]
        ),
        transform=transform_config(params),
        access=access_policy(params),
        health=HealthConfig(
            port=params["metrics_port"], bind_address=params["dimse_bind_address"]
        ),
        **forwarding,
    )
    configure_logging(verbose=params["verbose"], json_format=params["log_format"] == "json")
    explain_import_compat(params)
    from import_adapter.app import run

    return run(config)
