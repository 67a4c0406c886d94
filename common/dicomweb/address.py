"""DICOMweb service addresses: validation and URL building from parameters.

URLs are built from path segments and query parameters with :mod:`urllib.parse`, never by
concatenating strings, so UIDs, wildcards and multi-valued keys are always encoded correctly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

from common.errors import ConfigError

GOOGLE_HEALTHCARE_HOST = "healthcare.googleapis.com"
_GOOGLE_STORE = re.compile(
    r"^/(?P<version>v1|v1beta1|v1alpha2)/projects/[^/]+/locations/[^/]+/datasets/[^/]+"
    r"/dicomStores/[^/]+/dicomWeb$"
)
GOOGLE_STORE_EXAMPLE = (
    "https://healthcare.googleapis.com/v1/projects/PROJECT/locations/LOCATION/datasets/DATASET"
    "/dicomStores/STORE/dicomWeb"
)

Query = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class DicomwebAddress:
    """The root of a DICOMweb service (the URL that ``/studies`` is appended to)."""

    root: str

    @property
    def is_google(self) -> bool:
        """Whether this is a Google Cloud Healthcare API DICOM store."""
        return urlsplit(self.root).hostname == GOOGLE_HEALTHCARE_HOST

    def url(self, *segments: str, query: Query | None = None) -> str:
        """The URL of a resource below the root, e.g. ``url("studies", uid, "series")``."""
        path = "/".join(quote(segment, safe="") for segment in segments)
        url = f"{self.root}/{path}" if path else self.root
        if query:
            # '*' and '?' are DICOM wildcards and legal in a query: keep them unescaped.
            url = f"{url}?{urlencode(list(query), quote_via=quote, safe=',*?')}"
        return url

    def __str__(self) -> str:
        return self.root


def parse_dicomweb_address(value: str) -> DicomwebAddress:
    """Validate a DICOMweb root address and normalise it (no trailing slash).

    Raises:
        ConfigError: with a message that says what is wrong and what a good address looks like.
    """
    text = value.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{value!r} is not an http(s) URL; give the DICOMweb root, e.g. "
            "http://127.0.0.1:8042/dicom-web or " + GOOGLE_STORE_EXAMPLE
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{value!r}: a DICOMweb address takes no query or fragment")
    if parts.username or parts.password:
        raise ConfigError(
            f"{parts.scheme}://...@{parts.hostname}: put credentials in --auth options or "
            "files, not in the address"
        )
    path = parts.path.rstrip("/")
    if path.lower().endswith("/studies"):
        raise ConfigError(
            f"{value!r} ends in /studies: give the DICOMweb root without it "
            f"(e.g. {text.rstrip('/')[: -len('/studies')]})"
        )
    if parts.hostname == GOOGLE_HEALTHCARE_HOST:
        if parts.scheme != "https":
            raise ConfigError("the Cloud Healthcare API is only served over https")
        if not _GOOGLE_STORE.match(path):
            raise ConfigError(
                f"{value!r} is not a Cloud Healthcare DICOM store address; expected "
                + GOOGLE_STORE_EXAMPLE
            )
    netloc = parts.netloc
    return DicomwebAddress(f"{parts.scheme}://{netloc}{path}")


def address_from_deprecated(base: str, stow_path: str) -> DicomwebAddress:
    """Combine the reference adapter's deprecated address flags into a DICOMweb root.

    ``--dicomweb_addr`` (e.g. ``https://healthcare.googleapis.com/v1``) plus
    ``--dicomweb_stow_path`` (e.g. ``/projects/.../dicomWeb/studies``).
    """
    path = stow_path.strip()
    if not path.startswith("/"):
        path = "/" + path
    path = path.rstrip("/")
    if path.lower().endswith("/studies"):
        path = path[: -len("/studies")]
    return parse_dicomweb_address(base.strip().rstrip("/") + path)

