"""The EVT_C_MOVE/EVT_C_GET handlers and their presentation contexts (thin glue)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.dsutils import decode, encode

from common.dimse.fast.acse import AcceptedContext
from common.dimse.fast.commands import CMoveRq
from common.dimse.fast.scp import AcceptorAssociation, QRResponse
from import_adapter.handlers import Handler
from import_adapter.listener_ae import ListenerAE
from import_adapter.query.handlers import QUERY_SYNTAXES
from import_adapter.query.model import MODELS, model_for
from import_adapter.retrieve.service import RetrieveRequest, RetrieveService
from import_adapter.retrieve.tally import EventBinding, SubOperationTally
from import_adapter.server import DimseService, FastMoveHandler, SupportedContext

_RETRIEVE_CLASSES = frozenset(uid for m in MODELS for uid in (m.find, m.move, m.get))
#: Marks the end of a handler generator.
_DONE = object()


def _request(event: Any, move_destination: str = "") -> RetrieveRequest:
    return RetrieveRequest(
        calling_aet=event.assoc.requestor.ae_title,
        message_id=int(event.request.MessageID),
        model=model_for(str(event.request.AffectedSOPClassUID)),
        identifier=event.identifier,
        move_destination=move_destination,
    )


def storage_contexts_as_scu(assoc: Any) -> dict[str, frozenset[str]]:
    """SOP class -> transfer syntaxes in which we may send C-STOREs on this association."""
    accepted: dict[str, frozenset[str]] = {}
    for cx in assoc.accepted_contexts:
        key = str(cx.abstract_syntax)
        if key in _RETRIEVE_CLASSES or not cx.as_scu:
            continue
        accepted[key] = accepted.get(key, frozenset()) | {str(cx.transfer_syntax[0])}
    return accepted


@contextmanager
def _bound(assoc: Any, bindings: list[EventBinding]) -> Iterator[None]:
    """``bindings`` bound to ``assoc`` for the duration of the block."""
    for event, handler in bindings:
        assoc.bind(event, handler)
    try:
        yield
    finally:
        for event, handler in bindings:
            assoc.unbind(event, handler)


def retrieve_handlers(service: RetrieveService) -> list[Handler]:
    """The EVT_C_MOVE and EVT_C_GET handlers bound to ``service``."""

    def on_c_move(event: Any) -> Iterator[Any]:
        destination = str(event.move_destination or "").strip()
        try:
            request = _request(event, destination)
        except Exception as exc:  # reported, then pynetdicom answers with a failure status
            service.refused(event.assoc.requestor.ae_title, destination, exc)
            raise
        updates = service.move(request, lambda: bool(event.is_cancelled))
        ae = event.assoc.ae
        if not isinstance(ae, ListenerAE):
            yield from updates
            return
        # pynetdicom reads the Move Originator of each sub-operation from the AE's title after
        # the destination and count have been yielded (see ListenerAE).
        for _ in range(2):
            first = next(updates, _DONE)
            if first is _DONE:
                return
            yield first
        with ae.acting_as(request.calling_aet):
            yield from updates

    def on_c_get(event: Any) -> Iterator[Any]:
        try:
            request = _request(event)
        except Exception as exc:
            calling = event.assoc.requestor.ae_title
            yield 1
            yield service.refused(calling, calling, exc).as_dataset(), None
            return
        accepted = storage_contexts_as_scu(event.assoc)
        tally = SubOperationTally()  # the sub-operations travel on the requesting association
        with _bound(event.assoc, tally.bindings()):
            yield from service.get(request, accepted, lambda: bool(event.is_cancelled), tally)

    return [(evt.EVT_C_MOVE, on_c_move), (evt.EVT_C_GET, on_c_get)]


def fast_move_handler(service: RetrieveService) -> FastMoveHandler:
    """The C-MOVE handler of the fast DIMSE engine (sub-operations by our own C-STORE SCU).

    The identifier is decoded (and the Failed SOP Instance UID List encoded) with pydicom in
    the context's transfer syntax, as pynetdicom does.
    """

    def on_c_move(
        assoc: AcceptorAssociation,
        request: CMoveRq,
        context: AcceptedContext,
        identifier: bytes,
        is_cancelled: Callable[[], bool],
    ) -> Iterator[QRResponse]:
        calling = assoc.requestor.ae_title.strip()
        destination = request.move_destination.strip()
        syntax = UID(context.transfer_syntax)
        try:
            retrieve = RetrieveRequest(
                calling_aet=calling,
                message_id=request.message_id,
                model=model_for(request.sop_class_uid or context.abstract_syntax),
                identifier=decode(
                    BytesIO(identifier),
                    syntax.is_implicit_VR,
                    syntax.is_little_endian,
                    syntax.is_deflated,
                ),
                move_destination=destination,
            )
        except Exception as exc:  # an undecodable identifier, an unknown model
            yield QRResponse(service.refused(calling, destination, exc))
            return
        for update in service.move_direct(retrieve, is_cancelled):
            encoded = None
            if update.failed_uids is not None:
                listing = Dataset()
                listing.FailedSOPInstanceUIDList = list(update.failed_uids)
                encoded = encode(
                    listing, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated
                )
            yield QRResponse(update.status, update.counts, encoded)

    return on_c_move


def retrieve_service(service: RetrieveService) -> DimseService:
    """C-MOVE and C-GET for the Patient Root, Study Root and Patient/Study Only models.

    Storage contexts for C-GET need no entry here: the listener's unrestricted storage service
    accepts every storage SOP class with the SCP/SCU role selection the SCU proposes.
    """
    contexts = [
        SupportedContext(uid, QUERY_SYNTAXES) for model in MODELS for uid in (model.move, model.get)
    ]
    return DimseService(
        "retrieve",
        contexts=contexts,
        handlers=retrieve_handlers(service),
        fast_move=fast_move_handler(service),
    )
