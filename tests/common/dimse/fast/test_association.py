"""Association negotiation and rejects: the fast SCU against pynetdicom's SCP, and pynetdicom's
SCU against the fast SCP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    Verification,
)

from common.dicom.part10 import IN_MEMORY_LIMIT
from common.dimse.after_response import defer
from common.dimse.fast.acse import (
    AcceptedContext,
    AssociateRequest,
    ProposedContext,
    decode_associate_rj,
)
from common.dimse.fast.commands import CEchoRq, CFindRq, CGetRq, CMoveRq, CStoreRq, NActionRq
from common.dimse.fast.constants import PduType, RejectReason, RejectResult, RejectSource
from common.dimse.fast.meta import read_file_meta
from common.dimse.fast.scp import (
    AcceptorAssociation,
    AcceptorPolicy,
    Admission,
    AssociationEvent,
    GetSubOperations,
    QRResponse,
)
from common.dimse.fast.scu import AssociationRejected, RequestorAssociation, Timeouts
from common.status import SUCCESS, DimseStatus
from tests.support.raw_pdu import association_answer

CT = str(CTImageStorage)


def _write_ct(path: Path, syntax: str = ExplicitVRLittleEndian) -> Path:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = "FAST"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(CT)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


# -- fast SCU -> pynetdicom SCP ---------------------------------------------------------------


@pytest.fixture
def pynetdicom_scp() -> Iterator[tuple[int, list[Dataset]]]:
    from pynetdicom import evt

    received: list[Dataset] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.dataset)
        return 0

    ae = AE(ae_title="PYSCP")
    ae.require_called_aet = True
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage, [ImplicitVRLittleEndian])
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert server is not None
    yield server.server_address[1], received
    server.shutdown()


def test_scu_negotiates_echoes_stores_and_releases(
    pynetdicom_scp: tuple[int, list[Dataset]], tmp_path: Path
) -> None:
    port, received = pynetdicom_scp
    proposed = [
        ProposedContext(1, str(Verification), (ImplicitVRLittleEndian,)),
        ProposedContext(3, CT, (ExplicitVRLittleEndian,)),
        ProposedContext(5, CT, (ExplicitVRLittleEndian, ImplicitVRLittleEndian)),
    ]
    assoc = RequestorAssociation.request(
        "127.0.0.1", port, calling_ae_title="ME", called_ae_title="PYSCP",
        contexts=proposed, max_length=16384, timeouts=Timeouts(),
    )
    # Context 3 (explicit only) refused; 5 accepted in implicit VR.
    assert set(assoc.contexts) == {(str(Verification), ImplicitVRLittleEndian),
                                   (CT, ImplicitVRLittleEndian)}
    echo = assoc.c_echo(1, assoc.contexts[(str(Verification), ImplicitVRLittleEndian)])
    assert echo.status == 0
    path = _write_ct(tmp_path / "ct.dcm", ImplicitVRLittleEndian)
    meta = read_file_meta(path)
    rsp = assoc.send_c_store(path, meta, assoc.contexts[(CT, ImplicitVRLittleEndian)], 2)
    assert (rsp.status, rsp.message_id_being_responded_to) == (0, 2)
    assert assoc.is_alive()
    assoc.release()
    assert not assoc.is_open
    assert received[0].SOPInstanceUID == meta.sop_instance_uid


def test_scu_reports_a_rejection(pynetdicom_scp: tuple[int, list[Dataset]]) -> None:
    port, _ = pynetdicom_scp
    with pytest.raises(AssociationRejected) as info:
        RequestorAssociation.request(
            "127.0.0.1", port, calling_ae_title="ME", called_ae_title="WRONG",
            contexts=[ProposedContext(1, str(Verification), (ImplicitVRLittleEndian,))],
            max_length=16384, timeouts=Timeouts(),
        )
    reject = info.value.reject
    assert (reject.result, reject.source, reject.reason) == (
        RejectResult.PERMANENT, RejectSource.SERVICE_USER, RejectReason.CALLED_AE_NOT_RECOGNIZED
    )


# -- pynetdicom SCU -> fast SCP ---------------------------------------------------------------


class _Recorder:
    """AcceptorHandlers that keeps what it saw."""

    def __init__(self) -> None:
        self.events: list[AssociationEvent] = []
        self.stored: list[tuple[CStoreRq, AcceptedContext, bytes]] = []
        self.in_memory: list[bool] = []
        self.after_response: Callable[[], None] | None = None
        self.active = 0

    def admit(self, assoc: AcceptorAssociation, request: AssociateRequest) -> Admission:
        if self.active >= 2:
            return Admission((
                RejectResult.TRANSIENT,
                RejectSource.SERVICE_PROVIDER_PRESENTATION,
                RejectReason.LOCAL_LIMIT_EXCEEDED,
            ))
        return Admission()

    def notify(self, event: AssociationEvent, assoc: AcceptorAssociation) -> None:
        self.events.append(event)

    def c_echo(self, assoc: AcceptorAssociation, request: CEchoRq) -> DimseStatus:
        return SUCCESS

    def c_store(
        self, assoc: AcceptorAssociation, request: CStoreRq, context: AcceptedContext,
        spool_path: Path,
        content: bytes | None = None,
    ) -> DimseStatus:
        # A small file is kept in memory only; a large one is written and not kept.
        assert (content is None) == spool_path.exists()
        received = spool_path.read_bytes() if content is None else content
        self.stored.append((request, context, received))
        self.in_memory.append(content is not None)
        if self.after_response is not None:
            defer(self.after_response)
        return DimseStatus(0xB000, "coerced")

    def c_move(
        self, assoc: AcceptorAssociation, request: CMoveRq, context: AcceptedContext,
        identifier: bytes, is_cancelled: Callable[[], bool],
    ) -> Iterator[QRResponse]:
        return iter(())  # no C-MOVE context is served here

    def c_find(
        self, assoc: AcceptorAssociation, request: CFindRq, context: AcceptedContext,
        identifier: bytes, is_cancelled: Callable[[], bool],
    ) -> Iterator[QRResponse]:
        return iter(())  # no C-FIND context is served here

    def c_get(
        self, assoc: AcceptorAssociation, request: CGetRq, context: AcceptedContext,
        identifier: bytes, is_cancelled: Callable[[], bool], sub_operations: GetSubOperations,
    ) -> Iterator[QRResponse]:
        return iter(())  # no C-GET context is served here

    def n_action(
        self, assoc: AcceptorAssociation, request: NActionRq, context: AcceptedContext,
        information: bytes | None,
    ) -> DimseStatus:
        return SUCCESS  # no N-ACTION context is served here


@pytest.fixture
def fast_scp(tmp_path: Path) -> Iterator[tuple[int, _Recorder]]:
    recorder = _Recorder()
    listener = socket.create_server(("127.0.0.1", 0))
    policy = AcceptorPolicy("FASTSCP", 16384, 5.0, 5.0, 5.0, receive_dir=tmp_path)

    def serve() -> None:
        while True:
            try:
                sock, address = listener.accept()
            except OSError:
                return
            assoc = AcceptorAssociation(sock, address, sock.getsockname(), policy, recorder)
            threading.Thread(target=assoc.serve).start()

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1], recorder
    listener.close()


def test_fast_scp_accepts_first_syntax_echoes_and_spools(
    fast_scp: tuple[int, _Recorder], tmp_path: Path
) -> None:
    port, recorder = fast_scp
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="FASTSCP")
    assert assoc.is_established
    # Verification proposed [implicit, explicit, ...]: explicit preferred (acse.prefer_explicit_vr).
    assert [str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts] == [
        ExplicitVRLittleEndian, ExplicitVRLittleEndian
    ]
    assert assoc.send_c_echo().Status == 0
    path = _write_ct(tmp_path / "ct.dcm")
    rsp = assoc.send_c_store(dcmread(path))
    assert (rsp.Status, rsp.ErrorComment) == (0xB000, "coerced")
    assoc.release()
    request, context, spooled = recorder.stored[0]
    assert context.transfer_syntax == ExplicitVRLittleEndian
    assert spooled[128:132] == b"DICM"
    stored = dcmread(tmp_path / "ct.dcm")
    assert read_file_meta(tmp_path / "ct.dcm").sop_instance_uid == request.sop_instance_uid
    assert stored.SOPInstanceUID == request.sop_instance_uid
    # The dataset bytes after the rebuilt meta are exactly the file's dataset bytes.
    offset = read_file_meta(tmp_path / "ct.dcm").dataset_offset
    assert spooled.endswith(path.read_bytes()[offset:])
    assert AssociationEvent.ESTABLISHED in recorder.events
    assert AssociationEvent.RELEASED in recorder.events


def test_fast_scp_keeps_small_datasets_in_memory_and_spools_large_ones(
    fast_scp: tuple[int, _Recorder], tmp_path: Path
) -> None:
    """Up to IN_MEMORY_LIMIT no spool file is ever created; beyond it the dataset streams to
    a file, which is gone once the C-STORE is answered."""
    port, recorder = fast_scp
    small = dcmread(_write_ct(tmp_path / "small.dcm"))
    large = dcmread(_write_ct(tmp_path / "large.dcm"))
    large.PixelData = bytes(range(256)) * (IN_MEMORY_LIMIT // 128)  # 2 MiB
    large["PixelData"].VR = "OB"
    before = set(tmp_path.iterdir())
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="FASTSCP")
    assert assoc.is_established
    assert assoc.send_c_store(small).Status == 0xB000
    assert assoc.send_c_store(large).Status == 0xB000
    assoc.release()
    assert recorder.in_memory == [True, False]
    assert recorder.stored[1][2].endswith(bytes(large.PixelData))
    assert set(tmp_path.iterdir()) == before  # no spool file created, or left behind


def test_fast_scp_runs_deferred_handler_work_after_the_response_is_out(
    fast_scp: tuple[int, _Recorder], tmp_path: Path
) -> None:
    """The handler's deferred work waits for the SCU to have its C-STORE-RSP in hand: were it
    run before the response went out, the SCU would not see it until the work timed out."""
    port, recorder = fast_scp
    response_seen = threading.Event()
    waited: list[bool] = []
    recorder.after_response = lambda: waited.append(response_seen.wait(10))
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="FASTSCP")
    assert assoc.is_established
    started = time.monotonic()
    assert assoc.send_c_store(dcmread(_write_ct(tmp_path / "ct.dcm"))).Status == 0xB000
    assert time.monotonic() - started < 5
    response_seen.set()
    assoc.release()
    assert waited == [True]


def test_fast_scp_rejects_wrong_called_ae_and_over_limit(
    fast_scp: tuple[int, _Recorder]
) -> None:
    port, recorder = fast_scp
    answer = association_answer(port, "SOMEONE")
    assert answer[0] == PduType.ASSOCIATE_RJ
    rj = decode_associate_rj(answer[6:])
    assert (rj.result, rj.source, rj.reason) == (
        RejectResult.PERMANENT, RejectSource.SERVICE_USER, RejectReason.CALLED_AE_NOT_RECOGNIZED
    )
    recorder.active = 2
    answer = association_answer(port, "FASTSCP")
    assert answer[0] == PduType.ASSOCIATE_RJ
    rj = decode_associate_rj(answer[6:])
    assert (rj.result, rj.source, rj.reason) == (
        RejectResult.TRANSIENT,
        RejectSource.SERVICE_PROVIDER_PRESENTATION,
        RejectReason.LOCAL_LIMIT_EXCEEDED,
    )


def test_a_partial_dataset_of_an_aborted_association_leaves_no_file(
    fast_scp: tuple[int, _Recorder], tmp_path: Path
) -> None:
    """A dataset too large to keep in memory is written as it arrives; when the association
    is aborted before its end, the file goes with it."""
    from common.dimse.fast.acse import encode_associate_rq
    from common.dimse.fast.constants import AbortSource
    from common.dimse.fast.transport import abort_pdu, pdata_pdus

    port, recorder = fast_scp
    before = set(tmp_path.iterdir())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(encode_associate_rq(
            "RAW", "FASTSCP", [ProposedContext(1, CT, (ExplicitVRLittleEndian,))], 16384
        ))
        assert sock.recv(1) == bytes([PduType.ASSOCIATE_AC])
        command = CStoreRq(1, CT, generate_uid()).encode()
        sock.sendall(b"".join(pdata_pdus(1, command, True, 16000)))
        partial = pdata_pdus(1, b"\0" * (2 * IN_MEMORY_LIMIT), False, 16000)[:-1]
        sock.sendall(b"".join(partial))  # all but the last fragment: a file by now
        deadline = time.monotonic() + 5
        while set(tmp_path.iterdir()) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert set(tmp_path.iterdir()) != before  # the dataset was being written
        sock.sendall(abort_pdu(AbortSource.SERVICE_USER))
        deadline = time.monotonic() + 5
        while set(tmp_path.iterdir()) != before and time.monotonic() < deadline:
            time.sleep(0.01)
    assert set(tmp_path.iterdir()) == before
    assert recorder.stored == []
    assert AssociationEvent.ABORTED in recorder.events
