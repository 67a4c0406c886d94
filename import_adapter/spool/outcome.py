"""What one upload attempt came to, and what the queue does next.

What an outcome means is not decided here: the failure table
(:data:`common.status.FAILURE_TABLE`, the README's "How DICOMweb outcomes become C-STORE
statuses") and the peer failure table (:data:`common.status.PEER_FAILURE_TABLE`: a store's or
DIMSE peer's answer about the instance, and the failures of a DIMSE destination) have a column
for the spool, which this module turns into a :class:`Kind`:

=====================  ===========  =========================================================
table's spool action   kind         next
=====================  ===========  =========================================================
done                   DONE         entry removed
treat as unreachable   UNREACHABLE  destination paused (capped backoff), entry kept; does not
                                    use up its retries
pause the destination  RETRY        destination paused (its Retry-After), concurrency halved
                                    (the queue knows these by their HTTP status,
                                    :data:`common.status.OVERLOAD_HTTP_STATUSES`); entry kept,
                                    does not use up its retries
retry with backoff     RETRY        entry retried with capped backoff, up to
                                    ``--persistent_file_upload_retry_amount`` times (fewer
                                    when the row bounds its attempts: 0x0110)
dead-letter            DEAD         dead-letter (or, when the SCU waits, its answer); an HTTP
                                    status listed in ``--http_error_codes_to_retry`` is RETRY
=====================  ===========  =========================================================

The spool's own outcomes are not in the tables: an unreadable or vanished spool file and a
dataset that cannot be sent (or converted for a DIMSE destination) are DEAD. A 409 / 0x0111
for an instance whose previous upload ended unanswered is first looked up in the store
(:class:`~import_adapter.spool.uploaders.StowUploader`): present counts as DONE.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from common.errors import DatasetError, DicomwebHttpError
from common.status import (
    DimseStatus,
    SpoolAction,
    rule_for_error,
    rule_for_http,
    rule_for_store_status,
    store_status_for_error,
)


class Kind(Enum):
    """What the queue does after an attempt."""

    DONE = "done"
    UNREACHABLE = "unreachable"
    RETRY = "retry"
    DEAD = "dead"


#: The failure table's spool actions as queue kinds. PAUSE is a RETRY that the queue turns into
#: a pause of the whole destination by its HTTP status (429, 503).
_KINDS = {
    SpoolAction.DONE: Kind.DONE,
    SpoolAction.RETRY: Kind.RETRY,
    SpoolAction.PAUSE: Kind.RETRY,
    SpoolAction.UNREACHABLE: Kind.UNREACHABLE,
    SpoolAction.DEAD_LETTER: Kind.DEAD,
}


@dataclass(frozen=True)
class UploadResult:
    """The outcome of one upload attempt.

    Attributes:
        kind: what the queue does next.
        status: the C-STORE status it stands for (answered to an SCU that waits).
        reason: why, for logs and the dead-letter sidecar (no patient data).
        http_status: the HTTP status, when there was one.
        retry_after: seconds the server asked us to wait (``Retry-After``).
        answer_waiting_scu: an UNREACHABLE outcome a C-STORE would not retry (the failure
            table's *retried at once* is off: credentials, the store known down, a DIMSE
            destination that rejected the association for good): an SCU waiting for this
            upload is answered with ``status`` now, as without a spool, while an entry nobody
            waits for stays queued.
        max_attempts: a RETRY outcome's bound on attempts in all (the table's row), besides
            ``--persistent_file_upload_retry_amount``; None: that flag alone.
    """

    kind: Kind
    status: DimseStatus
    reason: str = ""
    http_status: int | None = None
    retry_after: float | None = None
    answer_waiting_scu: bool = False
    max_attempts: int | None = None


def kind_for_http(status: int, retry_codes: frozenset[int]) -> Kind:
    """The kind of an HTTP error status: the failure table's spool action.

    A status the table dead-letters is RETRY when ``retry_codes``
    (``--http_error_codes_to_retry``) lists it.
    """
    kind = _KINDS[rule_for_http(status).spool]
    if kind is Kind.DEAD and status in retry_codes:
        return Kind.RETRY
    return kind


def result_for_status(status: DimseStatus, http_status: int | None = None) -> UploadResult:
    """The outcome of an attempt the destination answered with a DIMSE-style status."""
    rule = rule_for_store_status(status)
    kind = _KINDS[rule.spool]
    if kind is Kind.DONE:
        return UploadResult(kind, status, http_status=http_status)
    return UploadResult(
        kind, status, f"destination refused the instance: {status}", http_status,
        max_attempts=rule.attempts,
    )  # fmt: skip


def result_for_error(error: BaseException, retry_codes: frozenset[int]) -> UploadResult:
    """The outcome of an attempt that raised ``error``."""
    status = store_status_for_error(error)
    reason = f"{type(error).__name__}: {error}"
    if isinstance(error, DicomwebHttpError):
        kind = kind_for_http(error.status, retry_codes)
        return UploadResult(
            kind, status, reason, error.status, error.retry_after,
            answer_waiting_scu=kind is Kind.UNREACHABLE and not rule_for_http(error.status).retried,
        )  # fmt: skip
    if isinstance(error, DatasetError | FileNotFoundError):
        return UploadResult(Kind.DEAD, status, reason)
    rule = rule_for_error(error)  # a DICOMweb or DIMSE peer failure (or a bug)
    kind = _KINDS[rule.spool]
    return UploadResult(
        kind, status, reason, answer_waiting_scu=kind is Kind.UNREACHABLE and not rule.retried,
        max_attempts=rule.attempts,
    )  # fmt: skip
