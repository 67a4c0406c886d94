"""DIMSE status codes and the one table that maps errors and DICOMweb outcomes to them.

Every handler that answers a DIMSE request with a failure gets its status from here, so the
same fault gives the same status everywhere (PS3.4 Annex B/C, PS3.7 Annex C). The table of HTTP
outcomes is data (:data:`HTTP_RULES`), rendered into the README by :func:`http_rules_markdown`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from pydicom.dataset import Dataset

from common.errors import (
    AuthError,
    CommitmentRequestError,
    DicomwebConnectionError,
    DicomwebError,
    DicomwebHttpError,
    DicomwebTimeoutError,
    InvalidIdentifierError,
    MalformedDatasetError,
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
    PENDING = 0xFF00
    PENDING_WITH_WARNINGS = 0xFF01
    CANCEL = 0xFE00
    # General statuses (PS3.7 Annex C)
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_OBJECT_INSTANCE = 0x0112
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
        return self.code in (0x0001, 0x0107, 0x0116) or (self.code & 0xF000) == 0xB000

    @property
    def is_failure(self) -> bool:
        """True for anything that is neither success, warning, pending nor cancel."""
        return not (
            self.is_success
            or self.is_warning
            or self.code in (Status.PENDING, Status.PENDING_WITH_WARNINGS, Status.CANCEL)
        )

    def as_dataset(self) -> Dataset:
        """The status as a pynetdicom status dataset (Status plus Error Comment)."""
        ds = Dataset()
        ds.Status = self.code
        if self.comment:
            ds.ErrorComment = safe_error_comment(self.comment)
        return ds

    def __str__(self) -> str:
        label = f"0x{self.code:04X}"
        return f"{label} ({self.comment})" if self.comment else label


SUCCESS = DimseStatus(Status.SUCCESS)
#: A C-STORE answered before its upload finished (without ``--auto_ack_cstore``).
UPLOAD_NOT_CONFIRMED = DimseStatus(Status.PROCESSING_FAILURE, "Upload not confirmed in time")
#: A C-STORE refused at once because the store is known down (circuit breaker open): 0xA700
#: Out of Resources, which SCUs read as "try again later", rather than 0x0110.
STORE_UNAVAILABLE = DimseStatus(Status.OUT_OF_RESOURCES, "DICOMweb store unreachable, retry later")


@dataclass(frozen=True)
class HttpRule:
    """One row of the HTTP outcome -> C-STORE status table."""

    outcome: str
    status: Status
    retried: bool


#: HTTP outcomes of a STOW-RS request and the C-STORE status they produce. Retried outcomes are
#: tried again with capped exponential backoff before the status is sent.
HTTP_RULES: tuple[HttpRule, ...] = (
    HttpRule("200/202, instance in ReferencedSOPSequence", Status.SUCCESS, False),
    HttpRule(
        "200/202, instance with WarningReason (e.g. coercion)", Status.COERCION_OF_DATA_ELEMENTS,
        False,
    ),
    HttpRule(
        "instance in FailedSOPSequence: its FailureReason, else", Status.PROCESSING_FAILURE, False
    ),
    HttpRule("401, 403", Status.NOT_AUTHORIZED, False),
    HttpRule("409 Conflict", Status.DUPLICATE_SOP_INSTANCE, False),
    HttpRule("413 Payload Too Large, 507", Status.OUT_OF_RESOURCES, False),
    HttpRule("429 Too Many Requests, 503", Status.OUT_OF_RESOURCES, True),
    HttpRule("408, 425, 500, 502, 504", Status.PROCESSING_FAILURE, True),
    HttpRule("other 4xx", Status.CANNOT_UNDERSTAND, False),
    HttpRule("other 5xx", Status.PROCESSING_FAILURE, False),
    HttpRule("connection refused/reset, DNS, TLS", Status.PROCESSING_FAILURE, True),
    HttpRule("timeout", Status.PROCESSING_FAILURE, True),
    HttpRule(
        "store known down (`--store_down_after_failures` connection failures/timeouts in a "
        "row): refused without a request until a probe is answered",
        Status.OUT_OF_RESOURCES,
        False,
    ),
    HttpRule(
        "2xx not confirming the instance, or not a STOW response", Status.PROCESSING_FAILURE,
        False,
    ),
    HttpRule("credentials cannot be obtained/refreshed", Status.NOT_AUTHORIZED, False),
)

_OUT_OF_RESOURCES_HTTP = frozenset({413, 429, 503, 507})
#: HTTP answers by which a store says it is over its quota or overloaded: the spool pauses the
#: destination as a whole and halves its upload concurrency (a subset of the above).
OVERLOAD_HTTP_STATUSES = frozenset({429, 503})


def _http_status(error: DicomwebHttpError) -> Status:
    if error.status in (401, 403):
        return Status.NOT_AUTHORIZED
    if error.status == 409:
        return Status.DUPLICATE_SOP_INSTANCE
    if error.status in _OUT_OF_RESOURCES_HTTP:
        return Status.OUT_OF_RESOURCES
    if 400 <= error.status < 500 and error.status not in (408, 425):
        return Status.CANNOT_UNDERSTAND
    return Status.PROCESSING_FAILURE


def store_status_for_error(error: BaseException) -> DimseStatus:
    """The C-STORE response status for an error raised while storing an instance."""
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
    if isinstance(error, AuthError):
        return DimseStatus(Status.NOT_AUTHORIZED, "DICOMweb credentials unavailable")
    if isinstance(error, DicomwebHttpError):
        return DimseStatus(_http_status(error), f"DICOMweb store: {error}")
    if isinstance(error, StoreUnavailableError):
        return STORE_UNAVAILABLE
    if isinstance(error, DicomwebTimeoutError):
        return DimseStatus(Status.PROCESSING_FAILURE, "DICOMweb store timed out")
    if isinstance(error, DicomwebConnectionError):
        return DimseStatus(Status.PROCESSING_FAILURE, "DICOMweb store unreachable")
    if isinstance(error, DicomwebError):
        return DimseStatus(Status.PROCESSING_FAILURE, f"DICOMweb store: {error}")
    return DimseStatus(Status.PROCESSING_FAILURE, "Internal error in adapter")


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
    if isinstance(error, InvalidIdentifierError):
        return DimseStatus(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(error))
    if isinstance(error, ShuttingDownError):
        return DimseStatus(out_of_resources, "Adapter is shutting down")
    if isinstance(error, StoreUnavailableError):
        return DimseStatus(out_of_resources, f"DICOMweb {what}: store unreachable, retry later")
    if isinstance(error, AuthError):
        return DimseStatus(Status.NOT_AUTHORIZED, "DICOMweb credentials unavailable")
    if isinstance(error, DicomwebHttpError):
        if error.status in (401, 403):
            return DimseStatus(Status.NOT_AUTHORIZED, f"DICOMweb {what}: {error}")
        if error.status in _OUT_OF_RESOURCES_HTTP:
            return DimseStatus(out_of_resources, f"DICOMweb {what}: {error}")
        return DimseStatus(Status.UNABLE_TO_PROCESS, f"DICOMweb {what}: {error}")
    if isinstance(error, DicomwebTimeoutError):
        return DimseStatus(Status.UNABLE_TO_PROCESS, f"DICOMweb {what} timed out")
    if isinstance(error, DicomwebConnectionError):
        return DimseStatus(Status.UNABLE_TO_PROCESS, f"DICOMweb {what} unreachable")
    if isinstance(error, DicomwebError):
        return DimseStatus(Status.UNABLE_TO_PROCESS, f"DICOMweb {what}: {error}")
    return DimseStatus(Status.UNABLE_TO_PROCESS, "Internal error in adapter")


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


def is_retryable_store_status(status: DimseStatus) -> bool:
    """Whether a failed store (STOW FailedSOPSequence reason, C-STORE status) may succeed later.

    Out of resources (0xA7xx) is temporary; every other failure is a verdict on the instance.
    """
    return status.is_failure and (status.code & 0xFF00) == Status.OUT_OF_RESOURCES


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


def is_storage_failure_reason(code: int) -> bool:
    """Whether a STOW FailureReason is a storage failure code we can pass through unchanged."""
    high = code & 0xFF00
    return code in (0x0110, 0x0111, 0x0117, 0x0122, 0x0124, 0xC122) or high in (
        0xA700,
        0xA900,
    ) or (code & 0xF000) == 0xC000


def is_storage_warning_reason(code: int) -> bool:
    """Whether a STOW WarningReason is a storage warning code (0xB000, 0xB006, 0xB007...)."""
    return (code & 0xF000) == 0xB000 or code == 0x0001


def http_rules_markdown(rules: Iterable[HttpRule] = HTTP_RULES) -> str:
    """The HTTP -> DIMSE table as Markdown, as published in the README."""
    lines = [
        "| DICOMweb outcome | C-STORE status | retried first |",
        "| --- | --- | --- |",
    ]
    for rule in rules:
        retried = "yes" if rule.retried else "no"
        lines.append(
            f"| {rule.outcome} | `0x{rule.status.value:04X}` {rule.status.name} | {retried} |"
        )
    return "\n".join(lines)
