"""What became of the C-STORE sub-operations of one C-MOVE/C-GET, as seen on the wire.

pynetdicom performs the sub-operations itself (on the association it opens to the move
destination, or on the requesting association for C-GET) and does not tell its handler how each
ended. A :class:`SubOperationTally` listens to the DIMSE events of the association that carries
them: ``EVT_DIMSE_SENT`` of a C-STORE-RQ gives the dataset's encoded size, ``EVT_DIMSE_RECV`` of
a C-STORE-RSP gives the peer's status. The retrieval core calls :meth:`SubOperationTally.settle`
each time pynetdicom comes back for the next sub-operation: by then the previous one has been
answered, or has failed without an answer (a placeholder pynetdicom refused to send, a peer that
went away), and it is counted the way pynetdicom counts it for the C-MOVE/C-GET responses.

Sub-operations on one association are strictly sequential, so one pending record suffices.
The events arrive on the association's reader thread; a lock orders them with :meth:`settle`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import evt
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP

from common.status import SUCCESS, DimseStatus, Status

#: An event binding as pynetdicom takes it (``evt_handlers=[...]``, ``assoc.bind(...)``).
EventBinding = tuple[Any, Callable[[Any], None]]


@dataclass(frozen=True)
class SubOperation:
    """One settled C-STORE sub-operation.

    Attributes:
        size: encoded dataset bytes sent (0 when nothing was sent).
        status: the peer's status, or None when no response arrived.
    """

    size: int
    status: DimseStatus | None

    @property
    def ok(self) -> bool:
        """The peer stored the instance (success or warning)."""
        return self.status is not None and not self.status.is_failure


def _dataset_size(message: Any) -> int:
    """Encoded bytes of a C-STORE-RQ's dataset (in memory, or a file region when chunked)."""
    data = getattr(message, "data_set", None)
    if data is not None and hasattr(data, "getbuffer"):
        size = data.getbuffer().nbytes
        if size:
            return int(size)
    location = getattr(message, "_data_set_path", None)
    if location:
        path, offset = location
        try:
            return max(Path(path).stat().st_size - int(offset), 0)
        except OSError:
            return 0
    return 0


class SubOperationTally:
    """Counts one request's sub-operations from the DIMSE events of their association."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent = 0
        self._answer: int | None = None
        self.completed = 0
        self.failed = 0
        self.warning = 0

    def bindings(self) -> list[EventBinding]:
        """The handlers to bind on the association carrying the sub-operations."""
        return [(evt.EVT_DIMSE_SENT, self._on_sent), (evt.EVT_DIMSE_RECV, self._on_received)]

    def _on_sent(self, event: Any) -> None:
        message = event.message
        if isinstance(message, C_STORE_RQ):
            size = _dataset_size(message)
            with self._lock:
                self._sent, self._answer = size, None

    def _on_received(self, event: Any) -> None:
        message = event.message
        if isinstance(message, C_STORE_RSP):
            status = getattr(message.command_set, "Status", None)
            with self._lock:
                self._answer = int(status) if status is not None else None

    def settle(self) -> SubOperation:
        """Count the sub-operation pynetdicom just performed (and forget its record)."""
        with self._lock:
            size, answer = self._sent, self._answer
            self._sent, self._answer = 0, None
        return self.record(DimseStatus(answer) if answer is not None else None, size)

    def record(self, status: DimseStatus | None, size: int) -> SubOperation:
        """Count a sub-operation performed by our own C-STORE SCU (no events to listen to).

        Args:
            status: the peer's status, or None when it was not sent or got no answer.
            size: the bytes sent.
        """
        if status is None or status.is_failure:
            self.failed += 1
        elif status.is_warning:
            self.warning += 1
        else:
            self.completed += 1
        return SubOperation(size, status)

    def final_status(self) -> DimseStatus:
        """The final status pynetdicom sends once every sub-operation was performed."""
        if not self.failed and not self.warning:
            return SUCCESS
        if self.failed and not self.completed and not self.warning:
            return DimseStatus(Status.OUT_OF_RESOURCES_SUB_OPERATIONS)  # 0xA702: all failed
        return DimseStatus(Status.SUB_OPERATIONS_COMPLETE_WITH_FAILURES)  # 0xB000
