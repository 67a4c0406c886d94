"""C-MOVE on our DIMSE engine: movescu, the C-MOVE calling AE title, C-FIND beside C-MOVE.

The destination is a pynetdicom storage SCP that records the calling AE title of the
association each instance came on and the Move Originator of each C-STORE. Whatever else the
association proposed, the destination must be called as ``--dimse_cmove_aet``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from common.dimse.fast.scp import AcceptorAssociation
from import_adapter.app import ImportAdapter
from tests.integration.qr_support import ADAPTER_AET, LOCALHOST, start_adapter
from tests.support import dcmtk
from tests.support.orthanc import OrthancServer
from tests.support.samples import SampleInstance, make_corpus
from tests.support.scripted_pacs import ScriptedPacs

CMOVE_AET = "MOVEAET"
MOVE = StudyRootQueryRetrieveInformationModelMove


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[SampleInstance]:
    return make_corpus(tmp_path_factory.mktemp("corpus"), 6, studies=1)


@pytest.fixture(scope="module")
def backend(corpus: list[SampleInstance],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    with OrthancServer(workdir=tmp_path_factory.mktemp("backend")) as server:
        server.upload_all([s.path for s in corpus])
        yield server


@pytest.fixture
def recorder() -> Iterator[ScriptedPacs]:
    server = ScriptedPacs(aet="RECORDER")
    yield server
    server.stop()


@pytest.fixture
def adapter(backend: OrthancServer, recorder: ScriptedPacs) -> Iterator[ImportAdapter]:
    server = start_adapter(backend.dicomweb_url,
                           destinations=[("RECORDER", LOCALHOST, recorder.port)],
                           cmove_aet=CMOVE_AET)
    yield server
    server.stop()


def _study(uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = uid
    return ds


def test_movescu_is_served_by_the_fast_engine_with_the_cmove_aet(
    adapter: ImportAdapter, recorder: ScriptedPacs, corpus: list[SampleInstance]
) -> None:
    # movescu proposes C-FIND and C-MOVE contexts on its association.
    result = dcmtk.movescu(LOCALHOST, adapter.server.port,
                           ["0008,0052=STUDY", f"0020,000D={corpus[0].study_uid}"],
                           called_aet=ADAPTER_AET, destination="RECORDER")
    assert result.returncode == 0, result.stderr
    assert sorted(recorder.received) == sorted(s.sop_instance_uid for s in corpus)
    assert set(recorder.callers) == {CMOVE_AET}
    # PS3.7 9.3.1.1: the C-STORE names the C-MOVE's requestor and message ID.
    assert {originator for originator, _ in recorder.originators} == {"MOVESCU"}


def test_find_and_move_on_one_fast_association(
    adapter: ImportAdapter, recorder: ScriptedPacs, corpus: list[SampleInstance]
) -> None:
    ae = AE(ae_title="QRSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(MOVE)
    assoc = ae.associate(LOCALHOST, adapter.server.port, ae_title=ADAPTER_AET)
    assert assoc.is_established
    try:
        query = _study(corpus[0].study_uid)
        query.StudyDate = ""
        found = [
            (int(status.Status), identifier)
            for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            )
        ]
        assert [code for code, _ in found] == [0xFF00, 0x0000]
        assert found[0][1] is not None
        assert found[0][1].StudyInstanceUID == corpus[0].study_uid
        statuses = [status for status, _ in assoc.send_c_move(
            _study(corpus[0].study_uid), "RECORDER", MOVE, msg_id=11)]
    finally:
        assoc.release()
    assert [int(s.Status) for s in statuses] == [0xFF00] * len(corpus) + [0x0000]
    assert [s.NumberOfRemainingSuboperations for s in statuses[:-1]] == list(
        range(len(corpus) - 1, -1, -1))
    assert statuses[-1].NumberOfCompletedSuboperations == len(corpus)
    assert "NumberOfRemainingSuboperations" not in statuses[-1]
    assert set(recorder.callers) == {CMOVE_AET}
    assert set(recorder.originators) == {("QRSCU", 11)}


def test_move_beside_get_calls_as_the_cmove_aet(
    adapter: ImportAdapter, recorder: ScriptedPacs, corpus: list[SampleInstance]
) -> None:
    """Whatever else the association proposed, the destination is called as --dimse_cmove_aet."""
    ae = AE(ae_title="QRSCU")
    ae.add_requested_context(MOVE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    assoc = ae.associate(LOCALHOST, adapter.server.port, ae_title=ADAPTER_AET)
    assert assoc.is_established
    try:
        serving = adapter.server.active_associations
        statuses = [status for status, _ in assoc.send_c_move(
            _study(corpus[0].study_uid), "RECORDER", MOVE, msg_id=12)]
    finally:
        assoc.release()
    assert serving and all(isinstance(a, AcceptorAssociation) for a in serving)
    assert int(statuses[-1].Status) == 0x0000
    assert sorted(recorder.received) == sorted(s.sop_instance_uid for s in corpus)
    assert set(recorder.callers) == {CMOVE_AET}
    assert set(recorder.originators) == {("QRSCU", 12)}
