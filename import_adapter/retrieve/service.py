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

Each instance is sent in its stored transfer syntax when the peer accepted it, else converted
(:func:`common.dicom.transcode.convert_dataset`) to one it accepted. An instance that cannot be
fetched or converted is handed over as a placeholder without file meta, which pynetdicom counts
as a failed sub-operation and lists in FailedSOPInstanceUIDList.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
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
from common.dimse.sockets import SOCKET_HANDLERS
from common.dimse.tls import pynetdicom_tls_args
from common.errors import AdapterError, TranscodeError
from common.lifecycle import Lifecycle
from common.status import (
    DimseStatus,
    Status,
    retrieve_status_for_error,
    too_many_instances_status,
)
from import_adapter.query.model import InformationModel, Level
from import_adapter.query.translate import QidoSearch, attribute_id, tag_id
from import_adapter.retrieve.fetch import Fetched, FetchFailure, Prefetcher
from import_adapter.retrieve.plan import (
    InstanceRef,
    RetrievePlan,
    build_retrieve_plan,
    choose_syntax,
    destination_contexts,
    instance_ref,
    instance_search,
)

LOG = logging.getLogger(__name__)

#: The most sub-operations one C-MOVE/C-GET can report (the counts are US).
MAX_SUB_OPERATIONS = 0xFFFF
Accepted = Mapping[str, frozenset[str]]


@dataclass(frozen=True)
class RetrieveSettings:
    """How C-MOVE/C-GET requests are served.

    Attributes:
        page_size: QIDO ``limit`` per page when listing instances.
        prefetch: instances fetched ahead of the one being sent (bounds memory and disk).
        spool_dir: where fetched instances are written (None: the system temp directory).
        max_pdu_size: the largest PDU we accept on associations to move destinations.
        max_instances: the most instances one C-MOVE/C-GET may send (0: only the protocol's
            65535); a larger request is refused with
            :func:`common.status.too_many_instances_status` (0xA701) before anything is sent.
    """

    page_size: int = 1000
    prefetch: int = 8
    spool_dir: Path | None = None
    max_pdu_size: int = 0
    max_instances: int = 0


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


class RetrieveService:
    """The C-MOVE/C-GET SCP's logic: the shared retrieval core and its two front ends."""

    def __init__(
        self,
        client: DicomwebApi,
        destinations: AetDictionary,
        settings: RetrieveSettings,
        lifecycle: Lifecycle,
    ) -> None:
        self._client = client
        self._destinations = destinations
        self._settings = settings
        self._lifecycle = lifecycle

    # -- listing ------------------------------------------------------------------------------

    def _list(self, request: RetrieveRequest) -> _Job:
        plan = build_retrieve_plan(request.identifier, request.model)
        searches = list(plan.searches)
        if plan.level == Level.PATIENT:
            searches = [instance_search(study) for study in self._patient_studies(plan)]
        instances: dict[str, InstanceRef] = {}
        for search in searches:
            for item in self._client.search(
                search.resource, search.query, page_size=self._settings.page_size
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

    def _sub_operations(
        self,
        job: _Job,
        accepted: Callable[[], Accepted],
        is_cancelled: Callable[[], bool],
        label: str,
    ) -> Iterator[tuple[int, Dataset | None]]:
        """(Pending, dataset) per instance, fetched ahead; (Cancel, None) on C-CANCEL."""
        started = time.perf_counter()
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
                    if previous is not None:  # pynetdicom has sent it by now
                        previous.release()
                        previous = None
                    if is_cancelled():
                        LOG.info("%s cancelled after %d sub-operations", label, sent)
                        yield int(Status.CANCEL), None
                        return
                    sent += 1
                    if isinstance(outcome, FetchFailure):
                        LOG.warning(
                            "%s: instance %s not sent: %s",
                            label, outcome.ref.sop_instance_uid, outcome.reason,
                        )
                        yield int(Status.PENDING), _placeholder(outcome.ref)
                        continue
                    yield int(Status.PENDING), self._prepare(outcome, accepted(), label)
                    previous = outcome
            finally:
                if previous is not None:
                    previous.release()
        LOG.info(
            "%s: %d sub-operations in %.1f ms", label, sent, (time.perf_counter() - started) * 1000
        )

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
        peer = self._destinations.lookup(request.move_destination)
        if peer is None:
            LOG.warning("%s: unknown move destination", label)
            yield None, None
            return
        job, failure = self._start(request, label)
        accepted: dict[str, frozenset[str]] = {}

        def on_established(event: Any) -> None:
            for cx in event.assoc.accepted_contexts:
                key = str(cx.abstract_syntax)
                accepted[key] = accepted.get(key, frozenset()) | {str(cx.transfer_syntax[0])}

        if job is not None and job.instances:
            contexts = destination_contexts(job.instances)
        else:  # nothing will be sent; the association pynetdicom may open needs one context
            contexts = [build_context(SecondaryCaptureImageStorage)]
        options: dict[str, Any] = {
            "contexts": contexts,
            "evt_handlers": [*SOCKET_HANDLERS, (evt.EVT_ESTABLISHED, on_established)],
            "max_pdu": self._settings.max_pdu_size,
        }
        if peer.tls is not None:  # the destination's AET dictionary entry asks for DICOM TLS
            options["tls_args"] = pynetdicom_tls_args(peer.tls, peer.host)
        yield peer.host, peer.port, options
        if failure is not None or job is None:
            # pynetdicom has no way to fail before the sub-operation count; one failed
            # sub-operation carries our status (the association it opens is released at once).
            yield 1
            yield (failure or DimseStatus(Status.UNABLE_TO_PROCESS)).as_dataset(), None
            return
        yield len(job.instances)
        if not job.instances:
            return
        yield from self._sub_operations(job, lambda: accepted, is_cancelled, label)

    # -- C-GET --------------------------------------------------------------------------------

    def get(
        self,
        request: RetrieveRequest,
        accepted: Accepted,
        is_cancelled: Callable[[], bool],
    ) -> Iterator[Any]:
        """The EVT_C_GET handler protocol: sub-operation count, then results.

        Args:
            request: the request.
            accepted: SOP class -> transfer syntaxes the SCU accepted with the SCP role.
            is_cancelled: True once a C-CANCEL arrived.
        """
        label = f"C-GET calling={request.calling_aet} msg_id={request.message_id}"
        job, failure = self._start(request, label)
        if failure is not None or job is None:
            yield 1
            yield (failure or DimseStatus(Status.UNABLE_TO_PROCESS)).as_dataset(), None
            return
        yield len(job.instances)
        if not job.instances:
            return
        yield from self._sub_operations(job, lambda: accepted, is_cancelled, label)
