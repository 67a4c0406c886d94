"""What happens to a message after a failure: the one place that decides ack or nack.

=====================================================  =========  ================================
Failure                                                Outcome    Why
=====================================================  =========  ================================
malformed message, bad resource name                   permanent  it can never succeed
instance not in the source (404/410, empty answer)     permanent  it was deleted, or never existed
retrieved part without usable file meta                permanent  the source stores it that way
peer answered a failure status (not 0xA7xx)            permanent  the peer refuses this instance
peer accepted no presentation context for the class    permanent  the peer cannot take this class
conversion to an accepted transfer syntax impossible   permanent  no codec will appear by itself
peer answered 0xA7xx (out of resources)                transient  it may have room later
peer down, association aborted/refused, timeouts       transient  it may come back
DICOMweb connection errors, timeouts, 408/425/429/5xx  transient  the server may recover
DICOMweb 401/403, credentials unavailable              transient  a configuration fix redelivers
other DICOMweb 4xx                                     permanent  the request itself is wrong
shutting down                                          transient  another run will take it
anything unexpected (a bug)                            transient  never lose a message to a bug
=====================================================  =========  ================================

Permanent failures are acknowledged (after a dead-letter copy when configured); transient ones
are nacked so that Pub/Sub redelivers them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from common.errors import (
    AssociationRejectedError,
    AuthError,
    DatasetError,
    DicomwebError,
    DicomwebHttpError,
    DicomwebResponseError,
    NoAcceptableContextError,
    PeerRejectedError,
    PeerUnavailableError,
    ShuttingDownError,
)
from common.status import DimseStatus
from export_adapter.errors import (
    InstanceNotFoundError,
    NotificationError,
    PeerRefusedInstanceError,
)


class Disposition(Enum):
    """What to tell Pub/Sub about a message."""

    ACK = "ack"
    NACK = "nack"


@dataclass(frozen=True)
class FailureKind:
    """How a failure is handled.

    Attributes:
        permanent: trying again cannot help (ack, dead-letter).
        label: a short name for logs and counters.
    """

    permanent: bool
    label: str


def is_transient_status(status: DimseStatus) -> bool:
    """Whether a failure status from the peer may turn into success later (0xA7xx)."""
    return (status.code & 0xFF00) == 0xA700


def classify(error: BaseException) -> FailureKind:
    """Whether ``error``, raised while exporting one notification, is permanent."""
    if isinstance(error, NotificationError):
        return FailureKind(True, "malformed-message")
    if isinstance(error, ShuttingDownError):
        return FailureKind(False, "shutting-down")
    if isinstance(error, InstanceNotFoundError):
        return FailureKind(True, "instance-not-found")
    if isinstance(error, PeerRefusedInstanceError):
        if is_transient_status(error.status):
            return FailureKind(False, "peer-out-of-resources")
        return FailureKind(True, "peer-refused")
    if isinstance(error, DatasetError):  # malformed part, transcoding impossible
        return FailureKind(True, "bad-dataset")
    if isinstance(error, NoAcceptableContextError):
        return FailureKind(True, "no-presentation-context")
    if isinstance(error, AssociationRejectedError):
        # A refused association is usually configuration (AE titles, limits): keep the message
        # whatever the rejection's result, so nothing is lost to a config error.
        kind = "permanent" if error.permanent else "transient"
        return FailureKind(False, f"association-rejected-{kind}")
    if isinstance(error, PeerRejectedError):
        return FailureKind(False, "association-rejected")
    if isinstance(error, PeerUnavailableError):
        return FailureKind(False, "peer-unavailable")
    if isinstance(error, AuthError):
        return FailureKind(False, "auth")
    if isinstance(error, DicomwebHttpError):
        if error.transient or error.status >= 500 or error.status in (401, 403):
            return FailureKind(False, f"http-{error.status}")
        return FailureKind(True, f"http-{error.status}")
    if isinstance(error, DicomwebResponseError):  # e.g. a body cut off mid-stream
        return FailureKind(False, "bad-response")
    if isinstance(error, DicomwebError):
        return FailureKind(not error.transient, "dicomweb")
    return FailureKind(False, "internal-error")
