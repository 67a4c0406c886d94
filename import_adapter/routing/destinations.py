"""Where instances go: a DICOMweb store or a DIMSE peer, each with a stable spool key.

The key names the destination's queue folder in the spool; it is derived from the destination
itself (not from its position in the config), so a restart with a reordered config still finds
each queue. :meth:`describe` is what the queue folder records about its destination, and
:func:`destination_from_description` reads it back, so instances queued for a destination that
has since left the config are still delivered after a restart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from common.dicomweb.address import DicomwebAddress, parse_dicomweb_address
from common.dimse.aet_dictionary import peer_from_entry
from common.dimse.sender import PeerAddress
from common.errors import ConfigError


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class DicomwebDestination:
    """A DICOMweb store (STOW-RS)."""

    address: DicomwebAddress

    @property
    def key(self) -> str:
        """The spool queue name of this destination."""
        return f"dicomweb-{_digest(self.address.root)}"

    def describe(self) -> dict[str, Any]:
        """A JSON description of the destination (no credentials: roots carry none)."""
        return {"dicomweb_destination": self.address.root}

    def __str__(self) -> str:
        return self.address.root


@dataclass(frozen=True)
class DimseDestination:
    """A DIMSE storage SCP (C-STORE)."""

    peer: PeerAddress

    @property
    def key(self) -> str:
        """The spool queue name of this destination."""
        return f"dimse-{_digest(str(self.peer))}"

    def describe(self) -> dict[str, Any]:
        """A JSON description in the destination config's format."""
        peer = self.peer
        entry: dict[str, Any] = {"name": peer.ae_title, "host": peer.host, "port": peer.port}
        if peer.tls is not None:
            entry.update(peer.tls.describe())
        return {"dicom_destination": entry}

    def __str__(self) -> str:
        return str(self.peer)


Destination = DicomwebDestination | DimseDestination


def dimse_destination(value: Any, where: str) -> DimseDestination:
    """A DIMSE destination from ``{"name", "host", "port"}`` (plus optional TLS keys).

    Raises:
        ConfigError: a key is missing or invalid; the message starts with ``where``.
    """
    return DimseDestination(peer_from_entry(value, f"{where}: dicom_destination"))


def dicomweb_destination(value: Any, where: str) -> DicomwebDestination:
    """A DICOMweb destination from its root URL.

    Raises:
        ConfigError: not a string or not a valid DICOMweb root; the message starts with ``where``.
    """
    if not isinstance(value, str):
        raise ConfigError(f"{where}: dicomweb_destination must be a URL string")
    try:
        return DicomwebDestination(parse_dicomweb_address(value))
    except ConfigError as exc:
        raise ConfigError(f"{where}: dicomweb_destination: {exc}") from exc


def destination_from_description(data: Any, where: str) -> Destination:
    """The destination a :meth:`describe` output stands for.

    Raises:
        ConfigError: the description is neither form.
    """
    if isinstance(data, dict) and "dicomweb_destination" in data:
        return dicomweb_destination(data["dicomweb_destination"], where)
    if isinstance(data, dict) and "dicom_destination" in data:
        return dimse_destination(data["dicom_destination"], where)
    raise ConfigError(f"{where}: not a destination description")
