"""What happens to a message after a failure: the one place that decides ack or nack.

A DICOMweb outcome (from the source's QIDO/WADO-RS, or a STOW-RS peer) means what the failure
table says (:data:`common.status.FAILURE_TABLE`, its "export adapter" column: the README's "How
DICOMweb outcomes become C-STORE statuses"); e.g. connection failures, timeouts, 401/403,
408/425/429 and 5xx but 501 are nacked, 501, 409, 413 and other 4xx dead-lettered. The peer's
answer about the instance and the failures of a DIMSE peer mean what the peer failure table
says (:data:`common.status.PEER_FAILURE_TABLE`, the README's "How a peer's answers and DIMSE
failures are handled"): e.g. a peer's 0xA7xx and an unreachable or busy peer are nacked, its
0xA9xx/0xCxxx and a missing presentation context dead-lettered, its 0x0110 nacked until the
row's attempts are used up, then dead-lettered. The export adapter's own failures:

=====================================================  =========  ================================
Failure                                                Outcome    Why
=====================================================  =========  ================================
malformed message, bad resource name                   permanent  it can never succeed
instance not in the source (404/410, empty answer)     permanent  it was deleted, or never existed
retrieved part without usable file meta                permanent  the source stores it that way
conversion to an accepted transfer syntax impossible   permanent  no codec will appear by itself
shutting down                                          transient  another run will take it
anything unexpected (a bug)                            transient  never lose a message to a bug
=====================================================  =========  ================================

Permanent failures are acknowledged (after a dead-letter copy when configured); transient ones
are nacked so that Pub/Sub redelivers them, unless the row bounds its attempts and this was the
last one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from common.errors import DatasetError, DicomwebHttpError, ShuttingDownError
from common.status import (
    CONNECTION_FAILED,
    CREDENTIALS,
    MALFORMED_RESPONSE,
    NO_PRESENTATION_CONTEXT,
    OTHER_FAILURE,
    PEER_BUSY,
    PEER_REFUSED_ASSOCIATION,
    PEER_UNREACHABLE,
    PROCESSING_FAILED,
    REFUSED,
    REFUSED_FOR_NOW,
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


#: Labels for logs, counters and dead-letter copies of the rows that are not an HTTP status.
_LABELS = {
    CONNECTION_FAILED: "connection-failed",
    TIMED_OUT: "timed-out",
    STORE_DOWN: "store-down",
    MALFORMED_RESPONSE: "bad-response",
    CREDENTIALS: "auth",
    OTHER_FAILURE: "internal-error",
    REFUSED_FOR_NOW: "peer-out-of-resources",
    PROCESSING_FAILED: "peer-processing-failure",
    REFUSED: "peer-refused",
    PEER_UNREACHABLE: "peer-unavailable",
    PEER_BUSY: "association-rejected-transient",
    PEER_REFUSED_ASSOCIATION: "association-rejected-permanent",
    NO_PRESENTATION_CONTEXT: "no-presentation-context",
}


def _kind(rule: FailureRule, label: str, attempt: int) -> FailureKind:
    """The table's export action as a :class:`FailureKind`; a bounded nack ends on its last try."""
    last = rule.attempts is not None and attempt >= rule.attempts
    return FailureKind(rule.export is ExportAction.DEAD_LETTER or last, label)


def classify(error: BaseException, attempt: int = 1) -> FailureKind:
    """Whether ``error``, raised while exporting one notification, is permanent.

    ``attempt``: which try of this message this was (1: the first), for the rows that bound
    their attempts (:attr:`common.status.FailureRule.attempts`).
    """
    if isinstance(error, NotificationError):
        return FailureKind(True, "malformed-message")
    if isinstance(error, ShuttingDownError):
        return FailureKind(False, "shutting-down")
    if isinstance(error, InstanceNotFoundError):
        return FailureKind(True, "instance-not-found")
    if isinstance(error, PeerRefusedInstanceError):
        rule = rule_for_store_status(error.status)
        return _kind(rule, _LABELS.get(rule, "peer-refused"), attempt)
    if isinstance(error, DatasetError):  # malformed part, transcoding impossible
        return FailureKind(True, "bad-dataset")
    rule = rule_for_error(error)  # DICOMweb and DIMSE peer failures alike
    if isinstance(error, DicomwebHttpError):
        return _kind(rule, f"http-{error.status}", attempt)
    return _kind(rule, _LABELS.get(rule, "internal-error"), attempt)
