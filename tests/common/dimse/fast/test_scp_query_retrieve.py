"""The SCP's C-FIND/C-MOVE/C-GET and N-ACTION serving against a pynetdicom SCU: responses
streamed, C-CANCEL noticed, C-GET sub-operations on the requesting association."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.dsutils import decode, encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from common.dimse.fast.acse import AcceptedContext, AssociateRequest
from common.dimse.fast.commands import (
    CEchoRq,
    CFindRq,
    CGetRq,
    CMoveRq,
    CStoreRq,
    NActionRq,
    SubOperationCounts,
)
from common.dimse.fast.meta import read_file_meta
from common.dimse.fast.scp import (
    AcceptorAssociation,
    AcceptorPolicy,
    Admission,
    AssociationEvent,
    GetSubOperations,
    QRResponse,
)
from common.status import SUCCESS, DimseStatus, Status
from tests.support.samples import write_minimal_instance

MOVE = str(StudyRootQueryRetrieveInformationModelMove)
FIND = str(StudyRootQueryRetrieveInformationModelFind)
GET = str(StudyRootQueryRetrieveInformationModelGet)
COMMIT = str(StorageCommitmentPushModel)
CT = str(CTImageStorage)
SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
SUB_OPERATIONS = 5


class _Handlers:
    """C-MOVE: SUB_OPERATIONS pending responses (one every 50 ms), stopping on cancel."""

    def __init__(self, files: list[Path]) -> None:
        self.identifiers: list[Dataset] = []
        self.closed = threading.Event()
        self.files = files
        self.actions: list[tuple[NActionRq, Dataset | None]] = []

    def admit(self, assoc: AcceptorAssociation, request: AssociateRequest) -> Admission:
        return Admission()

    def notify(self, event: AssociationEvent, assoc: AcceptorAssociation) -> None:
        """Ignored."""

    def c_get(self, assoc: AcceptorAssociation, request: CGetRq, context: AcceptedContext,
              identifier: bytes, is_cancelled: Callable[[], bool],
              sub_operations: GetSubOperations) -> Iterator[QRResponse]:
        """Each file as a sub-operation, a Pending after each; Cancel when asked."""
        total = len(self.files)
        completed = failed = 0
        for index, path in enumerate(self.files):
            if is_cancelled():
                yield QRResponse(
                    DimseStatus(Status.CANCEL),
                    SubOperationCounts(completed, failed, 0, total - index),
                )
                return
            meta = read_file_meta(path)
            context_for = sub_operations.contexts.get((meta.sop_class_uid,
                                                       meta.transfer_syntax_uid))
            if context_for is None:
                failed += 1
            else:
                rsp = sub_operations.send_c_store(path, meta, context_for, index + 1)
                if rsp.status == 0:
                    completed += 1
                else:
                    failed += 1
            yield QRResponse(
                DimseStatus(Status.PENDING),
                SubOperationCounts(completed, failed, 0, total - index - 1),
            )
        yield QRResponse(
            SUCCESS if not failed else DimseStatus(Status.SUB_OPERATIONS_COMPLETE_WITH_FAILURES),
            SubOperationCounts(completed, failed, 0),
        )

    def n_action(self, assoc: AcceptorAssociation, request: NActionRq,
                 context: AcceptedContext, information: bytes | None) -> DimseStatus:
        info = None if information is None else decode(BytesIO(information), False, True, False)
        self.actions.append((request, info))
        return DimseStatus(Status.PROCESSING_FAILURE, "not today")

    def c_echo(self, assoc: AcceptorAssociation, request: CEchoRq) -> DimseStatus:
        return SUCCESS

    def c_store(self, assoc: AcceptorAssociation, request: CStoreRq,
                context: AcceptedContext, spool_path: Path,
                content: bytes | None = None) -> DimseStatus:
        return SUCCESS

    def c_move(self, assoc: AcceptorAssociation, request: CMoveRq, context: AcceptedContext,
               identifier: bytes, is_cancelled: Callable[[], bool]) -> Iterator[QRResponse]:
        self.identifiers.append(decode(BytesIO(identifier), False, True, False))
        try:
            for done in range(SUB_OPERATIONS):
                if is_cancelled():
                    listing = Dataset()
                    listing.FailedSOPInstanceUIDList = ["1.2.3"]
                    yield QRResponse(
                        DimseStatus(Status.CANCEL),
                        SubOperationCounts(done, 0, 0, SUB_OPERATIONS - done),
                        encode(listing, False, True),
                    )
                    return
                time.sleep(0.05)
                yield QRResponse(
                    DimseStatus(Status.PENDING),
                    SubOperationCounts(done + 1, 0, 0, SUB_OPERATIONS - done - 1),
                )
            yield QRResponse(SUCCESS, SubOperationCounts(SUB_OPERATIONS, 0, 0))
        finally:
            self.closed.set()

    def c_find(self, assoc: AcceptorAssociation, request: CFindRq, context: AcceptedContext,
               identifier: bytes, is_cancelled: Callable[[], bool]) -> Iterator[QRResponse]:
        match = decode(BytesIO(identifier), False, True, False)
        match.PatientName = "DOE^J"
        yield QRResponse(DimseStatus(Status.PENDING), identifier=encode(match, False, True))
        yield QRResponse(SUCCESS)


@pytest.fixture
def fast_scp(tmp_path: Path) -> Iterator[tuple[int, _Handlers]]:
    handlers = _Handlers([write_minimal_instance(tmp_path / f"{index}.dcm", CT, "GET") for index in range(3)])
    listener = socket.create_server(("127.0.0.1", 0))
    served = {MOVE: SYNTAXES, FIND: SYNTAXES, GET: SYNTAXES, COMMIT: SYNTAXES}
    policy = AcceptorPolicy("FASTSCP", 16384, 5.0, 5.0, 5.0, served_syntaxes=served)

    def serve() -> None:
        while True:
            try:
                sock, address = listener.accept()
            except OSError:
                return
            assoc = AcceptorAssociation(sock, address, sock.getsockname(), policy, handlers)
            threading.Thread(target=assoc.serve, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1], handlers
    listener.close()


def _keys() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = "1.2.3.4"
    return ds


def _associate(port: int) -> object:
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(MOVE, list(SYNTAXES))
    ae.add_requested_context(FIND, list(SYNTAXES))
    assoc = ae.associate("127.0.0.1", port, ae_title="FASTSCP")
    assert assoc.is_established
    return assoc


def test_move_responses_stream_with_counts(fast_scp: tuple[int, _Handlers]) -> None:
    port, handlers = fast_scp
    assoc: object = _associate(port)
    try:
        responses = list(assoc.send_c_move(_keys(), "DEST", MOVE, msg_id=9))  # type: ignore[attr-defined]
    finally:
        assoc.release()  # type: ignore[attr-defined]
    statuses = [status for status, _ in responses]
    assert [int(s.Status) for s in statuses] == [0xFF00] * SUB_OPERATIONS + [0x0000]
    assert [s.NumberOfRemainingSuboperations for s in statuses[:-1]] == [4, 3, 2, 1, 0]
    assert statuses[-1].NumberOfCompletedSuboperations == SUB_OPERATIONS
    assert handlers.identifiers[0].StudyInstanceUID == "1.2.3.4"


def test_c_cancel_ends_the_move_promptly(fast_scp: tuple[int, _Handlers]) -> None:
    port, handlers = fast_scp
    assoc: object = _associate(port)
    received = []
    try:
        for index, (status, identifier) in enumerate(
            assoc.send_c_move(_keys(), "DEST", MOVE, msg_id=9)  # type: ignore[attr-defined]
        ):
            received.append((status, identifier))
            if index == 0:
                assoc.send_c_cancel(9, query_model=MOVE)  # type: ignore[attr-defined]
    finally:
        assoc.release()  # type: ignore[attr-defined]
    final, identifier = received[-1]
    assert int(final.Status) == 0xFE00
    assert final.NumberOfRemainingSuboperations > 0
    assert len(received) < SUB_OPERATIONS + 1
    assert identifier.FailedSOPInstanceUIDList == "1.2.3"
    assert handlers.closed.wait(5)


def test_find_beside_move_is_answered(fast_scp: tuple[int, _Handlers]) -> None:
    port, _ = fast_scp
    assoc: object = _associate(port)
    try:
        responses = list(assoc.send_c_find(_keys(), FIND))  # type: ignore[attr-defined]
    finally:
        assoc.release()  # type: ignore[attr-defined]
    assert [int(status.Status) for status, _ in responses] == [0xFF00, 0x0000]
    assert responses[0][1].PatientName == "DOE^J"


def _get(port: int, received: list[Dataset], *, scp_role: bool = True) -> object:
    def on_store(event: evt.Event) -> int:
        received.append(event.dataset)
        return 0

    ae = AE(ae_title="GETSCU")
    ae.add_requested_context(GET, list(SYNTAXES))
    ae.add_requested_context(CT, [str(ExplicitVRLittleEndian)])
    roles: list[Any] = [build_role(CT, scp_role=True)] if scp_role else []
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="FASTSCP", ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    return assoc


def test_get_sends_sub_operations_on_the_requesting_association(
    fast_scp: tuple[int, _Handlers],
) -> None:
    port, handlers = fast_scp
    received: list[Dataset] = []
    assoc: object = _get(port, received)
    try:
        responses = list(assoc.send_c_get(_keys(), GET, msg_id=3))  # type: ignore[attr-defined]
    finally:
        assoc.release()  # type: ignore[attr-defined]
    statuses = [int(status.Status) for status, _ in responses]
    assert statuses == [0xFF00] * 3 + [0x0000]
    assert responses[-1][0].NumberOfCompletedSuboperations == 3
    assert sorted(ds.SOPInstanceUID for ds in received) == sorted(
        read_file_meta(path).sop_instance_uid for path in handlers.files
    )


def test_get_without_the_scp_role_has_no_context_to_send_on(
    fast_scp: tuple[int, _Handlers],
) -> None:
    """Role selection: a requestor that did not take the SCP role receives nothing."""
    port, _ = fast_scp
    received: list[Dataset] = []
    assoc: object = _get(port, received, scp_role=False)
    try:
        responses = list(assoc.send_c_get(_keys(), GET, msg_id=3))  # type: ignore[attr-defined]
    finally:
        assoc.release()  # type: ignore[attr-defined]
    assert int(responses[-1][0].Status) == 0xB000
    assert responses[-1][0].NumberOfFailedSuboperations == 3
    assert received == []


def test_c_cancel_during_a_get_ends_it(fast_scp: tuple[int, _Handlers]) -> None:
    port, _ = fast_scp
    received: list[Dataset] = []
    assoc: object = _get(port, received)
    statuses = []
    try:
        for index, (status, _) in enumerate(
            assoc.send_c_get(_keys(), GET, msg_id=3)  # type: ignore[attr-defined]
        ):
            statuses.append(int(status.Status))
            if index == 0:
                assoc.send_c_cancel(3, query_model=GET)  # type: ignore[attr-defined]
    finally:
        assoc.release()  # type: ignore[attr-defined]
    assert statuses[-1] == 0xFE00
    assert len(received) < 3


def test_n_action_is_answered_with_the_handlers_status(fast_scp: tuple[int, _Handlers]) -> None:
    port, handlers = fast_scp
    ae = AE(ae_title="COMMITSCU")
    ae.add_requested_context(COMMIT, list(SYNTAXES))
    assoc = ae.associate("127.0.0.1", port, ae_title="FASTSCP")
    assert assoc.is_established
    info = Dataset()
    info.TransactionUID = "1.2.3.4.5"
    try:
        status, reply = assoc.send_n_action(info, 1, COMMIT, "1.2.840.10008.1.20.1.1")
    finally:
        assoc.release()
    assert (int(status.Status), status.ErrorComment) == (0x0110, "not today")
    assert reply is None
    request, received = handlers.actions[0]
    assert (request.action_type_id, request.sop_instance_uid) == (1, "1.2.840.10008.1.20.1.1")
    assert received is not None and received.TransactionUID == "1.2.3.4.5"
