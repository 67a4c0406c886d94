"""Sending the N-EVENT-REPORT back to the requester on an association we open (PS3.4 J.3.3).

We request the association but act as the Storage Commitment *SCP* on it, so the context is
proposed with SCP/SCU role selection (SCU role 0, SCP role 1), in one presentation context
offering explicit and implicit VR little endian (an SCU that accepts only one still gets its
report - the reference adapter offered implicit VR only). The report goes on the accepted
context whatever the requester answered to the role proposal (as pynetdicom's SCU did: many
requesters accept the context without answering it). A requester whose AET dictionary entry
says ``"tls": true`` gets its report over DICOM TLS. The association is our own DIMSE
engine's (:class:`~common.dimse.fast.scu.RequestorAssociation`); pynetdicom only encodes the
Event Information dataset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from common.dimse.fast.acse import ProposedContext, RoleProposal
from common.dimse.fast.scu import Timeouts
from common.dimse.fast.transport import DimseProtocolError, ReleaseRequestedError
from common.dimse.identifiers import encode_dataset
from common.dimse.sender import PeerAddress, request_association
from common.errors import MalformedDatasetError, PeerRejectedError, PeerUnavailableError
from common.status import DimseStatus

LOG = logging.getLogger(__name__)

#: The well-known SOP Instance UID of the Storage Commitment Push Model (PS3.4 J.3.5).
STORAGE_COMMITMENT_INSTANCE_UID = "1.2.840.10008.1.20.1.1"
#: Event Type IDs of the report (PS3.4 J.3.3): all committed, some failed.
EVENT_ALL_COMMITTED = 1
EVENT_SOME_FAILED = 2
REPORT_SYNTAXES = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))
#: The one context proposed, and the role we ask for on it.
_CONTEXT = ProposedContext(1, str(StorageCommitmentPushModel), REPORT_SYNTAXES)
_ROLES = {str(StorageCommitmentPushModel): RoleProposal(scu=False, scp=True)}
#: The Message ID of the report: the only message on its association.
_MESSAGE_ID = 1


@dataclass(frozen=True)
class ReportSettings:
    """How reports are sent.

    Attributes:
        calling_aet: our AE title on the report association.
        max_pdu_size: the largest PDU we accept (0 = unlimited).
        timeout: seconds for connecting and for each answer.
    """

    calling_aet: str = "IMPORTADAPTER"
    max_pdu_size: int = 0
    timeout: float = 30.0


def send_report(
    requester: PeerAddress, event_type: int, report: Dataset, settings: ReportSettings
) -> DimseStatus:
    """Open an association to ``requester`` and send one N-EVENT-REPORT; returns its status.

    Raises:
        PeerUnavailableError: the requester cannot be reached or did not answer.
        PeerRejectedError: it rejected the association or the Storage Commitment context (or
            its TLS certificate is not trusted).
        MalformedDatasetError: ``report`` cannot be encoded (not retried: it never will be).
    """
    timeout = settings.timeout
    assoc = request_association(
        requester,
        calling_aet=settings.calling_aet,
        contexts=[_CONTEXT],
        max_length=settings.max_pdu_size,
        timeouts=Timeouts(connect=timeout, acse=timeout, dimse=timeout, network=timeout),
        roles=_ROLES,
    )
    try:
        context = next(iter(assoc.contexts.values()), None)
        if context is None:
            raise PeerRejectedError(f"{requester} accepted no Storage Commitment context")
        granted = assoc.roles.get(context.abstract_syntax)
        if granted is None or not granted.scp:
            LOG.info(
                "%s did not grant us the Storage Commitment SCP role (%s); reporting anyway",
                requester, "no reply" if granted is None else "refused",
            )
        try:
            information = encode_dataset(report, context.transfer_syntax)
        except ValueError as exc:
            raise MalformedDatasetError("the storage commitment report cannot be encoded") from exc
        try:
            response = assoc.n_event_report(
                _MESSAGE_ID, context, event_type, STORAGE_COMMITMENT_INSTANCE_UID, information
            )
        except (OSError, DimseProtocolError, ReleaseRequestedError) as exc:
            raise PeerUnavailableError(f"N-EVENT-REPORT to {requester} failed: {exc}") from exc
        LOG.debug(
            "N-EVENT-REPORT to %s on %s answered 0x%04X",
            requester, UID(context.transfer_syntax).name, response.status,
        )  # fmt: skip
        return DimseStatus(response.status, response.error_comment)
    finally:
        assoc.release()
