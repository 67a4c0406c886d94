"""What happens to a message after a failure: the one place that decides ack or nack.

A DICOMweb outcome (from the source's QIDO/WADO-RS, or a STOW-RS peer) and a peer's answer
about the instance mean what the failure table says (:data:`common.status.FAILURE_TABLE`, its
"export adapter" column: the README's "How DICOMweb outcomes become C-STORE statuses"); e.g.
connection failures, timeouts, 401/403, 408/425/429 and 5xx but 501 are nacked, 501, 409,
413 and other 4xx dead-lettered, a peer's 0xA7xx nacked and its other failure statuses
dead-lettered. The export adapter's own failures:

=====================================================  =========  ================================
Failure                                                Outcome    Why
=====================================================  =========  ================================
malformed message, bad resource name                   permanent  it can never succeed
instance not in the source (404/410, empty answer)     permanent  it was deleted, or never existed
retrieved part without usable file meta                permanent  the source stores it that way
peer accepted no presentation context for the class    permanent  the peer cannot take this class
conversion to an accepted transfer syntax impossible   permanent  no codec will appear by itself
peer down, association aborted/refused, timeouts       transient  it may come back
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
    DatasetError,
    DicomwebHttpError,
    NoAcceptableContextError,
    PeerRejectedError,
    PeerUnavailableError,
    ShuttingDownError,
)
from common.status import (
    CONNECTION_FAILED,
    CREDENTIALS,
    MALFORMED_RESPONSE,
    OTHER_FAILURE,
    STORE_DOWN,
    TIMED_OUT,
    ExportAction,
    FailureRule,
    rule_for_error,
    rule_for_store_status,
)
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


#: Labels for logs and counters of the rows that are not an HTTP status.
_LABELS = {
    CONNECTION_FAILED: "connection-failed",
    TIMED_OUT: "timed-out",
    STORE_DOWN: "store-down",
    MALFORMED_RESPONSE: "bad-response",
    CREDENTIALS: "auth",
    OTHER_FAILURE: "internal-error",
}


def _kind(rule: FailureRule, label: str) -> FailureKind:
    """The failure table's export action as a :class:`FailureKind`."""
    return FailureKind(rule.export is ExportAction.DEAD_LETTER, label)


def classify(error: BaseException) -> FailureKind:
    """Whether ``error``, raised while exporting one notification, is permanent."""
    if isinstance(error, NotificationError):
        return FailureKind(True, "malformed-message")
    if isinstance(error, ShuttingDownError):
        return FailureKind(False, "shutting-down")
    if isinstance(error, InstanceNotFoundError):
        return FailureKind(True, "instance-not-found")
    if isinstance(error, PeerRefusedInstanceError):
        rule = rule_for_store_status(error.status)
        permanent = rule.export is ExportAction.DEAD_LETTER
        return _kind(rule, "peer-refused" if permanent else "peer-out-of-resources")
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
    rule = rule_for_error(error)
    if isinstance(error, DicomwebHttpError):
        return _kind(rule, f"http-{error.status}")
    return _kind(rule, _LABELS.get(rule, "internal-error"))
