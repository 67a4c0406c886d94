"""The EVT_C_FIND handler and the C-FIND service's presentation contexts (thin glue)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import evt
from pynetdicom.dsutils import decode, encode

from common.dimse.fast.acse import AcceptedContext
from common.dimse.fast.commands import CFindRq
from common.dimse.fast.scp import AcceptorAssociation, QRResponse
from import_adapter.handlers import Handler
from import_adapter.query.model import MODELS, model_for
from import_adapter.query.service import FindRequest, FindService
from import_adapter.server import DimseService, FastFindHandler, SupportedContext

#: Transfer syntaxes accepted for query/retrieve requests (identifiers are small datasets).
QUERY_SYNTAXES = (
    str(ExplicitVRLittleEndian),
    str(ImplicitVRLittleEndian),
    str(DeflatedExplicitVRLittleEndian),
    str(ExplicitVRBigEndian),
)


def find_handlers(service: FindService) -> list[Handler]:
    """The EVT_C_FIND handler bound to ``service``."""

    def on_c_find(event: Any) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        try:
            request = FindRequest(
                calling_aet=event.assoc.requestor.ae_title,
                message_id=int(event.request.MessageID),
                model=model_for(str(event.request.AffectedSOPClassUID)),
                identifier=event.identifier,
            )
        except Exception as exc:  # an undecodable identifier surfaces here
            yield service.refused(event.assoc.requestor.ae_title, exc).as_dataset(), None
            return
        for status, identifier in service.find(request, lambda: bool(event.is_cancelled)):
            yield (status.as_dataset() if status.comment else status.code), identifier

    return [(evt.EVT_C_FIND, on_c_find)]


def fast_find_handler(service: FindService) -> FastFindHandler:
    """The C-FIND handler of the fast DIMSE engine (identifiers decoded/encoded by pydicom)."""

    def on_c_find(
        assoc: AcceptorAssociation,
        request: CFindRq,
        context: AcceptedContext,
        identifier: bytes,
        is_cancelled: Callable[[], bool],
    ) -> Iterator[QRResponse]:
        calling = assoc.requestor.ae_title.strip()
        syntax = UID(context.transfer_syntax)
        implicit, little, deflated = (
            syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated
        )
        try:
            find = FindRequest(
                calling_aet=calling,
                message_id=request.message_id,
                model=model_for(request.sop_class_uid or context.abstract_syntax),
                identifier=decode(BytesIO(identifier), implicit, little, deflated),
            )
        except Exception as exc:  # an undecodable identifier, an unknown model
            yield QRResponse(service.refused(calling, exc))
            return
        for status, match in service.find(find, is_cancelled):
            encoded = None if match is None else encode(match, implicit, little, deflated)
            yield QRResponse(status, identifier=encoded)

    return on_c_find


def find_service(service: FindService) -> DimseService:
    """C-FIND for the Patient Root, Study Root and Patient/Study Only models."""
    contexts = [SupportedContext(model.find, QUERY_SYNTAXES) for model in MODELS]
    return DimseService(
        "query",
        contexts=contexts,
        handlers=find_handlers(service),
        fast_find=fast_find_handler(service),
    )
