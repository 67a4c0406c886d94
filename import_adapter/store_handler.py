"""The C-STORE handler: unpack the request into a :class:`StoreRequest`, call the service."""

from __future__ import annotations

from pathlib import Path

from common.dimse.fast.acse import AcceptedContext
from common.dimse.fast.commands import CStoreRq
from common.dimse.fast.scp import AcceptorAssociation
from common.status import DimseStatus
from import_adapter.access import Service
from import_adapter.dimse_service import DimseService, StoreHandler
from import_adapter.store import StoreRequest, StoreService


def store_handler(service: StoreService) -> StoreHandler:
    """The C-STORE handler bound to ``service``."""

    def on_c_store(
        assoc: AcceptorAssociation,
        request: CStoreRq,
        context: AcceptedContext,
        spool_path: Path,
        content: bytes | None,
    ) -> DimseStatus:
        return service.handle(
            StoreRequest(
                calling_aet=assoc.requestor.ae_title,
                called_aet=assoc.acceptor.ae_title,
                message_id=request.message_id,
                sop_class_uid=request.sop_class_uid,
                sop_instance_uid=request.sop_instance_uid,
                transfer_syntax_uid=context.transfer_syntax,
                spool_path=spool_path,
                content=content,
            )
        )

    return on_c_store


def storage_service(service: StoreService) -> DimseService:
    """C-STORE of every storage-like SOP class, under the policy's store rule."""
    return DimseService("storage", access=Service.STORE, c_store=store_handler(service))
