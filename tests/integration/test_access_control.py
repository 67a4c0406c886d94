"""Access control and per-request limits on the real wire (both engines).

Allow-lists by calling AE title and source network, per service; switched-off services; the
per-calling-AE association limit; instance size, C-FIND result and C-MOVE size limits, each with
its documented status.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from common.dimse.fast.acse import ProposedContext
from common.dimse.fast.constants import RejectReason, RejectResult, RejectSource
from common.dimse.fast.scu import AssociationRejected, RequestorAssociation, Timeouts
from common.dimse.sender import PeerAddress, SenderSettings, StoreSender
from common.status import Status
from import_adapter.access import Service, parse_access_policy
from import_adapter.query.service import QuerySettings
from import_adapter.retrieve.service import RetrieveSettings
from tests.support import dcmtk
from tests.support.adapters import IMPORT_AET, running_import_adapter
from tests.support.http_fault_server import HttpFaultServer
from tests.support.orthanc import OrthancServer
from tests.support.samples import SampleInstance, make_corpus

LOCALHOST = "127.0.0.1"
VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, orthanc: OrthancServer) -> list[SampleInstance]:
    files = make_corpus(tmp_path_factory.mktemp("corpus"), 3, studies=1)
    orthanc.upload_all([s.path for s in files])
    return files


def _study(corpus: list[SampleInstance]) -> str:
    return str(pydicom.dcmread(corpus[0].path, stop_before_pixels=True).StudyInstanceUID)


def _request(port: int, calling: str) -> RequestorAssociation:
    return RequestorAssociation.request(
        LOCALHOST, port, calling_ae_title=calling, called_ae_title=IMPORT_AET,
        contexts=[ProposedContext(1, VERIFICATION, ("1.2.840.10008.1.2",))],
        max_length=16384, timeouts=Timeouts(connect=5, acse=5, dimse=5, network=5),
    )


def _find(port: int, calling: str, keys: Dataset) -> list[int]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(LOCALHOST, port, ae_title=IMPORT_AET)
    assert assoc.is_established
    try:
        return [int(s.Status) for s, _ in assoc.send_c_find(
            keys, StudyRootQueryRetrieveInformationModelFind) if s]
    finally:
        assoc.release()


def _study_keys(study: str, level: str = "STUDY") -> Dataset:
    keys = Dataset()
    keys.QueryRetrieveLevel = level
    keys.StudyInstanceUID = study
    if level == "IMAGE":
        keys.SeriesInstanceUID = ""
        keys.SOPInstanceUID = ""
    return keys


@pytest.fixture
def policy_adapter(orthanc: OrthancServer) -> Iterator[int]:
    policy = parse_access_policy(
        '{"store": {"calling_aets": ["STORER"]}, "query": {"calling_aets": ["FINDER"]},'
        ' "retrieve": {"calling_aets": ["FINDER"]}, "commit": {"enabled": false}}'
    )
    with running_import_adapter(orthanc.dicomweb_url, access=policy) as adapter:
        yield adapter.server.port


def test_unknown_calling_ae_is_rejected_at_association_time(policy_adapter: int) -> None:
    with pytest.raises(AssociationRejected) as info:
        _request(policy_adapter, "STRANGER")
    reject = info.value.reject
    assert (reject.result, reject.source, reject.reason) == (
        RejectResult.PERMANENT, RejectSource.SERVICE_USER, RejectReason.CALLING_AE_NOT_RECOGNIZED
    )
    echo = dcmtk.echoscu(LOCALHOST, policy_adapter, IMPORT_AET, calling_aet="STRANGER")
    assert echo.returncode != 0
    assert "Calling AE Title Not Recognized" in echo.stdout + echo.stderr
    # Allowed AEs still associate (and C-ECHO is open to them).
    assert dcmtk.echoscu(LOCALHOST, policy_adapter, IMPORT_AET, calling_aet="FINDER").returncode == 0


def test_service_not_allowed_gets_not_authorized(
    policy_adapter: int, corpus: list[SampleInstance], tmp_path: Path
) -> None:
    files = make_corpus(tmp_path / "c", 1, studies=1)
    # FINDER may query but not store: 0x0124 on the fast engine's C-STORE.
    sender = StoreSender(PeerAddress(IMPORT_AET, LOCALHOST, policy_adapter),
                         SenderSettings(calling_aet="FINDER"))
    try:
        assert sender.send(files[0].path).code == Status.NOT_AUTHORIZED
    finally:
        sender.close()
    # STORER may store, not query: 0x0124 on pynetdicom's C-FIND.
    assert _find(policy_adapter, "STORER", _study_keys(_study(corpus))) == [Status.NOT_AUTHORIZED]
    assert _find(policy_adapter, "FINDER", _study_keys(_study(corpus)))[-1] == Status.SUCCESS
    # C-GET: 0x0124; C-MOVE: its context is refused (see import_adapter.access).
    ae = AE(ae_title="STORER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate(LOCALHOST, policy_adapter, ae_title=IMPORT_AET)
    assert assoc.is_established
    try:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        assert accepted == {str(StudyRootQueryRetrieveInformationModelGet)}
        statuses = [int(s.Status) for s, _ in assoc.send_c_get(
            _study_keys(_study(corpus)), StudyRootQueryRetrieveInformationModelGet) if s]
        assert statuses[-1] == Status.NOT_AUTHORIZED
    finally:
        assoc.release()


def test_networks_and_disabled_services(orthanc: OrthancServer, tmp_path: Path) -> None:
    outside = parse_access_policy(None, allowed_networks="10.0.0.0/8")
    with (
        running_import_adapter(orthanc.dicomweb_url, access=outside) as adapter,
        pytest.raises(AssociationRejected),
    ):
        _request(adapter.server.port, "ANYONE")
    inside = parse_access_policy(None, allowed_networks="127.0.0.0/8,::1")
    ingest_only = parse_access_policy(
        None, allowed_networks="127.0.0.0/8",
        disabled=[Service.QUERY, Service.RETRIEVE, Service.COMMIT],
    )
    with running_import_adapter(orthanc.dicomweb_url, access=inside) as adapter:
        _request(adapter.server.port, "ANYONE").release()
    with running_import_adapter(orthanc.dicomweb_url, access=ingest_only) as adapter:
        ae = AE(ae_title="ANYONE")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_requested_context(Verification)
        assoc = ae.associate(LOCALHOST, adapter.server.port, ae_title=IMPORT_AET)
        assert assoc.is_established
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        assoc.release()
        assert accepted == {str(Verification)}
        files = make_corpus(tmp_path / "c", 1, studies=1)
        sent = dcmtk.storescu(LOCALHOST, adapter.server.port, [files[0].path], IMPORT_AET)
        assert sent.returncode == 0, sent.stderr


def test_per_calling_ae_association_limit(orthanc: OrthancServer) -> None:
    with running_import_adapter(orthanc.dicomweb_url, dimse_max_associations_per_aet=1) as adapter:
        first = _request(adapter.server.port, "GREEDY")
        try:
            with pytest.raises(AssociationRejected) as info:
                _request(adapter.server.port, "GREEDY")
            reject = info.value.reject
            assert (reject.result, reject.source, reject.reason) == (
                RejectResult.TRANSIENT, RejectSource.SERVICE_PROVIDER_PRESENTATION,
                RejectReason.LOCAL_LIMIT_EXCEEDED,
            )
            _request(adapter.server.port, "POLITE").release()  # other AEs are unaffected
        finally:
            first.release()
        _request(adapter.server.port, "GREEDY").release()  # a slot again once released


def test_instance_size_limit(
    fault_server: Callable[..., HttpFaultServer], tmp_path: Path
) -> None:
    sink = fault_server()
    big, small = make_corpus(tmp_path / "c", 2, studies=1)
    limit = Path(big.path).stat().st_size // 2
    with running_import_adapter(sink.url, dimse_max_instance_size=limit) as adapter:
        sender = StoreSender(PeerAddress(IMPORT_AET, LOCALHOST, adapter.server.port),
                             SenderSettings(calling_aet="MODALITY", max_pdu_size=4096))
        try:
            refused = sender.send(big.path)
            assert refused.code == Status.OUT_OF_RESOURCES, refused
            assert "MB limit" in refused.comment
        finally:
            sender.close()
        # A small one on a fresh association goes through (the refusal cost nothing else).
        with running_import_adapter(sink.url, dimse_max_instance_size=1 << 30) as roomy:
            ok = StoreSender(PeerAddress(IMPORT_AET, LOCALHOST, roomy.server.port),
                             SenderSettings(calling_aet="MODALITY"))
            try:
                assert ok.send(small.path).is_success
            finally:
                ok.close()
        assert not list(adapter.server.active_associations)


def test_cfind_result_and_cmove_size_limits(
    orthanc: OrthancServer, corpus: list[SampleInstance]
) -> None:
    study = _study(corpus)
    with running_import_adapter(
        orthanc.dicomweb_url,
        query=QuerySettings(retrieve_aet=IMPORT_AET, max_results=2),
        retrieve=RetrieveSettings(max_instances=2),
    ) as adapter:
        port = adapter.server.port
        statuses = _find(port, "FINDER", _study_keys(study, "IMAGE"))
        assert statuses == [Status.PENDING, Status.PENDING, Status.OUT_OF_RESOURCES]
        ae = AE(ae_title="FINDER")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        assoc = ae.associate(LOCALHOST, port, ae_title=IMPORT_AET)
        try:
            final = [int(s.Status) for s, _ in assoc.send_c_get(
                _study_keys(study), StudyRootQueryRetrieveInformationModelGet) if s][-1]
        finally:
            assoc.release()
        assert final == Status.OUT_OF_RESOURCES_MATCHES


def test_socket_closes_quietly_for_rejected(policy_adapter: int) -> None:
    # The reject is the whole answer: the connection is closed right after it.
    with socket.create_connection((LOCALHOST, policy_adapter), timeout=5) as sock:
        from common.dimse.fast.acse import encode_associate_rq

        sock.sendall(encode_associate_rq(
            "STRANGER", IMPORT_AET, [ProposedContext(1, VERIFICATION, ("1.2.840.10008.1.2",))],
            16384))
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data[0] == 0x03  # A-ASSOCIATE-RJ
