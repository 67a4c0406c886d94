"""The EVT_N_ACTION handler and the Storage Commitment presentation context (thin glue)."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from common.status import commitment_request_status
from import_adapter.commitment.service import CommitmentService
from import_adapter.handlers import Handler
from import_adapter.server import DimseService, SupportedContext

#: Transfer syntaxes accepted for N-ACTION requests.
COMMITMENT_SYNTAXES = (
    str(ExplicitVRLittleEndian),
    str(ImplicitVRLittleEndian),
    str(ExplicitVRBigEndian),
)


def commitment_handlers(service: CommitmentService) -> list[Handler]:
    """The EVT_N_ACTION handler bound to ``service``."""

    def on_n_action(event: Any) -> tuple[Dataset, None]:
        calling = event.assoc.requestor.ae_title
        try:
            info = event.action_information
            action_type = event.action_type
        except Exception as exc:  # an undecodable dataset surfaces here
            return commitment_request_status(exc).as_dataset(), None
        return service.request(calling, action_type, info).as_dataset(), None

    return [(evt.EVT_N_ACTION, on_n_action)]


def commitment_service(service: CommitmentService) -> DimseService:
    """Storage Commitment Push Model, SCP role."""
    contexts = [SupportedContext(StorageCommitmentPushModel, COMMITMENT_SYNTAXES)]
    return DimseService(
        "storage-commitment", contexts=contexts, handlers=commitment_handlers(service)
    )
