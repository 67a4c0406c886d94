"""What one upload attempt came to, and what the queue does next.

====================================================  ===========  ==========================
outcome                                               kind         next
====================================================  ===========  ==========================
stored (success or warning)                           DONE         entry removed
connection refused/reset, DNS, TLS, timeout;           UNREACHABLE  destination paused (capped
store known down (circuit breaker open, nothing                    backoff), entry kept; does
sent); credentials; DIMSE peer unreachable                         not use up its retries
HTTP 429, 503 (the store's quota or load)            RETRY        destination paused (its
                                                                   Retry-After), concurrency
                                                                   halved; entry kept, does
                                                                   not use up its retries
HTTP 5xx, 408, 425, ``--http_error_codes_to_retry``;  RETRY        entry retried with capped
0xA7xx; association rejected;                                      backoff, up to
a 2xx we cannot read                                               ``--persistent_file_upload_
                                                                   retry_amount`` times
HTTP 409 / 0x0111 without ``--stow_overwrite``;        DEAD         dead-letter (or, when the
other 4xx; any other failure status; unreadable file               SCU waits, its answer)
====================================================  ===========  ==========================

A 409 / 0x0111 for an instance whose previous upload ended unanswered is first looked up in
the store (:class:`~import_adapter.spool.uploaders.StowUploader`): present counts as DONE.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from common.errors import TRANSIENT_HTTP_STATUSES as _TRANSIENT_HTTP
from common.errors import (
    AuthError,
    DatasetError,
    DicomwebConnectionError,
    DicomwebHttpError,
    DicomwebTimeoutError,
    PeerUnavailableError,
)
from common.status import (
    DimseStatus,
    is_retryable_store_status,
    store_status_for_error,
)


class Kind(Enum):
    """What the queue does after an attempt."""

    DONE = "done"
    UNREACHABLE = "unreachable"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True)
class UploadResult:
    """The outcome of one upload attempt.

    Attributes:
        kind: what the queue does next.
        status: the C-STORE status it stands for (answered to an SCU that waits).
        reason: why, for logs and the dead-letter sidecar (no patient data).
        http_status: the HTTP status, when there was one.
        retry_after: seconds the server asked us to wait (``Retry-After``).
    """

    kind: Kind
    status: DimseStatus
    reason: str = ""
    http_status: int | None = None
    retry_after: float | None = None


def is_retryable_http(status: int, retry_codes: frozenset[int]) -> bool:
    """5xx, 429 (and 408/425) always; other codes when listed in ``--http_error_codes_to_retry``."""
    return status >= 500 or status in _TRANSIENT_HTTP or status in retry_codes


def result_for_status(status: DimseStatus, http_status: int | None = None) -> UploadResult:
    """The outcome of an attempt the destination answered with a DIMSE-style status."""
    if not status.is_failure:
        return UploadResult(Kind.DONE, status, http_status=http_status)
    kind = Kind.RETRY if is_retryable_store_status(status) else Kind.DEAD
    return UploadResult(kind, status, f"destination refused the instance: {status}", http_status)


def result_for_error(error: Exception, retry_codes: frozenset[int]) -> UploadResult:
    """The outcome of an attempt that raised ``error``."""
    status = store_status_for_error(error)
    reason = f"{type(error).__name__}: {error}"
    if isinstance(error, DicomwebHttpError):
        kind = Kind.RETRY if is_retryable_http(error.status, retry_codes) else Kind.DEAD
        return UploadResult(kind, status, reason, error.status, error.retry_after)
    if isinstance(
        error, DicomwebConnectionError | DicomwebTimeoutError | PeerUnavailableError | AuthError
    ):
        return UploadResult(Kind.UNREACHABLE, status, reason)
    if isinstance(error, DatasetError | FileNotFoundError):
        return UploadResult(Kind.DEAD, status, reason)
    return UploadResult(Kind.RETRY, status, reason)
