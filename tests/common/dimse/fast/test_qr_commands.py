"""The engine's C-FIND/C-MOVE/C-GET/C-CANCEL/N-ACTION command sets, byte for byte against
pynetdicom's."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import (
    C_CANCEL_RQ,
    C_FIND_RQ,
    C_FIND_RSP,
    C_MOVE_RQ,
    C_MOVE_RSP,
    DIMSEMessage,
)
from pynetdicom.dimse_primitives import C_CANCEL, C_FIND, C_MOVE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from common.dimse.fast.commands import (
    CCancelRq,
    CFindRq,
    CFindRsp,
    CGetRq,
    CMoveRq,
    CMoveRsp,
    NActionRq,
    NActionRsp,
    SubOperationCounts,
    decode_command_set,
)
from common.dimse.fast.constants import CommandField, Tag
from common.status import Status

MOVE = str(StudyRootQueryRetrieveInformationModelMove)
FIND = str(StudyRootQueryRetrieveInformationModelFind)


def _pynetdicom(message: DIMSEMessage, primitive: object) -> bytes:
    message.primitive_to_message(primitive)  # type: ignore[arg-type]
    encoded = encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


@pytest.mark.parametrize("destination", ["DEST", "ODDDEST", "A" * 16])
@pytest.mark.parametrize("sop_class", [MOVE, str(PatientRootQueryRetrieveInformationModelMove)])
def test_c_move_rq_matches_pynetdicom_and_decodes(destination: str, sop_class: str) -> None:
    primitive = C_MOVE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = sop_class
    primitive.Priority = 2
    primitive.MoveDestination = destination
    primitive.Identifier = BytesIO(b"\x00\x00")
    ours = CMoveRq(7, sop_class, destination, priority=2)
    encoded = ours.encode()
    assert encoded == _pynetdicom(C_MOVE_RQ(), primitive)
    assert CMoveRq.from_command(decode_command_set(encoded)) == ours


@pytest.mark.parametrize(
    ("status", "counts", "comment", "identifier"),
    [
        (Status.PENDING, SubOperationCounts(1, 2, 3, remaining=10), "", False),
        (Status.SUCCESS, SubOperationCounts(12, 0, 0), "", False),
        (Status.SUCCESS, SubOperationCounts(0, 0, 0), "", False),
        (Status.SUB_OPERATIONS_COMPLETE_WITH_FAILURES, SubOperationCounts(9, 2, 1), "", True),
        (Status.OUT_OF_RESOURCES_SUB_OPERATIONS, SubOperationCounts(0, 5, 0), "", True),
        (Status.CANCEL, SubOperationCounts(3, 1, 0, remaining=20), "", True),
        (Status.MOVE_DESTINATION_UNKNOWN, None, "", False),
        (Status.MOVE_DESTINATION_UNKNOWN, None, "cannot associate", False),
        (Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, None, "odd level", False),
        (Status.UNABLE_TO_PROCESS, None, "", False),
    ],
)
def test_c_move_rsp_matches_pynetdicom(
    status: Status, counts: SubOperationCounts | None, comment: str, identifier: bool
) -> None:
    primitive = C_MOVE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = MOVE
    primitive.Status = int(status)
    if comment:
        primitive.ErrorComment = comment  # type: ignore[assignment]
    if counts is not None:
        if counts.remaining is not None:
            primitive.NumberOfRemainingSuboperations = counts.remaining
        primitive.NumberOfCompletedSuboperations = counts.completed
        primitive.NumberOfFailedSuboperations = counts.failed
        primitive.NumberOfWarningSuboperations = counts.warning
    if identifier:
        listing = Dataset()
        listing.FailedSOPInstanceUIDList = ["1.2.3"]
        primitive.Identifier = BytesIO(encode(listing, True, True) or b"")
    ours = CMoveRsp(7, MOVE, int(status), counts, comment, has_identifier=identifier)
    assert ours.encode() == _pynetdicom(C_MOVE_RSP(), primitive)


def test_c_find_rq_and_rsp_match_pynetdicom() -> None:
    request = C_FIND()
    request.MessageID = 3
    request.AffectedSOPClassUID = FIND
    request.Priority = 0
    request.Identifier = BytesIO(b"\x00\x00")
    ours = CFindRq(3, FIND)
    assert ours.encode() == _pynetdicom(C_FIND_RQ(), request)
    assert CFindRq.from_command(decode_command_set(ours.encode())) == ours
    for status, comment, identifier in [
        (Status.PENDING, "", True),
        (Status.SUCCESS, "", False),
        (Status.CANCEL, "", False),
        (Status.UNABLE_TO_PROCESS, "DICOMweb search timed out", False),
    ]:
        response = C_FIND()
        response.MessageIDBeingRespondedTo = 3
        response.AffectedSOPClassUID = FIND
        response.Status = int(status)
        if comment:
            response.ErrorComment = comment  # type: ignore[assignment]
        if identifier:
            response.Identifier = BytesIO(b"\x00\x00")
        mine = CFindRsp(3, FIND, int(status), comment, has_identifier=identifier)
        assert mine.encode() == _pynetdicom(C_FIND_RSP(), response), status


def test_c_cancel_rq_matches_pynetdicom_and_decodes() -> None:
    primitive = C_CANCEL()
    primitive.MessageIDBeingRespondedTo = 7
    ours = CCancelRq(7)
    assert ours.encode() == _pynetdicom(C_CANCEL_RQ(), primitive)
    assert CCancelRq.from_command(decode_command_set(ours.encode())) == ours


GET = "1.2.840.10008.5.1.4.1.2.2.3"
COMMIT = "1.2.840.10008.1.20.1"
COMMIT_INSTANCE = "1.2.840.10008.1.20.1.1"


def test_c_get_rq_and_rsp_match_pynetdicom() -> None:
    from pynetdicom.dimse_messages import C_GET_RQ, C_GET_RSP
    from pynetdicom.dimse_primitives import C_GET

    primitive = C_GET()
    primitive.MessageID = 5
    primitive.AffectedSOPClassUID = GET
    primitive.Priority = 0
    primitive.Identifier = BytesIO(b"\x00\x00")
    ours = CGetRq(5, GET)
    assert ours.encode() == _pynetdicom(C_GET_RQ(), primitive)
    assert CGetRq.from_command(decode_command_set(ours.encode())) == ours

    response = C_GET()
    response.MessageIDBeingRespondedTo = 5
    response.AffectedSOPClassUID = GET
    response.Status = int(Status.PENDING)
    response.NumberOfRemainingSuboperations = 2
    response.NumberOfCompletedSuboperations = 1
    response.NumberOfFailedSuboperations = 0
    response.NumberOfWarningSuboperations = 0
    rsp = CMoveRsp(5, GET, Status.PENDING, SubOperationCounts(1, 0, 0, 2),
                   command_field=CommandField.C_GET_RSP)
    assert rsp.encode() == _pynetdicom(C_GET_RSP(), response)


def test_n_action_rq_and_rsp_match_pynetdicom() -> None:
    from pynetdicom.dimse_messages import N_ACTION_RQ, N_ACTION_RSP
    from pynetdicom.dimse_primitives import N_ACTION

    primitive = N_ACTION()
    primitive.MessageID = 9
    primitive.RequestedSOPClassUID = COMMIT
    primitive.RequestedSOPInstanceUID = COMMIT_INSTANCE
    primitive.ActionTypeID = 1
    primitive.ActionInformation = BytesIO(b"\x00\x00")
    ours = NActionRq(9, COMMIT, COMMIT_INSTANCE, 1)
    assert ours.encode() == _pynetdicom(N_ACTION_RQ(), primitive)
    assert NActionRq.from_command(decode_command_set(ours.encode())) == ours

    response = N_ACTION()
    response.MessageIDBeingRespondedTo = 9
    response.AffectedSOPClassUID = COMMIT
    response.AffectedSOPInstanceUID = COMMIT_INSTANCE
    response.ActionTypeID = 1
    response.Status = 0x0119
    setattr(response, "ErrorComment", "odd")  # noqa: B010 (typed None in pynetdicom)
    rsp = NActionRsp(9, COMMIT, COMMIT_INSTANCE, 1, 0x0119, "odd")
    assert rsp.encode() == _pynetdicom(N_ACTION_RSP(), response)


def test_n_action_rsp_error_comment_is_made_lo_safe_like_the_others() -> None:
    rsp = NActionRsp(9, COMMIT, COMMIT_INSTANCE, 1, 0x0110, "bad\\value\n" + "x" * 80)
    comment = decode_command_set(rsp.encode()).text(Tag.ERROR_COMMENT)
    assert len(comment) <= 64 and "\\" not in comment and "\n" not in comment
