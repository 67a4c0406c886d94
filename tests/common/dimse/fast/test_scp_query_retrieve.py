"""The fast SCP's C-MOVE/C-FIND serving: responses streamed, C-CANCEL noticed, pynetdicom SCU."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.dsutils import decode, encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from common.dimse.fast.acse import AcceptedContext, decode_associate_rq
from common.dimse.fast.commands import CEchoRq, CFindRq, CMoveRq, CStoreRq, SubOperationCounts
from common.dimse.fast.scp import (
    AcceptorAssociation,
    AcceptorPolicy,
    AssociationEvent,
    QRResponse,
    fast_path_eligible,
)
from common.status import SUCCESS, DimseStatus, Status

MOVE = str(StudyRootQueryRetrieveInformationModelMove)
FIND = str(StudyRootQueryRetrieveInformationModelFind)
SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
SUB_OPERATIONS = 5


class _Handlers:
    """C-MOVE: SUB_OPERATIONS pending responses (one every 50 ms), stopping on cancel."""

    def __init__(self) -> None:
        self.identifiers: list[Dataset] = []
        self.closed = threading.Event()

    def notify(self, event: AssociationEvent, assoc: AcceptorAssociation) -> None:
        """Ignored."""

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
def fast_scp() -> Iterator[tuple[int, _Handlers]]:
    handlers = _Handlers()
    listener = socket.create_server(("127.0.0.1", 0))
    served = {MOVE: SYNTAXES, FIND: SYNTAXES}
    policy = AcceptorPolicy("FASTSCP", 16384, 5.0, 5.0, 5.0, served_syntaxes=served)

    def serve() -> None:
        while True:
            try:
                sock, address = listener.accept()
            except OSError:
                return
            assoc = AcceptorAssociation(sock, address, sock.getsockname(), policy, handlers)
            threading.Thread(target=assoc.serve, args=(lambda: 0, 2), daemon=True).start()

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


def test_eligibility_of_served_classes() -> None:
    ae = AE(ae_title="PYSCU")
    for uid in (MOVE, FIND, str(CTImageStorage), str(Verification)):
        ae.add_requested_context(uid)
    request_bytes = _associate_rq(ae)
    request = decode_associate_rq(request_bytes)
    assert not fast_path_eligible(request, reserved={MOVE, FIND})
    assert not fast_path_eligible(request, reserved={MOVE, FIND}, served={MOVE})
    assert fast_path_eligible(request, reserved={MOVE, FIND}, served={MOVE, FIND})
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    request = decode_associate_rq(_associate_rq(ae))
    assert not fast_path_eligible(request, reserved={MOVE, FIND, str(
        StudyRootQueryRetrieveInformationModelGet)}, served={MOVE, FIND})


def _associate_rq(ae: AE) -> bytes:
    """The A-ASSOCIATE-RQ ``ae`` sends, captured by a listener that never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    ae.acse_timeout = 0.5
    thread = threading.Thread(
        target=lambda: ae.associate("127.0.0.1", port, ae_title="ANY"), daemon=True
    )
    thread.start()
    sock, _ = listener.accept()
    sock.settimeout(5)
    data = b""
    while len(data) < 6 or len(data) < 6 + int.from_bytes(data[2:6], "big"):
        data += sock.recv(65536)
    sock.close()
    listener.close()
    thread.join(5)
    return data
