"""Where an instance is fetched from: the source address plus the notification's path (pure).

``--dicomweb_addr`` is either

- the Google API base (``https://healthcare.googleapis.com/v1``): the notification's whole
  resource name is appended, as the reference adapter does; or
- a DICOMweb root (``.../dicomWeb``, ``http://orthanc:8042/dicom-web``, ...): only the part
  from ``studies/`` on is appended, so the same notification works against any server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

from common.dicomweb.address import DicomwebAddress, parse_dicomweb_address
from common.errors import ConfigError
from export_adapter.errors import NotificationError
from export_adapter.notification import NotifiedInstance

#: The Google API base the reference adapter uses by default.
GOOGLE_API_BASE = "https://healthcare.googleapis.com/v1"
#: An API base: the path is only an API version (``/v1``, ``/v1beta1``).
_API_VERSION_PATH = re.compile(r"^/v[0-9]+((alpha|beta)[0-9]*)?$")


class SourceMode(Enum):
    """How a notification's path is appended to the source address."""

    RESOURCE_NAME = "resource-name"
    DICOMWEB_ROOT = "dicomweb-root"


@dataclass(frozen=True)
class SourceLocator:
    """The source DICOMweb service and how instance paths are formed below it."""

    address: DicomwebAddress
    mode: SourceMode

    def segments(self, instance: NotifiedInstance) -> tuple[str, ...]:
        """The path segments below :attr:`address` that name ``instance``.

        Raises:
            NotificationError: a bare path cannot be resolved against an API base.
        """
        if self.mode is SourceMode.DICOMWEB_ROOT:
            return instance.dicomweb_segments
        if not instance.store_path:
            raise NotificationError(
                "a bare /studies/... path needs --dicomweb_addr to be a DICOMweb root, "
                f"not the API base {self.address.root}"
            )
        return instance.resource_segments

    def url(self, instance: NotifiedInstance) -> str:
        """The instance's WADO-RS URL (for logs; it carries UIDs, no patient data)."""
        return self.address.url(*self.segments(instance))


def parse_source_address(value: str) -> SourceLocator:
    """Validate ``--dicomweb_addr`` and decide how notification paths are appended.

    Raises:
        ConfigError: the value is not an http(s) URL or not a usable DICOMweb address.
    """
    text = value.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme in ("http", "https") and parts.hostname and _API_VERSION_PATH.match(
        parts.path
    ):
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ConfigError(f"{value!r}: an API base takes no query, fragment or credentials")
        return SourceLocator(DicomwebAddress(text), SourceMode.RESOURCE_NAME)
    try:
        address = parse_dicomweb_address(text)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc} (or give the API base {GOOGLE_API_BASE} to append whole resource names)"
        ) from exc
    return SourceLocator(address, SourceMode.DICOMWEB_ROOT)
