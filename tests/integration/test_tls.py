"""DICOM TLS on the real wire: DCMTK clients and servers against the adapter, certificates
generated per module.

- the listener over TLS on both engines: storescu/echoscu (fast engine), findscu/movescu
  (pynetdicom), with client certificates required and verified;
- untrusted client certificates and plain TCP are refused while the adapter keeps serving;
- outbound: C-MOVE sub-associations to a ``storescp +tls`` destination (AET dictionary entry
  with ``"tls": true``), StoreSender (export and routing) to ``storescp +tls``, a Storage
  Commitment report to a TLS SCU.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelMove,
)

from common.dimse.aet_dictionary import parse_aet_dictionary
from common.dimse.sender import PeerAddress, SenderSettings, StoreSender
from common.dimse.tls import TlsSettings, client_context, server_context
from common.errors import PeerRejectedError
from import_adapter.app import ImportAdapter
from import_adapter.commitment.report import ReportSettings, send_report
from tests.support import dcmtk
from tests.support.adapters import IMPORT_AET, running_import_adapter
from tests.support.dcmtk import StoreSCP
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port
from tests.support.samples import SampleInstance, make_corpus
from tests.support.tls_certs import Pki, make_pki

LOCALHOST = "127.0.0.1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _client_args(pki: Pki, *, rogue: bool = False) -> list[str]:
    """DCMTK client TLS flags: our client certificate, trusting the test CA."""
    key, cert = (pki.rogue_key, pki.rogue_cert) if rogue else (pki.client_key, pki.client_cert)
    return ["+tls", str(key), str(cert), "+cf", str(pki.ca)]


def _server_args(pki: Pki) -> list[str]:
    """``storescp +tls``: our server certificate; client certificates from the test CA."""
    return ["+tls", str(pki.server_key), str(pki.server_cert), "+cf", str(pki.ca)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, orthanc: OrthancServer) -> list[SampleInstance]:
    files = make_corpus(tmp_path_factory.mktemp("corpus"), 3, studies=1)
    orthanc.upload_all([s.path for s in files])
    return files


@pytest.fixture(scope="module")
def tls_storescp(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreSCP]:
    with StoreSCP(tmp_path_factory.mktemp("tlsscp") / "in", aet="TLSSCP",
                  extra_args=_server_args(pki)) as server:
        yield server


@pytest.fixture(scope="module")
def adapter(pki: Pki, orthanc: OrthancServer, tls_storescp: StoreSCP) -> Iterator[ImportAdapter]:
    entries = [{
        "name": "TLSSCP", "host": LOCALHOST, "port": tls_storescp.port, "tls": True,
        "ca": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key),
    }]
    tls = TlsSettings(cert=pki.server_cert, key=pki.server_key, ca=pki.ca)
    with running_import_adapter(
        orthanc.dicomweb_url,
        dimse_tls=tls,
        dimse_acse_timeout=3.0,
        aet_dictionary=parse_aet_dictionary(json.dumps(entries), source="test"),
    ) as running:
        yield running


def test_storescu_and_echoscu_over_tls_fast_engine(
    adapter: ImportAdapter, pki: Pki, orthanc: OrthancServer, tmp_path: Path
) -> None:
    files = make_corpus(tmp_path / "c", 2, studies=1)
    echo = dcmtk.echoscu(LOCALHOST, adapter.server.port, IMPORT_AET, extra_args=_client_args(pki))
    assert echo.returncode == 0, echo.stderr
    result = dcmtk.storescu(LOCALHOST, adapter.server.port, [f.path for f in files], IMPORT_AET,
                            extra_args=_client_args(pki))
    assert result.returncode == 0, result.stdout + result.stderr
    for sample in files:
        assert orthanc.qido("instances", {"SOPInstanceUID": sample.sop_instance_uid})


def test_findscu_over_tls_pynetdicom(
    adapter: ImportAdapter, pki: Pki, corpus: list[SampleInstance], tmp_path: Path
) -> None:
    study = str(pydicom.dcmread(corpus[0].path, stop_before_pixels=True).StudyInstanceUID)
    result = dcmtk.findscu(
        LOCALHOST, adapter.server.port,
        ["0008,0052=STUDY", f"0020,000D={study}"], IMPORT_AET,
        output_dir=tmp_path, extra_args=_client_args(pki),
    )
    assert result.returncode == 0, result.stderr
    responses = dcmtk.read_responses(tmp_path)
    assert [str(r.StudyInstanceUID) for r in responses] == [study]


def test_movescu_over_tls_to_a_tls_destination(
    adapter: ImportAdapter, pki: Pki, corpus: list[SampleInstance], tls_storescp: StoreSCP
) -> None:
    # DCMTK's movescu has no TLS: pynetdicom requests the C-MOVE over TLS instead.
    study = str(pydicom.dcmread(corpus[0].path, stop_before_pixels=True).StudyInstanceUID)
    ae = AE(ae_title="MOVESCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    client = TlsSettings(cert=pki.client_cert, key=pki.client_key, ca=pki.ca)
    assoc = ae.associate(LOCALHOST, adapter.server.port, ae_title=IMPORT_AET,
                         tls_args=(client_context(client), LOCALHOST))
    assert assoc.is_established
    keys = Dataset()
    keys.QueryRetrieveLevel = "STUDY"
    keys.StudyInstanceUID = study
    try:
        statuses = [int(status.Status) for status, _ in assoc.send_c_move(
            keys, "TLSSCP", StudyRootQueryRetrieveInformationModelMove) if status]
    finally:
        assoc.release()
    assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
    received = tls_storescp.wait_for_files(len(corpus), timeout=30)
    assert len(received) >= len(corpus)


def test_untrusted_client_certificate_and_plain_tcp_are_refused(
    adapter: ImportAdapter, pki: Pki, tmp_path: Path
) -> None:
    files = make_corpus(tmp_path / "c", 1, studies=1)
    rogue = dcmtk.storescu(LOCALHOST, adapter.server.port, [files[0].path], IMPORT_AET,
                           extra_args=_client_args(pki, rogue=True), timeout=30)
    assert rogue.returncode != 0
    plain = dcmtk.echoscu(LOCALHOST, adapter.server.port, IMPORT_AET, timeout=30)
    assert plain.returncode != 0
    # No client certificate at all: refused too (--tls_ca makes it mandatory).
    anonymous = dcmtk.echoscu(LOCALHOST, adapter.server.port, IMPORT_AET,
                              extra_args=["+tla", "+cf", str(pki.ca)], timeout=30)
    assert anonymous.returncode != 0
    good = dcmtk.echoscu(LOCALHOST, adapter.server.port, IMPORT_AET, extra_args=_client_args(pki))
    assert good.returncode == 0, good.stderr


def test_store_sender_over_tls_and_untrusted_server(
    pki: Pki, tls_storescp: StoreSCP, tmp_path: Path
) -> None:
    files = make_corpus(tmp_path / "c", 2, studies=1)
    tls = TlsSettings(cert=pki.client_cert, key=pki.client_key, ca=pki.ca)
    sender = StoreSender(PeerAddress("TLSSCP", LOCALHOST, tls_storescp.port, tls),
                         SenderSettings(calling_aet="EXPORTER"))
    try:
        for sample in files:
            assert sender.send(sample.path).is_success
    finally:
        sender.close()
    # A server whose certificate our CA did not sign is never sent anything.
    wrong_ca = replace(tls, ca=pki.rogue_ca)
    sender = StoreSender(PeerAddress("TLSSCP", LOCALHOST, tls_storescp.port, wrong_ca),
                         SenderSettings(calling_aet="EXPORTER"))
    with pytest.raises(PeerRejectedError):
        sender.send(files[0].path)


def test_storage_commitment_report_over_tls(pki: Pki) -> None:
    received: list[Any] = []

    def on_report(event: Any) -> tuple[int, None]:
        received.append(int(event.request.EventTypeID))
        return 0, None

    ae = AE(ae_title="COMMITSCU")
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    port = free_port()
    server = ae.start_server(
        (LOCALHOST, port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
        ssl_context=server_context(TlsSettings(cert=pki.server_cert, key=pki.server_key,
                                               ca=pki.ca)),
    )
    assert server is not None
    try:
        report = Dataset()
        report.TransactionUID = "1.2.3.4"
        tls = TlsSettings(cert=pki.client_cert, key=pki.client_key, ca=pki.ca)
        status = send_report(PeerAddress("COMMITSCU", LOCALHOST, port, tls), 1, report,
                             ReportSettings(calling_aet=IMPORT_AET, timeout=10))
        assert status.is_success
        assert received == [1]
    finally:
        server.shutdown()

