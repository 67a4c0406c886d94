"""Storage Commitment requests: validate, answer at once, then check and report in the background.

An N-ACTION (action type 1) names a Transaction UID and the SOP instances (class and instance
UID) to commit. It is answered Success as soon as it is understood; then, in a worker thread,
until the transaction's *deadline* (``wait`` seconds after the request arrived):

1. each instance is looked up with QIDO-RS in the store (the ``--dicomweb_address`` store):
   found with the same SOP class -> committed; found with another class -> 0x0119 at once.
   Instances whose study this process knows (it received them: :mod:`.known_studies`) are
   looked up together, one listing of the study's instances (``studies/{uid}/instances``) for
   all those of one study; the others, and any its study's listing did not settle, with one
   search each (``instances?SOPInstanceUID=``) - see :meth:`CommitmentService._look_up`;
2. an instance not found (or whose lookup failed) is looked up again, on a backoff schedule
   (``lookup_backoff``: 0.5 s doubling up to 10 s by default), until it is found or the
   deadline comes: with several replicas behind one load balancer, the request may reach a
   replica other than the one that received the images and is still uploading them; an
   instance still queued in *this* replica's spool is not looked up until its upload ends;
3. the report goes out as soon as every instance is settled, at the latest at the deadline,
   when a still-missing instance fails with 0x0112 (its last lookup failed: 0x0110);
4. the requester (its AE title looked up in the AET dictionary) gets an N-EVENT-REPORT on an
   association we open: event 1 when all are committed, else event 2 with FailedSOPSequence.
   An unreachable requester is retried with capped backoff for ``report_retry.budget`` seconds.

At shutdown (:meth:`CommitmentService.stop`, after the spool has drained) no accepted
transaction is dropped: every one not yet reported, running or still queued, stops waiting,
gets one final lookup of its unsettled instances and its report (failed instances with their
reason), within ``shutdown_window`` seconds. The requester learns the outcome now, rather than
never if this replica does not come back (scale-down); it may send again what failed and ask
again, and any replica then answers from the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from common.dicom.reference import InstanceReference
from common.dicomweb.client import DicomwebApi
from common.dimse.aet_dictionary import AetDictionary
from common.dimse.sender import PeerAddress
from common.errors import AdapterError, CommitmentRequestError, DimseError, ShuttingDownError
from common.metrics import NULL_IMPORT_OBSERVER, ImportObserver
from common.retry import RetryPolicy
from common.status import (
    SUCCESS,
    DimseStatus,
    Status,
    commitment_failure_reason,
    commitment_request_status,
)
from import_adapter.commitment.known_studies import KnownStudies
from import_adapter.commitment.report import (
    EVENT_ALL_COMMITTED,
    EVENT_SOME_FAILED,
    ReportSettings,
    send_report,
)

LOG = logging.getLogger(__name__)

#: The only N-ACTION type of Storage Commitment Push Model: "Request Storage Commitment".
ACTION_REQUEST_COMMITMENT = 1
_SOP_CLASS_TAG = "00080016"
_SOP_INSTANCE_TAG = "00080018"
_LOOKUPS_IN_PARALLEL = 4
#: Unsettled instances of one known study from which it is listed instead of searched one by
#: one (for a single instance, its own search costs a request too, and reads less).
_STUDY_LISTING_MIN = 2
#: The ``limit`` of each page of a study's listing; a listing stops after as many pages as it
#: has instances to find (then those not seen yet are searched one by one: never more
#: requests than that, however large the study).
_STUDY_PAGE_SIZE = 1000
#: While waiting for instances in the spool, how often shutdown is looked at (seconds).
_SPOOL_POLL = 0.2
#: At shutdown, the longest pause between two tries of an unreachable requester (seconds).
_FINAL_REPORT_RETRY = 1.0
#: The shortest timeout a report association gets at shutdown (seconds).
_FINAL_REPORT_TIMEOUT = 1.0


class PendingInstances(Protocol):
    """Instances received but not yet uploaded (the spool)."""

    def wait_uploaded(self, sop_instance_uids: Iterable[str], timeout: float) -> set[str]:
        """Wait until none is queued; return those still queued at ``timeout`` (0: at once)."""
        ...


@dataclass(frozen=True)
class CommitmentSettings:
    """How Storage Commitment is served.

    Attributes:
        wait: seconds after a request's arrival until which missing instances are looked up
            again (and instances in the spool waited for); then they are reported failed.
        lookup_backoff: the pauses between lookups of a missing instance (0.5 s doubling up to
            10 s by default); only its schedule counts (:meth:`RetryPolicy.backoff`): ``wait``,
            not its budget, ends the lookups.
        report_retry: backoff and time budget for reaching an unreachable requester.
        report: how the report association is requested.
        workers: commitment transactions checked at once (a transaction waiting for its
            instances holds one; others queue, their deadlines running).
        shutdown_window: seconds the final checks and reports get at shutdown.
    """

    wait: float = 120.0
    lookup_backoff: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(initial_delay=0.5, max_delay=10.0)
    )
    report_retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(initial_delay=1.0, max_delay=30.0, budget=3600.0)
    )
    report: ReportSettings = field(default_factory=ReportSettings)
    workers: int = 16
    shutdown_window: float = 15.0


@dataclass(frozen=True)
class CommitmentRequest:
    """A validated Storage Commitment request."""

    calling_aet: str
    transaction_uid: str
    instances: tuple[InstanceReference, ...]


def parse_request(calling_aet: str, action_type: int | None, info: Dataset) -> CommitmentRequest:
    """Validate an N-ACTION's Action Information.

    Raises:
        CommitmentRequestError: wrong action type, missing Transaction UID or references.
    """
    if action_type != ACTION_REQUEST_COMMITMENT:
        raise CommitmentRequestError(
            f"action type {action_type} is not 1", status=Status.NO_SUCH_ACTION_TYPE
        )
    transaction = str(info.get("TransactionUID", "") or "").strip()
    if not transaction:
        raise CommitmentRequestError("no Transaction UID", status=Status.MISSING_ATTRIBUTE)
    items = info.get("ReferencedSOPSequence")
    if not items:
        raise CommitmentRequestError(
            "no Referenced SOP Sequence", status=Status.MISSING_ATTRIBUTE
        )
    refs = []
    for index, item in enumerate(items):
        sop_class = str(item.get("ReferencedSOPClassUID", "") or "").strip()
        sop_instance = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
        if not sop_class or not sop_instance:
            raise CommitmentRequestError(
                f"Referenced SOP Sequence item {index} lacks a UID",
                status=Status.INVALID_ARGUMENT_VALUE,
            )
        refs.append(InstanceReference(sop_class_uid=sop_class, sop_instance_uid=sop_instance))
    return CommitmentRequest(calling_aet, transaction, tuple(refs))


def build_report(
    transaction_uid: str,
    committed: list[InstanceReference],
    failed: list[tuple[InstanceReference, int]],
) -> tuple[int, Dataset]:
    """The N-EVENT-REPORT event type and Event Information (PS3.4 J.3.3.1)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    if committed:
        ds.ReferencedSOPSequence = DicomSequence([_item(ref) for ref in committed])
    if failed:
        items = []
        for ref, reason in failed:
            item = _item(ref)
            item.FailureReason = reason
            items.append(item)
        ds.FailedSOPSequence = DicomSequence(items)
    return (EVENT_SOME_FAILED if failed else EVENT_ALL_COMMITTED), ds


def _item(ref: InstanceReference) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_instance_uid
    return item


#: One lookup's outcome: None (committed) or a FailureReason, per instance settled or failed.
Verdicts = dict[InstanceReference, int | None]


def verdict(ref: InstanceReference, classes: set[str | None]) -> int | None:
    """An instance the store lists, with these SOP classes: None (committed) or 0x0119.

    A store that does not return the SOP Class UID (``{None}``) is taken at its word.
    """
    if ref.sop_class_uid in classes or classes == {None}:
        return None
    return int(Status.CLASS_INSTANCE_CONFLICT)


def group_by_study(
    refs: Iterable[InstanceReference], studies: Mapping[str, str]
) -> tuple[dict[str, list[InstanceReference]], list[InstanceReference]]:
    """Split ``refs`` into those to find in their study's listing and those to search alone.

    ``studies`` maps SOP Instance UIDs to their Study Instance UID where known. A study is
    listed when at least ``_STUDY_LISTING_MIN`` of ``refs`` are in it; every other instance
    (study unknown, or alone in its study) is searched by itself. Order is kept within each.
    """
    by_study: dict[str, list[InstanceReference]] = {}
    alone: list[InstanceReference] = []
    for ref in refs:
        study = studies.get(ref.sop_instance_uid)
        if study is None:
            alone.append(ref)
        else:
            by_study.setdefault(study, []).append(ref)
    for study in [s for s, members in by_study.items() if len(members) < _STUDY_LISTING_MIN]:
        alone.extend(by_study.pop(study))
    return by_study, alone


def settle_from_listing(
    refs: Sequence[InstanceReference], listing: Iterable[dict[str, Any]]
) -> tuple[Verdicts, list[InstanceReference]]:
    """Settle ``refs`` from a study's instance listing (DICOM JSON results).

    Returns the verdict of each instance listed (committed, or 0x0119 when listed with another
    SOP class) and, in order, those not listed. Stops reading the listing (and so requesting
    its pages) once every one of ``refs`` has been seen.
    """
    wanted = {ref.sop_instance_uid for ref in refs}
    classes: dict[str, set[str | None]] = {}
    for result in listing:
        uid = _first_value(result, _SOP_INSTANCE_TAG)
        if uid in wanted:
            classes.setdefault(uid, set()).add(_first_value(result, _SOP_CLASS_TAG))
            if len(classes) == len(wanted):
                break
    found = {
        ref: verdict(ref, seen) for ref in refs
        if (seen := classes.get(ref.sop_instance_uid)) is not None
    }  # fmt: skip
    return found, [ref for ref in refs if ref not in found]


def _wait_event(event: threading.Event, seconds: float) -> bool:
    return event.wait(seconds)


class CommitmentService:
    """The Storage Commitment SCP's logic, independent of the protocol.

    ``known_studies``: the study of each instance this process received (the C-STORE path
    records it), so that instances are looked up per study; None: each by itself. ``clock``
    and ``wait`` (wait on an event for some seconds; True once it is set) are the time it runs
    on, replaceable in tests.
    """

    def __init__(
        self,
        client: DicomwebApi,
        requesters: AetDictionary,
        settings: CommitmentSettings,
        pending: PendingInstances | None = None,
        sender: Callable[[PeerAddress, int, Dataset, ReportSettings], DimseStatus] = send_report,
        *,
        observer: ImportObserver = NULL_IMPORT_OBSERVER,
        known_studies: KnownStudies | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event, float], bool] = _wait_event,
    ) -> None:
        self._observer = observer
        self._known_studies = known_studies
        self._client = client
        self._requesters = requesters
        self._settings = settings
        self._pending = pending
        self._send = sender
        self._clock = clock
        self._wait = wait
        self._executor = ThreadPoolExecutor(settings.workers, thread_name_prefix="commitment")
        self._lookups = ThreadPoolExecutor(_LOOKUPS_IN_PARALLEL, thread_name_prefix="commit-qido")
        self._active: set[str] = set()  # accepted, not yet reported (running or queued)
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        # Shutdown: waits end and each transaction gets its final check (``_finishing``); once
        # the shutdown window is over, what is still unreported is given up (``_abandoned``).
        self._finishing = threading.Event()
        self._abandoned = threading.Event()
        self._window_end = float("inf")

    def request(self, calling_aet: str, action_type: int | None, info: Dataset) -> DimseStatus:
        """Accept (Success) or refuse one N-ACTION; the report follows in the background."""
        arrival = self._clock()
        try:
            request = parse_request(calling_aet, action_type, info)
            requester = self._requesters.lookup(calling_aet)
            if requester is None:
                raise CommitmentRequestError(
                    f"AE title {calling_aet!r} is not in the AET dictionary",
                    status=Status.PROCESSING_FAILURE,
                )
            with self._lock:
                if self._finishing.is_set():
                    raise ShuttingDownError("storage commitment is shutting down")
                if request.transaction_uid in self._active:
                    raise CommitmentRequestError(
                        "transaction already in progress", status=Status.DUPLICATE_TRANSACTION_UID
                    )
                self._active.add(request.transaction_uid)
                self._executor.submit(self._process, request, requester, arrival)
        except Exception as exc:  # every refusal becomes an N-ACTION status
            status = commitment_request_status(exc)
            LOG.warning(
                "storage commitment request from %s refused: %s", calling_aet, status,
                exc_info=not isinstance(exc, AdapterError),
            )
            return status
        LOG.info(
            "storage commitment transaction %s from %s: %d instances",
            request.transaction_uid, calling_aet, len(request.instances),
        )
        return SUCCESS

    def _process(self, request: CommitmentRequest, requester: PeerAddress, arrival: float) -> None:
        try:
            if self._abandoned.is_set():
                return  # the shutdown window is over; stop() listed it as not reported
            committed, failed = self.check(request, arrival)
            event_type, report = build_report(request.transaction_uid, committed, failed)
            self._deliver(request, requester, event_type, report)
        except Exception:
            if not self._abandoned.is_set():  # else stop() has listed it, and lookups ended
                LOG.exception("storage commitment transaction %s failed", request.transaction_uid)
        finally:
            with self._settled:
                self._active.discard(request.transaction_uid)
                self._settled.notify_all()

    def check(
        self, request: CommitmentRequest, arrival: float | None = None
    ) -> tuple[list[InstanceReference], list[tuple[InstanceReference, int]]]:
        """Which instances the store has, looking missing ones up again until the deadline.

        The deadline is ``wait`` seconds after ``arrival`` (default: now); at shutdown the
        check ends early, after one final lookup.
        """
        settings = self._settings
        deadline = (self._clock() if arrival is None else arrival) + settings.wait
        delays = settings.lookup_backoff.backoff()
        settled: dict[InstanceReference, int | None] = {}  # None: committed
        last_failure: dict[InstanceReference, int] = {}
        unsettled = list(dict.fromkeys(request.instances))
        alone: set[InstanceReference] = set()  # not settled by their study's listing
        rounds = 0
        while True:
            final = self._finishing.is_set() or self._clock() >= deadline
            # Instances still queued here are not in the store yet: no need to ask it.
            in_spool: set[str] = set() if final else self._queued_here(unsettled)
            batch = [ref for ref in unsettled if ref.sop_instance_uid not in in_spool]
            rounds += 1 if batch else 0
            for ref, reason in self._look_up(batch, alone).items():
                if reason is None or reason == Status.CLASS_INSTANCE_CONFLICT:
                    settled[ref] = reason
                else:
                    last_failure[ref] = reason
            unsettled = [ref for ref in unsettled if ref not in settled]
            if not unsettled or final:
                break
            self._pause(unsettled, in_spool, deadline, next(delays))
        for ref in unsettled:
            settled[ref] = last_failure.get(ref, int(commitment_failure_reason(None)))
        if unsettled:
            why = "at shutdown" if self._finishing.is_set() else (
                f"by the deadline ({settings.wait:g} s)"
            )
            LOG.warning(
                "transaction %s: %d of %d instances not committed %s, after %d rounds of lookups",
                request.transaction_uid, len(unsettled), len(request.instances), why, rounds,
            )
        committed = [ref for ref in request.instances if settled[ref] is None]
        failed = [(ref, reason) for ref in request.instances
                  if (reason := settled[ref]) is not None]
        return committed, failed

    def _queued_here(self, refs: list[InstanceReference]) -> set[str]:
        """The instances among ``refs`` still queued in this adapter's spool."""
        if self._pending is None:
            return set()
        return self._pending.wait_uploaded((ref.sop_instance_uid for ref in refs), 0)

    def _pause(
        self,
        unsettled: list[InstanceReference],
        in_spool: set[str],
        deadline: float,
        delay: float,
    ) -> None:
        """Wait before the next lookup: ``delay``, or until the spooled instances are uploaded.

        When every unsettled instance is in the spool, the store is not asked again before
        their uploads end (or the deadline comes). Shutdown ends the wait.
        """
        end = deadline
        if not all(ref.sop_instance_uid in in_spool for ref in unsettled):
            end = min(deadline, self._clock() + delay)
        while not self._finishing.is_set():
            remaining = end - self._clock()
            if remaining <= 0:
                return
            if not in_spool:
                self._wait(self._finishing, remaining)
                continue
            assert self._pending is not None
            in_spool = self._pending.wait_uploaded(in_spool, min(remaining, _SPOOL_POLL))
            if not in_spool:
                return  # uploaded: look them up now

    def _look_up(self, batch: list[InstanceReference], alone: set[InstanceReference]) -> Verdicts:
        """One round of lookups: the verdict or failure reason of each instance in ``batch``.

        Instances of a study this process knows, two or more of them in the batch, are found
        in one listing of that study's instances; the others are searched one by one. An
        instance its study's listing did not settle (absent from it, or the listing failed) is
        searched by itself, at once and in later rounds (it joins ``alone``), so its verdict is
        the one a search by itself gives. The known study is a hint, not a fact: the store may
        hold that SOP Instance UID under another study (stored before, or de-identified on the
        way) or return shorter pages than asked, and a listing may fail for reasons of its own
        (a store that refuses study-scoped searches); when the store itself is down, the
        searches fail too and give their own failure reason. So the listings change no
        verdict; they save requests. Up to ``_LOOKUPS_IN_PARALLEL`` requests run at once.
        """
        known = {} if self._known_studies is None else self._known_studies.studies_of(
            ref.sop_instance_uid for ref in batch if ref not in alone
        )
        by_study, single = group_by_study(batch, known)
        # Listings first (they settle the most per request), searches alongside them.
        listings = [
            self._lookups.submit(self._lookup_study, study, refs)
            for study, refs in by_study.items()
        ]
        searches = [(ref, self._lookups.submit(self._lookup, ref)) for ref in single]
        verdicts: Verdicts = {}
        for listing in listings:
            found, unlisted = listing.result()
            verdicts.update(found)
            alone.update(unlisted)
            searches += [(ref, self._lookups.submit(self._lookup, ref)) for ref in unlisted]
        verdicts.update((ref, search.result()) for ref, search in searches)
        return verdicts

    def _lookup_study(
        self, study: str, refs: list[InstanceReference]
    ) -> tuple[Verdicts, list[InstanceReference]]:
        """Settle ``refs`` from the listing of ``study``; returns those it did not settle."""
        listing = self._client.search(
            ("studies", study, "instances"),
            [("includefield", _SOP_CLASS_TAG)],
            page_size=_STUDY_PAGE_SIZE,
        )
        try:
            return settle_from_listing(refs, islice(listing, len(refs) * _STUDY_PAGE_SIZE))
        except AdapterError as exc:
            LOG.warning(
                "QIDO listing of study %s failed: %s; its %d instances are searched one by one",
                study, exc, len(refs),
            )
            return {}, refs

    def _lookup(self, ref: InstanceReference) -> int | None:
        """None when the store holds the instance with its class, else the FailureReason."""
        try:
            results = list(self._client.search(
                ("instances",), [("SOPInstanceUID", ref.sop_instance_uid)], page_size=10
            ))
        except AdapterError as exc:
            LOG.warning("QIDO lookup of %s failed: %s", ref.sop_instance_uid, exc)
            return int(commitment_failure_reason(exc))
        if not results:
            return int(commitment_failure_reason(None))
        return verdict(ref, {_first_value(r, _SOP_CLASS_TAG) for r in results})

    def _report_settings(self) -> ReportSettings:
        """At shutdown, report associations time out within the shutdown window."""
        report = self._settings.report
        if not self._finishing.is_set():
            return report
        left = self._window_end - self._clock()
        return replace(report, timeout=max(_FINAL_REPORT_TIMEOUT, min(report.timeout, left)))

    def _deliver(
        self, request: CommitmentRequest, requester: PeerAddress, event_type: int, report: Dataset
    ) -> None:
        policy = self._settings.report_retry
        delays = iter(policy.delays())
        attempt = 1
        while True:
            try:
                status = self._send(requester, event_type, report, self._report_settings())
            except DimseError as exc:
                delay = next(delays, None)
                if delay is None or self._abandoned.is_set():
                    LOG.error(
                        "storage commitment report %s to %s not delivered after %d attempts: %s",
                        request.transaction_uid, requester, attempt, exc,
                    )
                    return
                # Until shutdown, a wait ends early when it begins (try again at once); then
                # tries come at least every second until the shutdown window is over.
                finishing = self._finishing.is_set()
                if finishing:
                    delay = min(delay, _FINAL_REPORT_RETRY)
                LOG.warning(
                    "storage commitment report %s to %s failed (attempt %d: %s); "
                    "retrying in %.1f s", request.transaction_uid, requester, attempt, exc, delay,
                )
                if self._wait(self._abandoned if finishing else self._finishing, delay) and (
                    finishing
                ):
                    LOG.error(
                        "storage commitment report %s to %s not delivered before shutdown "
                        "(%d attempts): %s", request.transaction_uid, requester, attempt, exc,
                    )
                    return
                attempt += 1
                continue
            LOG.info(
                "storage commitment report %s (event %d) sent to %s: %s",
                request.transaction_uid, event_type, requester, status,
            )
            failed = len(report.get("FailedSOPSequence", []))
            committed = len(report.get("ReferencedSOPSequence", []))
            self._observer.commitment_done(requester.ae_title, committed + failed, failed)
            return

    @property
    def unreported(self) -> int:
        """Transactions accepted and not yet reported (running or queued)."""
        with self._lock:
            return len(self._active)

    def stop(self, timeout: float | None = None) -> None:
        """Report every accepted transaction now, within ``timeout`` (``shutdown_window``).

        Running and queued transactions stop waiting, get one final lookup of their unsettled
        instances and their report; new requests are refused. What is still unreported when
        the window ends is logged (one line) and given up.
        """
        window = self._settings.shutdown_window if timeout is None else timeout
        with self._lock:
            self._window_end = self._clock() + window
            self._finishing.set()
            count = len(self._active)
        if count:
            LOG.info(
                "shutting down: %d storage commitment transactions get their final check and "
                "report (at most %g s)", count, window,
            )
        self._executor.shutdown(wait=False)  # queued transactions still run, straight to the end
        with self._settled:
            self._settled.wait_for(lambda: not self._active, timeout=window)
            left = sorted(self._active)
        if left:
            self._abandoned.set()
            LOG.error(
                "%d storage commitment transactions not reported at shutdown: %s",
                len(left), ", ".join(left),
            )
        self._lookups.shutdown(wait=False, cancel_futures=True)


def _first_value(result: dict[str, Any], tag: str) -> str | None:
    element = result.get(tag)
    if isinstance(element, dict):
        value = element.get("Value")
        if isinstance(value, list) and value:
            return str(value[0])
    return None
