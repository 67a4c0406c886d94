"""Command-line flags of store-and-forward: spool, uploads, routing, storage commitment.

Reference adapter spellings (``--persistent_file_storage_location``...) with dashed spellings
and ``DICOM_ADAPTER_*`` environment variables beside them. The reference adapter's delays are in
milliseconds, and so are ours.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from common.cli.options import option
from common.errors import ConfigError
from common.status import PROCESSING_FAILURE_ATTEMPTS
from import_adapter.commitment.report import ReportSettings
from import_adapter.commitment.service import CommitmentSettings
from import_adapter.routing.config import load_destination_config
from import_adapter.routing.router import RoutingConfig
from import_adapter.spool.concurrency import ConcurrencySettings
from import_adapter.spool.disk import MB, SpoolLimits
from import_adapter.spool.manager import SpoolSettings
from import_adapter.spool.queue import BatchSettings, UploadSettings

F = TypeVar("F", bound=Callable[..., Any])

#: The environment variable of ``--storage_commitment_spool_wait``, still read when the new
#: one (``DICOM_ADAPTER_STORAGE_COMMITMENT_WAIT``) and the flag are not given.
OLD_COMMITMENT_WAIT_ENV = "DICOM_ADAPTER_STORAGE_COMMITMENT_SPOOL_WAIT"


def parse_http_codes(value: str | None) -> frozenset[int]:
    """``"404,409"`` -> ``{404, 409}`` (4xx codes only: the failure table decides the rest).

    Raises:
        click.BadParameter: a value is not a 4xx status.
    """
    codes: set[int] = set()
    for part in (value or "").replace(" ", ",").split(","):
        if not part:
            continue
        if not part.isdigit() or not 400 <= int(part) <= 499:
            raise click.BadParameter(
                f"{part!r} is not an HTTP 4xx status (5xx are retried but 501, which never is)",
                param_hint="--http_error_codes_to_retry",
            )
        codes.add(int(part))
    return frozenset(codes)


def _upload_options() -> list[Callable[[Any], Any]]:
    """The flags of how queued instances are uploaded (the adapter and ``spool drain``)."""
    return [
        option("persistent_file_upload_retry_amount", type=click.IntRange(0), default=5,
               show_default=True,
               help="Retries of an instance the destination refused with a retryable status "
                    "before it goes to dead-letter (unreachable destinations do not use them; a "
                    f"0x0110 Processing Failure gets at most {PROCESSING_FAILURE_ATTEMPTS} "
                    "attempts in all: the README's peer failure table)."),
        option("min_upload_delay", type=click.IntRange(0), default=100, show_default=True,
               help="Milliseconds before the first retry of an upload (doubling each time)."),
        option("max_waiting_time_between_uploads", type=click.IntRange(1), default=5000,
               aliases=("max_waiting_time_btw_uploads",),  # the spelling of older releases
               show_default=True, help="Milliseconds: the cap on one retry delay."),
        option("http_error_codes_to_retry", default="",
               help="Comma-separated HTTP 4xx statuses to retry too, instead of dead-lettering "
                    "(408, 425, 429, 5xx but 501 and connection errors always are; 401/403 "
                    "pause the destination)."),
        option("upload_concurrency", type=click.IntRange(1, 256), default=32,
               show_default=True,
               help="The most uploads in flight per DICOMweb destination: the number adapts "
                    "to the store (grows while its answers stay as fast, shrinks as it queues "
                    "them or answers 429/503), up to this."),
        option("stow_batch_max_instances", type=click.IntRange(1, 1000),
               default=BatchSettings.max_instances, show_default=True,
               help="When instances queue up for a DICOMweb destination, up to this many of "
                    "one study go in one STOW-RS request (each one's outcome read from the "
                    "answer; 1 = one instance per request)."),
        option("stow_batch_max_mb", type=click.FloatRange(0.001),
               default=BatchSettings.max_bytes / (1 << 20), show_default=True,
               help="The most megabytes in one batched STOW-RS request (a larger instance "
                    "goes alone)."),
        option("stow_overwrite", is_flag=True, default=False,
               help="On 409 Conflict, DELETE the instance via DICOMweb and store it again "
                    "(else the conflict goes to dead-letter)."),
    ]


def _apply(func: F, decorators: list[Callable[[Any], Any]]) -> F:
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def upload_options(func: F) -> F:
    """Add the upload flags (retries, delays, concurrency, overwrite) to a command."""
    return _apply(func, _upload_options())


def upload_settings(params: dict[str, Any]) -> UploadSettings:
    """The :class:`UploadSettings` from the flags of :func:`upload_options`.

    Raises:
        click.BadParameter: ``--http_error_codes_to_retry`` lists something else than 4xx.
    """
    min_delay = params["min_upload_delay"] / 1000
    max_delay = max(min_delay, params["max_waiting_time_between_uploads"] / 1000)
    return UploadSettings(
        retry_amount=params["persistent_file_upload_retry_amount"],
        min_delay=min_delay,
        max_delay=max_delay,
        concurrency=ConcurrencySettings(
            cap=params["upload_concurrency"],
            floor=min(ConcurrencySettings.floor, params["upload_concurrency"]),
            initial=min(ConcurrencySettings.initial, params["upload_concurrency"]),
        ),
        batch=BatchSettings(
            max_instances=params["stow_batch_max_instances"],
            max_bytes=int(params["stow_batch_max_mb"] * (1 << 20)),
        ),
        retry_codes=parse_http_codes(params["http_error_codes_to_retry"]),
        overwrite=params["stow_overwrite"],
    )


def store_and_forward_options(func: F) -> F:
    """Add the spool, upload, routing and storage commitment flags to a command."""
    decorators: list[Callable[[Any], Any]] = [
        option("persistent_file_storage_location", type=click.Path(file_okay=False,
               path_type=Path),
               help="Durable spool: every instance is written and fsynced here before it is "
                    "answered or uploaded, and what is left is uploaded after a restart."),
        option("auto_ack_cstore", is_flag=True, default=False,
               help="Answer C-STORE Success once the instance is durable in the spool and upload "
                    "in the background (needs --persistent_file_storage_location)."),
        *_upload_options(),
        option("spool_max_size_mb", type=click.FloatRange(0), default=0.0, show_default=True,
               help="Queued megabytes at which new C-STOREs get 0xA700 (0 = no limit)."),
        option("spool_min_free_disk_mb", type=click.FloatRange(0), default=512.0,
               show_default=True,
               help="Free megabytes on the spool's disk below which new C-STOREs get 0xA700."),
        option("spool_drain_timeout", type=click.FloatRange(0), default=60.0,
               show_default=True,
               help="Seconds the spool keeps uploading after SIGTERM, once the listener has "
                    "stopped and open associations ended, until its queues are empty (0 = do "
                    "not wait); what is left stays on disk, is logged in one line and is "
                    "uploaded at the next start."),
        option("destination_config_path", type=click.Path(dir_okay=False, path_type=Path),
               help='Routing: a JSON file [{"filter": "Modality=MG&AETitle=CT1", '
                    '"dicomweb_destination": URL} or {..., "dicom_destination": {"name", '
                    '"host", "port"}}] (else --destination_config_inline, else '
                    "$ENV_DESTINATION_CONFIG_JSON); unmatched instances go to "
                    "--dicomweb_address."),
        option("destination_config_inline", help="Routing rules as inline JSON (same format)."),
        option("send_to_all_matching_destinations", is_flag=True, default=False,
               help="Send to every matching destination, not only the first."),
        option("storage_commitment_wait", type=click.FloatRange(0), default=120.0,
               aliases=("storage_commitment_spool_wait",),  # the spelling of older releases
               show_default=True,
               help="Seconds after a Storage Commitment request arrives during which instances "
                    "not (yet) in the store are looked up again (0.5 s doubling to 10 s; "
                    "instances still in this adapter's spool are waited for); then they are "
                    "reported failed (0x0112). Another replica may still be uploading them."),
        option("storage_commitment_report_budget", type=click.FloatRange(0), default=3600.0,
               show_default=True,
               help="Seconds during which an unreachable commitment requester is retried."),
    ]
    return _apply(func, decorators)


def _commitment_wait(params: dict[str, Any]) -> float:
    """``--storage_commitment_wait``, else the older spelling's environment variable.

    Raises:
        click.BadParameter: the older variable is not a number of seconds.
    """
    value = float(params["storage_commitment_wait"])
    old = os.environ.get(OLD_COMMITMENT_WAIT_ENV)
    ctx = click.get_current_context(silent=True)
    if old is None or ctx is None or (
        ctx.get_parameter_source("storage_commitment_wait") is not ParameterSource.DEFAULT
    ):
        return value
    try:
        seconds = float(old)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise click.BadParameter(
            f"{old!r} is not a number of seconds", param_hint=OLD_COMMITMENT_WAIT_ENV
        )
    return seconds


def store_and_forward_config(params: dict[str, Any]) -> dict[str, Any]:
    """The ``spool``, ``spool_drain_timeout``, ``routing`` and ``commitment`` of the ImportConfig.

    Raises:
        click.UsageError / click.BadParameter: inconsistent flags or an invalid routing config.
    """
    location = params["persistent_file_storage_location"]
    if params["auto_ack_cstore"] and location is None:
        raise click.UsageError("--auto_ack_cstore needs --persistent_file_storage_location")
    upload = upload_settings(params)
    spool = None
    if location is not None:
        spool = SpoolSettings(
            directory=location,
            auto_ack=params["auto_ack_cstore"],
            limits=SpoolLimits(
                max_bytes=int(params["spool_max_size_mb"] * MB),
                min_free_bytes=int(params["spool_min_free_disk_mb"] * MB),
            ),
            upload=upload,
            sync_timeout=params["stow_retry_budget"],
        )
    try:
        rules = load_destination_config(
            path=params["destination_config_path"],
            inline=params["destination_config_inline"],
            environ=os.environ,
        )
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--destination_config_path") from exc
    commitment = CommitmentSettings(
        wait=_commitment_wait(params),
        report=ReportSettings(
            calling_aet=params["dimse_aet"], max_pdu_size=params["max_pdu_size"]
        ),
    )
    commitment = replace(
        commitment,
        report_retry=replace(
            commitment.report_retry, budget=params["storage_commitment_report_budget"]
        ),
    )
    return {
        "spool": spool,
        "spool_drain_timeout": params["spool_drain_timeout"],
        "routing": RoutingConfig(
            rules=rules, send_to_all=params["send_to_all_matching_destinations"]
        ),
        "commitment": commitment,
    }
