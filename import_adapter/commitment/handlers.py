"""The N-ACTION handler and the Storage Commitment SOP class (thin glue)."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from common.dimse.fast.acse import AcceptedContext
from common.dimse.fast.commands import NActionRq
from common.dimse.fast.scp import AcceptorAssociation
from common.dimse.identifiers import decode_dataset
from common.status import DimseStatus, commitment_request_status
from import_adapter.access import Service
from import_adapter.commitment.service import CommitmentService
from import_adapter.dimse_service import ActionHandler, DimseService, SupportedContext

#: Transfer syntaxes accepted for N-ACTION requests.
COMMITMENT_SYNTAXES = (
    str(ExplicitVRLittleEndian),
    str(ImplicitVRLittleEndian),
    str(ExplicitVRBigEndian),
)


def action_handler(service: CommitmentService) -> ActionHandler:
    """The N-ACTION handler bound to ``service``."""

    def on_n_action(
        assoc: AcceptorAssociation,
        request: NActionRq,
        context: AcceptedContext,
        information: bytes | None,
    ) -> DimseStatus:
        try:
            info = (
                decode_dataset(information, context.transfer_syntax)
                if information is not None
                else Dataset()
            )
        except Exception as exc:  # an undecodable dataset
            return commitment_request_status(exc)
        return service.request(assoc.requestor.ae_title, request.action_type_id, info)

    return on_n_action


def commitment_service(service: CommitmentService) -> DimseService:
    """Storage Commitment Push Model, SCP role."""
    return DimseService(
        "storage-commitment",
        contexts=[SupportedContext(str(StorageCommitmentPushModel), COMMITMENT_SYNTAXES)],
        access=Service.COMMIT,
        n_action=action_handler(service),
    )
