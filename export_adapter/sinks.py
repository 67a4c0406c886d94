"""The two destinations of exported instances: a DIMSE peer (C-STORE) or a DICOMweb server.

Both take a retrieved Part 10 file and return the peer's status; neither decodes the dataset
unless the DIMSE peer does not accept its transfer syntax (then the shared sender converts it).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from common.dicom.part10 import Part10Instance
from common.dicomweb.client import DicomwebApi
from common.dimse.sender import PeerAddress, SenderSettings, StoreSender
from common.status import DimseStatus
from export_adapter.fetch import FetchedInstance

LOG = logging.getLogger(__name__)


class InstanceSink(Protocol):
    """Where retrieved instances go."""

    def send(self, instance: FetchedInstance) -> DimseStatus:
        """Store one instance at the peer and return the peer's status.

        Raises:
            AdapterError: the peer could not be reached or could not take the instance.
        """
        ...

    def close(self) -> None:
        """Release connections (called once, after the last send)."""
        ...

    def describe(self) -> str:
        """The peer, for logs."""
        ...


class DimseSink:
    """C-STORE to one peer over a few reused associations (thread-safe).

    Workers share a pool of at most ``max_associations`` senders: a worker takes one, sends, and
    gives it back, so each association carries many instances and the peer never sees more
    associations than it was configured for (DCMTK's ``storescp`` serves one at a time).
    """

    def __init__(
        self, peer: PeerAddress, settings: SenderSettings, *, max_associations: int = 1
    ) -> None:
        if max_associations < 1:
            raise ValueError("max_associations must be at least 1")
        self._peer = peer
        self._settings = settings
        self._idle: queue.LifoQueue[StoreSender] = queue.LifoQueue()
        self._all: list[StoreSender] = []
        self._slots = threading.BoundedSemaphore(max_associations)
        self._lock = threading.Lock()

    def describe(self) -> str:
        """``AET@host:port``."""
        return str(self._peer)

    @contextmanager
    def _sender(self) -> Iterator[StoreSender]:
        with self._slots:
            try:
                sender = self._idle.get_nowait()
            except queue.Empty:
                sender = StoreSender(self._peer, self._settings)
                with self._lock:
                    self._all.append(sender)
            try:
                yield sender
            finally:
                self._idle.put(sender)

    def send(self, instance: FetchedInstance) -> DimseStatus:
        """C-STORE the file (converted only if the peer refuses its transfer syntax)."""
        with self._sender() as sender:
            return sender.send(instance.path)

    def close(self) -> None:
        """Release every association."""
        with self._lock:
            senders, self._all = self._all, []
        for sender in senders:
            try:
                sender.close()
            except Exception as exc:  # closing must not stop the others from closing
                LOG.warning("releasing the association to %s failed: %s", self._peer, exc)


class StowSink:
    """STOW-RS to another DICOMweb server, streaming the file as retrieved (thread-safe)."""

    def __init__(self, client: DicomwebApi, description: str) -> None:
        self._client = client
        self._description = description

    def describe(self) -> str:
        """The peer's DICOMweb root."""
        return self._description

    def send(self, instance: FetchedInstance) -> DimseStatus:
        """STOW-RS the instance and return the status the server's answer maps to."""
        part10 = Part10Instance.from_spooled(
            instance.path,
            sop_class_uid=instance.sop_class_uid,
            sop_instance_uid=instance.sop_instance_uid,
            transfer_syntax_uid=instance.transfer_syntax_uid,
            offset=instance.dataset_offset,
        )
        return self._client.store(part10).status

    def close(self) -> None:
        """Nothing to release: the HTTP transport is closed by its owner."""
