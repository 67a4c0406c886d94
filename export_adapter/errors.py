"""Errors specific to the export adapter.

They sit below :class:`common.errors.AdapterError`::

    AdapterError
    ├── NotificationError           the message does not name an instance we can export
    ├── InstanceNotFoundError       the source store has no such instance (404, empty answer)
    └── PeerRefusedInstanceError    the peer answered the store with a failure status

Whether an error is worth retrying is decided in one place, :mod:`export_adapter.outcome`.
"""

from __future__ import annotations

from common.errors import AdapterError
from common.status import DimseStatus


class NotificationError(AdapterError):
    """A Pub/Sub message that is not a notification about an instance (malformed)."""


class InstanceNotFoundError(AdapterError):
    """The source DICOMweb store does not have the instance the notification names."""


class PeerRefusedInstanceError(AdapterError):
    """The peer answered the C-STORE (or STOW-RS) with a failure status.

    Attributes:
        status: the status the peer answered with.
    """

    def __init__(self, status: DimseStatus, peer: str) -> None:
        super().__init__(f"{peer} refused the instance with status {status}")
        self.status = status
