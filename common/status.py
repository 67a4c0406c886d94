"""DIMSE status codes, and the one failure table that says what a DICOMweb outcome means.

Every handler that answers a DIMSE request with a failure gets its status from here, so the
same fault gives the same status everywhere (PS3.4 Annex B/C, PS3.7 Annex C).

The failure table (:data:`FAILURE_TABLE`) is data: per DICOMweb outcome (each HTTP status,
and connection failure, timeout, the store known down, an unreadable answer, credentials), the
C-STORE status, whether it is transient, whether a request retries it at once, what the durable
spool does (:class:`SpoolAction`) and what the export adapter does (:class:`ExportAction`). The
C-STORE and Q/R status functions below, :mod:`common.retry`, :mod:`import_adapter.spool.outcome`
and :mod:`export_adapter.outcome` all read it, and the README's table is rendered from it by
:func:`failure_table_markdown`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, IntEnum

from common.errors import (
    AssociationRejectedError,
    AuthError,
    CommitmentRequestError,
    DicomwebConnectionError,
    DicomwebError,
    DicomwebHttpError,
    DicomwebResponseError,
    DicomwebTimeoutError,
    DimseError,
    InvalidIdentifierError,
    MalformedDatasetError,
    NoAcceptableContextError,
    PeerRejectedError,
    RoutingError,
    ShuttingDownError,
    SpoolError,
    SpoolFullError,
    StoreUnavailableError,
    TranscodeError,
    UidMismatchError,
)


class Status(IntEnum):
    """Named DIMSE status codes used by this adapter."""

    SUCCESS = 0x0000
    # General warnings (PS3.7 Annex C)
    OPTIONAL_ATTRIBUTES_NOT_SUPPORTED = 0x0001
    ATTRIBUTE_LIST_ERROR = 0x0107
    ATTRIBUTE_VALUE_OUT_OF_RANGE = 0x0116
    PENDING = 0xFF00
    PENDING_WITH_WARNINGS = 0xFF01
    CANCEL = 0xFE00
    # General statuses (PS3.7 Annex C)
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    INVALID_OBJECT_INSTANCE = 0x0117
    NO_SUCH_SOP_CLASS = 0x0118
    CLASS_INSTANCE_CONFLICT = 0x0119
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NOT_AUTHORIZED = 0x0124
    # Storage service (PS3.4 B.2.3)
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006
    DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
    # Query/Retrieve service (PS3.4 C.4)
    OUT_OF_RESOURCES_MATCHES = 0xA701
    OUT_OF_RESOURCES_SUB_OPERATIONS = 0xA702
    MOVE_DESTINATION_UNKNOWN = 0xA801
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    UNABLE_TO_PROCESS = 0xC000
    SUB_OPERATIONS_COMPLETE_WITH_FAILURES = 0xB000
    # DIMSE-N statuses and Storage Commitment failure reasons (PS3.7 C.4, PS3.4 J.3.2)
    INVALID_ARGUMENT_VALUE = 0x0115
    MISSING_ATTRIBUTE = 0x0120
    NO_SUCH_ACTION_TYPE = 0x0123
    DUPLICATE_TRANSACTION_UID = 0x0131
    RESOURCE_LIMITATION = 0x0213


#: The code of a status range such as "0xA7xx" is the code with its low byte masked off; a
#: class of statuses such as "0xBxxx" or "0xCxxx" keeps only the high nibble (PS3.7 C.1).
STATUS_RANGE_MASK = 0xFF00
STATUS_CLASS_MASK = 0xF000
#: The general warnings of PS3.7 Annex C that are not in the 0xBxxx class.
_GENERAL_WARNINGS = frozenset({
    Status.OPTIONAL_ATTRIBUTES_NOT_SUPPORTED,
    Status.ATTRIBUTE_LIST_ERROR,
    Status.ATTRIBUTE_VALUE_OUT_OF_RANGE,
})

#: The longest Error Comment (LO) a status dataset may carry.
_MAX_COMMENT = 64


def safe_error_comment(text: str) -> str:
    """``text`` as an Error Comment (0000,0902) may carry it, for either engine to send.

    LO (PS3.5 6.2): at most 64 characters of the default repertoire, no backslash, no control
    characters. A comment often quotes the peer (a UID, a destination AE title, a store's
    answer): anything else than printable ASCII becomes ``?`` and a backslash ``/``, so the
    peer's bytes are never sent back raw.
    """
    text = text[:_MAX_COMMENT]
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    return "".join(
        "/" if char == "\\" else char if char.isascii() and char.isprintable() else "?"
        for char in text
    )


@dataclass(frozen=True)
class DimseStatus:
    """A DIMSE status with an optional human-readable Error Comment (0000,0902)."""

    code: int
    comment: str = ""

    @property
    def is_success(self) -> bool:
        """True for Success (0x0000)."""
        return self.code == Status.SUCCESS

    @property
    def is_warning(self) -> bool:
        """True for a warning status (0x0001, 0x0107, 0x0116, 0xBxxx)."""
        return self.code in _GENERAL_WARNINGS or (
            self.code & STATUS_CLASS_MASK
        ) == Status.COERCION_OF_DATA_ELEMENTS

    @property
    def is_failure(self) -> bool:
        """True for anything that is neither success, warning, pending nor cancel."""
        return not (
            self.is_success
            or self.is_warning
            or self.code in (Status.PENDING, Status.PENDING_WITH_WARNINGS, Status.CANCEL)
        )

    def __str__(self) -> str:
        label = f"0x{self.code:04X}"
        return f"{label} ({self.comment})" if self.comment else label


SUCCESS = DimseStatus(Status.SUCCESS)
#: What a DIMSE request that no service of the adapter handles gets.
NOT_SERVED = DimseStatus(Status.UNABLE_TO_PROCESS, "service not offered")
#: A C-STORE answered before its upload finished (without ``--auto_ack_cstore``).
UPLOAD_NOT_CONFIRMED = DimseStatus(Status.PROCESSING_FAILURE, "Upload not confirmed in time")


class SpoolAction(Enum):
    """What the import adapter's durable spool does with an upload that ended so."""

    #: stored: the entry is removed.
    DONE = "done"
    #: the entry is tried again after a capped, growing delay, up to
    #: ``--persistent_file_upload_retry_amount`` times, then dead-lettered.
    RETRY = "retry with backoff"
    #: the store is over its quota or load: every upload to the destination waits (its
    #: ``Retry-After``), the upload concurrency is halved; the entry keeps its retries.
    PAUSE = "pause the destination"
    #: the destination cannot take anything now (network, credentials, known down): it is paused
    #: with capped backoff and the entry kept, without using up its retries.
    UNREACHABLE = "treat as unreachable"
    #: trying again cannot help: the entry goes to the dead-letter folder (or, when the SCU
    #: waits for it, the failure is its answer).
    DEAD_LETTER = "dead-letter"


class ExportAction(Enum):
    """What the export adapter tells Pub/Sub about a message whose export ended so."""

    ACK = "ack"
    #: kept for another try: Pub/Sub redelivers the message.
    NACK = "nack for redelivery"
    #: trying again cannot help: acknowledged after a copy to ``--dead_letter_topic``.
    DEAD_LETTER = "dead-letter"


class SubOperationAction(Enum):
    """What a C-MOVE/C-GET makes of a C-STORE sub-operation that ended so (PS3.4 C.4.2.1.4)."""

    #: counted as completed.
    COMPLETED = "completed"
    #: stored, counted as a warning (the final status is then 0xB000).
    WARNING = "warning"
    #: counted as failed (its UID in the Failed SOP Instance UID List, for the SCU to ask
    #: again); the next instance is sent.
    FAILED = "failed, next one sent"
    #: the destination is gone: this one and every one left are counted as failed, without
    #: sending them.
    LOST = "failed with all the rest"


@dataclass(frozen=True)
class FailureRule:
    """One row of a failure table: what one outcome means on every path.

    The rows of :data:`FAILURE_TABLE` are DICOMweb outcomes; those of
    :data:`PEER_FAILURE_TABLE` are a peer's answer about one instance and the failures of a
    DIMSE peer we send to.

    Attributes:
        outcome: the outcome, as the README names it.
        status: the DIMSE status a C-STORE gets for it (C-FIND/C-MOVE/C-GET map it on:
            Out of Resources and Not Authorized keep their meaning, the rest is 0xC000).
        transient: a later try of the same request may succeed (nothing is wrong with the
            instance or the request itself).
        retried: retried at once, with capped backoff, within the request's retry budget
            (``--stow_retry_budget`` for a C-STORE, ``--dicomweb_retry_budget`` for the
            export adapter's requests) before the outcome is final. For a DIMSE peer (no
            retry loop of its own): an SCU waiting for the spool's upload keeps waiting while
            the spool tries again; when off, a destination-wide outcome (*treat as
            unreachable*) answers the waiting SCU at once.
        spool: what the durable spool does with the upload.
        export: what the export adapter does with the message.
        attempts: at most this many attempts in all, on the paths that try again (the spool's
            *retry with backoff*, the export adapter's *nack*), then the failure is final
            (dead-letter); None: each path's own bound
            (``--persistent_file_upload_retry_amount``; Pub/Sub's redelivery).
        sub_operation: what a C-MOVE/C-GET sub-operation that ended so counts as (None: not
            a sub-operation's outcome).
        http: the HTTP statuses of the row.
        http_class: 4 or 5 for the row taking the 4xx or 5xx statuses no other row names.
        comment: the Error Comment, ``{what}`` standing for the request ("store", "search");
            empty: the error's own text.
    """

    outcome: str
    status: Status
    transient: bool
    retried: bool
    spool: SpoolAction
    export: ExportAction
    http: frozenset[int] = frozenset()
    http_class: int | None = None
    comment: str = ""
    attempts: int | None = None
    sub_operation: SubOperationAction | None = None


_RETRY, _PAUSE, _UNREACHABLE, _DEAD = (
    SpoolAction.RETRY, SpoolAction.PAUSE, SpoolAction.UNREACHABLE, SpoolAction.DEAD_LETTER
)
_NACK, _DEAD_LETTER = ExportAction.NACK, ExportAction.DEAD_LETTER

# The rows, in the README's order. Where the three paths used to disagree, the choice and its
# reason are given beside the row. References: PS3.18 8.7.3 (the HTTP status codes a DICOMweb
# origin server answers, 503 meaning "busy") and Google's "Request latency and error handling
# best practices" for the Cloud Healthcare API (a 4xx about the request is a final state;
# 408, 429 and 5xx server errors are retried with exponential backoff, honouring Retry-After).
#: 401/403 say the credentials or their permissions are wrong, for every instance alike: a
#: configuration fix heals them, the instance is not at fault. The spool used to dead-letter
#: (every queued instance, within seconds) and the export adapter nacked: both now keep the
#: work, the spool pausing the destination as for credentials it cannot obtain. Not retried at
#: once: a few seconds do not fix permissions.
UNAUTHORIZED = FailureRule(
    "401 Unauthorized (after one credential refresh), 403 Forbidden", Status.NOT_AUTHORIZED,
    True, False, _UNREACHABLE, _NACK,
    http=frozenset({401, 403}),
)
CONFLICT = FailureRule(
    "409 Conflict (unless an earlier try of ours may have stored it: then looked up)",
    Status.DUPLICATE_SOP_INSTANCE, False, False, _DEAD, _DEAD_LETTER, http=frozenset({409}),
)
TOO_LARGE = FailureRule(
    "413 Payload Too Large", Status.OUT_OF_RESOURCES, False, False, _DEAD, _DEAD_LETTER,
    http=frozenset({413}),
)
#: The store's quota or load (PS3.18: 503 Busy): the store as a whole needs time, so the spool
#: slows down for the whole destination instead of retrying entry by entry.
OVERLOADED = FailureRule(
    "429 Too Many Requests, 503 Service Unavailable", Status.OUT_OF_RESOURCES, True, True,
    _PAUSE, _NACK, http=frozenset({429, 503}),
)
#: 501 says the server does not support what was asked (RFC 9110 15.6.2): it will not start
#: supporting it between two tries. The C-STORE path already did not retry it; the spool
#: retried it (any >= 500) and the export adapter nacked it: now final everywhere.
NOT_IMPLEMENTED = FailureRule(
    "501 Not Implemented", Status.PROCESSING_FAILURE, False, False, _DEAD, _DEAD_LETTER,
    http=frozenset({501}),
)
#: The store is out of space: Out of Resources, as 413, but a state of the store that frees
#: up, so transient like the other 5xx (the C-STORE path did not retry it; the spool and the
#: export adapter did).
INSUFFICIENT_STORAGE = FailureRule(
    "507 Insufficient Storage", Status.OUT_OF_RESOURCES, True, True, _RETRY, _NACK,
    http=frozenset({507}),
)
#: A server error or a request that timed out on the server's side may go through next time.
#: "Other 5xx" (505, 508, a proxy's 520...) used to be final for a C-STORE while the spool
#: and the export adapter retried them: now transient everywhere, as 500/502/504.
SERVER_ERROR = FailureRule(
    "408 Request Timeout, 425 Too Early, 500, 502, 504, other 5xx", Status.PROCESSING_FAILURE,
    True, True, _RETRY, _NACK, http=frozenset({408, 425, 500, 502, 504}), http_class=5,
)
#: The request itself is wrong for this server: final. ``--http_error_codes_to_retry`` lets
#: the spool retry some of them (and 409, 413) anyway.
BAD_REQUEST = FailureRule(
    "other 4xx (400, 404, 415...)", Status.CANNOT_UNDERSTAND, False, False, _DEAD, _DEAD_LETTER,
    http_class=4,
)
CONNECTION_FAILED = FailureRule(
    "connection refused/reset, DNS failure, TLS handshake or certificate failure",
    Status.PROCESSING_FAILURE, True, True, _UNREACHABLE, _NACK,
    comment="DICOMweb {what} unreachable",
)
TIMED_OUT = FailureRule(
    "connect or read timeout", Status.PROCESSING_FAILURE, True, True, _UNREACHABLE, _NACK,
    comment="DICOMweb {what} timed out",
)
#: Known down: nothing is sent until a probe is answered, so retrying at once is pointless
#: (retry loops end on it); Out of Resources tells an SCU to try again later.
STORE_DOWN = FailureRule(
    "store known down (`--store_down_after_failures` connection failures/timeouts in a row): "
    "refused without a request until a probe is answered",
    Status.OUT_OF_RESOURCES, True, False, _UNREACHABLE, _NACK,
    comment="DICOMweb store unreachable, retry later",
)
#: A 2xx whose body we cannot read: cut off, not JSON or multipart. Most often a front end or a
#: broken stream, so transient (the spool retried it and the export adapter nacked it; kept).
#: Not retried at once by a C-STORE: the store may have stored the instance, and a resend
#: would meet a 409 the SCU would be answered with.
MALFORMED_RESPONSE = FailureRule(
    "2xx with a body we cannot read (not a STOW/QIDO/WADO response, cut off)",
    Status.PROCESSING_FAILURE, True, False, _RETRY, _NACK,
)
#: Credentials (or the proxy's 407): a configuration or metadata-server matter, as 401/403.
CREDENTIALS = FailureRule(
    "credentials cannot be obtained/refreshed, proxy answered 407", Status.NOT_AUTHORIZED,
    True, False, _UNREACHABLE, _NACK, comment="DICOMweb credentials unavailable",
)
#: Anything else (a local fault while sending, a bug): never lose work to it. The export
#: adapter used to dead-letter a DICOMweb error of no known kind; now it nacks, as for a bug.
OTHER_FAILURE = FailureRule(
    "any other failure (a local fault while sending, a bug)", Status.PROCESSING_FAILURE, True,
    False, _RETRY, _NACK,
)

#: The failure table: every DICOMweb outcome, what it means for a C-STORE, the spool and the
#: export adapter. :func:`rule_for_error` and :func:`rule_for_http` pick a row; the README's
#: table is :func:`failure_table_markdown`. A store's answer about each instance is a row of
#: :data:`PEER_FAILURE_TABLE`.
FAILURE_TABLE: tuple[FailureRule, ...] = (
    UNAUTHORIZED,
    CONFLICT,
    TOO_LARGE,
    OVERLOADED,
    NOT_IMPLEMENTED,
    INSUFFICIENT_STORAGE,
    SERVER_ERROR,
    BAD_REQUEST,
    CONNECTION_FAILED,
    TIMED_OUT,
    STORE_DOWN,
    MALFORMED_RESPONSE,
    CREDENTIALS,
    OTHER_FAILURE,
)


# -- The peer failure table ------------------------------------------------------------------
# A peer's answer about one instance (a DIMSE peer's C-STORE response status, or the
# FailureReason/WarningReason of a STOW-RS response, which uses the Storage statuses of
# PS3.4 B.2.3), then what can go wrong with a DIMSE peer we send to (PS3.8). Same shape as the
# failure table; the consumers: the spool's destination queues (STOW-RS and C-STORE uploads),
# the export adapter (its C-STORE or STOW-RS peer), C-MOVE/C-GET sub-operations. The status is
# what the SCU waiting for the spool's upload is answered (a peer's answer is passed on as it
# came; the row's status names its range).

#: How many attempts in all a 0x0110 Processing Failure gets (see :data:`PROCESSING_FAILED`).
PROCESSING_FAILURE_ATTEMPTS = 3

_COMPLETED, _WARNING, _FAILED, _LOST = (
    SubOperationAction.COMPLETED, SubOperationAction.WARNING, SubOperationAction.FAILED,
    SubOperationAction.LOST,
)

STORED = FailureRule(
    "0x0000 Success (STOW-RS: the instance in ReferencedSOPSequence)", Status.SUCCESS, False,
    False, SpoolAction.DONE, ExportAction.ACK, sub_operation=_COMPLETED,
)
#: A warning says the instance *was* stored (PS3.4 B.2.3: coerced, not matching its SOP class,
#: elements discarded): done on every path, the warning passed on to the SCU.
STORED_WITH_WARNING = FailureRule(
    "warning 0xB000 Coercion of Data Elements, 0xB006 Elements Discarded, 0xB007 Data Set does "
    "not match SOP Class (any 0xBxxx, 0x0001, 0x0107, 0x0116; STOW-RS: a WarningReason)",
    Status.COERCION_OF_DATA_ELEMENTS, False, False, SpoolAction.DONE, ExportAction.ACK,
    sub_operation=_WARNING,
)
#: 0xA7xx Refused: Out of Resources (PS3.4 B.2.3) is a state of the receiver (disk, licence,
#: load), not a verdict on the instance: tried again later on every path. A C-MOVE counts the
#: sub-operation failed and goes on (its SCU may ask again for the failed UIDs).
REFUSED_FOR_NOW = FailureRule(
    "failure 0xA7xx Refused: Out of Resources", Status.OUT_OF_RESOURCES, True, False, _RETRY,
    _NACK, sub_operation=_FAILED,
)
#: 0x0110 Processing Failure is PS3.7 Annex C's general failure: it says nothing about why. PACSs
#: answer it for a fault of their own that passes (a database or file system hiccup) as well
#: as for an instance they will never take, so neither "retry" nor "give up" fits alone: a few
#: attempts (:data:`PROCESSING_FAILURE_ATTEMPTS`) let the passing fault heal without retrying a
#: poison instance forever. A STOW-RS failure without a FailureReason, or an instance missing
#: from the answer, is 0x0110 too and treated alike. Both paths used to dead-letter it at once.
PROCESSING_FAILED = FailureRule(
    "failure 0x0110 Processing Failure (STOW-RS: also a failure without a reason, or the "
    "instance missing from the answer)", Status.PROCESSING_FAILURE, True, False, _RETRY, _NACK,
    attempts=PROCESSING_FAILURE_ATTEMPTS, sub_operation=_FAILED,
)
#: 0xA9xx Data Set does not match SOP Class and 0xCxxx Cannot Understand (PS3.4 B.2.3) are
#: verdicts on the instance: the same bytes get the same answer. So are the other failures
#: (PS3.7 Annex C: 0x0111 duplicate, 0x0117 invalid instance, 0x0122 SOP class not supported,
#: 0x0124 not authorized for this instance): dead-lettered at once.
REFUSED = FailureRule(
    "failure 0xA9xx Data Set does not match SOP Class, 0xCxxx Cannot Understand, any other "
    "failure (0x0111, 0x0122, 0x0124...)", Status.CANNOT_UNDERSTAND, False, False, _DEAD,
    _DEAD_LETTER, sub_operation=_FAILED,
)
#: A DIMSE peer that cannot be reached, or dropped the association (PS3.8 7.3: an A-ABORT, a
#: closed connection or a timeout says nothing about the instance): the destination waits with
#: capped backoff and is probed, the entry keeps its retries, an SCU waiting for the upload
#: keeps waiting; a C-MOVE/C-GET has lost its destination. As a DICOMweb connection failure.
PEER_UNREACHABLE = FailureRule(
    "DIMSE peer unreachable: connection refused/reset, connect/association/DIMSE timeout, "
    "association aborted or closed (A-ABORT)", Status.PROCESSING_FAILURE, True, True,
    _UNREACHABLE, _NACK, comment="DIMSE destination unreachable", sub_operation=_LOST,
)
#: A-ASSOCIATE-RJ rejected-transient (PS3.8 7.1.1.7; reasons such as temporary congestion or
#: local limit exceeded, 9.3.4): the peer says "later", as a DICOMweb 503. Treated as
#: unreachable; Out of Resources tells an SCU to try again later.
PEER_BUSY = FailureRule(
    "DIMSE peer rejected the association, rejected-transient (congestion, local limit "
    "exceeded)", Status.OUT_OF_RESOURCES, True, True, _UNREACHABLE, _NACK,
    comment="DIMSE destination busy, retry later", sub_operation=_LOST,
)
#: A-ASSOCIATE-RJ rejected-permanent (calling or called AE title not recognized, application
#: context not supported...), or a TLS certificate we do not trust: permanent until someone
#: changes a configuration, for every instance alike, the instance not at fault. As for HTTP
#: 401/403 the work is kept (the spool used to dead-letter its whole queue after a few retries
#: each; a dead letter without ``--dead_letter_topic`` is a message acked away): the
#: destination waits; an SCU waiting for its upload is answered at once (a wait cannot help).
PEER_REFUSED_ASSOCIATION = FailureRule(
    "DIMSE peer rejected the association, rejected-permanent (AE title not recognized...), or "
    "its TLS certificate is not trusted", Status.PROCESSING_FAILURE, True, False, _UNREACHABLE,
    _NACK, comment="DIMSE destination rejected the association", sub_operation=_LOST,
)
#: The association was accepted without a presentation context for the instance's SOP class
#: (PS3.8 9.3.3.2: abstract syntax not supported; a transfer syntax refused alone is handled
#: by converting the instance): the peer does not take this kind of object, however often it
#: is asked. Dead-lettered on every path (the spool used to retry it, the export adapter
#: dead-lettered it); a C-MOVE/C-GET sends the other instances.
NO_PRESENTATION_CONTEXT = FailureRule(
    "DIMSE peer accepted no presentation context for the instance's SOP class",
    Status.SOP_CLASS_NOT_SUPPORTED, False, False, _DEAD, _DEAD_LETTER,
    comment="DIMSE destination does not take this SOP class", sub_operation=_FAILED,
)

#: The peer failure table: a peer's answer about one instance and a DIMSE peer's failures, what
#: they mean for the spool, the export adapter and C-MOVE/C-GET sub-operations.
#: :func:`rule_for_store_status` and :func:`rule_for_error` pick a row; the README's table is
#: :func:`peer_failure_table_markdown`.
PEER_FAILURE_TABLE: tuple[FailureRule, ...] = (
    STORED,
    STORED_WITH_WARNING,
    REFUSED_FOR_NOW,
    PROCESSING_FAILED,
    REFUSED,
    PEER_UNREACHABLE,
    PEER_BUSY,
    PEER_REFUSED_ASSOCIATION,
    NO_PRESENTATION_CONTEXT,
)

_BY_HTTP = {code: rule for rule in FAILURE_TABLE for code in rule.http}
_BY_HTTP_CLASS = {rule.http_class: rule for rule in FAILURE_TABLE if rule.http_class is not None}

#: HTTP answers by which a store says it is over its quota or overloaded: the spool pauses the
#: destination as a whole and halves its upload concurrency (the table's PAUSE rows).
OVERLOAD_HTTP_STATUSES = frozenset(
    code for rule in FAILURE_TABLE if rule.spool is SpoolAction.PAUSE for code in rule.http
)


def rule_for_http(status: int) -> FailureRule:
    """The row of an HTTP error status (>= 400): its own row, else "other 4xx/5xx"."""
    rule = _BY_HTTP.get(status)
    if rule is not None:
        return rule
    return _BY_HTTP_CLASS[5 if status >= 500 else 4]


def rule_for_error(error: BaseException) -> FailureRule:
    """The row of an error raised by a DICOMweb request or a DIMSE peer we send to.

    DICOMweb errors (and credentials) have rows of :data:`FAILURE_TABLE`, a DIMSE peer's
    failures rows of :data:`PEER_FAILURE_TABLE`. Errors of neither kind (a bug) get
    :data:`OTHER_FAILURE`; the callers decide about their own errors (spool, dataset) before
    asking.
    """
    if isinstance(error, DimseError):
        return _rule_for_peer_error(error)
    if isinstance(error, DicomwebHttpError):
        return rule_for_http(error.status)
    if isinstance(error, StoreUnavailableError):
        return STORE_DOWN
    if isinstance(error, DicomwebConnectionError):
        return CONNECTION_FAILED
    if isinstance(error, DicomwebTimeoutError):
        return TIMED_OUT
    if isinstance(error, DicomwebResponseError):
        return MALFORMED_RESPONSE
    if isinstance(error, AuthError):
        return CREDENTIALS
    return OTHER_FAILURE


def _rule_for_peer_error(error: DimseError) -> FailureRule:
    if isinstance(error, NoAcceptableContextError):
        return NO_PRESENTATION_CONTEXT
    if isinstance(error, AssociationRejectedError):
        return PEER_REFUSED_ASSOCIATION if error.permanent else PEER_BUSY
    if isinstance(error, PeerRejectedError):  # an untrusted TLS certificate
        return PEER_REFUSED_ASSOCIATION
    return PEER_UNREACHABLE


def rule_for_store_status(status: DimseStatus) -> FailureRule:
    """The row of a peer's answer about one instance (a C-STORE status, STOW-RS per-instance).

    A row of :data:`PEER_FAILURE_TABLE`.
    """
    if status.is_success:
        return STORED
    if not status.is_failure:
        return STORED_WITH_WARNING
    if (status.code & STATUS_RANGE_MASK) == Status.OUT_OF_RESOURCES:
        return REFUSED_FOR_NOW
    if status.code == Status.PROCESSING_FAILURE:
        return PROCESSING_FAILED
    return REFUSED


def is_retried_at_once(error: BaseException) -> bool:
    """Whether a request that raised ``error`` is tried again within its retry budget."""
    return rule_for_error(error).retried


def _comment(rule: FailureRule, error: BaseException, what: str) -> str:
    if rule.comment:
        return rule.comment.format(what=what)
    if isinstance(error, DicomwebError):
        return f"DICOMweb {what}: {error}"
    return "Internal error in adapter"


def store_status_for_error(error: BaseException) -> DimseStatus:
    """The C-STORE response status for an error raised while storing an instance.

    The adapter's own refusals (shutting down, spool, routing, dataset) first; a DICOMweb
    outcome then has its status from the failure table (:data:`FAILURE_TABLE`).
    """
    if isinstance(error, ShuttingDownError):
        return DimseStatus(Status.OUT_OF_RESOURCES, "Adapter is shutting down")
    if isinstance(error, SpoolFullError):
        return DimseStatus(Status.OUT_OF_RESOURCES, "Spool full, try again later")
    if isinstance(error, SpoolError):
        return DimseStatus(Status.OUT_OF_RESOURCES, "Spool cannot store the instance")
    if isinstance(error, RoutingError):
        return DimseStatus(Status.PROCESSING_FAILURE, str(error))
    if isinstance(error, UidMismatchError):
        code = Status.DATASET_DOES_NOT_MATCH_SOP_CLASS if error.sop_class else (
            Status.CANNOT_UNDERSTAND
        )
        return DimseStatus(code, str(error))
    if isinstance(error, MalformedDatasetError | TranscodeError):
        return DimseStatus(Status.CANNOT_UNDERSTAND, str(error))
    rule = rule_for_error(error)
    return DimseStatus(rule.status, _comment(rule, error, "store"))


#: The C-STORE warning for an instance stored unchanged because it could not be transcoded to
#: the configured syntax. PS3.4 B.2.3 has three storage warnings; 0xB000 (coercion of data
#: elements) is the one that only says "what was stored is not exactly what you would expect",
#: without claiming that the dataset is non-conformant (0xB007) or lost elements (0xB006).
TRANSCODE_FALLBACK_WARNING = Status.COERCION_OF_DATA_ELEMENTS


def transcode_fallback_status(error: TranscodeError, target_name: str) -> DimseStatus:
    """The warning status for an instance stored in its own syntax, not in ``target_name``."""
    return DimseStatus(TRANSCODE_FALLBACK_WARNING, f"stored untranscoded ({target_name}): {error}")


def _query_retrieve_status(
    error: BaseException, out_of_resources: Status, what: str
) -> DimseStatus:
    """A C-FIND/C-MOVE/C-GET failure: the failure table's status, in the Q/R service's terms.

    Out of Resources becomes ``out_of_resources`` (0xA700 or 0xA701) and Not Authorized stays;
    every other failure is 0xC000 Unable to Process (PS3.4 C.4: no finer failure statuses).
    """
    if isinstance(error, InvalidIdentifierError):
        return DimseStatus(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(error))
    if isinstance(error, ShuttingDownError):
        return DimseStatus(out_of_resources, "Adapter is shutting down")
    rule = rule_for_error(error)
    comment = _comment(rule, error, what)
    if rule.status == Status.OUT_OF_RESOURCES:
        return DimseStatus(out_of_resources, comment)
    if rule.status == Status.NOT_AUTHORIZED:
        return DimseStatus(Status.NOT_AUTHORIZED, comment)
    return DimseStatus(Status.UNABLE_TO_PROCESS, comment)


def find_status_for_error(error: BaseException) -> DimseStatus:
    """The final C-FIND status for an error raised while answering a query.

    Invalid identifier -> 0xA900; shutting down, the store known down (circuit breaker open:
    refused without a request), HTTP 413/429/503/507 -> 0xA700 (out of resources: the SCU may
    try again later); credentials or HTTP 401/403 -> 0x0124 (not authorized); anything else,
    a single connection failure or timeout included -> 0xC000 (unable to process), with the
    reason in the Error Comment.
    """
    return _query_retrieve_status(error, Status.OUT_OF_RESOURCES, "search")


def retrieve_status_for_error(error: BaseException) -> DimseStatus:
    """The C-MOVE/C-GET status for an error raised before any sub-operation could start.

    As :func:`find_status_for_error`, except that running out of resources while finding the
    instances is 0xA701 (unable to calculate number of matches).
    """
    return _query_retrieve_status(error, Status.OUT_OF_RESOURCES_MATCHES, "search")


def not_authorized_status(service: str) -> DimseStatus:
    """0x0124 Not Authorized: the access policy does not let this AE/address use ``service``."""
    return DimseStatus(Status.NOT_AUTHORIZED, f"{service} not permitted for this AE")


def service_disabled_status(service: str) -> DimseStatus:
    """0x0124 Not Authorized: ``service`` is switched off on this adapter."""
    return DimseStatus(Status.NOT_AUTHORIZED, f"{service} is disabled on this adapter")


def instance_too_large_status(limit_bytes: int) -> DimseStatus:
    """0xA700 Out of Resources: a C-STORE dataset larger than ``--max_instance_size_mb``."""
    return DimseStatus(
        Status.OUT_OF_RESOURCES, f"Instance exceeds the {limit_bytes / (1 << 20):g} MB limit"
    )


def too_many_matches_status(limit: int) -> DimseStatus:
    """0xA700 Out of Resources: a C-FIND with more than ``--max_cfind_results`` matches.

    The first ``limit`` matches have been sent as Pending responses; the SCU should narrow
    its query.
    """
    return DimseStatus(Status.OUT_OF_RESOURCES, f"More than {limit} matches; refine the query")


def too_many_instances_status(count: int, limit: int) -> DimseStatus:
    """0xA701 (unable to calculate number of matches): a C-MOVE/C-GET beyond its size limit."""
    return DimseStatus(
        Status.OUT_OF_RESOURCES_MATCHES, f"{count} instances exceed the limit of {limit}"
    )


def is_duplicate_store_status(status: DimseStatus) -> bool:
    """Whether a failed store says the instance already exists (0x0111, like HTTP 409)."""
    return status.code == Status.DUPLICATE_SOP_INSTANCE


def commitment_failure_reason(error: BaseException | None) -> Status:
    """The Storage Commitment FailureReason (0008,1197) for an instance that cannot be committed.

    None: the store has no such instance (0x0112); any error while checking: 0x0110.
    """
    if error is None:
        return Status.NO_SUCH_OBJECT_INSTANCE
    return Status.PROCESSING_FAILURE


def commitment_request_status(error: BaseException) -> DimseStatus:
    """The N-ACTION status for a Storage Commitment request that cannot be accepted."""
    if isinstance(error, CommitmentRequestError):
        return DimseStatus(error.status, str(error))
    if isinstance(error, ShuttingDownError):
        return DimseStatus(Status.RESOURCE_LIMITATION, "Adapter is shutting down")
    return DimseStatus(Status.PROCESSING_FAILURE, "Internal error in adapter")


#: The general failures (PS3.7 C) a STOW-RS FailureReason may carry as they are.
_GENERAL_STORAGE_FAILURES = frozenset({
    Status.PROCESSING_FAILURE,
    Status.DUPLICATE_SOP_INSTANCE,
    Status.INVALID_OBJECT_INSTANCE,
    Status.SOP_CLASS_NOT_SUPPORTED,
    Status.NOT_AUTHORIZED,
})
#: The Storage failure ranges of PS3.4 B.2.3 besides Cannot Understand (0xCxxx).
_STORAGE_FAILURE_RANGES = frozenset({
    Status.OUT_OF_RESOURCES, Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
})


def is_storage_failure_reason(code: int) -> bool:
    """Whether a STOW FailureReason is a storage failure code we can pass through unchanged."""
    return (
        code in _GENERAL_STORAGE_FAILURES
        or (code & STATUS_RANGE_MASK) in _STORAGE_FAILURE_RANGES
        or (code & STATUS_CLASS_MASK) == Status.CANNOT_UNDERSTAND
    )


def is_storage_warning_reason(code: int) -> bool:
    """Whether a STOW WarningReason is a storage warning code (0xB000, 0xB006, 0xB007...)."""
    return (
        code & STATUS_CLASS_MASK
    ) == Status.COERCION_OF_DATA_ELEMENTS or code == Status.OPTIONAL_ATTRIBUTES_NOT_SUPPORTED


def failure_table_markdown(rules: Iterable[FailureRule] = FAILURE_TABLE) -> str:
    """The failure table as Markdown, as published in the README."""
    lines = [
        "| DICOMweb outcome | C-STORE status | transient | retried at once | durable spool "
        "| export adapter |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for rule in rules:
        lines.append(
            f"| {rule.outcome} | `0x{rule.status.value:04X}` {rule.status.name} "
            f"| {_yes_no(rule.transient)} | {_yes_no(rule.retried)} | {rule.spool.value} "
            f"| {rule.export.value} |"
        )
    return "\n".join(lines)


def peer_failure_table_markdown(rules: Iterable[FailureRule] = PEER_FAILURE_TABLE) -> str:
    """The peer failure table as Markdown, as published in the README."""
    lines = [
        "| peer's answer or failure | status upstream | transient | durable spool "
        "| export adapter | C-MOVE/C-GET sub-operation |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for rule in rules:
        bound = "" if rule.attempts is None else f" (at most {rule.attempts} attempts)"
        spool = rule.spool.value + (bound if rule.spool is SpoolAction.RETRY else "")
        if rule.spool is SpoolAction.UNREACHABLE and not rule.retried:
            spool += ", a waiting SCU answered at once"
        export = rule.export.value + (bound if rule.export is ExportAction.NACK else "")
        move = rule.sub_operation.value if rule.sub_operation is not None else ""
        lines.append(
            f"| {rule.outcome} | `0x{rule.status.value:04X}` {rule.status.name} "
            f"| {_yes_no(rule.transient)} | {spool} | {export} | {move} |"
        )
    return "\n".join(lines)


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"
