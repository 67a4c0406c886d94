"""The EVT_C_MOVE/EVT_C_GET handlers and their presentation contexts (thin glue)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pynetdicom import evt

from common.status import retrieve_status_for_error
from import_adapter.handlers import Handler
from import_adapter.query.handlers import QUERY_SYNTAXES
from import_adapter.query.model import MODELS, model_for
from import_adapter.retrieve.service import RetrieveRequest, RetrieveService
from import_adapter.server import DimseService, SupportedContext

_RETRIEVE_CLASSES = frozenset(uid for m in MODELS for uid in (m.find, m.move, m.get))


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


def retrieve_handlers(service: RetrieveService) -> list[Handler]:
    """The EVT_C_MOVE and EVT_C_GET handlers bound to ``service``."""

    def on_c_move(event: Any) -> Iterator[Any]:
        destination = str(event.move_destination or "").strip()
        yield from service.move(_request(event, destination), lambda: bool(event.is_cancelled))

    def on_c_get(event: Any) -> Iterator[Any]:
        try:
            request = _request(event)
        except Exception as exc:
            yield 1
            yield retrieve_status_for_error(exc).as_dataset(), None
            return
        accepted = storage_contexts_as_scu(event.assoc)
        yield from service.get(request, accepted, lambda: bool(event.is_cancelled))

    return [(evt.EVT_C_MOVE, on_c_move), (evt.EVT_C_GET, on_c_get)]


def retrieve_service(service: RetrieveService) -> DimseService:
    """C-MOVE and C-GET for the Patient Root, Study Root and Patient/Study Only models.

    Storage contexts for C-GET need no entry here: the listener's unrestricted storage service
    accepts every storage SOP class with the SCP/SCU role selection the SCU proposes.
    """
    contexts = [
        SupportedContext(uid, QUERY_SYNTAXES) for model in MODELS for uid in (model.move, model.get)
    ]
    return DimseService("retrieve", contexts=contexts, handlers=retrieve_handlers(service))
