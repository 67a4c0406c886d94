"""The import command's de-identification and transcoding flags -> :class:`TransformConfig`.

Kept apart from :mod:`import_adapter.cli` so the flags, their checks and their tests live
together. Reference spellings: ``--redact_remove_list``, ``--redact_keep_list``,
``--redact_filter_profile``, ``--store_compress_to_transfer_syntax``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from common.cli.options import option
from common.dicom.deidentify import FilterProfile, RedactionConfig
from common.dicom.transcode import TARGET_SYNTAXES, LossySettings, TranscodeSettings
from common.errors import ConfigError
from import_adapter.transform import TransformConfig

F = TypeVar("F", bound=Callable[..., Any])

_SYNTAXES = ", ".join(f"{uid} ({name})" for uid, name in TARGET_SYNTAXES.items())


def transform_options(func: F) -> F:
    """Add the de-identification and transcoding flags to a click command."""
    decorators = [
        option(
            "redact_remove_list",
            help="De-identify: empty these attributes (comma-separated keywords or 8-hex tags) "
            "wherever they occur. At most one --redact_* flag.",
        ),
        option(
            "redact_keep_list",
            help="De-identify: empty every attribute but these (and the pixel description).",
        ),
        option(
            "redact_filter_profile",
            type=click.Choice([p.value for p in FilterProfile]),
            help="De-identify with a profile: CHC_BASIC (the reference adapter's) or the "
            "PS3.15 Basic Application Level Confidentiality Profile.",
        ),
        option(
            "store_compress_to_transfer_syntax",
            metavar="UID",
            help=f"Transcode received instances to this transfer syntax before storing: "
            f"{_SYNTAXES}.",
        ),
        option(
            "transcode_strict",
            is_flag=True,
            default=False,
            help="Fail the C-STORE (0xC000) when an instance cannot be transcoded, instead of "
            "storing it unchanged with warning 0xB000.",
        ),
        option(
            "transcode_jpeg_quality",
            type=click.IntRange(1, 100),
            default=LossySettings.jpeg_quality,
            show_default=True,
            help="JPEG Baseline quality when transcoding to it.",
        ),
        option(
            "transcode_j2k_ratio",
            type=click.FloatRange(1, min_open=False),
            default=LossySettings.j2k_compression_ratio,
            show_default=True,
            help="JPEG 2000 (lossy) compression ratio when transcoding to it.",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def transform_config(params: dict[str, Any]) -> TransformConfig:
    """The :class:`TransformConfig` the parsed flags describe.

    Raises:
        click.UsageError: more than one ``--redact_*`` flag.
        click.BadParameter: an unknown tag or an unsupported transfer syntax.
    """
    remove, keep = params["redact_remove_list"], params["redact_keep_list"]
    profile = params["redact_filter_profile"]
    if sum(x is not None for x in (remove, keep, profile)) > 1:
        raise click.UsageError(
            "--redact_remove_list, --redact_keep_list and --redact_filter_profile are "
            "mutually exclusive"
        )
    try:
        redaction = RedactionConfig.from_options(remove, keep, profile)
    except ConfigError as exc:
        hint = "--redact_remove_list" if remove is not None else "--redact_keep_list"
        raise click.BadParameter(str(exc), param_hint=hint) from exc
    transcode = None
    if params["store_compress_to_transfer_syntax"]:
        try:
            transcode = TranscodeSettings(
                target=params["store_compress_to_transfer_syntax"].strip(),
                lossy=LossySettings(
                    jpeg_quality=params["transcode_jpeg_quality"],
                    j2k_compression_ratio=params["transcode_j2k_ratio"],
                ),
                strict=params["transcode_strict"],
            )
        except ConfigError as exc:
            raise click.BadParameter(
                str(exc), param_hint="--store_compress_to_transfer_syntax"
            ) from exc
    return TransformConfig(redaction=redaction, transcode=transcode)
