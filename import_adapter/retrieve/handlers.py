"""The C-MOVE and C-GET handlers and their SOP classes (thin glue).

Both decode the identifier in the context's transfer syntax, call the one retrieval core
(:class:`~import_adapter.retrieve.service.RetrieveService`) and encode its updates as
responses (the Failed SOP Instance UID List as an identifier). C-MOVE sends to its
destination on an association of its own; C-GET on the requesting association, in the
storage contexts whose SCP role the requestor took.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pydicom.dataset import Dataset

from common.dimse.fast.acse import AcceptedContext
from common.dimse.fast.commands import CGetRq, CMoveRq
from common.dimse.fast.scp import AcceptorAssociation, GetSubOperations, QRResponse
from common.dimse.identifiers import decode_dataset, encode_dataset
from common.dimse.sender import ChannelSender
from import_adapter.access import Service
from import_adapter.dimse_service import (
    DimseService,
    GetHandler,
    MoveHandler,
    SupportedContext,
)
from import_adapter.query.handlers import QUERY_SYNTAXES
from import_adapter.query.model import MODELS, model_for
from import_adapter.retrieve.service import RetrieveRequest, RetrieveService, RetrieveUpdate


def _responses(updates: Iterator[RetrieveUpdate], syntax: str) -> Iterator[QRResponse]:
    for update in updates:
        encoded = None
        if update.failed_uids is not None:
            listing = Dataset()
            listing.FailedSOPInstanceUIDList = list(update.failed_uids)
            encoded = encode_dataset(listing, syntax)
        yield QRResponse(update.status, update.counts, encoded)


def _request(
    assoc: AcceptorAssociation,
    request: CMoveRq | CGetRq,
    context: AcceptedContext,
    identifier: bytes,
    destination: str,
) -> RetrieveRequest:
    return RetrieveRequest(
        calling_aet=assoc.requestor.ae_title.strip(),
        message_id=request.message_id,
        model=model_for(request.sop_class_uid or context.abstract_syntax),
        identifier=decode_dataset(identifier, context.transfer_syntax),
        move_destination=destination,
    )


def move_handler(service: RetrieveService) -> MoveHandler:
    """The C-MOVE handler (sub-operations on an association to the destination)."""

    def on_c_move(
        assoc: AcceptorAssociation,
        request: CMoveRq,
        context: AcceptedContext,
        identifier: bytes,
        is_cancelled: Callable[[], bool],
    ) -> Iterator[QRResponse]:
        destination = request.move_destination.strip()
        try:
            retrieve = _request(assoc, request, context, identifier, destination)
        except Exception as exc:  # an undecodable identifier, an unknown model
            yield QRResponse(service.refused(assoc.requestor.ae_title, destination, exc))
            return
        yield from _responses(service.move(retrieve, is_cancelled), context.transfer_syntax)

    return on_c_move


def get_handler(service: RetrieveService) -> GetHandler:
    """The C-GET handler (sub-operations on the requesting association)."""

    def on_c_get(
        assoc: AcceptorAssociation,
        request: CGetRq,
        context: AcceptedContext,
        identifier: bytes,
        is_cancelled: Callable[[], bool],
        sub_operations: GetSubOperations,
    ) -> Iterator[QRResponse]:
        calling = assoc.requestor.ae_title.strip()
        try:
            retrieve = _request(assoc, request, context, identifier, "")
        except Exception as exc:  # an undecodable identifier, an unknown model
            yield QRResponse(service.refused(calling, calling, exc))
            return
        sender = ChannelSender(sub_operations, sub_operations.peer)
        yield from _responses(
            service.get(retrieve, sender, is_cancelled), context.transfer_syntax
        )

    return on_c_get


def retrieve_service(service: RetrieveService) -> DimseService:
    """C-MOVE and C-GET for the Patient Root, Study Root and Patient/Study Only models.

    C-MOVE's contexts are refused at negotiation to requesters the policy denies retrieval
    (answering 0x0124 would come after the requestor may have expected sub-operations).
    """
    return DimseService(
        "retrieve",
        contexts=[
            SupportedContext(uid, QUERY_SYNTAXES)
            for model in MODELS
            for uid in (model.move, model.get)
        ],
        access=Service.RETRIEVE,
        deny_at_negotiation=frozenset(str(model.move) for model in MODELS),
        c_move=move_handler(service),
        c_get=get_handler(service),
    )
