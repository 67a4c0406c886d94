"""The interoperability matrix: independent DICOM implementations against the real import adapter.

Every operation the import adapter serves (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET, Storage
Commitment with its N-EVENT-REPORT, DICOM TLS, User Identity negotiation) is exercised by at
least two implementations that share no code with DCMTK, pynetdicom or the adapter
(``tests/support/peers``; the table is in docs/interop.md). Outcomes are judged on the wire and
in the store: the instance is in Orthanc after a C-STORE, the C-FIND match carries the study's
attributes, C-MOVE and C-GET deliver the study's instances to the peer's own SCP or on the
requesting association, the commitment report lists the right successes and failures.

One Orthanc and one adapter (plus one TLS adapter) serve the whole module; each peer has its
own AE title, registered in the adapter's AET dictionary at the port its SCP listens on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid

from common.dimse.aet_dictionary import AetDictionary
from common.dimse.sender import PeerAddress
from common.dimse.tls import TlsSettings
from common.retry import RetryPolicy
from common.status import Status
from import_adapter.app import ImportAdapter
from import_adapter.commitment.service import CommitmentSettings
from import_adapter.query.service import QuerySettings
from import_adapter.retrieve.service import RetrieveSettings
from tests.support.adapters import IMPORT_AET, running_import_adapter
from tests.support.orthanc import OrthancServer
from tests.support.peers import Peer, Target, TlsFiles, UserIdentity
from tests.support.peers.netdicom2 import PyNetDicom2
from tests.support.peers.registry import PEERS, matrix
from tests.support.ports import free_port, wait_until
from tests.support.samples import SampleInstance, make_corpus
from tests.support.tls_certs import Pki, make_pki

LOCALHOST = "127.0.0.1"
PENDING = 0xFF00


@dataclass(frozen=True)
class Study:
    """A study loaded in the adapter's store before the tests run."""

    uid: str
    patient_id: str
    instances: list[SampleInstance]


@pytest.fixture(scope="module")
def callers() -> dict[str, tuple[str, int]]:
    """Each peer's AE title and the port its own SCP listens on (C-MOVE, commitment report)."""
    return {name: (f"IOP{index:02d}", free_port()) for index, name in enumerate(sorted(PEERS))}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, orthanc: OrthancServer) -> Study:
    files = make_corpus(tmp_path_factory.mktemp("iop-corpus"), 3, studies=1)
    orthanc.upload_all([s.path for s in files])
    ds = pydicom.dcmread(files[0].path, stop_before_pixels=True)
    return Study(str(ds.StudyInstanceUID), str(ds.PatientID), files)


def _settings(tmp: Path) -> dict[str, object]:
    base = CommitmentSettings(wait=1.0)
    return {
        "query": QuerySettings(retrieve_aet=IMPORT_AET, page_size=2),
        "retrieve": RetrieveSettings(page_size=2, spool_dir=tmp),
        "commitment": replace(
            base, report_retry=RetryPolicy(initial_delay=0.2, max_delay=0.5, budget=20.0),
            report=replace(base.report, calling_aet=IMPORT_AET, timeout=5.0)),
    }


@pytest.fixture(scope="module")
def adapter(orthanc: OrthancServer, callers: dict[str, tuple[str, int]],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImportAdapter]:
    dictionary = AetDictionary([PeerAddress(aet, LOCALHOST, port)
                                for aet, port in callers.values()])
    with running_import_adapter(orthanc.dicomweb_url, aet_dictionary=dictionary,
                                **_settings(tmp_path_factory.mktemp("iop-retrieve"))) as running:
        yield running


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("iop-pki"))


@pytest.fixture(scope="module")
def tls_adapter(orthanc: OrthancServer, pki: Pki,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImportAdapter]:
    tls = TlsSettings(cert=pki.server_cert, key=pki.server_key, ca=pki.ca)
    with running_import_adapter(orthanc.dicomweb_url, dimse_tls=tls, dimse_acse_timeout=5.0,
                                **_settings(tmp_path_factory.mktemp("iop-tls"))) as running:
        yield running


def _commitments_reported(adapter: ImportAdapter, aet: str) -> float:
    sample = adapter.registry.get_sample_value(
        "dicomadapter_import_commitment_requests_total", {"calling_aet": aet})
    return 0.0 if sample is None else sample


def _peer(name: str) -> Peer:
    peer = PEERS[name]
    peer.available()
    return peer


def _target(adapter: ImportAdapter, **kwargs: object) -> Target:
    return Target(LOCALHOST, adapter.server.port, IMPORT_AET, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", matrix("echo"))
def test_echo(name: str, adapter: ImportAdapter, callers: dict[str, tuple[str, int]]) -> None:
    outcome = _peer(name).echo(_target(adapter), callers[name][0])
    assert outcome.statuses == [Status.SUCCESS], outcome.log


@pytest.mark.parametrize("name", matrix("store"))
def test_store(name: str, adapter: ImportAdapter, orthanc: OrthancServer,
               callers: dict[str, tuple[str, int]], tmp_path: Path) -> None:
    files = make_corpus(tmp_path / "c", 2, studies=1)
    outcome = _peer(name).store(_target(adapter), callers[name][0], [f.path for f in files])
    assert outcome.statuses == [Status.SUCCESS] * len(files), outcome.log
    for sample in files:
        found = orthanc.qido("instances", {"SOPInstanceUID": sample.sop_instance_uid})
        assert len(found) == 1, (name, sample.kind)


@pytest.mark.parametrize("name", matrix("find"))
def test_find(name: str, adapter: ImportAdapter, study: Study,
              callers: dict[str, tuple[str, int]]) -> None:
    outcome = _peer(name).find(_target(adapter), callers[name][0], study.uid)
    assert outcome.statuses == [PENDING, Status.SUCCESS], outcome.log
    [match] = outcome.identifiers
    assert match["StudyInstanceUID"] == study.uid, outcome.log
    assert match["PatientID"] == study.patient_id, outcome.log


@pytest.mark.parametrize("name", matrix("move"))
def test_move(name: str, adapter: ImportAdapter, study: Study,
              callers: dict[str, tuple[str, int]]) -> None:
    aet, port = callers[name]
    outcome = _peer(name).move(_target(adapter), aet, study.uid, port)
    assert outcome.final == Status.SUCCESS, outcome.log
    assert sorted(outcome.received) == sorted(s.sop_instance_uid for s in study.instances), \
        outcome.log


@pytest.mark.parametrize("name", matrix("get"))
def test_get(name: str, adapter: ImportAdapter, study: Study,
             callers: dict[str, tuple[str, int]]) -> None:
    outcome = _peer(name).get(_target(adapter), callers[name][0], study.uid)
    assert outcome.final == Status.SUCCESS, outcome.log
    assert sorted(outcome.received) == sorted(s.sop_instance_uid for s in study.instances), \
        outcome.log


@pytest.mark.parametrize("name", matrix("commit"))
def test_storage_commitment_report(name: str, adapter: ImportAdapter, study: Study,
                                   callers: dict[str, tuple[str, int]]) -> None:
    """N-ACTION for the study's instances and one the store never had: the N-EVENT-REPORT
    comes back on a new association to the peer's own SCP, event type 2 (some failed), with
    the stored ones in the success list and the missing one failed as No Such Object Instance."""
    aet, port = callers[name]
    stored = [(s.sop_class_uid, s.sop_instance_uid) for s in study.instances]
    absent = (study.instances[0].sop_class_uid, generate_uid())
    transaction = generate_uid()
    reported = _commitments_reported(adapter, aet)
    outcome = _peer(name).commit(_target(adapter), aet, transaction, [*stored, absent], port)
    assert outcome.statuses == [Status.SUCCESS], outcome.log
    report = outcome.report
    assert report is not None, outcome.log
    assert report.event_type == 2, outcome.log
    assert report.transaction_uid == transaction
    assert sorted(report.succeeded) == sorted(uid for _, uid in stored)
    assert report.failed == {absent[1]: Status.NO_SUCH_OBJECT_INSTANCE}
    # The adapter took the peer's N-EVENT-REPORT-RSP as an answer (it counts a request once
    # its report is delivered; an unanswered report would be sent again, and not counted).
    wait_until(lambda: _commitments_reported(adapter, aet) == reported + 1, timeout=10,
               message="the adapter counting the report as delivered")


@pytest.mark.parametrize("name", matrix("tls"))
def test_tls_echo_store_find(name: str, tls_adapter: ImportAdapter, pki: Pki,
                             orthanc: OrthancServer, study: Study,
                             callers: dict[str, tuple[str, int]], tmp_path: Path) -> None:
    """Over DICOM TLS with the test CA (mutual: the adapter requires the client certificate)."""
    peer = _peer(name)
    target = _target(tls_adapter, tls=TlsFiles(pki.client_key, pki.client_cert, pki.ca))
    aet = callers[name][0]
    outcome = peer.echo(target, aet)
    assert outcome.statuses == [Status.SUCCESS], outcome.log
    files = make_corpus(tmp_path / "c", 1, studies=1)
    outcome = peer.store(target, aet, [files[0].path])
    assert outcome.statuses == [Status.SUCCESS], outcome.log
    assert orthanc.qido("instances", {"SOPInstanceUID": files[0].sop_instance_uid})
    if "find" in peer.operations:
        outcome = peer.find(target, aet, study.uid)
        assert outcome.final == Status.SUCCESS, outcome.log
        assert [m["StudyInstanceUID"] for m in outcome.identifiers] == [study.uid]


@pytest.mark.parametrize("password", ["", "secret"], ids=["username", "username+passcode"])
@pytest.mark.parametrize("name", matrix("user_identity"))
def test_user_identity_is_accepted(name: str, password: str, adapter: ImportAdapter,
                                   study: Study, callers: dict[str, tuple[str, int]]) -> None:
    """A User Identity sub-item without a response requested: the association is accepted and
    served (echo, and a query, which the adapter also serves with identity present)."""
    peer = _peer(name)
    target = _target(adapter, user_identity=UserIdentity("alice", password))
    outcome = peer.echo(target, callers[name][0])
    assert outcome.statuses == [Status.SUCCESS], outcome.log
    if "find" in peer.operations:
        outcome = peer.find(target, callers[name][0], study.uid)
        assert outcome.final == Status.SUCCESS, outcome.log


# Before issue 16 the adapter ignored User Identity negotiation and never answered it; the one
# engine answers when a response is requested (docs/conformance.md, "Extended negotiation").
@pytest.mark.parametrize("password", ["", "secret"], ids=["username", "username+passcode"])
@pytest.mark.parametrize("name", matrix("user_identity_response"))
def test_user_identity_response_when_requested(
    name: str, password: str, adapter: ImportAdapter, callers: dict[str, tuple[str, int]]
) -> None:
    peer = _peer(name)
    identity = UserIdentity("alice", password, response_requested=True)
    outcome = peer.echo(_target(adapter, user_identity=identity), callers[name][0])
    assert outcome.statuses == [Status.SUCCESS], outcome.log
    # For username (and passcode) the server response is empty, but present (PS3.7 D.3.3.7.2).
    assert outcome.user_identity_response == b"", (outcome.user_identity_response, outcome.log)


# A real client (pynetdicom2 here) pads AE titles with NUL bytes instead of spaces; DCMTK and
# Orthanc accept the title it spells, and so does the adapter since issue 16 (before, it
# aborted the association: pynetdicom's decoder refused the "control characters").
def test_nul_padded_ae_titles_are_accepted(adapter: ImportAdapter,
                                           callers: dict[str, tuple[str, int]]) -> None:
    peer = PyNetDicom2(nul_padding=True)
    peer.available()
    outcome = peer.echo(_target(adapter), callers[peer.name][0])
    assert outcome.statuses == [Status.SUCCESS], outcome.log


# Found by this matrix: a C-GET SCU that proposes its storage SOP classes (SCP role) with
# Explicit VR Big Endian first and Explicit VR Little Endian second (pynetdicom2 does so about
# half the time: its syntaxes are a frozenset) got big endian accepted, which the adapter does
# not convert to (retired syntax): every sub-operation failed (0xA702, nothing delivered). For a
# context it sends on, the adapter now takes big endian only when nothing else is proposed.
def test_get_when_big_endian_is_proposed_first(adapter: ImportAdapter, study: Study,
                                               callers: dict[str, tuple[str, int]]) -> None:
    peer = PyNetDicom2(syntaxes=(ExplicitVRBigEndian, ExplicitVRLittleEndian))
    peer.available()
    outcome = peer.get(_target(adapter), callers[peer.name][0], study.uid)
    assert outcome.final == Status.SUCCESS, outcome
    assert sorted(outcome.received) == sorted(s.sop_instance_uid for s in study.instances)
