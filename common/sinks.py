"""Where instances go: the one sink protocol of both adapters, and the sinks they share.

An :class:`InstanceSink` takes a :class:`~common.dicom.part10.Part10Instance` and its
:class:`Origin` and returns the DIMSE status the peer or store answered: the import adapter
answers its C-STORE with it, the export adapter acks or nacks by it. The sinks:

- :class:`StowSink`: STOW-RS to a DICOMweb store (the import adapter without a spool; the export
  adapter's DICOMweb peer);
- :class:`DimseSink`: C-STORE to one DIMSE peer over a few reused associations (the export
  adapter's DIMSE peer);
- :class:`import_adapter.spool.sink.SpoolingSink`: admission, routing and the durable spool;
- :class:`import_adapter.transform.TransformingSink`: de-identifies and/or transcodes, then
  hands the result to another sink.

Neither shared sink decodes the dataset: STOW-RS streams the Part 10 bytes, C-STORE streams the
file (converted only when the peer does not accept its transfer syntax).
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from common.dicom.part10 import Part10Instance
from common.dicomweb.client import DicomwebApi
from common.dimse.fast.meta import FileMeta
from common.dimse.sender import PeerAddress, SenderSettings, StoreSender
from common.status import DimseStatus

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Origin:
    """What a sink may need to know of an instance besides its content.

    Attributes:
        source_aet: the AE title the instance came from (a C-STORE's calling AE title: routing
            rules, spool entry names, the file meta's Source AE Title); ``""`` when it did not
            come over DIMSE (export).
        file: a complete Part 10 file on disk that holds exactly this instance, or None (a
            small C-STORE dataset received into memory only). A sink may send it as it is, or
            take it over by renaming it (same file system): whoever made it removes it
            afterwards only if it is still there.
    """

    source_aet: str = ""
    file: Path | None = None


class InstanceSink(Protocol):
    """Where instances go; thread-safe (adapters deliver from several threads)."""

    def deliver(self, instance: Part10Instance, origin: Origin) -> DimseStatus:
        """Store or forward one instance and return the status to answer with.

        Raises:
            AdapterError: the instance could not be stored or forwarded (mapped to a status
                by :func:`common.status.store_status_for_error`, or to ack/nack by the
                export adapter's failure rule).
        """
        ...

    def describe(self) -> str:
        """Where instances go, for logs."""
        ...

    def close(self) -> None:
        """Release connections (called once, after the last delivery)."""
        ...


class StowSink:
    """STOW-RS of each instance; the status is what the store's answer maps to (thread-safe)."""

    def __init__(self, client: DicomwebApi, description: str) -> None:
        """``description``: the store, for logs (its DICOMweb root)."""
        self._client = client
        self._description = description

    def deliver(self, instance: Part10Instance, origin: Origin) -> DimseStatus:
        """STOW-RS the instance (streamed) and return the status the answer maps to."""
        return self._client.store(instance).status

    def describe(self) -> str:
        """The store's DICOMweb root."""
        return self._description

    def close(self) -> None:
        """Nothing to release: the HTTP transport is closed by its owner."""


class DimseSink:
    """C-STORE to one peer over a few reused associations (thread-safe).

    Deliveries share a pool of at most ``max_associations`` senders: a thread takes one, sends,
    and gives it back, so each association carries many instances and the peer never sees more
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

    def deliver(self, instance: Part10Instance, origin: Origin) -> DimseStatus:
        """C-STORE the instance (converted only if the peer refuses its transfer syntax).

        The file of ``origin`` is sent as it is; an instance without one (held in memory) is
        first written to a scratch file next to where it was received.
        """
        meta = None
        if origin.file is not None and origin.file == instance.dataset_path:
            # The instance was described from this very file: its meta is read already.
            meta = FileMeta(
                instance.sop_class_uid, instance.sop_instance_uid,
                instance.transfer_syntax_uid, instance.dataset_offset,
            )  # fmt: skip
        with _part10_file(instance, origin) as path, self._sender() as sender:
            return sender.send(path, meta=meta)

    def close(self) -> None:
        """Release every association."""
        with self._lock:
            senders, self._all = self._all, []
        for sender in senders:
            try:
                sender.close()
            except Exception as exc:  # closing must not stop the others from closing
                LOG.warning("releasing the association to %s failed: %s", self._peer, exc)


@contextmanager
def _part10_file(instance: Part10Instance, origin: Origin) -> Iterator[Path]:
    """A Part 10 file of ``instance``: the origin's, or a scratch copy removed afterwards."""
    if origin.file is not None:
        yield origin.file
        return
    handle, name = tempfile.mkstemp(
        prefix="send-", suffix=".dcm", dir=instance.dataset_path.parent
    )
    os.close(handle)
    path = Path(name)
    try:
        instance.write_to(path)
        yield path
    finally:
        path.unlink(missing_ok=True)
