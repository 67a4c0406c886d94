"""Sending the N-EVENT-REPORT back to the requester on an association we open (PS3.4 J.3.3).

We request the association but act as the Storage Commitment *SCP* on it, so the context is
proposed with SCP/SCU role selection (SCU role 0, SCP role 1), in one presentation context
offering explicit and implicit VR little endian (an SCU that accepts only one still gets its
report - the reference adapter offered implicit VR only). A requester whose AET dictionary entry
says ``"tls": true`` gets its report over DICOM TLS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from common.dimse.sender import PeerAddress
from common.dimse.sockets import SOCKET_HANDLERS
from common.dimse.tls import pynetdicom_tls_args
from common.errors import PeerRejectedError, PeerUnavailableError
from common.status import DimseStatus

LOG = logging.getLogger(__name__)

#: The well-known SOP Instance UID of the Storage Commitment Push Model (PS3.4 J.3.5).
STORAGE_COMMITMENT_INSTANCE_UID = "1.2.840.10008.1.20.1.1"
#: Event Type IDs of the report (PS3.4 J.3.3): all committed, some failed.
EVENT_ALL_COMMITTED = 1
EVENT_SOME_FAILED = 2
REPORT_SYNTAXES = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))


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
        PeerRejectedError: it rejected the association or the Storage Commitment context.
    """
    ae = AE(ae_title=settings.calling_aet)
    ae.maximum_pdu_size = settings.max_pdu_size
    ae.connection_timeout = settings.timeout
    ae.acse_timeout = settings.timeout
    ae.dimse_timeout = settings.timeout
    ae.network_timeout = settings.timeout
    ae.add_requested_context(StorageCommitmentPushModel, list(REPORT_SYNTAXES))
    role = build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    assoc = ae.associate(
        requester.host,
        requester.port,
        ae_title=requester.ae_title,
        ext_neg=[role],
        evt_handlers=SOCKET_HANDLERS,  # type: ignore[arg-type]
        tls_args=pynetdicom_tls_args(requester.tls, requester.host),
    )
    if assoc.is_rejected:
        raise PeerRejectedError(f"{requester} rejected the storage commitment report association")
    if not assoc.is_established:
        raise PeerUnavailableError(f"cannot open an association to {requester}")
    try:
        if not assoc.accepted_contexts:
            raise PeerRejectedError(f"{requester} accepted no Storage Commitment context")
        try:
            status_ds, _ = assoc.send_n_event_report(
                report, event_type, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE_UID
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise PeerUnavailableError(f"N-EVENT-REPORT to {requester} failed: {exc}") from exc
        status = status_ds.get("Status") if status_ds is not None else None
        if status is None:
            raise PeerUnavailableError(f"{requester} did not answer the N-EVENT-REPORT")
        return DimseStatus(int(status), str(status_ds.get("ErrorComment", "") or ""))
    finally:
        if assoc.is_established:
            assoc.release()
