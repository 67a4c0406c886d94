"""N-EVENT-REPORT command sets and the role selection proposal, with pynetdicom as the oracle."""

from __future__ import annotations

from io import BytesIO

import pytest
from pynetdicom.dimse_messages import N_EVENT_REPORT_RQ, N_EVENT_REPORT_RSP
from pynetdicom.dimse_primitives import N_EVENT_REPORT
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext

from common.dimse.fast.acse import (
    ProposedContext,
    RoleProposal,
    decode_associate_ac,
    encode_associate_rq,
)
from common.dimse.fast.commands import CommandSetError, decode_command_set
from common.dimse.fast.constants import CommandField, Tag
from common.dimse.fast.notify import NEventReportRq, NEventReportRsp

COMMITMENT = "1.2.840.10008.1.20.1"
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


def _pynetdicom_bytes(message_class: type, primitive: object) -> bytes:
    message = message_class()
    message.primitive_to_message(primitive)
    raw = encode(message.command_set, True, True)
    assert raw is not None
    return bytes(raw)


@pytest.mark.parametrize("event_type", [1, 2])
@pytest.mark.parametrize("message_id", [1, 65535])
@pytest.mark.parametrize("instance", [COMMITMENT_INSTANCE, "1.2.3.45"])
@pytest.mark.parametrize("information", [True, False])
def test_n_event_report_rq_matches_pynetdicom(
    event_type: int, message_id: int, instance: str, information: bool
) -> None:
    primitive = N_EVENT_REPORT()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = COMMITMENT
    primitive.AffectedSOPInstanceUID = instance
    primitive.EventTypeID = event_type
    if information:
        primitive.EventInformation = BytesIO(b"\x08\x00\x16\x00")
    ours = NEventReportRq(message_id, COMMITMENT, instance, event_type, information)
    assert ours.encode() == _pynetdicom_bytes(N_EVENT_REPORT_RQ, primitive)
    assert NEventReportRq.from_command(decode_command_set(ours.encode())) == ours


@pytest.mark.parametrize(
    ("status", "comment", "event_type", "uids"),
    [
        (0x0000, "", 1, True),
        (0x0110, "cannot take it", 2, True),
        (0x0211, "", None, False),
        (0xC000, "odd", None, True),
    ],
)
def test_n_event_report_rsp_matches_pynetdicom(
    status: int, comment: str, event_type: int | None, uids: bool
) -> None:
    primitive = N_EVENT_REPORT()
    primitive.MessageIDBeingRespondedTo = 9
    primitive.Status = status
    if uids:
        primitive.AffectedSOPClassUID = COMMITMENT
        primitive.AffectedSOPInstanceUID = COMMITMENT_INSTANCE
    if comment:
        primitive.ErrorComment = comment  # type: ignore[assignment]  # typed as None
    if event_type is not None:
        primitive.EventTypeID = event_type
    ours = NEventReportRsp(
        9,
        status,
        COMMITMENT if uids else "",
        COMMITMENT_INSTANCE if uids else "",
        event_type,
        comment,
    )
    assert ours.encode() == _pynetdicom_bytes(N_EVENT_REPORT_RSP, primitive)
    assert NEventReportRsp.from_command(decode_command_set(ours.encode())) == ours


def test_pynetdicom_decodes_our_request_and_we_decode_its_response() -> None:
    raw = NEventReportRq(3, COMMITMENT, COMMITMENT_INSTANCE, 2).encode()
    command = decode(BytesIO(raw), True, True)
    assert int(command.CommandField) == CommandField.N_EVENT_REPORT_RQ
    assert command.MessageID == 3
    assert command.AffectedSOPClassUID == COMMITMENT
    assert command.AffectedSOPInstanceUID == COMMITMENT_INSTANCE
    assert command.EventTypeID == 2
    assert command.CommandDataSetType != 0x0101  # the Event Information follows

    reply = N_EVENT_REPORT()
    reply.MessageIDBeingRespondedTo = 3
    reply.Status = 0x0000
    reply.EventReply = BytesIO(b"\x08\x00\x16\x00")  # an Event Reply dataset follows
    decoded = NEventReportRsp.from_command(
        decode_command_set(_pynetdicom_bytes(N_EVENT_REPORT_RSP, reply))
    )
    assert decoded == NEventReportRsp(3, 0x0000, has_event_reply=True)


def test_response_without_status_is_refused() -> None:
    raw = NEventReportRsp(3, 0).encode()
    command = decode_command_set(raw)
    del command.elements[Tag.STATUS]
    with pytest.raises(CommandSetError):
        NEventReportRsp.from_command(command)


@pytest.mark.parametrize(("scu", "scp"), [(False, True), (True, True), (True, False)])
def test_role_selection_is_proposed_in_the_associate_rq(scu: bool, scp: bool) -> None:
    raw = encode_associate_rq(
        "IMPORTADAPTER",
        "COMMITSCU",
        [ProposedContext(1, COMMITMENT, ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"))],
        16384,
        {COMMITMENT: RoleProposal(scu=scu, scp=scp)},
    )
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(raw)
    primitive = pdu.to_primitive()
    roles = [
        item for item in primitive.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
    ]
    assert [(r.sop_class_uid, r.scu_role, r.scp_role) for r in roles] == [(COMMITMENT, scu, scp)]
    assert primitive.maximum_length_received == 16384
    # Without roles, no role selection sub-item.
    plain = A_ASSOCIATE_RQ()
    plain.decode(encode_associate_rq("A", "B", [ProposedContext(1, COMMITMENT, ("1.2.840.10008.1.2",))], 0))
    assert not any(
        isinstance(item, SCP_SCU_RoleSelectionNegotiation)
        for item in plain.to_primitive().user_information
    )


@pytest.mark.parametrize(("scu", "scp"), [(False, True), (True, False), (True, True)])
def test_role_selection_reply_is_read_from_the_associate_ac(scu: bool, scp: bool) -> None:
    proposed = [ProposedContext(1, COMMITMENT, ("1.2.840.10008.1.2",))]
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "IMPORTADAPTER"
    primitive.called_ae_title = "COMMITSCU"
    primitive.result = 0
    primitive.result_source = 1
    cx = PresentationContext()
    cx.context_id = 1
    cx.result = 0
    cx.transfer_syntax = ["1.2.840.10008.1.2"]
    primitive.presentation_context_definition_results_list = [cx]
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.3"
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = COMMITMENT
    role.scu_role = scu
    role.scp_role = scp
    primitive.user_information = [length, implementation, role]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(primitive)
    accept = decode_associate_ac(bytes(pdu.encode()), proposed)
    assert accept.roles == {COMMITMENT: RoleProposal(scu=scu, scp=scp)}
    assert [c.context_id for c in accept.contexts] == [1]
    primitive.user_information = [length, implementation]
    plain = A_ASSOCIATE_AC()
    plain.from_primitive(primitive)
    assert decode_associate_ac(bytes(plain.encode()), proposed).roles == {}
