"""The spool as a service: recovery at start, one queue per destination, pending instances.

:class:`SpoolManager` owns the :class:`~import_adapter.spool.disk.DurableSpool` and a
:class:`~import_adapter.spool.queue.DestinationQueue` per destination. At start it discards
incomplete receipts and queues everything left (for destinations no longer configured too: the
queue folder says where its instances were going). A background thread picks up entries put
back into a queue folder by ``dicom-adapter dead-letter requeue`` while the adapter runs.

One process at a time serves a spool: :meth:`SpoolManager.start` takes an exclusive lock on
its folder (``flock``, released by the kernel if the process dies), so a ``dicom-adapter spool
drain`` Job cannot upload the entries of an adapter that still runs, nor discard its receipts.

At shutdown, :meth:`SpoolManager.drain` keeps uploading until nothing is queued or its time is
up; :meth:`SpoolManager.stop` then stops the uploaders and logs in one line what is left, per
destination: it stays on disk and is uploaded at the next start.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.dicom.part10 import Part10Instance
from common.dicom.scan import scan_dataset
from common.dimse.fast.meta import read_file_meta
from common.errors import ConfigError, MalformedDatasetError, SpoolError
from common.metrics import NULL_IMPORT_OBSERVER, ImportObserver
from common.sinks import Origin
from import_adapter.routing.destinations import Destination, destination_from_description
from import_adapter.spool.disk import DurableSpool, SpoolLimits
from import_adapter.spool.layout import SpoolLayout, entry_age
from import_adapter.spool.queue import DestinationQueue, QueueEntry, Receipt, UploadSettings
from import_adapter.spool.uploaders import Uploader

LOG = logging.getLogger(__name__)

UploaderFactory = Callable[[Destination], Callable[[], Uploader]]


@dataclass(frozen=True)
class SpoolSettings:
    """The durable spool.

    Attributes:
        directory: ``--persistent_file_storage_location``.
        auto_ack: answer C-STOREs once the instance is durable (``--auto_ack_cstore``); else
            once every destination has it (or has refused it).
        limits: admission control watermarks.
        upload: retries, backoff and concurrency of the uploads.
        sync_timeout: without auto-ack, the longest an SCU waits for the uploads; after it, the
            SCU gets a failure and the instance is withdrawn (unless an upload is in flight).
    """

    directory: Path
    auto_ack: bool = False
    limits: SpoolLimits = field(default_factory=SpoolLimits)
    upload: UploadSettings = field(default_factory=UploadSettings)
    sync_timeout: float = 30.0


def _recovered_entry(path: Path, receipt: Receipt | None) -> QueueEntry:
    """The queue entry of a spooled file found on disk (its UIDs, study and size read back)."""
    try:
        meta = read_file_meta(path)
        size = path.stat().st_size
    except (MalformedDatasetError, OSError):  # dead-lettered by its upload attempt
        return QueueEntry(path.name, "", "", receipt, recovered=True)
    try:
        with path.open("rb") as fp:
            fp.seek(meta.dataset_offset)
            summary = scan_dataset(fp, size - meta.dataset_offset, meta.transfer_syntax_uid)
        study = summary.study_instance_uid
    except (MalformedDatasetError, OSError):  # unknown study: sent alone, its upload judges it
        study = ""
    return QueueEntry(
        path.name, meta.sop_instance_uid, meta.sop_class_uid, receipt, study=study, size=size,
        recovered=True,
    )  # fmt: skip


class SpoolManager:
    """Queues, recovery and the pending-instance index of one spool."""

    def __init__(
        self,
        settings: SpoolSettings,
        destinations: Sequence[Destination],
        uploader_factory: UploaderFactory,
        observer: ImportObserver = NULL_IMPORT_OBSERVER,
    ) -> None:
        self.settings = settings
        self._observer = observer
        self.spool = DurableSpool(SpoolLayout(settings.directory), settings.limits)
        self._destinations = list(destinations)
        self._factory = uploader_factory
        self._queues: dict[str, DestinationQueue] = {}
        self._pending: Counter[str] = Counter()
        self._pending_cond = threading.Condition()
        self._stop = threading.Event()
        self._rescanner: threading.Thread | None = None
        self._lock_fd: int | None = None

    @property
    def layout(self) -> SpoolLayout:
        """The spool's folders."""
        return self.spool.layout

    def queue(self, key: str) -> DestinationQueue:
        """The queue of a destination key."""
        return self._queues[key]

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Recover the spool and start uploading.

        Raises:
            SpoolError: the spool cannot be read or created.
            ConfigError: another process serves this spool.
        """
        self._take_lock()
        recovered = self.spool.recover()
        for destination in self._destinations:
            self._add_queue(destination)
        for found in recovered:
            if found.key not in self._queues:
                try:
                    destination = destination_from_description(
                        found.description, f"queue {found.key}"
                    )
                except ConfigError as exc:
                    LOG.error("spool queue %s kept but not served: %s", found.key, exc)
                    continue
                LOG.warning(
                    "draining %d instances queued for %s, which is no longer configured",
                    len(found.names), destination,
                )
                self._add_queue(destination)
            queue = self._queues[found.key]
            for name in found.names:
                self._enqueue(queue, name, None)
        for queue in self._queues.values():
            queue.start()
        self._rescanner = threading.Thread(target=self._rescan, name="spool-rescan", daemon=True)
        self._rescanner.start()

    def _add_queue(self, destination: Destination) -> None:
        if destination.key in self._queues:
            return
        self.spool.ensure_queue(destination.key, destination.describe())
        self._queues[destination.key] = DestinationQueue(
            destination,
            self.spool,
            self._factory(destination),
            self.settings.upload,
            self._settled,
            self._observer,
        )

    def _take_lock(self) -> None:
        root = self.layout.root
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.layout.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SpoolError(f"cannot create spool {root}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise ConfigError(
                f"spool {root} is in use by another process (an import adapter or "
                "`dicom-adapter spool drain`): each process needs its own "
                "--persistent_file_storage_location"
            ) from exc
        self._lock_fd = fd

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock

    def queued(self) -> int:
        """Uploads still queued or in flight, all destinations together."""
        return sum(queue.depth for queue in list(self._queues.values()))

    def drain(self, timeout: float) -> bool:
        """Keep uploading until nothing is queued or ``timeout`` seconds passed.

        Returns True when the queues are empty (dead letters do not count: they are not
        retried). Uploads go on meanwhile exactly as before, with their backoff; call
        :meth:`stop` afterwards.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        queued = self.queued()
        if queued and timeout > 0:
            LOG.info(
                "draining the spool: %d uploads queued, waiting up to %g s", queued, timeout
            )
        with self._pending_cond:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._pending_cond.wait(min(remaining, 1.0))
        return self.queued() == 0

    def stop(self, timeout: float = 10.0) -> dict[str, int]:
        """Stop the uploaders; what is still queued stays in the spool for the next start.

        Uploads in flight get ``timeout`` seconds to end. Logs what is left in one line and
        returns it: entries on disk per destination (as :class:`Destination` prints itself).
        """
        self._stop.set()
        deadline = time.monotonic() + timeout
        for queue in self._queues.values():
            queue.stop(max(0.0, deadline - time.monotonic()))
        left: dict[str, int] = {}
        names: set[str] = set()
        for queue in self._queues.values():
            entries = self.spool.scan(queue.key)
            if entries:
                left[str(queue.destination)] = len(entries)
                names.update(entries)
        self._release_lock()
        if names:
            LOG.warning(
                "%d instances left in the spool for %s; they are uploaded at the next start",
                len(names), ", ".join(f"{where} ({count})" for where, count in left.items()),
            )
        elif self._queues:
            LOG.info("spool %s: nothing left to upload", self.layout.root)
        return left

    # -- instances ----------------------------------------------------------------------------

    def admit(self) -> None:
        """Raise :class:`~common.errors.SpoolFullError` when a watermark is reached."""
        self.spool.admit()

    def submit(
        self,
        instance: Part10Instance,
        origin: Origin,
        destinations: Iterable[Destination],
        receipt: Receipt | None,
    ) -> str:
        """Spool an instance durably for ``destinations`` and queue it; returns its entry name.

        Raises:
            SpoolError: it could not be made durable (nothing was queued).
            RoutingError: no destinations.
        """
        keys = []
        for destination in destinations:
            self._add_queue_live(destination)
            keys.append(destination.key)
        name = self.spool.commit(instance, origin, keys)
        for key in keys:
            entry = QueueEntry(
                name, instance.sop_instance_uid, instance.sop_class_uid, receipt,
                study=instance.study_instance_uid, size=instance.size,
            )  # fmt: skip
            self._count(instance.sop_instance_uid, +1)
            self._queues[key].put(entry)
        self.spool.queued(name)
        return name

    def _add_queue_live(self, destination: Destination) -> None:
        if destination.key not in self._queues:
            self._add_queue(destination)
            self._queues[destination.key].start()

    def _enqueue(self, queue: DestinationQueue, name: str, receipt: Receipt | None) -> None:
        if queue.knows(name):
            return
        entry = _recovered_entry(self.layout.queue(queue.key) / name, receipt)
        if queue.put(entry):
            self._count(entry.sop_instance_uid, +1)

    def _settled(self, entry: QueueEntry) -> None:
        self._count(entry.sop_instance_uid, -1)

    def _count(self, uid: str, delta: int) -> None:
        with self._pending_cond:
            self._pending[uid] += delta
            if self._pending[uid] <= 0:
                del self._pending[uid]
                self._pending_cond.notify_all()

    def is_pending(self, sop_instance_uid: str) -> bool:
        """Whether an instance is still queued for some destination."""
        with self._pending_cond:
            return self._pending.get(sop_instance_uid, 0) > 0

    def wait_uploaded(self, sop_instance_uids: Iterable[str], timeout: float) -> set[str]:
        """Wait until none of the instances is queued; returns those still queued at timeout."""
        wanted = set(sop_instance_uids)
        deadline = time.monotonic() + timeout
        with self._pending_cond:
            while True:
                waiting = {uid for uid in wanted if self._pending.get(uid, 0) > 0}
                remaining = deadline - time.monotonic()
                if not waiting or remaining <= 0:
                    return waiting
                self._pending_cond.wait(min(remaining, 1.0))

    def _rescan(self) -> None:
        interval = self.settings.upload.rescan_interval
        while not self._stop.wait(interval):
            depth, oldest = 0, 0.0
            for queue in list(self._queues.values()):
                for name in self.spool.scan(queue.key):
                    depth += 1
                    oldest = max(oldest, entry_age(name))
                    if not queue.knows(name) and self.spool.adopt(queue.key, name):
                        LOG.info("picked up re-queued %s for %s", name, queue.destination)
                        self._enqueue(queue, name, None)
            # The scan already lists every queued entry: report depth and age from it.
            self._observer.spool_state(depth, oldest)
