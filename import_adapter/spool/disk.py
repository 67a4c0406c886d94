"""The spool's files: admission control, the commit protocol, removal and dead-lettering.

Commit protocol for a received instance (every step before the answer is on stable storage):

1. the instance's file is fsynced: the origin's file (the one the DIMSE engine wrote in
   ``incoming/``, or the file a transform wrote), taken over as it is; an instance
   held in memory only (a small C-STORE) is first written to ``staging/``;
2. one destination: it is renamed into ``queues/KEY/NAME`` and the folder fsynced - done;
3. several: it is renamed to ``staging/NAME`` (fsynced), hard-linked into each
   ``queues/KEY/NAME`` (folders fsynced), and ``staging/NAME`` is removed (fsynced). That
   removal is the commit point: at start-up a name still in ``staging/`` was never acknowledged,
   so it is removed from every queue (all or nothing), and ``incoming/`` is emptied.

The file's space is returned when its last link goes. Dead-lettering writes the JSON sidecar
first (atomically), then moves the link, so every dead-letter entry has its reason.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.dicom.part10 import Part10Instance
from common.errors import RoutingError, SpoolError, SpoolFullError
from common.sinks import Origin
from import_adapter.spool.layout import (
    DESCRIPTOR,
    SIDECAR_SUFFIX,
    SpoolLayout,
    fsync_dir,
    fsync_file,
    is_entry_name,
    new_entry_name,
    read_json,
    write_json_atomic,
)

LOG = logging.getLogger(__name__)
MB = 1 << 20


@dataclass(frozen=True)
class SpoolLimits:
    """Admission control: new C-STOREs are refused (0xA700) past either watermark.

    Attributes:
        max_bytes: the most bytes of queued instances (0: no limit).
        min_free_bytes: the least free space the spool's file system must keep (0: no floor).
    """

    max_bytes: int = 0
    min_free_bytes: int = 512 * MB


@dataclass(frozen=True)
class RecoveredQueue:
    """A queue folder found at start-up: its destination and entries (oldest first)."""

    key: str
    description: Any
    names: tuple[str, ...]


class DurableSpool:
    """The spool's files and the byte count admission control is based on (thread-safe)."""

    def __init__(self, layout: SpoolLayout, limits: SpoolLimits) -> None:
        self.layout = layout
        self._limits = limits
        self._lock = threading.Lock()
        # name -> [size, links left]: the space of a file is returned with its last link.
        self._files: dict[str, list[int]] = {}
        self._bytes = 0
        self._committing: set[str] = set()  # committed but not yet in the in-memory queues

    @property
    def queued_bytes(self) -> int:
        """Bytes of instances still queued for some destination."""
        with self._lock:
            return self._bytes

    # -- start-up -----------------------------------------------------------------------------

    def recover(self) -> list[RecoveredQueue]:
        """Discard incomplete receipts and list what is left to upload, per queue.

        Raises:
            SpoolError: the spool folders cannot be created or read.
        """
        try:
            self.layout.create()
            discarded = self._discard_incomplete()
            queues = [self._recover_queue(folder) for folder in sorted(self.layout.queues.iterdir())
                      if folder.is_dir()]
        except OSError as exc:
            raise SpoolError(f"cannot recover spool {self.layout.root}: {exc}") from exc
        total = sum(len(q.names) for q in queues)
        LOG.info(
            "spool %s: %d queued uploads in %d queues (%.1f MB), %d incomplete receipts discarded",
            self.layout.root, total, len(queues), self.queued_bytes / MB, discarded,
        )
        return queues

    def _discard_incomplete(self) -> int:
        count = 0
        for path in self.layout.incoming.iterdir():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            count += 1
        for path in self.layout.staging.iterdir():
            # Never committed: take it out of every queue it was linked into.
            for queue in self.layout.queues.iterdir():
                (queue / path.name).unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            count += 1
        return count

    def _recover_queue(self, folder: Path) -> RecoveredQueue:
        names: list[str] = []
        for path in folder.iterdir():
            if is_entry_name(path.name):
                names.append(path.name)
                self._account(path.name, path.stat().st_size)
            elif path.name != DESCRIPTOR:
                path.unlink(missing_ok=True)  # a temporary file of an unfinished write
        names.sort()
        return RecoveredQueue(folder.name, read_json(folder / DESCRIPTOR), tuple(names))

    def _account(self, name: str, size: int) -> None:
        with self._lock:
            entry = self._files.get(name)
            if entry is None:
                self._files[name] = [size, 1]
                self._bytes += size
            else:
                entry[1] += 1

    def ensure_queue(self, key: str, description: Any) -> None:
        """Create a destination's queue folder with its description.

        Raises:
            SpoolError: the folder cannot be created.
        """
        folder = self.layout.queue(key)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if read_json(folder / DESCRIPTOR) != description:
                write_json_atomic(folder / DESCRIPTOR, description)
            fsync_dir(self.layout.queues)
        except OSError as exc:
            raise SpoolError(f"cannot create queue {folder}: {exc}") from exc

    def scan(self, key: str) -> list[str]:
        """Committed entry names in a queue, oldest first, except those being committed now."""
        try:
            staged = {p.name for p in self.layout.staging.iterdir()}
            with self._lock:
                staged |= self._committing
            names = [
                p.name
                for p in self.layout.queue(key).iterdir()
                if is_entry_name(p.name) and p.name not in staged
            ]
        except OSError:
            return []
        return sorted(names)

    def adopt(self, key: str, name: str) -> bool:
        """Count an entry found by :meth:`scan` (False if it vanished meanwhile)."""
        try:
            size = (self.layout.queue(key) / name).stat().st_size
        except OSError:
            return False
        self._account(name, size)
        return True

    # -- admission and commit -----------------------------------------------------------------

    def admit(self) -> None:
        """Refuse new instances when a watermark is reached.

        Raises:
            SpoolFullError: the spool holds ``max_bytes`` or the disk is below its free floor.
        """
        limits = self._limits
        if limits.max_bytes and self.queued_bytes >= limits.max_bytes:
            raise SpoolFullError(
                f"spool holds {self.queued_bytes / MB:.1f} MB (limit {limits.max_bytes / MB:.1f})"
            )
        if limits.min_free_bytes:
            try:
                stats = os.statvfs(self.layout.root)
            except OSError as exc:
                raise SpoolError(f"cannot stat spool file system: {exc}") from exc
            free = stats.f_bavail * stats.f_frsize
            if free < limits.min_free_bytes:
                raise SpoolFullError(
                    f"{free / MB:.0f} MB free on the spool's disk "
                    f"(floor {limits.min_free_bytes / MB:.0f} MB)"
                )

    def commit(self, instance: Part10Instance, origin: Origin, keys: list[str]) -> str:
        """Make a received instance durable in the queues ``keys``; returns its entry name.

        Takes ownership of the origin's file (it is renamed away) when there is one; otherwise
        (an instance held in memory only) writes ``instance`` to a new file.

        Raises:
            RoutingError: ``keys`` is empty (an instance must never be acknowledged and dropped).
            SpoolError: a file system operation failed (nothing was queued).
        """
        if not keys:
            raise RoutingError("instance matches no destination")
        name = new_entry_name(origin.source_aet)
        with self._lock:
            self._committing.add(name)
        staged = self.layout.staging / name
        linked: list[Path] = []
        try:
            source = origin.file
            if source is None:  # held in memory only
                instance.write_to(staged)
                source = staged
            fsync_file(source)
            size = source.stat().st_size
            if len(keys) == 1:
                target = self.layout.queue(keys[0]) / name
                os.rename(source, target)
                fsync_dir(target.parent)
            else:
                if source != staged:
                    os.rename(source, staged)
                fsync_dir(self.layout.staging)
                for key in keys:
                    target = self.layout.queue(key) / name
                    os.link(staged, target)
                    linked.append(target)
                for target in linked:
                    fsync_dir(target.parent)
                staged.unlink()  # the commit point
                fsync_dir(self.layout.staging)
        except OSError as exc:
            for target in linked:
                target.unlink(missing_ok=True)
            staged.unlink(missing_ok=True)
            self.queued(name)
            raise SpoolError(f"cannot spool {instance.sop_instance_uid}: {exc}") from exc
        with self._lock:
            self._files[name] = [size, len(keys)]
            self._bytes += size
        return name

    def queued(self, name: str) -> None:
        """Say that a committed entry is now in the in-memory queues."""
        with self._lock:
            self._committing.discard(name)

    # -- leaving the queues -------------------------------------------------------------------

    def _release(self, name: str) -> None:
        with self._lock:
            entry = self._files.get(name)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del self._files[name]
                self._bytes -= entry[0]

    def remove(self, key: str, name: str) -> None:
        """Remove an entry from one queue (uploaded, or abandoned by its sender)."""
        try:
            (self.layout.queue(key) / name).unlink(missing_ok=True)
        except OSError as exc:
            LOG.error("cannot remove spool entry %s/%s: %s", key, name, exc)
        self._release(name)

    def dead_letter(self, key: str, name: str, record: dict[str, Any]) -> None:
        """Move an entry to the dead-letter folder with a JSON sidecar (``record``)."""
        folder = self.layout.dead_letter_folder(key)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(folder / (name + SIDECAR_SUFFIX), record)
            os.rename(self.layout.queue(key) / name, folder / name)
            fsync_dir(folder)
            fsync_dir(self.layout.queue(key))
        except OSError as exc:
            LOG.error("cannot dead-letter spool entry %s/%s: %s", key, name, exc)
        self._release(name)


def dead_letter_record(
    *,
    destination: Any,
    reason: str,
    attempts: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    calling_aet: str,
    status: int | None = None,
    http_status: int | None = None,
) -> dict[str, Any]:
    """The JSON sidecar of a dead-letter entry (identifiers only, no patient data)."""
    return {
        "destination": destination,
        "reason": reason[:500],
        "attempts": attempts,
        "sop_class_uid": sop_class_uid,
        "sop_instance_uid": sop_instance_uid,
        "calling_aet": calling_aet,
        "dimse_status": f"0x{status:04X}" if status is not None else None,
        "http_status": http_status,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
