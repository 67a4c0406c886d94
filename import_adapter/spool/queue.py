"""One destination's upload queue: bounded concurrency, capped backoff, arrival order.

Each destination has its own :class:`DestinationQueue` (its own workers, backoff and health),
so a dead destination only delays its own copies. Entries are served oldest first; an entry
waiting out its backoff steps aside (no head-of-line blocking) and, once due, goes back ahead
of newer entries, so a series that arrived earlier is not starved by later traffic.

How many uploads a DICOMweb destination has in flight adapts to it
(:mod:`import_adapter.spool.concurrency`): it grows while the store answers as fast as before
and shrinks as it starts queueing, up to ``--upload_concurrency``; a DIMSE destination keeps a
fixed number of associations.

When more instances wait than requests may start, a STOW-RS request carries several of the same
study (:class:`BatchSettings`: bounded count and bytes); each instance's outcome is read from the
response, and one the store refused inside a batch is sent again alone, so that its own answer
decides whether it is retried or dead-lettered - its neighbours are not touched.

Delays follow ``min(max_delay, min_delay * 2**(n-1))`` with +-10 % jitter. When the
destination cannot be reached at all, the *destination* is paused on that schedule and probed
by one worker at a time; such attempts do not use up the entries' retries, so an outage of any
length loses nothing (admission control bounds the disk meanwhile). An overload answer (HTTP
429 or 503, the store's quota) also pauses the destination as a whole, for its ``Retry-After``
(else the entry's backoff), and halves its concurrency: every worker waits, not only the one
that was told.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common.metrics import NULL_IMPORT_OBSERVER, ImportObserver
from common.status import OVERLOAD_HTTP_STATUSES, SUCCESS, DimseStatus, Status
from import_adapter.routing.destinations import Destination, DimseDestination
from import_adapter.spool.concurrency import AdaptiveLimit, ConcurrencySettings
from import_adapter.spool.disk import DurableSpool, dead_letter_record
from import_adapter.spool.layout import entry_calling_aet
from import_adapter.spool.outcome import Kind, UploadResult
from import_adapter.spool.uploaders import Uploader

LOG = logging.getLogger(__name__)

#: The longest ``Retry-After`` honoured for an overloaded destination, in seconds.
_MAX_RETRY_AFTER = 300.0


@dataclass(frozen=True)
class BatchSettings:
    """How many queued instances one STOW-RS request may carry.

    A batch is made only from instances already waiting when a request can start and the
    backlog is more than the requests allowed in flight: it never waits for a batch to fill,
    so an SCU waiting for its one instance (synchronous mode) is not slowed down.

    Attributes:
        max_instances: instances per request (``--stow_batch_max_instances``; 1: no batches).
        max_bytes: bytes per request (``--stow_batch_max_mb``); a larger instance goes alone.
    """

    max_instances: int = 10
    max_bytes: int = 16 << 20

    @classmethod
    def off(cls) -> BatchSettings:
        """One instance per request (DIMSE destinations: one C-STORE per instance)."""
        return cls(max_instances=1)


#: How many queued entries past the first a batch looks at for ones of the same study.
_BATCH_LOOKAHEAD = 4


@dataclass(frozen=True)
class UploadSettings:
    """How queued instances are uploaded.

    Attributes:
        retry_amount: retries of an instance after failed attempts the destination answered
            (``--persistent_file_upload_retry_amount``); then it is dead-lettered.
        min_delay: seconds before the first retry (``--min_upload_delay``).
        max_delay: the cap on one delay (``--max_waiting_time_between_uploads``).
        concurrency: how many uploads a DICOMweb destination may have in flight (adaptive,
            capped by ``--upload_concurrency``).
        dimse_workers: associations per DIMSE destination (each keeps its association open;
            many PACSs serve one association per peer at a time).
        batch: several instances per STOW-RS request when a backlog builds up.
        retry_codes: HTTP statuses below 500 to retry besides 408, 425 and 429.
        overwrite: on conflict, delete the instance and store it again (``--stow_overwrite``).
        rescan_interval: seconds between looks for re-queued dead letters.
    """

    retry_amount: int = 5
    min_delay: float = 0.1
    max_delay: float = 5.0
    concurrency: ConcurrencySettings = field(default_factory=ConcurrencySettings)
    dimse_workers: int = 1
    batch: BatchSettings = field(default_factory=BatchSettings)
    retry_codes: frozenset[int] = frozenset()
    overwrite: bool = False
    rescan_interval: float = 5.0

    def delay(self, attempt: int) -> float:
        """The backoff before try ``attempt + 1`` (``attempt`` >= 1), with jitter."""
        base = min(self.max_delay, self.min_delay * (2 ** min(attempt - 1, 30)))
        return float(base * random.uniform(0.9, 1.1))


class Receipt:
    """An SCU waiting for its instance to reach every destination (synchronous mode)."""

    def __init__(self, destinations: int) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._remaining = destinations
        self._statuses: list[DimseStatus] = []
        self.last_failure: DimseStatus | None = None
        self.abandoned = False

    def settle(self, status: DimseStatus) -> None:
        """Record one destination's final status."""
        with self._lock:
            self._statuses.append(status)
            self._remaining -= 1
            if self._remaining <= 0:
                self._done.set()

    def note(self, status: DimseStatus) -> None:
        """Remember a failed attempt that will be retried (answered if time runs out)."""
        self.last_failure = status

    def wait(self, timeout: float) -> DimseStatus | None:
        """The combined status once every destination is settled; None on timeout."""
        if not self._done.wait(timeout):
            return None
        failures = [s for s in self._statuses if s.is_failure]
        if failures:
            return failures[0]
        warnings = [s for s in self._statuses if s.is_warning]
        return warnings[0] if warnings else SUCCESS


@dataclass(order=True)
class QueueEntry:
    """One instance queued for one destination (ordered by arrival).

    ``study`` and ``size`` decide which entries may share a batch ('' and 0 when unknown: such
    an entry goes alone). ``solo``: the store refused it inside a batch, or refused a batch as
    a whole; from then on it is sent alone, so that its own answer decides its fate.
    ``recovered``: found in the spool at start (or by a rescan), not received by this process:
    its upload may have been under way when the last one stopped, so the store may hold it
    already (see :meth:`Uploader.upload`'s ``maybe_stored``).
    """

    name: str
    sop_instance_uid: str = field(compare=False)
    sop_class_uid: str = field(compare=False, default="")
    receipt: Receipt | None = field(compare=False, default=None)
    attempts: int = field(compare=False, default=0)
    study: str = field(compare=False, default="")
    size: int = field(compare=False, default=0)
    solo: bool = field(compare=False, default=False)
    recovered: bool = field(compare=False, default=False)


class DestinationQueue:
    """The queue and workers of one destination."""

    def __init__(
        self,
        destination: Destination,
        spool: DurableSpool,
        uploader_factory: Callable[[], Uploader],
        settings: UploadSettings,
        on_settled: Callable[[QueueEntry], None],
        observer: ImportObserver = NULL_IMPORT_OBSERVER,
    ) -> None:
        self.destination = destination
        self.key = destination.key
        self._spool = spool
        self._factory = uploader_factory
        self._settings = settings
        self._on_settled = on_settled
        self._observer = observer
        self._label = str(destination)
        concurrency = settings.concurrency
        self._batch = settings.batch
        if isinstance(destination, DimseDestination):
            # Each worker holds an association: a fixed number, as the PACS allows.
            concurrency = ConcurrencySettings.fixed(settings.dimse_workers)
            self._batch = BatchSettings.off()
        self._limit = AdaptiveLimit(concurrency)
        self._cond = threading.Condition()
        self._ready: list[QueueEntry] = []  # heap by name (arrival order)
        self._delayed: list[tuple[float, QueueEntry]] = []  # heap by due time
        self._known: set[str] = set()
        self._inflight = 0
        self._failures = 0  # consecutive "unreachable" outcomes
        self._overloads = 0  # consecutive overload answers (429, 503)
        self._paused_until = 0.0
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"DestinationQueue({self.destination})"

    # -- feeding ------------------------------------------------------------------------------

    def put(self, entry: QueueEntry) -> bool:
        """Queue an entry (False if it is already queued)."""
        with self._cond:
            if entry.name in self._known:
                return False
            self._known.add(entry.name)
            heapq.heappush(self._ready, entry)
            self._cond.notify()
        return True

    def knows(self, name: str) -> bool:
        """Whether an entry name is queued or in flight here."""
        with self._cond:
            return name in self._known

    @property
    def concurrency(self) -> int:
        """Uploads allowed in flight now."""
        with self._cond:
            return self._limit.limit

    @property
    def depth(self) -> int:
        """Entries queued or in flight."""
        with self._cond:
            return len(self._known)

    # -- workers ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers."""
        # One thread per possible upload; the adaptive limit decides how many work at once.
        self._observer.upload_concurrency(self._label, self._limit.limit)
        for index in range(self._limit.cap):
            thread = threading.Thread(
                target=self._work, name=f"upload-{self.key}-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float) -> None:
        """Stop taking entries; wait up to ``timeout`` for uploads in flight."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _wake(self) -> None:
        """Wake as many idle workers as may start an upload now (called under the lock).

        Not all of them: with a limit up to ``--upload_concurrency`` threads wait here, and
        waking every one on each completed upload cost about 1 ms of CPU per instance. A wait
        for a pause or a backoff to end is timed, so it needs no wake-up.
        """
        room = min(len(self._ready), self._limit.limit - self._inflight)
        if self._failures and self._inflight:
            room = 0  # probing an unreachable destination: one upload at a time
        if room > 0:
            self._cond.notify(room)

    def _take(self) -> list[QueueEntry] | None:
        """The next request's entries (one, or a batch); None when stopping."""
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    heapq.heappush(self._ready, heapq.heappop(self._delayed)[1])
                probing = self._failures > 0
                if (
                    self._ready
                    and now >= self._paused_until
                    and self._inflight < self._limit.limit
                    and not (probing and self._inflight)
                ):
                    backlog = len(self._ready) > self._limit.limit - self._inflight
                    entry = heapq.heappop(self._ready)
                    self._inflight += 1
                    if backlog and not probing:
                        return self._batch_from(entry)
                    return [entry]
                waits = [1.0]
                if self._delayed:
                    waits.append(self._delayed[0][0] - now)
                if self._ready and self._paused_until > now:
                    waits.append(self._paused_until - now)
                self._cond.wait(max(0.005, min(waits)))
        return None

    def _batch_from(self, first: QueueEntry) -> list[QueueEntry]:
        """``first`` and the next waiting entries of its study, within the batch bounds.

        Called under the lock. Looks a few entries past the batch's size (a study's instances
        arrive mostly in a row, interleaved with other SCUs' studies); the others stay queued.
        """
        limits = self._batch
        if limits.max_instances <= 1 or first.solo or not first.study:
            return [first]
        batch, skipped, size = [first], [], first.size
        looked = 0
        while (
            self._ready
            and len(batch) < limits.max_instances
            and looked < limits.max_instances * _BATCH_LOOKAHEAD
        ):
            entry = heapq.heappop(self._ready)
            looked += 1
            if (
                entry.study == first.study
                and not entry.solo
                and size + entry.size <= limits.max_bytes
            ):
                batch.append(entry)
                size += entry.size
            else:
                skipped.append(entry)
        for entry in skipped:
            heapq.heappush(self._ready, entry)
        return batch

    def _work(self) -> None:
        uploader = self._factory()
        try:
            while (taken := self._take()) is not None:
                entries = []
                for entry in taken:
                    if entry.receipt is not None and entry.receipt.abandoned:
                        self._drop(entry, "the SCU was answered before the upload finished")
                    else:
                        entries.append(entry)
                if not entries:
                    with self._cond:
                        self._inflight -= 1
                        self._wake()
                    continue
                paths = [self._spool.layout.queue(self.key) / e.name for e in entries]
                started = time.monotonic()
                results: list[UploadResult | None]
                try:
                    if len(paths) == 1:
                        results = [uploader.upload(paths[0], maybe_stored=entries[0].recovered)]
                    else:
                        results = list(uploader.upload_batch(paths))
                except Exception as exc:  # an uploader bug must not kill the worker
                    LOG.exception(
                        "upload of %s to %s crashed", entries[0].sop_instance_uid, self.key
                    )
                    crashed = UploadResult(
                        Kind.RETRY, DimseStatus(Status.PROCESSING_FAILURE, "Internal error"),
                        f"internal error: {type(exc).__name__}",
                    )
                    results = [crashed] * len(entries)
                size = sum(entry.size for entry in entries)
                self._finish(entries, results, time.monotonic() - started, size)
        finally:
            uploader.close()

    # -- outcomes -----------------------------------------------------------------------------

    def _finish(
        self,
        entries: list[QueueEntry],
        results: list[UploadResult | None],
        seconds: float = 0.0,
        size: int = 0,
    ) -> None:
        """Settle one request: the destination's state once, then each entry's fate.

        Entries going back to the queue go back together, under one lock, with one due time:
        a batch refused as a whole (the store's state) is retried as a batch. A result of None
        sends its entry again alone (refused inside a batch); that does not use up a retry.
        """
        settings = self._settings
        answered = [result for result in results if result is not None]
        done = any(result.kind is Kind.DONE for result in answered)
        unreachable = next((r for r in answered if r.kind is Kind.UNREACHABLE), None)
        overload = next((r for r in answered if _is_overload(r)), None)
        retry_delay = self._retry_delay(entries, results)
        pause, was_paused = 0.0, False
        retried: list[tuple[QueueEntry, UploadResult]] = []
        kept: list[tuple[QueueEntry, UploadResult]] = []  # back in the queue, retries intact
        final: list[tuple[QueueEntry, UploadResult]] = []
        with self._cond:
            before = self._limit.limit
            if done:
                self._limit.sample(seconds, size, self._inflight)
                if self._failures:  # reachable again: end the outage's pause (not a quota's)
                    self._paused_until = 0.0
                self._failures = self._overloads = 0
            elif unreachable is not None:
                self._failures += 1
                pause = settings.delay(self._failures)
                self._paused_until = time.monotonic() + pause
            elif overload is not None:
                pause, was_paused = self._pause_for_overload(overload)
            else:
                self._failures = 0
            self._inflight -= 1
            now = time.monotonic()
            for entry, result in zip(entries, results, strict=True):
                if result is None:
                    entry.solo = True
                    heapq.heappush(self._ready, entry)
                elif (result.kind is Kind.UNREACHABLE or _is_overload(result)) and not (
                    entry.receipt is not None and result.answer_waiting_scu
                ):
                    # About the destination, not the instance: no retry used up.
                    heapq.heappush(self._ready, entry)
                    kept.append((entry, result))
                elif result.kind is Kind.RETRY and entry.attempts < _retries(settings, result):
                    entry.attempts += 1
                    if result.retry_after is not None:
                        self._paused_until = max(self._paused_until, now + retry_delay)
                    heapq.heappush(self._delayed, (now + retry_delay, entry))
                    retried.append((entry, result))
                else:
                    final.append((entry, result))
            self._wake()
            limit, failures, depth = self._limit.limit, self._failures, len(self._known)
        if limit != before:
            self._observer.upload_concurrency(self._label, limit)
        if unreachable is not None and not done and (failures == 1 or failures % 20 == 0):
            LOG.warning(
                "destination %s unreachable (%s); %d queued, next try in %.2f s",
                self.destination, unreachable.reason, depth, pause,
            )
        if overload is not None and unreachable is None and not done:
            self._observer.upload_paused(self._label, pause)
            if not was_paused:  # one line per pause, not one per refused upload
                after = (
                    "" if overload.retry_after is None
                    else f", Retry-After {overload.retry_after:g} s"
                )  # fmt: skip
                LOG.warning(
                    "destination %s is overloaded (HTTP %s%s): all uploads paused for %.2f s, "
                    "concurrency now %d; %d queued",
                    self.destination, overload.http_status, after, pause, limit, depth,
                )
        for entry, result in [*kept, *retried]:
            if entry.receipt is not None:
                entry.receipt.note(result.status)
        for entry, result in retried:
            LOG.warning(
                "upload of %s to %s failed (attempt %d: %s); retrying in %.2f s",
                entry.sop_instance_uid, self.destination, entry.attempts, result.reason,
                retry_delay,
            )  # fmt: skip
        for entry, result in final:
            if result.kind is Kind.DONE:
                self._spool.remove(self.key, entry.name)
                self._settle(entry, result.status)
                LOG.debug("uploaded %s to %s", entry.sop_instance_uid, self.destination)
                continue
            reason = result.reason
            if result.kind is Kind.RETRY:
                reason = f"retries exhausted ({entry.attempts}): {reason}"
            self._give_up(entry, result, reason)

    def _pause_for_overload(self, result: UploadResult) -> tuple[float, bool]:
        """HTTP 429/503: pause the whole destination and halve its concurrency (under the lock).

        The pause is the server's ``Retry-After`` (up to :data:`_MAX_RETRY_AFTER`), else the
        backoff of consecutive overload answers. Returns the pause and whether one was running.
        """
        self._failures = 0
        self._overloads += 1
        delay = self._settings.delay(self._overloads)
        if result.retry_after is not None:
            delay = max(delay, min(result.retry_after, _MAX_RETRY_AFTER))
        now = time.monotonic()
        was_paused = self._paused_until > now
        self._paused_until = max(self._paused_until, now + delay)
        self._limit.overload()
        return delay, was_paused

    def _retry_delay(self, entries: list[QueueEntry], results: list[UploadResult | None]) -> float:
        """One backoff for the entries of a request to retry: due together, they batch again."""
        retried = [
            (entry, result)
            for entry, result in zip(entries, results, strict=True)
            if result is not None and result.kind is Kind.RETRY and not _is_overload(result)
        ]
        if not retried:
            return 0.0
        delay = self._settings.delay(max(entry.attempts for entry, _ in retried) + 1)
        after = [r.retry_after for _, r in retried if r.retry_after is not None]
        if after:
            delay = max(delay, min(max(after), self._settings.max_delay * 4))
        return delay

    def _give_up(self, entry: QueueEntry, result: UploadResult, reason: str) -> None:
        if entry.receipt is not None:
            # The SCU is still waiting and gets this failure: it owns the instance again.
            self._spool.remove(self.key, entry.name)
            LOG.warning(
                "upload of %s to %s failed: %s", entry.sop_instance_uid, self.destination, reason
            )
        else:
            record = dead_letter_record(
                destination=self.destination.describe(),
                reason=reason,
                attempts=entry.attempts + 1,
                sop_class_uid=entry.sop_class_uid,
                sop_instance_uid=entry.sop_instance_uid,
                calling_aet=entry_calling_aet(entry.name),
                status=result.status.code,
                http_status=result.http_status,
            )
            self._spool.dead_letter(self.key, entry.name, record)
            LOG.error(
                "dead-lettered %s for %s (file %s): %s",
                entry.sop_instance_uid, self.destination, entry.name, reason,
            )
        self._settle(entry, result.status)

    def _drop(self, entry: QueueEntry, why: str) -> None:
        """Withdraw an entry whose SCU was already answered (its request slot is the caller's)."""
        self._spool.remove(self.key, entry.name)
        LOG.info("dropped %s for %s: %s", entry.sop_instance_uid, self.destination, why)
        self._forget(entry)

    def _settle(self, entry: QueueEntry, status: DimseStatus) -> None:
        if entry.receipt is not None:
            entry.receipt.settle(status)
        self._forget(entry)

    def _forget(self, entry: QueueEntry) -> None:
        with self._cond:
            self._known.discard(entry.name)
        self._on_settled(entry)


def _retries(settings: UploadSettings, result: UploadResult) -> int:
    """How many retries (attempts after the first) a RETRY outcome allows an entry."""
    if result.max_attempts is None:
        return settings.retry_amount
    return min(settings.retry_amount, result.max_attempts - 1)


def _is_overload(result: UploadResult) -> bool:
    """HTTP 429 or 503: the store's quota or load, about the destination as a whole."""
    return result.kind is Kind.RETRY and result.http_status in OVERLOAD_HTTP_STATUSES
