"""Storage Commitment Push Model across the real wire, with a pynetdicom requester.

The requester sends N-ACTION to the adapter and runs its own listener for the N-EVENT-REPORT
(its address is in the AET dictionary). Orthanc is the store that is checked with QIDO-RS.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from common.dimse.aet_dictionary import AetDictionary
from common.dimse.sender import PeerAddress
from common.retry import RetryPolicy
from common.status import Status
from import_adapter.commitment.service import CommitmentSettings
from tests.integration.commitment_support import REQUESTER, Requester
from tests.integration.spool_support import send_files, spool_settings
from tests.support.adapters import IMPORT_AET, running_import_adapter
from tests.support.http_fault_server import HttpFaultServer
from tests.support.orthanc import OrthancServer
from tests.support.samples import SampleInstance, make_corpus


@pytest.fixture
def requester() -> Iterator[Callable[..., Requester]]:
    made: list[Requester] = []

    def factory(syntaxes: list[str] | None = None, listen: bool = True) -> Requester:
        item = Requester(syntaxes or [str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)])
        made.append(item)
        if listen:
            item.listen()
        return item

    yield factory
    for item in made:
        item.stop()


def _settings() -> CommitmentSettings:
    base = CommitmentSettings(wait=20.0)
    return replace(
        base,
        report_retry=RetryPolicy(initial_delay=0.2, max_delay=0.5, budget=30.0),
        report=replace(base.report, calling_aet=IMPORT_AET, timeout=5.0),
    )


def _refs(samples: list[SampleInstance]) -> list[tuple[str, str]]:
    return [(s.sop_class_uid, s.sop_instance_uid) for s in samples]


def _dictionary(item: Requester) -> AetDictionary:
    return AetDictionary([PeerAddress(REQUESTER, "127.0.0.1", item.port)])


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_all_found_is_event_1_in_the_syntax_the_requester_accepts(
    fresh_orthanc: Callable[..., OrthancServer],
    requester: Callable[..., Requester],
    tmp_path: Path,
    syntax: str,
) -> None:
    store = fresh_orthanc()
    scu = requester([str(syntax)])
    corpus = make_corpus(tmp_path / "c", 3)
    with running_import_adapter(
        store.dicomweb_url, spool=spool_settings(tmp_path / "spool"),
        aet_dictionary=_dictionary(scu), commitment=_settings(),
    ) as adapter:
        # Auto-acknowledged: some may still be in the spool when the request arrives.
        assert set(send_files(adapter.server.port, [s.path for s in corpus],
                              calling_aet=REQUESTER).values()) == {Status.SUCCESS}
        transaction, status = scu.request(adapter.server.port, _refs(corpus))
        assert status == Status.SUCCESS
        event_type, info = scu.report()
    assert event_type == 1
    assert info.TransactionUID == transaction
    assert {i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence} == {
        s.sop_instance_uid for s in corpus
    }
    assert "FailedSOPSequence" not in info


def test_some_missing_is_event_2_with_failure_reasons(
    fresh_orthanc: Callable[..., OrthancServer],
    requester: Callable[..., Requester],
    tmp_path: Path,
) -> None:
    store = fresh_orthanc()
    scu = requester()
    corpus = make_corpus(tmp_path / "c", 2)
    missing = (corpus[0].sop_class_uid, generate_uid())
    wrong_class = ("1.2.840.10008.5.1.4.1.1.4", corpus[0].sop_instance_uid)  # MR vs CT
    # The missing instance is looked up again until the deadline, 2 s after the request.
    settings = replace(_settings(), wait=2.0)
    with running_import_adapter(
        store.dicomweb_url, aet_dictionary=_dictionary(scu), commitment=settings
    ) as adapter:
        send_files(adapter.server.port, [s.path for s in corpus])
        refs = [*_refs(corpus[1:]), missing]
        if corpus[0].sop_class_uid != wrong_class[0]:
            refs.append(wrong_class)
        asked = time.monotonic()
        _, status = scu.request(adapter.server.port, refs)
        assert status == Status.SUCCESS
        event_type, info = scu.report()
        assert time.monotonic() - asked >= 1.9
    assert event_type == 2
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [
        corpus[1].sop_instance_uid
    ]
    failures = {i.ReferencedSOPInstanceUID: i.FailureReason for i in info.FailedSOPSequence}
    assert failures[missing[1]] == Status.NO_SUCH_OBJECT_INSTANCE
    if corpus[0].sop_class_uid != wrong_class[0]:
        assert failures[wrong_class[1]] == Status.CLASS_INSTANCE_CONFLICT


def test_requester_down_then_up_gets_its_report(
    orthanc: OrthancServer, requester: Callable[..., Requester], tmp_path: Path
) -> None:
    scu = requester(listen=False)
    corpus = make_corpus(tmp_path / "c", 1)
    with running_import_adapter(
        orthanc.dicomweb_url, aet_dictionary=_dictionary(scu), commitment=_settings()
    ) as adapter:
        send_files(adapter.server.port, [corpus[0].path])
        _, status = scu.request(adapter.server.port, _refs(corpus))
        assert status == Status.SUCCESS
        time.sleep(1.5)  # reports fail meanwhile: nothing listens
        scu.listen()
        event_type, info = scu.report()
    assert event_type == 1
    assert info.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == corpus[0].sop_instance_uid


def test_unknown_requester_and_bad_request_are_refused(
    orthanc: OrthancServer, requester: Callable[..., Requester]
) -> None:
    scu = requester(listen=False)
    with running_import_adapter(orthanc.dicomweb_url, commitment=_settings()) as adapter:
        _, status = scu.request(adapter.server.port, [("1.2.3", "4.5.6")])
    assert status == Status.PROCESSING_FAILURE  # COMMITSCU is not in the AET dictionary


# -- lookups per study, counted on the wire ----------------------------------------------------


def _qido_gets(proxy: HttpFaultServer) -> list[str]:
    return [r.path for r in proxy.requests if r.method == "GET"]


def test_instances_received_here_are_looked_up_once_per_study(
    fresh_orthanc: Callable[..., OrthancServer],
    fault_server: Callable[..., HttpFaultServer],
    requester: Callable[..., Requester],
    tmp_path: Path,
) -> None:
    """30 instances of 2 studies stored through the adapter: 2 study listings, not 30 searches.

    One more instance, stored in Orthanc directly (as another replica would have), is unknown
    to this adapter: it gets its own search. The QIDO-RS requests are counted by a proxy
    between the adapter and Orthanc.
    """
    store = fresh_orthanc()
    proxy = fault_server(upstream=store.http_url)
    scu = requester()
    corpus = make_corpus(tmp_path / "c", 30, studies=2)
    studies = sorted({s.study_uid for s in corpus})
    (elsewhere,) = make_corpus(tmp_path / "elsewhere", 1)
    store.upload(elsewhere.path)
    with running_import_adapter(
        f"{proxy.url}/dicom-web", aet_dictionary=_dictionary(scu), commitment=_settings()
    ) as adapter:
        acked = send_files(adapter.server.port, [s.path for s in corpus])
        assert set(acked.values()) == {Status.SUCCESS} and len(acked) == 30
        proxy.reset()
        transaction, status = scu.request(adapter.server.port, _refs([*corpus, elsewhere]))
        assert status == Status.SUCCESS
        event_type, info = scu.report()
        gets = _qido_gets(proxy)
    assert event_type == 1 and info.TransactionUID == transaction
    assert "FailedSOPSequence" not in info
    assert {i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence} == {
        s.sop_instance_uid for s in [*corpus, elsewhere]
    }
    listings = sorted(path for path in gets if "/instances?" in path and "/studies/" in path)
    assert [path.split("/studies/")[1].split("/")[0] for path in listings] == studies
    assert all("includefield=00080016" in path for path in listings)
    searches = [path for path in gets if "/dicom-web/instances?" in path]
    assert len(searches) == 1 and f"SOPInstanceUID={elsewhere.sop_instance_uid}" in searches[0]
    assert len(gets) == 3


def test_study_lookups_keep_the_per_instance_verdicts(
    fresh_orthanc: Callable[..., OrthancServer],
    fault_server: Callable[..., HttpFaultServer],
    requester: Callable[..., Requester],
    tmp_path: Path,
) -> None:
    """Listed with another SOP class -> 0x0119 from the listing; an instance received but
    refused by the store (its study absent from Orthanc) is still searched by itself and
    reported 0x0112; a stored one of the same study is committed."""
    store = fresh_orthanc()
    proxy = fault_server(upstream=store.http_url)
    scu = requester()
    corpus = make_corpus(tmp_path / "c", 4, kinds=("CT",), studies=1)
    refused = make_corpus(tmp_path / "r", 2, kinds=("CT",), studies=1)
    settings = replace(_settings(), wait=2.0)
    with running_import_adapter(
        f"{proxy.url}/dicom-web", aet_dictionary=_dictionary(scu), commitment=settings
    ) as adapter:
        assert set(send_files(adapter.server.port, [s.path for s in corpus]).values()) == {
            Status.SUCCESS
        }
        proxy.fail_next(400, times=2, method="POST", body=b"refused")
        statuses = send_files(adapter.server.port, [s.path for s in refused])
        assert len(statuses) == 2 and Status.SUCCESS not in statuses.values()
        proxy.reset()
        mr = "1.2.840.10008.5.1.4.1.1.4"
        refs = [*_refs(corpus[:3]), (mr, corpus[3].sop_instance_uid), *_refs(refused)]
        _, status = scu.request(adapter.server.port, refs)
        assert status == Status.SUCCESS
        event_type, info = scu.report()
        gets = _qido_gets(proxy)
    assert event_type == 2
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [
        s.sop_instance_uid for s in corpus[:3]
    ]
    failures = {i.ReferencedSOPInstanceUID: i.FailureReason for i in info.FailedSOPSequence}
    assert failures == {
        corpus[3].sop_instance_uid: Status.CLASS_INSTANCE_CONFLICT,
        refused[0].sop_instance_uid: Status.NO_SUCH_OBJECT_INSTANCE,
        refused[1].sop_instance_uid: Status.NO_SUCH_OBJECT_INSTANCE,
    }
    searched = {path.split("SOPInstanceUID=")[1].split("&")[0]
                for path in gets if "/dicom-web/instances?" in path}
    assert searched == {s.sop_instance_uid for s in refused}  # the stored study: listed only
    first_listings = [path for path in gets if "/studies/" in path]
    assert len(first_listings) == 2  # each study listed once, in the first round
