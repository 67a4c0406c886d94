"""C-MOVE and C-GET -> QIDO-RS + WADO-RS: one retrieval core, one sub-operation loop.

:class:`RetrieveService` lists the request's instances with QIDO at the request's level,
fetches them with WADO-RS through a bounded :class:`~import_adapter.retrieve.fetch.Prefetcher`
(fetching overlaps sending) and C-STOREs each spooled file as it is, without decoding it, with
the file meta the prefetcher read, through a :class:`SubOperationSender` (converted only when
the peer accepted no context in the stored syntax: :func:`common.dimse.sender.store_file`).
It yields protocol-free :class:`RetrieveUpdate` responses: a Pending with the four counts
after each sub-operation, then Success (counts, no identifier), 0xB000 / 0xA702 (counts and
FailedSOPInstanceUIDList) or, after a C-CANCEL, Cancel (with the remaining count too). The
two requests differ only in where the instances go:

- :meth:`RetrieveService.move` looks the destination up in the AET dictionary (unknown or
  unreachable: 0xA801) and opens one association to it with a
  :class:`~common.dimse.sender.StoreSender` (calling as ``RetrieveSettings.calling_aet``), its
  C-STOREs carrying the requestor's AE title and message ID as move originator (PS3.7
  9.3.1.1);
- :meth:`RetrieveService.get` sends on the requesting association, in the contexts whose SCP
  role the requestor took (:class:`common.dimse.fast.scp.GetSubOperations`).

A request that cannot be listed gets its refusal status as the only response.

Each request is reported once to the :class:`~common.metrics.ImportObserver`
(``cmove_done``, with the final status the SCU received and the sub-operation counts; the
destination is the move destination, or the calling AE for C-GET), and each sub-operation as
it settles (``cmove_sub_cstore``), counted by a
:class:`~import_adapter.retrieve.tally.SubOperationTally`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydicom.dataset import Dataset

from common.dicom.reference import InstanceReference
from common.dicomweb.client import DicomwebApi
from common.dimse.aet_dictionary import AetDictionary
from common.dimse.fast.commands import SubOperationCounts
from common.dimse.fast.meta import FileMeta
from common.dimse.sender import SenderSettings, StoreSender
from common.errors import AdapterError
from common.lifecycle import Lifecycle
from common.metrics import NULL_IMPORT_OBSERVER, ImportObserver
from common.status import (
    SUCCESS,
    DimseStatus,
    Status,
    SubOperationAction,
    retrieve_status_for_error,
    rule_for_error,
    too_many_instances_status,
)
from import_adapter.query.model import InformationModel, Level
from import_adapter.query.translate import QidoSearch, attribute_id, tag_id
from import_adapter.retrieve.fetch import Fetched, FetchFailure, FetchOutcome, Prefetcher
from import_adapter.retrieve.plan import (
    RetrievePlan,
    build_retrieve_plan,
    destination_pairs,
    instance_ref,
    instance_search,
)
from import_adapter.retrieve.tally import SubOperationTally

LOG = logging.getLogger(__name__)

#: The most sub-operations one C-MOVE/C-GET can report (the counts are US).
MAX_SUB_OPERATIONS = 0xFFFF
#: Reported when a request ends without a final response (the association went away).
ABANDONED = DimseStatus(Status.UNABLE_TO_PROCESS, "association ended before the final response")
UNKNOWN_DESTINATION = DimseStatus(Status.MOVE_DESTINATION_UNKNOWN)
UNREACHABLE_DESTINATION = DimseStatus(
    Status.MOVE_DESTINATION_UNKNOWN, "cannot associate with the move destination"
)


@dataclass(frozen=True)
class RetrieveSettings:
    """How C-MOVE/C-GET requests are served.

    Attributes:
        page_size: QIDO ``limit`` per page when listing instances.
        parallel_pages: pages requested at once after a full first page (see
            :meth:`common.dicomweb.client.DicomwebClient.search`).
        prefetch: instances fetched ahead of the one being sent (bounds memory and disk).
        spool_dir: where fetched instances are written (None: the system temp directory).
        max_pdu_size: the largest PDU we accept on associations to move destinations.
        max_instances: the most instances one C-MOVE/C-GET may send (0: only the protocol's
            65535); a larger request is refused with
            :func:`common.status.too_many_instances_status` (0xA701) before anything is sent.
        calling_aet: the calling AE title of the associations to move destinations opened by
            C-MOVE (``--dimse_cmove_aet``; empty: the listener's AE title, ``--dimse_aet``).
    """

    page_size: int = 200
    parallel_pages: int = 2
    prefetch: int = 8
    spool_dir: Path | None = None
    max_pdu_size: int = 0
    max_instances: int = 0
    calling_aet: str = ""


class SubOperationSender(Protocol):
    """Where the C-STORE sub-operations go.

    A :class:`~common.dimse.sender.StoreSender` for C-MOVE, a
    :class:`~common.dimse.sender.ChannelSender` for C-GET.
    """

    def send(
        self,
        path: Path,
        *,
        meta: FileMeta,
        move_originator: tuple[str, int] | None = None,
    ) -> DimseStatus:
        """C-STORE one Part 10 file whose meta header is ``meta``.

        Raises PeerUnavailableError when the peer is gone.
        """
        ...


@dataclass(frozen=True)
class RetrieveUpdate:
    """One C-MOVE/C-GET response, protocol-free.

    Attributes:
        status: Pending, or the final status.
        counts: the sub-operation counts the response carries (None: none).
        failed_uids: the Failed SOP Instance UID List the response carries (None: no
            identifier).
    """

    status: DimseStatus
    counts: SubOperationCounts | None = None
    failed_uids: tuple[str, ...] | None = None


def _collect(gen: Generator[Any, None, bool], result: list[bool]) -> Iterator[Any]:
    """Iterate over ``gen``, appending its return value to ``result`` once it is exhausted."""
    result.append((yield from gen))


@dataclass(frozen=True)
class RetrieveRequest:
    """One C-MOVE or C-GET request, its identifier decoded."""

    calling_aet: str
    message_id: int
    model: InformationModel
    identifier: Dataset
    move_destination: str = ""


@dataclass
class _Job:
    """The instances of one request, once listed."""

    plan: RetrievePlan
    instances: list[InstanceReference]


class _Report:
    """Reports one C-MOVE/C-GET to the observer, once, with its sub-operation counts.

    Called just before the final response is yielded, so a scrape after the SCU returns sees
    the request.
    """

    def __init__(
        self,
        observer: ImportObserver,
        request: RetrieveRequest,
        destination: str,
        tally: SubOperationTally,
    ) -> None:
        self._observer = observer
        self._request = request
        self._destination = destination
        self._tally = tally
        self._started = time.perf_counter()
        self.done = False

    def __call__(self, status: DimseStatus) -> None:
        if self.done:
            return
        self.done = True
        self._observer.cmove_done(
            self._request.calling_aet,
            self._destination,
            status,
            self._tally.completed,
            self._tally.failed,
            self._tally.warning,
            time.perf_counter() - self._started,
        )


class RetrieveService:
    """The C-MOVE/C-GET SCP's logic: one retrieval core, two destinations."""

    def __init__(
        self,
        client: DicomwebApi,
        destinations: AetDictionary,
        settings: RetrieveSettings,
        lifecycle: Lifecycle,
        observer: ImportObserver = NULL_IMPORT_OBSERVER,
    ) -> None:
        self._client = client
        self._destinations = destinations
        self._settings = settings
        self._lifecycle = lifecycle
        self._observer = observer

    # -- listing ------------------------------------------------------------------------------

    def _list(self, request: RetrieveRequest) -> _Job:
        plan = build_retrieve_plan(request.identifier, request.model)
        searches = list(plan.searches)
        if plan.level == Level.PATIENT:
            searches = [instance_search(study) for study in self._patient_studies(plan)]
        instances: dict[str, InstanceReference] = {}
        for search in searches:
            for item in self._client.search(
                search.resource,
                search.query,
                page_size=self._settings.page_size,
                parallel=self._settings.parallel_pages,
            ):
                ref = instance_ref(item)
                if ref is not None:
                    instances.setdefault(ref.sop_instance_uid, ref)
        return _Job(plan, list(instances.values()))

    def _patient_studies(self, plan: RetrievePlan) -> list[str]:
        query = (
            (attribute_id(0x00100020), ",".join(plan.patient_ids)),
            ("includefield", tag_id(0x0020000D)),
        )
        studies: dict[str, None] = {}
        for item in self._client.search(
            QidoSearch(("studies",), query).resource, query, page_size=self._settings.page_size
        ):
            ref = item.get("0020000D", {}).get("Value") or []
            if ref:
                studies[str(ref[0])] = None
        return list(studies)

    # -- the shared core ----------------------------------------------------------------------

    def _outcomes(
        self,
        job: _Job,
        is_cancelled: Callable[[], bool],
        label: str,
    ) -> Generator[FetchOutcome, None, bool]:
        """Each instance's fetch outcome, fetched ahead, in listing order.

        When the consumer comes back for the next one, the previous sub-operation has been
        performed and its spool file is deleted. A C-CANCEL is looked for before each
        sub-operation. Returns True when cancelled.
        """
        sent = 0
        previous: Fetched | None = None
        with Prefetcher(
            self._client,
            job.instances,
            whole_series=job.plan.whole_series,
            depth=self._settings.prefetch,
            spool_dir=self._settings.spool_dir,
        ) as prefetcher:
            try:
                for outcome in prefetcher:
                    if previous is not None:
                        previous.release()
                        previous = None
                    if is_cancelled():
                        LOG.info("%s cancelled after %d sub-operations", label, sent)
                        return True
                    sent += 1
                    if isinstance(outcome, FetchFailure):
                        LOG.warning(
                            "%s: instance %s not sent: %s",
                            label, outcome.ref.sop_instance_uid, outcome.reason,
                        )
                    else:
                        previous = outcome
                    yield outcome
            finally:
                if previous is not None:
                    previous.release()
        return False

    def _start(
        self, request: RetrieveRequest, label: str, report: _Report
    ) -> _Job | RetrieveUpdate:
        """The request's instances, or the only response it gets (reported).

        That response is a refusal, or Success with no sub-operations.
        """
        refusal = self._refusal(request, label)
        if isinstance(refusal, _Job):
            if refusal.instances:
                return refusal
            refusal = RetrieveUpdate(SUCCESS, SubOperationCounts(0, 0, 0))
        report(refusal.status)
        return refusal

    def _refusal(self, request: RetrieveRequest, label: str) -> _Job | RetrieveUpdate:
        try:
            with self._lifecycle.operation():
                job = self._list(request)
        except Exception as exc:  # every failure must become a status
            status = retrieve_status_for_error(exc)
            LOG.warning(
                "%s refused: status=%s error=%s", label, status, exc,
                exc_info=not isinstance(exc, AdapterError),
            )
            return RetrieveUpdate(status)
        if len(job.instances) > MAX_SUB_OPERATIONS:
            return RetrieveUpdate(DimseStatus(
                Status.OUT_OF_RESOURCES_MATCHES,
                f"{len(job.instances)} instances exceed {MAX_SUB_OPERATIONS} sub-operations",
            ))
        limit = self._settings.max_instances
        if limit and len(job.instances) > limit:
            LOG.warning("%s refused: %d instances exceed --max_cmove_instances %d",
                        label, len(job.instances), limit)
            return RetrieveUpdate(too_many_instances_status(len(job.instances), limit))
        LOG.info("%s: %d instances to send", label, len(job.instances))
        return job

    # -- C-MOVE -------------------------------------------------------------------------------

    def move(
        self, request: RetrieveRequest, is_cancelled: Callable[[], bool]
    ) -> Iterator[RetrieveUpdate]:
        """C-MOVE: every response, the final one last (see the module docstring).

        0xA801 for an unknown or unreachable destination; the C-STOREs carry the requestor's
        AE title and message ID as move originator (PS3.7 9.3.1.1).
        """
        destination = request.move_destination
        label = (
            f"C-MOVE calling={request.calling_aet} msg_id={request.message_id} "
            f"destination={destination}"
        )
        tally = SubOperationTally()
        report = _Report(self._observer, request, destination, tally)
        try:
            peer = self._destinations.lookup(destination)
            if peer is None:
                LOG.warning("%s: unknown move destination", label)
                report(UNKNOWN_DESTINATION)
                yield RetrieveUpdate(UNKNOWN_DESTINATION)
                return
            job = self._start(request, label, report)
            if isinstance(job, RetrieveUpdate):
                yield job
                return
            sender = StoreSender(
                peer,
                SenderSettings(
                    calling_aet=self._settings.calling_aet,
                    max_pdu_size=self._settings.max_pdu_size,
                ),
            )
            with closing(sender):
                sender.propose(destination_pairs(job.instances))
                try:
                    sender.open()
                except AdapterError as exc:
                    LOG.warning("%s: cannot associate with the move destination: %s", label, exc)
                    report(UNREACHABLE_DESTINATION)
                    yield RetrieveUpdate(UNREACHABLE_DESTINATION)
                    return
                yield from self._send_all(
                    job, sender, is_cancelled, label, tally, report,
                    destination=destination,
                    move_originator=(request.calling_aet, request.message_id),
                )
        finally:
            report(ABANDONED)  # only if nothing was reported: the association went away

    def get(
        self,
        request: RetrieveRequest,
        sender: SubOperationSender,
        is_cancelled: Callable[[], bool],
    ) -> Iterator[RetrieveUpdate]:
        """C-GET: every response, the final one last, the instances sent through ``sender``.

        Args:
            request: the request.
            sender: C-STOREs on the requesting association.
            is_cancelled: True once a C-CANCEL arrived (or the requestor went away).
        """
        label = f"C-GET calling={request.calling_aet} msg_id={request.message_id}"
        tally = SubOperationTally()
        report = _Report(self._observer, request, request.calling_aet, tally)
        try:
            job = self._start(request, label, report)
            if isinstance(job, RetrieveUpdate):
                yield job
                return
            yield from self._send_all(
                job, sender, is_cancelled, label, tally, report,
                destination=request.calling_aet, move_originator=None,
            )
        finally:
            report(ABANDONED)  # only if nothing was reported: the association went away

    def _send_all(
        self,
        job: _Job,
        sender: SubOperationSender,
        is_cancelled: Callable[[], bool],
        label: str,
        tally: SubOperationTally,
        report: _Report,
        *,
        destination: str,
        move_originator: tuple[str, int] | None,
    ) -> Iterator[RetrieveUpdate]:
        """The sub-operations of a C-MOVE or C-GET and its final response.

        The request is reported with its final status before that status is yielded.
        """
        started = time.perf_counter()
        total = len(job.instances)
        failed: list[str] = []
        lost = False  # once the destination association is gone, the rest fail
        cancelled: list[bool] = []

        def counts(remaining: bool) -> SubOperationCounts:
            done = tally.completed + tally.failed + tally.warning
            return SubOperationCounts(
                tally.completed, tally.failed, tally.warning, total - done if remaining else None
            )

        outcomes = self._outcomes(job, is_cancelled, label)
        with closing(outcomes):
            for outcome in _collect(outcomes, cancelled):
                status: DimseStatus | None = None
                size = 0
                if isinstance(outcome, Fetched) and not lost:
                    try:
                        size = outcome.dataset_size
                        status = sender.send(
                            outcome.path, meta=outcome.meta, move_originator=move_originator
                        )
                    except Exception as exc:  # a sub-operation failure, never the move's
                        # The peer failure table says whether the destination is gone
                        # (unreachable, aborted, rejected) or only this instance failed.
                        lost = rule_for_error(exc).sub_operation is SubOperationAction.LOST
                        LOG.warning(
                            "%s: %s: %s", label,
                            "destination lost" if lost else
                            f"{outcome.ref.sop_instance_uid} not sent", exc,
                            exc_info=not isinstance(exc, AdapterError),
                        )  # fmt: skip
                done = tally.record(status, size if status is not None else 0)
                self._observer.cmove_sub_cstore(destination, done.size, done.ok)
                if not done.ok:
                    failed.append(outcome.ref.sop_instance_uid)
                yield RetrieveUpdate(DimseStatus(Status.PENDING), counts(remaining=True))
        LOG.info(
            "%s: %d sub-operations in %.1f ms (completed=%d failed=%d warning=%d)",
            label, tally.completed + tally.failed + tally.warning,
            (time.perf_counter() - started) * 1000,
            tally.completed, tally.failed, tally.warning,
        )
        if cancelled and cancelled[0]:
            final = DimseStatus(Status.CANCEL)
            report(final)
            yield RetrieveUpdate(final, counts(remaining=True), tuple(failed))
            return
        final = tally.final_status()
        report(final)
        yield RetrieveUpdate(
            final,
            counts(remaining=False),
            None if final.code == Status.SUCCESS else tuple(failed),
        )

    def refused(self, calling_aet: str, destination: str, error: BaseException) -> DimseStatus:
        """Report a C-MOVE/C-GET whose request could not be read; returns its failure status.

        Args:
            calling_aet: the requesting AE title.
            destination: the move destination (the calling AE title for C-GET).
            error: why the request could not be read (an undecodable identifier, ...).
        """
        status = retrieve_status_for_error(error)
        LOG.warning(
            "C-MOVE/C-GET calling=%s refused: status=%s error=%s", calling_aet, status, error
        )
        self._observer.cmove_done(calling_aet, destination, status, 0, 0, 0, 0.0)
        return status
