"""The EVT_C_FIND handler and the C-FIND service's presentation contexts (thin glue)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import evt

from common.status import find_status_for_error
from import_adapter.handlers import Handler
from import_adapter.query.model import MODELS, model_for
from import_adapter.query.service import FindRequest, FindService
from import_adapter.server import DimseService, SupportedContext

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
            yield find_status_for_error(exc).as_dataset(), None
            return
        for status, identifier in service.find(request, lambda: bool(event.is_cancelled)):
            yield (status.as_dataset() if status.comment else status.code), identifier

    return [(evt.EVT_C_FIND, on_c_find)]


def find_service(service: FindService) -> DimseService:
    """C-FIND for the Patient Root, Study Root and Patient/Study Only models."""
    contexts = [SupportedContext(model.find, QUERY_SYNTAXES) for model in MODELS]
    return DimseService("query", contexts=contexts, handlers=find_handlers(service))
