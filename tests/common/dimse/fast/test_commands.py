"""Command set encoders and decoder, with pynetdicom's own encoding as the oracle."""

from __future__ import annotations

from io import BytesIO

import pytest
from pynetdicom.dimse_messages import C_ECHO_RQ, C_ECHO_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import decode, encode

from common.dimse.fast.commands import (
    CEchoRq,
    CEchoRsp,
    CFindRsp,
    CMoveRsp,
    CommandSetError,
    CStoreRq,
    CStoreRsp,
    decode_command_set,
)
from common.dimse.fast.constants import VERIFICATION_SOP_CLASS, CommandField, Tag
from common.status import Status

CT = "1.2.840.10008.5.1.4.1.1.2"


def _pynetdicom_bytes(message_class: type, primitive: object) -> bytes:
    message = message_class()
    message.primitive_to_message(primitive)
    encoded = encode(message.command_set, True, True)
    assert encoded is not None  # None only when pydicom cannot encode it
    return bytes(encoded)


@pytest.mark.parametrize("instance", ["1.2.3.4", "1.2.3.45", "1.2.826.0.1.3680043.8.498.1"])
@pytest.mark.parametrize("originator", [None, ("MOVER", 3), ("ODDAET", 65535)])
@pytest.mark.parametrize("priority", [0, 1, 2])
def test_c_store_rq_matches_pynetdicom(
    instance: str, originator: tuple[str, int] | None, priority: int
) -> None:
    primitive = C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = instance
    primitive.Priority = priority
    primitive.DataSet = BytesIO(b"\x08\x00\x16\x00")  # a dataset follows
    if originator:
        primitive.MoveOriginatorApplicationEntityTitle = originator[0]
        primitive.MoveOriginatorMessageID = originator[1]
    ours = CStoreRq(
        7,
        CT,
        instance,
        priority,
        originator[0] if originator else None,
        originator[1] if originator else None,
    )
    assert ours.encode() == _pynetdicom_bytes(C_STORE_RQ, primitive)
    assert CStoreRq.from_command(decode_command_set(ours.encode())) == ours


@pytest.mark.parametrize(
    ("status", "comment"),
    [(Status.SUCCESS, ""), (Status.OUT_OF_RESOURCES, "Spool full"), (Status.CANNOT_UNDERSTAND, "odd")],
)
def test_c_store_rsp_matches_pynetdicom(status: int, comment: str) -> None:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 9
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = "1.2.3.45"
    primitive.Status = status
    if comment:
        # pynetdicom initialises the attribute to None without an annotation: str is right.
        primitive.ErrorComment = comment  # type: ignore[assignment]
    ours = CStoreRsp(9, CT, "1.2.3.45", status, comment)
    assert ours.encode() == _pynetdicom_bytes(C_STORE_RSP, primitive)
    assert CStoreRsp.from_command(decode_command_set(ours.encode())) == ours


def test_c_echo_matches_pynetdicom() -> None:
    rq = C_ECHO()
    rq.MessageID = 1
    rq.AffectedSOPClassUID = VERIFICATION_SOP_CLASS
    assert CEchoRq(1).encode() == _pynetdicom_bytes(C_ECHO_RQ, rq)
    rsp = C_ECHO()
    rsp.MessageIDBeingRespondedTo = 1
    rsp.AffectedSOPClassUID = VERIFICATION_SOP_CLASS
    rsp.Status = Status.SUCCESS
    assert CEchoRsp(1, Status.SUCCESS).encode() == _pynetdicom_bytes(C_ECHO_RSP, rsp)


@pytest.mark.parametrize(
    "response",
    [
        CStoreRsp(1, CT, "1.2.3", Status.PROCESSING_FAILURE, "peer said A\nB\x00\\" + "x" * 80),
        CEchoRsp(1, Status.PROCESSING_FAILURE, error_comment="peer said A\nB\x00\\" + "x" * 80),
        CFindRsp(1, CT, Status.UNABLE_TO_PROCESS, "peer said A\nB\x00\\" + "x" * 80),
        CMoveRsp(1, CT, Status.MOVE_DESTINATION_UNKNOWN,
                 error_comment="peer said A\nB\x00\\" + "x" * 80),
    ],
)
def test_error_comments_are_sent_as_lo_text(response: object) -> None:
    """The adapter's engine sends what pynetdicom's path sends (common.status.safe_error_comment)."""
    encoded = response.encode()  # type: ignore[attr-defined]
    comment = decode(BytesIO(encoded), True, True).ErrorComment
    assert comment == "peer said A?B?/" + "x" * 49


def test_decoder_reads_what_pynetdicom_decodes() -> None:
    encoded = CStoreRq(42, CT, "1.2.3", 2, "ORIGIN", 5).encode()
    ds = decode(BytesIO(encoded), True, True)
    assert ds.MessageID == 42
    assert ds.AffectedSOPInstanceUID == "1.2.3"
    assert ds.MoveOriginatorApplicationEntityTitle == "ORIGIN"
    assert ds.CommandGroupLength == len(encoded) - 12
    command = decode_command_set(encoded)
    assert command.command_field == CommandField.C_STORE_RQ
    assert command.has_dataset


def test_decoder_rejects_truncated_and_foreign_elements() -> None:
    encoded = CEchoRq(1).encode()
    with pytest.raises(CommandSetError):
        decode_command_set(encoded[:-1])
    with pytest.raises(CommandSetError):
        decode_command_set(encoded[:5])
    with pytest.raises(CommandSetError):
        decode_command_set(b"\x08\x00\x16\x00\x00\x00\x00\x00")
    # Only the group length: no Command Field.
    with pytest.raises(CommandSetError):
        decode_command_set(CEchoRq(1).encode()[:12])
    assert not decode_command_set(CEchoRq(1).encode()).has(Tag.STATUS)
