"""Bounded prefetch of WADO-RS instances, so fetching overlaps sending.

A :class:`Prefetcher` runs one background thread that retrieves the planned instances with
WADO-RS (a whole series per request when every instance of it is wanted, else one instance per
request), writes each multipart part to a spool file as it streams in, reads its file meta
(once: the sender is handed it with the file) and hands it over through a queue of at most
``depth`` instances. The consumer therefore never waits for a fetch that could have happened
while it was sending, and at most ``depth`` instances are held.

Instances that cannot be fetched (HTTP error, missing from the response, unreadable) are handed
over as :class:`FetchFailure` so the sender can count them as failed sub-operations.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.dicom.reference import InstanceReference
from common.dicomweb.client import DicomwebApi
from common.dimse.fast.meta import FileMeta, read_file_meta
from common.errors import DicomwebError, MalformedDatasetError

LOG = logging.getLogger(__name__)

@dataclass(frozen=True)
class Fetched:
    """One retrieved instance: its spool file (a Part 10 file, as the store sent it).

    Attributes:
        ref: the listed instance it is.
        path: the spool file.
        meta: the file's meta header, read once when the file was written.
    """

    ref: InstanceReference
    path: Path
    meta: FileMeta
    #: The dataset's bytes, as a C-STORE carries them (the file meta is not sent).
    dataset_size: int

    def release(self) -> None:
        """Delete the spool file (after the instance has been sent)."""
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class FetchFailure:
    """An instance that could not be fetched, and why (safe to log)."""

    ref: InstanceReference
    reason: str


FetchOutcome = Fetched | FetchFailure
_DONE = object()


def _groups(
    instances: Sequence[InstanceReference], whole_series: bool
) -> list[list[InstanceReference]]:
    """Instances grouped per WADO-RS request, in listing order."""
    if not whole_series:
        return [[ref] for ref in instances]
    groups: dict[tuple[str, str], list[InstanceReference]] = {}
    for ref in instances:
        groups.setdefault((ref.study_uid, ref.series_uid), []).append(ref)
    return list(groups.values())


class Prefetcher:
    """Fetches instances in a background thread, at most ``depth`` ahead of the consumer.

    Iterate over it to get each instance's :class:`Fetched` or :class:`FetchFailure`; call
    :meth:`close` (or use it as a context manager) to stop early and clean up.
    """

    def __init__(
        self,
        client: DicomwebApi,
        instances: Sequence[InstanceReference],
        *,
        whole_series: bool,
        depth: int = 8,
        spool_dir: Path | None = None,
    ) -> None:
        self._client = client
        self._groups = _groups(instances, whole_series)
        self._whole_series = whole_series
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._folder = Path(tempfile.mkdtemp(prefix="retrieve-", dir=spool_dir))
        self._thread = threading.Thread(target=self._run, name="wado-prefetch", daemon=True)
        self._started = False

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[FetchOutcome]:
        if not self._started:
            self._started = True
            self._thread.start()
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            assert isinstance(item, (Fetched, FetchFailure))
            yield item

    def close(self) -> None:
        """Stop fetching, wait for the thread, and delete every spool file."""
        self._stop.set()
        while self._thread.is_alive():
            try:  # unblock a producer waiting on a full queue
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, Fetched):
                item.release()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Fetched):
                item.release()
        for leftover in self._folder.glob("*"):
            leftover.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._folder.rmdir()

    # -- producer -----------------------------------------------------------------------------

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        if isinstance(item, Fetched):
            item.release()
        return False

    def _run(self) -> None:
        try:
            for group in self._groups:
                if self._stop.is_set():
                    return
                self._fetch_group(group)
        except Exception:  # a bug here must not hang the consumer
            LOG.exception("WADO-RS prefetch failed")
        finally:
            if not self._stop.is_set():
                self._put(_DONE)

    def _fetch_group(self, group: list[InstanceReference]) -> None:
        pending = {ref.sop_instance_uid: ref for ref in group}
        first = group[0]
        if self._whole_series:
            resource: tuple[str, ...] = ("studies", first.study_uid, "series", first.series_uid)
        else:
            resource = first.dicomweb_segments
        reason = "not in the WADO-RS response"
        try:
            for part in self._client.retrieve(resource):
                if self._stop.is_set():
                    return
                fd, name = tempfile.mkstemp(suffix=".dcm", dir=self._folder)
                os.close(fd)
                path = Path(name)
                size = part.write_to(path)
                outcome = self._read(path, size, pending)
                if outcome is None:
                    path.unlink(missing_ok=True)
                    continue
                del pending[outcome.ref.sop_instance_uid]
                if not self._put(outcome):
                    return
        except DicomwebError as exc:
            reason = f"WADO-RS failed: {exc}"
            LOG.warning("WADO-RS of series %s failed: %s", first.series_uid, exc)
        for ref in pending.values():
            if not self._put(FetchFailure(ref, reason)):
                return

    @staticmethod
    def _read(path: Path, size: int, pending: dict[str, InstanceReference]) -> Fetched | None:
        try:
            meta = read_file_meta(path)
        except MalformedDatasetError as exc:
            LOG.warning("WADO-RS part is not a DICOM Part 10 instance: %s", exc)
            return None
        ref = pending.get(meta.sop_instance_uid)
        if ref is None:
            return None  # stored after the listing, or not asked for
        return Fetched(ref, path, meta, size - meta.dataset_offset)
