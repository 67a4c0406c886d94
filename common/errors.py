"""The adapter's own exception tree.

Foreign exceptions (socket and TLS errors, httpx, google-auth, pydicom, pynetdicom) are
translated at the boundary where they arise, with ``raise Ours(...) from exc``, so callers only
ever see these::

    AdapterError
    ├── ConfigError                 bad flag, bad address, bad JSON config (a usage error)
    ├── AuthError                   credentials could not be obtained or refreshed
    ├── InvalidIdentifierError      a C-FIND/C-MOVE/C-GET identifier we cannot act on
    ├── SpoolError                  the durable spool cannot take or keep an instance (disk)
    │   └── SpoolFullError          admission control: spool size or free-disk watermark reached
    ├── RoutingError                an instance matches no destination (it must not be acked)
    ├── CommitmentRequestError      a Storage Commitment N-ACTION we cannot act on
    ├── DatasetError                a received dataset we cannot forward
    │   ├── MalformedDatasetError   truncated / unparsable encoding
    │   └── UidMismatchError        command set and dataset disagree on a UID
    │   └── TranscodeError          the dataset cannot be converted to the syntax needed
    ├── DimseError                  an association we requested did not do what we asked
    │   ├── PeerUnavailableError    cannot connect, association aborted or timed out
    │   └── PeerRejectedError       association rejected, or no acceptable presentation context
    │       ├── AssociationRejectedError  A-ASSOCIATE-RJ: result (permanent?), source, reason
    │       └── NoAcceptableContextError  accepted, but no context for this SOP class
    ├── DicomwebError               anything that went wrong talking to a DICOMweb server
    │   ├── DicomwebConnectionError connection refused, reset, DNS failure, TLS failure
    │   │   └── StoreUnavailableError the store is known down (circuit breaker open): no request
    │   ├── DicomwebTimeoutError    connect or read timeout
    │   ├── DicomwebHttpError       the server answered with an HTTP error status
    │   └── DicomwebResponseError   the server answered 2xx with a body we cannot understand
    └── ShuttingDownError           the service is draining and takes no new work

What a failure means (transient or not, retried at once, its DIMSE status, what the spool, the
export adapter and a C-MOVE/C-GET do) is decided by the failure tables of :mod:`common.status`
(``FAILURE_TABLE`` for DICOMweb, ``PEER_FAILURE_TABLE`` for a DIMSE peer and a peer's answer
about an instance); these classes only say what happened.
"""

from __future__ import annotations


class AdapterError(Exception):
    """Base class of every error the adapter raises on purpose."""


class ReportedError(Exception):
    """Mixed into errors the adapter logs itself, in one line, where it raises them.

    Libraries that see such an error go by (pynetdicom logs every exception of its reader
    thread at ERROR with a traceback) would only repeat it: :mod:`common.logs` drops their
    records about it.
    """


class ConfigError(AdapterError):
    """A configuration value is invalid; the message says which and why."""


class AuthError(AdapterError):
    """Credentials could not be obtained or refreshed."""


class InvalidIdentifierError(AdapterError):
    """A query/retrieve identifier is invalid for its SOP class (level, keys, values)."""


class SpoolError(AdapterError):
    """The durable spool cannot take or keep an instance (a file system operation failed)."""


class SpoolFullError(SpoolError):
    """Admission control: the spool reached its size limit or the disk its free-space floor."""


class RoutingError(AdapterError):
    """An instance matches no destination, so it cannot be accepted."""


class CommitmentRequestError(AdapterError):
    """A Storage Commitment request cannot be acted on (bad dataset, unknown requester).

    Attributes:
        status: the N-ACTION status to answer with (a :class:`common.status.Status` value).
    """

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class ShuttingDownError(AdapterError):
    """The service is shutting down and accepts no new work."""


class DatasetError(AdapterError):
    """A received dataset cannot be forwarded as it is."""


class MalformedDatasetError(DatasetError):
    """The dataset's encoding is truncated or cannot be parsed."""


class UidMismatchError(DatasetError):
    """The command set and the dataset disagree on the SOP Class or SOP Instance UID."""

    def __init__(self, message: str, *, sop_class: bool) -> None:
        super().__init__(message)
        #: True when the SOP Class UIDs differ (else the SOP Instance UIDs differ).
        self.sop_class = sop_class


class TranscodeError(DatasetError):
    """The dataset cannot be converted to the transfer syntax needed."""


class DimseError(AdapterError):
    """An association we requested failed."""


class PeerUnavailableError(DimseError):
    """The peer cannot be reached, or the association was aborted or timed out."""


class PeerRejectedError(DimseError):
    """The peer rejected the association, or accepted no context usable for an instance."""


class AssociationRejectedError(PeerRejectedError):
    """The peer answered the association request with an A-ASSOCIATE-RJ (PS3.8 9.3.4).

    Attributes:
        permanent: the Result was "rejected-permanent" (retrying unchanged cannot help; often
            a configuration matter such as AE titles), else "rejected-transient".
        source: 1 service user, 2 service provider (ACSE), 3 service provider (presentation).
        reason: the Reason/Diag. field, interpreted per source.
    """

    def __init__(self, message: str, *, permanent: bool, source: int, reason: int) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.source = source
        self.reason = reason


class NoAcceptableContextError(PeerRejectedError):
    """The association was accepted, but no presentation context for this SOP class was.

    Attributes:
        sop_class_uid: the SOP class the peer will not take.
    """

    def __init__(self, message: str, *, sop_class_uid: str) -> None:
        super().__init__(message)
        self.sop_class_uid = sop_class_uid


class DicomwebError(AdapterError):
    """A DICOMweb request failed.

    Attributes:
        url: the request URL without query credentials (safe to log).
    """

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class DicomwebConnectionError(DicomwebError):
    """The server could not be reached (refused, reset, name resolution, TLS handshake)."""


class StoreUnavailableError(DicomwebConnectionError):
    """The store is known to be down (its circuit breaker is open): nothing was sent.

    Raised at once, without touching the network, after enough connection failures or timeouts
    in a row (:mod:`common.breaker`); retry loops end on it instead of waiting out their budget.
    """


class DicomwebTimeoutError(DicomwebError):
    """The server did not answer in time."""


class DicomwebHttpError(DicomwebError):
    """The server answered with an HTTP error status (>= 400).

    Attributes:
        status: the HTTP status code.
        body_excerpt: the start of the response body, for logs and error comments.
        retry_after: seconds from a ``Retry-After`` header, if the server sent one.
        resent: the transport sent the request a second time after the first try had been
            written out whole (the server may have acted on that one: a 409 may be our own).
    """

    def __init__(
        self,
        status: int,
        *,
        url: str = "",
        reason: str = "",
        body_excerpt: str = "",
        retry_after: float | None = None,
        resent: bool = False,
    ) -> None:
        detail = f": {body_excerpt}" if body_excerpt else ""
        super().__init__(f"HTTP {status} {reason}{detail}".strip(), url=url)
        self.status = status
        self.body_excerpt = body_excerpt
        self.retry_after = retry_after
        self.resent = resent


class DicomwebResponseError(DicomwebError):
    """The server answered with success but a body that does not follow PS3.18."""
