"""The fast DIMSE engine on the real wire: DCMTK and pynetdicom SCUs against the import
adapter's listener, and StoreSender against DCMTK storescp and Orthanc."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    Verification,
)

from common.dicom.part10 import meta_end
from common.dimse.fast.scp import AcceptorAssociation
from common.dimse.sender import PeerAddress, SenderSettings, StoreSender
from common.errors import AssociationRejectedError
from import_adapter.app import ImportAdapter
from tests.support import dcmtk
from tests.support.adapters import IMPORT_AET, running_import_adapter
from tests.support.dcmtk import StoreSCP
from tests.support.http_fault_server import HttpFaultServer, parse_multipart_related
from tests.support.orthanc import OrthancServer
from tests.support.samples import SampleInstance, make_corpus, make_samples, pixel_data_bytes


@pytest.fixture
def sink(fault_server: Callable[..., HttpFaultServer]) -> HttpFaultServer:
    """A DICOMweb sink that keeps request bodies."""
    return fault_server(keep_bodies=True)


@pytest.fixture
def adapter(sink: HttpFaultServer) -> Iterator[ImportAdapter]:
    with running_import_adapter(sink.url, dimse_acse_timeout=2.0) as running:
        yield running


def _stowed_datasets(sink: HttpFaultServer) -> dict[str, bytes]:
    """SOP Instance UID -> dataset bytes of every instance the sink received."""
    out: dict[str, bytes] = {}
    for request in sink.requests:
        if request.body is None:
            continue
        for part in parse_multipart_related(request.body, request.header("content-type") or ""):
            raw = part.content
            out[str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(raw)).SOPInstanceUID)] = (
                raw[meta_end(raw) :]
            )
    return out


def _dataset_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    return raw[meta_end(raw) :]


def _as_part10(dataset: bytes, like: Path) -> bytes:
    """Received dataset bytes with the meta header of the file they came from."""
    raw = like.read_bytes()
    return raw[: meta_end(raw)] + dataset


def _fast_associations(adapter: ImportAdapter) -> list[object]:
    return [a for a in adapter.server.active_associations if isinstance(a, AcceptorAssociation)]


def test_storescu_several_syntaxes_per_association_byte_identical(
    adapter: ImportAdapter, sink: HttpFaultServer, tmp_path: Path
) -> None:
    samples = make_samples(tmp_path / "samples")
    result = dcmtk.storescu(
        "127.0.0.1", adapter.server.port, [s.path for s in samples], IMPORT_AET,
        per_file_syntax=True,
    )
    assert result.returncode == 0, result.stderr
    # storescu re-encodes datasets it reads (group lengths, padding): compare pixel data.
    stowed = _stowed_datasets(sink)
    for sample in samples:
        assert pixel_data_bytes(_as_part10(stowed[sample.sop_instance_uid], sample.path)) == (
            pixel_data_bytes(sample.path)
        ), sample.kind


def test_store_sender_through_the_adapter_is_byte_identical(
    adapter: ImportAdapter, sink: HttpFaultServer, tmp_path: Path
) -> None:
    samples = make_samples(tmp_path / "samples")
    sender = StoreSender(PeerAddress(IMPORT_AET, "127.0.0.1", adapter.server.port),
                         SenderSettings(calling_aet="FASTSCU", max_pdu_size=16384))
    try:
        for sample in samples:
            assert sender.send(sample.path).is_success, sample.kind
    finally:
        sender.close()
    stowed = _stowed_datasets(sink)
    for sample in samples:
        assert stowed[sample.sop_instance_uid] == _dataset_bytes(sample.path), sample.kind


def test_dcmsend_and_concurrent_associations(
    adapter: ImportAdapter, sink: HttpFaultServer, tmp_path: Path
) -> None:
    corpora: list[list[SampleInstance]] = [
        make_corpus(tmp_path / f"c{i}", 15) for i in range(4)
    ]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(
            lambda c: dcmtk.dcmsend("127.0.0.1", adapter.server.port, [s.path for s in c],
                                    IMPORT_AET),
            corpora,
        ))
    assert all(r.returncode == 0 for r in results), [r.stdout[-500:] for r in results]
    stowed = _stowed_datasets(sink)
    for corpus in corpora:
        for sample in corpus:
            assert pixel_data_bytes(_as_part10(stowed[sample.sop_instance_uid], sample.path)) == (
                pixel_data_bytes(sample.path)
            )


def test_echoscu_and_wrong_called_ae(adapter: ImportAdapter) -> None:
    assert dcmtk.echoscu("127.0.0.1", adapter.server.port, IMPORT_AET).returncode == 0
    rejected = dcmtk.echoscu("127.0.0.1", adapter.server.port, "NOBODY")
    assert rejected.returncode != 0
    assert "Called AE Title Not Recognized" in rejected.stdout + rejected.stderr


def test_every_association_is_served_by_our_engine_with_its_negotiation_answered(
    adapter: ImportAdapter,
) -> None:
    """C-FIND, C-GET with role selection, user identity asking for a response, an async
    operations window, SOP class extended negotiation: one engine, each item answered as
    docs/conformance.md says (PS3.7 D.3.3)."""
    from pynetdicom import build_role
    from pynetdicom.pdu_primitives import (
        AsynchronousOperationsWindowNegotiation,
        SOPClassExtendedNegotiation,
        UserIdentityNegotiation,
    )
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    identity = UserIdentityNegotiation()
    identity.user_identity_type = 2
    identity.primary_field = b"user"
    identity.secondary_field = b"secret"
    identity.positive_response_requested = True
    window = AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = 4
    window.maximum_number_operations_performed = 4
    relational = SOPClassExtendedNegotiation()
    relational.sop_class_uid = PatientRootQueryRetrieveInformationModelFind
    relational.service_class_application_information = b"\x01"  # relational queries
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        "127.0.0.1", adapter.server.port, ae_title=IMPORT_AET,
        ext_neg=[build_role(CTImageStorage, scp_role=True), identity, window, relational],
    )
    try:
        assert assoc.is_established
        assert _fast_associations(adapter)
        assert len(assoc.accepted_contexts) == 4
        acceptor = assoc.acceptor
        assert acceptor.asynchronous_operations == (1, 1)
        assert acceptor.user_identity is not None
        assert acceptor.user_identity.server_response == b""
        [role] = acceptor.role_selection.values()
        assert (role.scu_role, role.scp_role) == (False, True)
        assert not acceptor.sop_class_extended  # not offered: no reply
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


def _raw_connection(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        if data and data[0] != 0x01:
            return sock.recv(64)  # an A-ABORT, then the connection closes
        sock.shutdown(socket.SHUT_WR)  # a truncated request: we give up first
        return sock.recv(64)


def test_garbage_and_truncated_pdus_do_not_stop_the_listener(
    adapter: ImportAdapter, tmp_path: Path
) -> None:
    answer = _raw_connection(adapter.server.port, b"GET / HTTP/1.1\r\n\r\n")
    assert answer[:1] == b"\x07"  # A-ABORT
    assert _raw_connection(adapter.server.port, b"\x01\x00\x00\x00\x01\x00\x00\x01") == b""
    sample = make_corpus(tmp_path / "one", 1)[0]
    assert dcmtk.dcmsend("127.0.0.1", adapter.server.port, [sample.path],
                         IMPORT_AET).returncode == 0


def test_silent_connection_is_dropped_after_the_acse_timeout(adapter: ImportAdapter) -> None:
    with socket.create_connection(("127.0.0.1", adapter.server.port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(64) == b""  # closed by the adapter
        assert 1.5 < time.monotonic() - started < 8
    assert dcmtk.echoscu("127.0.0.1", adapter.server.port, IMPORT_AET).returncode == 0


@pytest.mark.parametrize("syntaxes", ["all", "implicit"])
def test_store_sender_to_storescp_every_sample(
    store_scp: Callable[..., StoreSCP], tmp_path: Path, syntaxes: str
) -> None:
    scp = store_scp(syntaxes=syntaxes)
    samples = make_samples(tmp_path / "samples")
    sender = StoreSender(PeerAddress(scp.aet, scp.host, scp.port), SenderSettings())
    try:
        for sample in samples:
            assert sender.send(sample.path).is_success, sample.kind
    finally:
        sender.close()
    received = scp.wait_for_files(len(samples))
    by_uid = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in received}
    for sample in samples:
        got = pydicom.dcmread(by_uid[sample.sop_instance_uid])
        if syntaxes == "all":
            assert _dataset_bytes(by_uid[sample.sop_instance_uid]) == _dataset_bytes(
                sample.path
            ), sample.kind
        else:
            assert str(got.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2"


def test_store_sender_rejected_by_the_adapter(adapter: ImportAdapter, tmp_path: Path) -> None:
    sample = make_corpus(tmp_path / "one", 1)[0]
    wrong = StoreSender(PeerAddress("WRONG", "127.0.0.1", adapter.server.port), SenderSettings())
    with pytest.raises(AssociationRejectedError) as info:
        wrong.send(sample.path)
    assert info.value.permanent
    assert (info.value.source, info.value.reason) == (1, 7)  # service user, called AE


def test_store_sender_to_orthanc(orthanc: OrthancServer, tmp_path: Path) -> None:
    peer = PeerAddress(orthanc.aet, "127.0.0.1", orthanc.dicom_port)
    sender = StoreSender(peer, SenderSettings(calling_aet="FASTSCU"))
    corpus = make_corpus(tmp_path / "orthanc", 5)
    try:
        for sample in corpus:
            assert sender.send(sample.path).is_success
    finally:
        sender.close()
