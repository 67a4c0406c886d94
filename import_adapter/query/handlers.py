"""The C-FIND handler and the C-FIND service's SOP classes (thin glue)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from common.dimse.fast.acse import AcceptedContext
from common.dimse.fast.commands import CFindRq
from common.dimse.fast.scp import AcceptorAssociation, QRResponse
from common.dimse.identifiers import decode_dataset, encode_dataset
from import_adapter.access import Service
from import_adapter.dimse_service import DimseService, FindHandler, SupportedContext
from import_adapter.query.model import MODELS, model_for
from import_adapter.query.service import FindRequest, FindService

#: Transfer syntaxes accepted for query/retrieve requests (identifiers are small datasets).
QUERY_SYNTAXES = (
    str(ExplicitVRLittleEndian),
    str(ImplicitVRLittleEndian),
    str(DeflatedExplicitVRLittleEndian),
    str(ExplicitVRBigEndian),
)


def find_handler(service: FindService) -> FindHandler:
    """The C-FIND handler bound to ``service``."""

    def on_c_find(
        assoc: AcceptorAssociation,
        request: CFindRq,
        context: AcceptedContext,
        identifier: bytes,
        is_cancelled: Callable[[], bool],
    ) -> Iterator[QRResponse]:
        calling = assoc.requestor.ae_title.strip()
        syntax = context.transfer_syntax
        try:
            find = FindRequest(
                calling_aet=calling,
                message_id=request.message_id,
                model=model_for(request.sop_class_uid or context.abstract_syntax),
                identifier=decode_dataset(identifier, syntax),
            )
        except Exception as exc:  # an undecodable identifier, an unknown model
            yield QRResponse(service.refused(calling, exc))
            return
        for status, match in service.find(find, is_cancelled):
            encoded = None if match is None else encode_dataset(match, syntax)
            yield QRResponse(status, identifier=encoded)

    return on_c_find


def find_service(service: FindService) -> DimseService:
    """C-FIND for the Patient Root, Study Root and Patient/Study Only models."""
    return DimseService(
        "query",
        contexts=[SupportedContext(model.find, QUERY_SYNTAXES) for model in MODELS],
        access=Service.QUERY,
        c_find=find_handler(service),
    )
