"""C-MOVE and C-GET -> QIDO-RS + WADO-RS: one retrieval core, two thin front ends.

The core (:class:`RetrieveService`) lists the request's instances with QIDO at the request's
level, fetches them with WADO-RS through a bounded
:class:`~import_adapter.retrieve.fetch.Prefetcher` (fetching overlaps sending), and yields
each as a C-STORE sub-operation in the form of pynetdicom's C-MOVE/C-GET handler protocol:
``(Pending, dataset)`` pairs, then nothing (pynetdicom then sends the final Success / 0xB000
with FailedSOPInstanceUIDList / 0xA702 from the sub-operation results it counted), or
``(Cancel, None)`` after a C-CANCEL.

pynetdicom performs the C-STORE sub-operations itself - on the requesting association for
C-GET, on one association it opens to the destination for C-MOVE - and derives every Pending
and final response's counts from their statuses, so the counts are always those of real
sub-operations. The front ends differ only in where the instances go:

- :meth:`RetrieveService.move` first yields the destination from the AET dictionary (unknown:
  ``(None, None)`` -> 0xA801) with the presentation contexts to request, negotiated for all SOP
  classes and transfer syntaxes QIDO reported;
- :meth:`RetrieveService.get` sends over the requesting association, in the contexts the SCU
  offered with the SCP role.

A third front end serves C-MOVE on the fast DIMSE engine without pynetdicom:
:meth:`RetrieveService.move_direct` sends the spooled files as they are with a
:class:`~common.dimse.sender.StoreSender` (no decoding; converted only when the destination
refuses the stored syntax), calling the destination as ``RetrieveSettings.calling_aet``, and
yields protocol-free :class:`MoveUpdate` responses with the same counts and statuses pynetdicom
would send. All three share the listing, the limits and the prefetching loop
(:meth:`RetrieveService._outcomes`).

Each instance is sent in its stored transfer syntax when the peer accepted it, else converted
(:func:`common.dicom.transcode.convert_dataset`) to one it accepted. An instance that cannot be
fetched or converted is handed over as a placeholder without file meta, which pynetdicom counts
as a failed sub-operation and lists in FailedSOPInstanceUIDList.

Each request is reported once to the :class:`~common.metrics.ImportObserver`
(``cmove_done``, with the final status the SCU received and the sub-operation counts; the
destination is the move destination, or the calling AE for C-GET), and each sub-operation as
it settles (``cmove_sub_cstore``): a :class:`~import_adapter.retrieve.tally.SubOperationTally`
on the association carrying them sees the bytes sent and the peer's answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import build_context, evt
from pynetdicom.sop_class import SecondaryCaptureImageStorage  # type: ignore[attr-defined]

from common.dicom.transcode import convert_dataset
from common.dicomweb.client import DicomwebApi
from common.dimse.aet_dictionary import AetDictionary
from common.dimse.fast.commands import SubOperationCounts
from common.dimse.fast.meta import read_file_meta
from common.dimse.sender import SenderSettings, StoreSender
from common.dimse.sockets import SOCKET_HANDLERS
from common.dimse.tls import pynetdicom_tls_args
from common.errors import (
    AdapterError,
    AssociationRejectedError,
    PeerUnavailableError,
    TranscodeError,
)
from common.lifecycle import Lifecycle
from common.metrics import NULL_IMPORT_OBSERVER, ImportObserver
from common.status import (
    SUCCESS,
    DimseStatus,
    Status,
    retrieve_status_for_error,
    too_many_instances_status,
)
from import_adapter.listener_ae import CALLING_AE_TITLE
from import_adapter.query.model import InformationModel, Level
from import_adapter.query.translate import QidoSearch, attribute_id, tag_id
from import_adapter.retrieve.fetch import Fetched, FetchFailure, FetchOutcome, Prefetcher
from import_adapter.retrieve.plan import (
    InstanceRef,
    RetrievePlan,
    build_retrieve_plan,
    choose_syntax,
    destination_contexts,
    destination_pairs,
    instance_ref,
    instance_search,
)
from import_adapter.retrieve.tally import SubOperationTally

LOG = logging.getLogger(__name__)

#: The most sub-operations one C-MOVE/C-GET can report (the counts are US).
MAX_SUB_OPERATIONS = 0xFFFF
Accepted = Mapping[str, frozenset[str]]
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
            C-MOVE (``--dimse_cmove_aet``; empty: the listener's AE title, ``--dimse_aet``),
            on either engine (pynetdicom's through
            :class:`import_adapter.listener_ae.ListenerAE`).
    """

    page_size: int = 200
    parallel_pages: int = 2
    prefetch: int = 8
    spool_dir: Path | None = None
    max_pdu_size: int = 0
    max_instances: int = 0
    calling_aet: str = ""


@dataclass(frozen=True)
class MoveUpdate:
    """One C-MOVE response of :meth:`RetrieveService.move_direct`, protocol-free.

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
    """One C-MOVE or C-GET request, as read from the pynetdicom event."""

    calling_aet: str
    message_id: int
    model: InformationModel
    identifier: Dataset
    move_destination: str = ""


@dataclass
class _Job:
    """The instances of one request, once listed."""

    plan: RetrievePlan
    instances: list[InstanceRef]


def _placeholder(ref: InstanceRef) -> Dataset:
    """A dataset pynetdicom counts as a failed sub-operation (no file meta: nothing is sent)."""
    ds = Dataset()
    ds.SOPClassUID = ref.sop_class_uid
    ds.SOPInstanceUID = ref.sop_instance_uid
    return ds


class _Report:
    """Reports one C-MOVE/C-GET to the observer, once, with its sub-operation counts.

    Called just before the final response can reach the SCU (pynetdicom sends it as soon as
    the generator yields a final status or is exhausted), so a scrape after the SCU returns
    sees the request.
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
    """The C-MOVE/C-GET SCP's logic: the shared retrieval core and its two front ends."""

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
        instances: dict[str, InstanceRef] = {}
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
        *,
        decode: bool,
        settle: Callable[[], None],
    ) -> Generator[FetchOutcome, None, bool]:
        """Each instance's fetch outcome, fetched ahead, in listing order (the shared loop).

        When the consumer comes back for the next one, the previous sub-operation has been
        performed: ``settle`` is called and its spool file deleted. A C-CANCEL is looked for
        before each sub-operation. Returns True when cancelled.
        """
        sent = 0
        previous: Fetched | None = None
        with Prefetcher(
            self._client,
            job.instances,
            whole_series=job.plan.whole_series,
            depth=self._settings.prefetch,
            spool_dir=self._settings.spool_dir,
            decode=decode,
        ) as prefetcher:
            try:
                for outcome in prefetcher:
                    if sent:
                        settle()
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
                if sent:
                    settle()
            finally:
                if previous is not None:
                    previous.release()
        return False

    def _sub_operations(
        self,
        job: _Job,
        accepted: Callable[[], Accepted],
        is_cancelled: Callable[[], bool],
        label: str,
        tally: SubOperationTally,
        destination: str,
        report: _Report,
    ) -> Iterator[tuple[int, Dataset | None]]:
        """(Pending, dataset) per instance, fetched ahead; (Cancel, None) on C-CANCEL.

        Each time pynetdicom comes back for the next sub-operation, the one it just performed is
        settled and reported; the request is reported with its final status before that status
        can reach the SCU.
        """
        started = time.perf_counter()
        cancelled: list[bool] = []
        outcomes = self._outcomes(
            job, is_cancelled, label, decode=True, settle=lambda: self._settle(tally, destination)
        )
        with closing(outcomes):
            for outcome in _collect(outcomes, cancelled):
                if isinstance(outcome, FetchFailure):
                    yield int(Status.PENDING), _placeholder(outcome.ref)
                else:
                    yield int(Status.PENDING), self._prepare(outcome, accepted(), label)
        if cancelled and cancelled[0]:
            report(DimseStatus(Status.CANCEL))
            yield int(Status.CANCEL), None
            return
        LOG.info(
            "%s: %d sub-operations in %.1f ms (completed=%d failed=%d warning=%d)",
            label, tally.completed + tally.failed + tally.warning,
            (time.perf_counter() - started) * 1000,
            tally.completed, tally.failed, tally.warning,
        )
        report(tally.final_status())

    def _settle(self, tally: SubOperationTally, destination: str) -> None:
        done = tally.settle()
        self._observer.cmove_sub_cstore(destination, done.size, done.ok)

    @staticmethod
    def _prepare(fetched: Fetched, accepted: Accepted, label: str) -> Dataset:
        """The fetched dataset in a transfer syntax the peer accepted (or a failed placeholder)."""
        ds = fetched.dataset
        ref = fetched.ref
        syntax = str(ds.file_meta.TransferSyntaxUID)
        sop_class = str(ds.file_meta.get("MediaStorageSOPClassUID", ref.sop_class_uid))
        target = choose_syntax(sop_class, syntax, accepted)
        if target is None:
            LOG.warning(
                "%s: peer accepted no context for SOP class %s; %s not sent",
                label, sop_class, ref.sop_instance_uid,
            )
            return _placeholder(ref)
        if target == syntax:
            return ds
        try:
            if UID(syntax).is_implicit_VR != UID(target).is_implicit_VR:
                for _element in ds.iterall():
                    pass  # decode every raw element (and its VR) before re-encoding it
            convert_dataset(ds, target)
        except TranscodeError as exc:
            LOG.warning("%s: %s not sent: %s", label, ref.sop_instance_uid, exc)
            return _placeholder(ref)
        # pydicom's (de)compression gives the instance a new UID by default: the peer must
        # receive the instance it asked for.
        ds.SOPInstanceUID = UID(ref.sop_instance_uid)
        ds.file_meta.MediaStorageSOPInstanceUID = UID(ref.sop_instance_uid)
        target_uid = UID(target)
        # The dataset is now encoded as ``target``; tell pydicom/pynetdicom so.
        ds.set_original_encoding(
            target_uid.is_implicit_VR, target_uid.is_little_endian, ds.original_character_set
        )
        LOG.info(
            "%s: %s converted from %s to %s for the peer",
            label, ref.sop_instance_uid, UID(syntax).name, target_uid.name,
        )
        return ds

    def _start(
        self, request: RetrieveRequest, label: str
    ) -> tuple[_Job | None, DimseStatus | None]:
        try:
            with self._lifecycle.operation():
                job = self._list(request)
        except Exception as exc:  # every failure must become a status
            status = retrieve_status_for_error(exc)
            LOG.warning(
                "%s refused: status=%s error=%s", label, status, exc,
                exc_info=not isinstance(exc, AdapterError),
            )
            return None, status
        if len(job.instances) > MAX_SUB_OPERATIONS:
            return None, DimseStatus(
                Status.OUT_OF_RESOURCES_MATCHES,
                f"{len(job.instances)} instances exceed {MAX_SUB_OPERATIONS} sub-operations",
            )
        limit = self._settings.max_instances
        if limit and len(job.instances) > limit:
            LOG.warning("%s refused: %d instances exceed --max_cmove_instances %d",
                        label, len(job.instances), limit)
            return None, too_many_instances_status(len(job.instances), limit)
        LOG.info("%s: %d instances to send", label, len(job.instances))
        return job, None

    # -- C-MOVE -------------------------------------------------------------------------------

    def move(self, request: RetrieveRequest, is_cancelled: Callable[[], bool]) -> Iterator[Any]:
        """The EVT_C_MOVE handler protocol: destination, sub-operation count, then results."""
        label = (
            f"C-MOVE calling={request.calling_aet} msg_id={request.message_id} "
            f"destination={request.move_destination}"
        )
        tally = SubOperationTally()
        report = _Report(self._observer, request, request.move_destination, tally)
        established = threading.Event()
        associating = False  # pynetdicom associates with the destination after a count >= 1
        try:
            peer = self._destinations.lookup(request.move_destination)
            if peer is None:
                LOG.warning("%s: unknown move destination", label)
                report(UNKNOWN_DESTINATION)
                yield None, None
                return
            job, failure = self._start(request, label)
            accepted: dict[str, frozenset[str]] = {}

            def on_established(event: Any) -> None:
                for cx in event.assoc.accepted_contexts:
                    key = str(cx.abstract_syntax)
                    accepted[key] = accepted.get(key, frozenset()) | {str(cx.transfer_syntax[0])}
                established.set()

            if job is not None and job.instances:
                contexts = destination_contexts(job.instances)
            else:  # nothing will be sent; the association pynetdicom may open needs one context
                contexts = [build_context(SecondaryCaptureImageStorage)]
            options: dict[str, Any] = {
                "contexts": contexts,
                "evt_handlers": [
                    *SOCKET_HANDLERS,
                    (evt.EVT_ESTABLISHED, on_established),
                    *tally.bindings(),
                ],
                "max_pdu": self._settings.max_pdu_size,
            }
            if peer.tls is not None:  # the destination's AET dictionary entry asks for DICOM TLS
                options["tls_args"] = pynetdicom_tls_args(peer.tls, peer.host)
            if self._settings.calling_aet:  # --dimse_cmove_aet (see ListenerAE)
                options[CALLING_AE_TITLE] = self._settings.calling_aet
            yield peer.host, peer.port, options
            if failure is not None or job is None:
                # pynetdicom has no way to fail before the sub-operation count; one failed
                # sub-operation carries our status (the association it opens is released at once).
                final = failure or DimseStatus(Status.UNABLE_TO_PROCESS)
                associating = True
                yield 1
                associating = False
                report(final)
                yield final.as_dataset(), None
                return
            if not job.instances:
                report(SUCCESS)
                yield 0
                return
            associating = True
            yield len(job.instances)
            associating = False
            yield from self._sub_operations(
                job, lambda: accepted, is_cancelled, label, tally, request.move_destination, report
            )
        finally:
            if associating and not established.is_set():
                # pynetdicom answered 0xA801 itself: the destination refused or was unreachable.
                LOG.warning("%s: cannot associate with the move destination", label)
                report(UNREACHABLE_DESTINATION)
            report(ABANDONED)  # only if nothing was reported: the association went away

    def move_direct(
        self, request: RetrieveRequest, is_cancelled: Callable[[], bool]
    ) -> Iterator[MoveUpdate]:
        """C-MOVE with our own C-STORE SCU: every response, the final one last.

        The responses are those pynetdicom's C-MOVE SCP sends for :meth:`move`: 0xA801 for an
        unknown or unreachable destination, the refusal status for a request that cannot be
        listed, a Pending with the four counts after each sub-operation, then Success (counts,
        no identifier), 0xB000 / 0xA702 (counts and FailedSOPInstanceUIDList) or, after a
        C-CANCEL, Cancel (with the remaining count too). The C-STOREs carry the requestor's AE
        title and message ID as move originator (PS3.7 9.3.1.1).
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
                yield MoveUpdate(UNKNOWN_DESTINATION)
                return
            job, failure = self._start(request, label)
            if failure is not None or job is None:
                final = failure or DimseStatus(Status.UNABLE_TO_PROCESS)
                report(final)
                yield MoveUpdate(final)
                return
            if not job.instances:
                report(SUCCESS)
                yield MoveUpdate(SUCCESS, SubOperationCounts(0, 0, 0))
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
                    yield MoveUpdate(UNREACHABLE_DESTINATION)
                    return
                yield from self._send_all(
                    job, sender, request, is_cancelled, label, tally, report
                )
        finally:
            report(ABANDONED)  # only if nothing was reported: the association went away

    def _send_all(
        self,
        job: _Job,
        sender: StoreSender,
        request: RetrieveRequest,
        is_cancelled: Callable[[], bool],
        label: str,
        tally: SubOperationTally,
        report: _Report,
    ) -> Iterator[MoveUpdate]:
        """The sub-operations of :meth:`move_direct` and its final response.

        The request is reported with its final status before that status can reach the SCU.
        """
        started = time.perf_counter()
        total = len(job.instances)
        failed: list[str] = []
        lost = False  # as pynetdicom: once the destination association is gone, the rest fail
        cancelled: list[bool] = []

        def counts(remaining: bool) -> SubOperationCounts:
            done = tally.completed + tally.failed + tally.warning
            return SubOperationCounts(
                tally.completed, tally.failed, tally.warning, total - done if remaining else None
            )

        outcomes = self._outcomes(job, is_cancelled, label, decode=False, settle=lambda: None)
        with closing(outcomes):
            for outcome in _collect(outcomes, cancelled):
                status: DimseStatus | None = None
                size = 0
                if isinstance(outcome, Fetched) and not lost:
                    try:
                        # The dataset bytes, as on the wire (the file meta is not sent).
                        size = outcome.path.stat().st_size - read_file_meta(
                            outcome.path
                        ).dataset_offset
                        status = sender.send(
                            outcome.path,
                            move_originator=(request.calling_aet, request.message_id),
                        )
                    except (PeerUnavailableError, AssociationRejectedError) as exc:
                        LOG.warning("%s: destination lost: %s", label, exc)
                        lost = True
                    except Exception as exc:  # a sub-operation failure, never the move's
                        LOG.warning(
                            "%s: %s not sent: %s", label, outcome.ref.sop_instance_uid, exc,
                            exc_info=not isinstance(exc, AdapterError),
                        )
                done = tally.record(status, size if status is not None else 0)
                self._observer.cmove_sub_cstore(request.move_destination, done.size, done.ok)
                if status is None or status.is_failure:
                    failed.append(outcome.ref.sop_instance_uid)
                yield MoveUpdate(DimseStatus(Status.PENDING), counts(remaining=True))
        LOG.info(
            "%s: %d sub-operations in %.1f ms (completed=%d failed=%d warning=%d)",
            label, tally.completed + tally.failed + tally.warning,
            (time.perf_counter() - started) * 1000,
            tally.completed, tally.failed, tally.warning,
        )
        if cancelled and cancelled[0]:
            final = DimseStatus(Status.CANCEL)
            report(final)
            yield MoveUpdate(final, counts(remaining=True), tuple(failed))
            return
        final = tally.final_status()
        report(final)
        yield MoveUpdate(
            final,
            counts(remaining=False),
            None if final.code == Status.SUCCESS else tuple(failed),
        )

    # -- C-GET --------------------------------------------------------------------------------

    def get(
        self,
        request: RetrieveRequest,
        accepted: Accepted,
        is_cancelled: Callable[[], bool],
        tally: SubOperationTally,
    ) -> Iterator[Any]:
        """The EVT_C_GET handler protocol: sub-operation count, then results.

        Args:
            request: the request.
            accepted: SOP class -> transfer syntaxes the SCU accepted with the SCP role.
            is_cancelled: True once a C-CANCEL arrived.
            tally: bound (:meth:`SubOperationTally.bindings`) to the requesting association,
                which carries the sub-operations.
        """
        label = f"C-GET calling={request.calling_aet} msg_id={request.message_id}"
        report = _Report(self._observer, request, request.calling_aet, tally)
        try:
            job, failure = self._start(request, label)
            if failure is not None or job is None:
                final = failure or DimseStatus(Status.UNABLE_TO_PROCESS)
                yield 1
                report(final)
                yield final.as_dataset(), None
                return
            if not job.instances:
                report(SUCCESS)
                yield 0
                return
            yield len(job.instances)
            yield from self._sub_operations(
                job, lambda: accepted, is_cancelled, label, tally, request.calling_aet, report
            )
        finally:
            report(ABANDONED)  # only if nothing was reported: the association went away

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
