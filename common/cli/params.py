"""click parameter types shared by the adapters' command lines."""

from __future__ import annotations

from typing import Any

import click

from common.dicomweb.address import DicomwebAddress, parse_dicomweb_address
from common.dimse.ae_title import validate_ae_title
from common.errors import ConfigError


class AeTitleType(click.ParamType):  # type: ignore[type-arg]
    """An AE title (1-16 characters, no backslash or control characters)."""

    name = "AE_TITLE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """Validate and strip an AE title."""
        try:
            return validate_ae_title(str(value))
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class DicomwebAddressType(click.ParamType):  # type: ignore[type-arg]
    """A DICOMweb root URL (validated; Google store addresses checked for their shape)."""

    name = "URL"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> DicomwebAddress:
        """Parse and validate the address."""
        if isinstance(value, DicomwebAddress):
            return value
        try:
            return parse_dicomweb_address(str(value))
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


AE_TITLE = AeTitleType()
DICOMWEB_ADDRESS = DicomwebAddressType()
PORT = click.IntRange(1, 65535)


def env_name(option: str) -> str:
    """The environment variable for an option: ``--dimse_aet`` -> ``DICOM_ADAPTER_DIMSE_AET``."""
    return "DICOM_ADAPTER_" + option.lstrip("-").replace("-", "_").upper()


def spellings(name: str) -> tuple[str, str]:
    """Both spellings of a reference-adapter flag: ``--dimse_aet`` and ``--dimse-aet``."""
    return f"--{name}", f"--{name.replace('_', '-')}"
