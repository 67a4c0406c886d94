"""A PACS that refuses, rejects or fails, across the real wire: the spool and the export adapter
take the same decision, the one of the peer failure table (``common.status.PEER_FAILURE_TABLE``).

The PACS is a scripted pynetdicom Storage SCP (:mod:`tests.support.scripted_pacs`). The spool
sends to it as a routed DIMSE destination of the import adapter (instances sent by a pynetdicom
SCU); the export adapter as its C-STORE peer (notifications through Google's Pub/Sub emulator,
instances from Orthanc). Each path gets its own PACS with the same script; what each did with
every instance (stored, dead-lettered, kept) and how often the PACS was asked must agree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from common.status import PROCESSING_FAILURE_ATTEMPTS, Status
from import_adapter.app import ImportAdapter
from import_adapter.routing.config import parse_destination_config
from import_adapter.routing.router import RoutingConfig
from tests.integration.qr_support import LOCALHOST, c_move, start_adapter, study_keys
from tests.integration.spool_support import (
    dead_letter_files,
    queued_files,
    send_files,
    spool_settings,
)
from tests.integration.test_export import (
    bare_notification,
    dimse_peer,
    publish_all,
    running_adapter,
    wait_counters,
)
from tests.support.adapters import IMPORT_AET, running_import_adapter
from tests.support.http_fault_server import HttpFaultServer
from tests.support.orthanc import OrthancServer
from tests.support.ports import wait_until
from tests.support.pubsub_emulator import PubSubEmulator
from tests.support.samples import SampleInstance, make_corpus
from tests.support.scripted_pacs import ScriptedPacs

# The export half goes through Google's Pub/Sub emulator, which occasionally stalls a fresh
# streaming pull under load (see tests/integration/test_export.py): a rerun gets a new stream.
pytestmark = pytest.mark.flaky(reruns=2, reruns_delay=1)

STORED, DEAD, KEPT = "stored", "dead-letter", "kept"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> list[SampleInstance]:
    """Nine CT instances (the PACS takes CT Image Storage) and one MR (it takes no MR), of one
    study."""
    corpus = make_corpus(tmp_path_factory.mktemp("peer-failures"), 20, studies=1)
    cts = [s for s in corpus if s.kind == "CT"][:9]
    mr = next(s for s in corpus if s.kind == "MR")
    return [*cts, mr]


def _ct_pacs(script: Mapping[str, Sequence[int]] | None = None) -> ScriptedPacs:
    """The PACS of these tests: it takes CT Image Storage only (no context for MR)."""
    return ScriptedPacs(script, aet="PACS", sop_classes=[CTImageStorage])


def _routing(pacs: ScriptedPacs) -> RoutingConfig:
    rules = [{
        "filter": "",
        "dicom_destination": {"name": pacs.aet, "host": "127.0.0.1", "port": pacs.port},
    }]  # fmt: skip
    return RoutingConfig(parse_destination_config(json.dumps(rules), source="test"), None, False)


@contextmanager
def spooling_to(
    pacs: ScriptedPacs,
    fault_server: Callable[..., HttpFaultServer],
    spool: Path,
    *,
    auto_ack: bool = True,
) -> Iterator[ImportAdapter]:
    """An import adapter whose spool routes every instance to ``pacs``."""
    default = fault_server()  # the --dicomweb_address store: no instance is routed to it
    settings = spool_settings(spool, auto_ack=auto_ack)
    with running_import_adapter(
        f"{default.url}/dicom-web", spool=settings, routing=_routing(pacs)
    ) as adapter:
        yield adapter


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def spool_decisions(spool: Path, pacs: ScriptedPacs, uids: list[str]) -> dict[str, str]:
    """What the spool did with each instance: stored at the PACS, dead-lettered, or kept."""
    dead = {
        json.loads(path.with_name(path.name + ".json").read_text())["sop_instance_uid"]
        for path in dead_letter_files(spool)
    }
    kept = {_uid(path) for path in queued_files(spool)}
    return {uid: _decision(uid, pacs, dead, kept) for uid in uids}


def export_decisions(
    emulator: PubSubEmulator, dlq_subscription: str, dead_count: int, pacs: ScriptedPacs,
    samples: list[SampleInstance],
) -> tuple[dict[str, str], dict[str, str]]:
    """What the export adapter did with each instance, and each dead letter's reason."""
    by_path = {bare_notification(s)[0].decode(): s.sop_instance_uid for s in samples}
    reasons: dict[str, str] = {}
    while len(reasons) < dead_count:
        for message in emulator.pull(dlq_subscription, 10, timeout=10):
            reasons[by_path[message.message.data.decode()]] = (
                message.message.attributes["exportFailure"]
            )
    decisions = {s.sop_instance_uid: _decision(s.sop_instance_uid, pacs, set(reasons), set())
                 for s in samples}  # fmt: skip
    return decisions, reasons


def _decision(uid: str, pacs: ScriptedPacs, dead: set[str], kept: set[str]) -> str:
    if uid in dead:
        return DEAD
    if uid in pacs.stored:
        return STORED
    return KEPT if uid in kept else "lost"


def _attempts(pacs: ScriptedPacs, uids: list[str]) -> dict[str, int]:
    """C-STOREs the PACS received per instance."""
    return {uid: pacs.count(uid) for uid in uids}


# --------------------------------------------------------------------------- the PACS's answers


def _script(uid: list[str]) -> dict[str, list[int]]:
    """Per CT instance, the PACS's answers in turn (Success once they are used up)."""
    return {
        uid[0]: [Status.OUT_OF_RESOURCES, Status.OUT_OF_RESOURCES],
        uid[1]: [Status.CANNOT_UNDERSTAND],
        uid[2]: [Status.DATASET_DOES_NOT_MATCH_SOP_CLASS],
        uid[3]: [Status.PROCESSING_FAILURE] * 10,
        uid[4]: [Status.COERCION_OF_DATA_ELEMENTS],
        uid[5]: [Status.ELEMENTS_DISCARDED],
        uid[6]: [Status.DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING],
        uid[7]: [Status.PROCESSING_FAILURE],  # then Success: within the bound
    }  # uid[8]: Success


def test_peer_answers_get_the_same_decision_from_spool_and_export(
    pubsub_emulator: PubSubEmulator,
    orthanc: OrthancServer,
    fault_server: Callable[..., HttpFaultServer],
    instances: list[SampleInstance],
    tmp_path: Path,
) -> None:
    """Out of resources: retried; cannot understand / does not match SOP class: given up at
    once; processing failure: given up after the table's attempts; warnings: stored; a SOP
    class without a presentation context: given up without sending."""
    cts, mr = instances[:9], instances[9]
    uid = [s.sop_instance_uid for s in cts]
    script = _script(uid)
    expected = {
        uid[0]: STORED, uid[1]: DEAD, uid[2]: DEAD, uid[3]: DEAD, uid[4]: STORED,
        uid[5]: STORED, uid[6]: STORED, uid[7]: STORED, uid[8]: STORED,
        mr.sop_instance_uid: DEAD,
    }  # fmt: skip
    expected_attempts = {
        uid[0]: 3, uid[1]: 1, uid[2]: 1, uid[3]: PROCESSING_FAILURE_ATTEMPTS, uid[4]: 1,
        uid[5]: 1, uid[6]: 1, uid[7]: 2, uid[8]: 1, mr.sop_instance_uid: 0,
    }  # fmt: skip
    everything = [*uid, mr.sop_instance_uid]

    # The spool (auto-ack: the SCU is answered at once, the queue decides).
    spool = tmp_path / "spool"
    with _ct_pacs(script) as pacs, spooling_to(pacs, fault_server, spool) as adapter:
        sent = send_files(adapter.server.port, [s.path for s in instances])
        assert set(sent.values()) == {Status.SUCCESS} and len(sent) == len(instances)
        wait_until(lambda: not queued_files(spool), timeout=30, message="spool settled")
        spooled = spool_decisions(spool, pacs, everything)
        spool_attempts = _attempts(pacs, everything)
    sidecars = {
        json.loads(p.with_name(p.name + ".json").read_text())["sop_instance_uid"]:
        json.loads(p.with_name(p.name + ".json").read_text())
        for p in dead_letter_files(spool)
    }  # fmt: skip
    assert sidecars[uid[3]]["attempts"] == PROCESSING_FAILURE_ATTEMPTS
    assert sidecars[uid[3]]["dimse_status"] == f"0x{Status.PROCESSING_FAILURE:04X}"
    assert sidecars[uid[1]]["dimse_status"] == f"0x{Status.CANNOT_UNDERSTAND:04X}"
    assert sidecars[mr.sop_instance_uid]["dimse_status"] == (
        f"0x{Status.SOP_CLASS_NOT_SUPPORTED:04X}"
    )

    # The export adapter.
    orthanc.upload_all(s.path for s in instances)
    topic, subscription = pubsub_emulator.new_topic_and_subscription("peer-answers")
    dlq_topic, dlq_subscription = pubsub_emulator.new_topic_and_subscription("peer-answers-dlq")
    dead_count = sum(1 for decision in expected.values() if decision == DEAD)
    with _ct_pacs(script) as pacs, running_adapter(
        subscription, orthanc, dimse_peer(pacs.aet, pacs.port), dead_letter_topic=dlq_topic
    ) as exporter:
        publish_all(pubsub_emulator, topic, [bare_notification(s) for s in instances])
        wait_counters(
            exporter,
            lambda c: c.exported == len(instances) - dead_count
            and c.dead_lettered == dead_count,
            timeout=60,
        )
        exported, reasons = export_decisions(
            pubsub_emulator, dlq_subscription, dead_count, pacs, instances
        )
        export_attempts = _attempts(pacs, everything)

    assert spooled == expected
    assert exported == expected
    assert spool_attempts == expected_attempts
    assert export_attempts == expected_attempts
    assert reasons == {
        uid[1]: "peer-refused",
        uid[2]: "peer-refused",
        uid[3]: "peer-processing-failure",
        mr.sop_instance_uid: "no-presentation-context",
    }


def test_c_move_sub_operations_follow_the_same_table(
    orthanc: OrthancServer, instances: list[SampleInstance]
) -> None:
    """The same PACS as a C-MOVE destination: one try per instance (the C-MOVE SCU asks again
    for the failed UIDs); failures counted failed and the move goes on, the MR without a
    presentation context too; warnings counted as warnings. A destination that rejects the
    association fails the move before any sub-operation (0xA801)."""
    cts, mr = instances[:9], instances[9]
    uid = [s.sop_instance_uid for s in cts]
    orthanc.upload_all(s.path for s in instances)
    with _ct_pacs(_script(uid)) as pacs:
        adapter = start_adapter(
            orthanc.dicomweb_url, destinations=[(pacs.aet, LOCALHOST, pacs.port)]
        )
        try:
            statuses = c_move(adapter.server.port, study_keys(cts[0].study_uid), pacs.aet)
            pacs.refuse_calling = True
            rejected = c_move(adapter.server.port, study_keys(cts[0].study_uid), pacs.aet)
        finally:
            adapter.stop()
    final = statuses[-1]
    failed = {uid[0], uid[1], uid[2], uid[3], uid[7], mr.sop_instance_uid}
    assert final.Status == Status.SUB_OPERATIONS_COMPLETE_WITH_FAILURES
    assert (
        final.NumberOfCompletedSuboperations,
        final.NumberOfWarningSuboperations,
        final.NumberOfFailedSuboperations,
    ) == (1, 3, len(failed))
    listed = final.FailedSOPInstanceUIDList
    assert set([listed] if isinstance(listed, str) else listed) == failed
    assert sorted(pacs.stored) == sorted([uid[4], uid[5], uid[6], uid[8]])
    assert _attempts(pacs, [*uid, mr.sop_instance_uid]) == {
        **dict.fromkeys(uid, 1), mr.sop_instance_uid: 0,
    }
    assert [s.Status for s in rejected] == [Status.MOVE_DESTINATION_UNKNOWN]


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    "permanent", [True, False], ids=["rejected-permanent", "rejected-transient"]
)
def test_a_rejected_association_keeps_the_work_on_both_paths(
    pubsub_emulator: PubSubEmulator,
    orthanc: OrthancServer,
    fault_server: Callable[..., HttpFaultServer],
    instances: list[SampleInstance],
    tmp_path: Path,
    permanent: bool,
) -> None:
    """Rejected-permanent (calling AE title not recognized) and rejected-transient (the PACS at
    its association limit): neither path dead-letters anything; both deliver everything once
    the PACS accepts again (its configuration fixed, its association freed)."""
    samples = instances[:3]
    uids = [s.sop_instance_uid for s in samples]

    @contextmanager
    def rejecting(pacs: ScriptedPacs) -> Iterator[None]:
        if permanent:
            pacs.refuse_calling = True
            try:
                yield
            finally:
                pacs.refuse_calling = False
        else:
            with pacs.holding_the_only_association():
                yield

    spool = tmp_path / "spool"
    with _ct_pacs() as pacs, spooling_to(pacs, fault_server, spool) as adapter:
        with rejecting(pacs):
            sent = send_files(adapter.server.port, [s.path for s in samples])
            assert set(sent.values()) == {Status.SUCCESS}
            wait_until(lambda: pacs.rejected >= 3, timeout=30, message="rejections")
            assert not dead_letter_files(spool)
            assert spool_decisions(spool, pacs, uids) == dict.fromkeys(uids, KEPT)
        wait_until(lambda: not queued_files(spool), timeout=30, message="spool delivered")
        assert spool_decisions(spool, pacs, uids) == dict.fromkeys(uids, STORED)

    orthanc.upload_all(s.path for s in samples)
    topic, subscription = pubsub_emulator.new_topic_and_subscription("peer-rejects")
    dlq_topic, _ = pubsub_emulator.new_topic_and_subscription("peer-rejects-dlq")
    with _ct_pacs() as pacs, running_adapter(
        subscription, orthanc, dimse_peer(pacs.aet, pacs.port), dead_letter_topic=dlq_topic
    ) as exporter:
        with rejecting(pacs):
            publish_all(pubsub_emulator, topic, [bare_notification(s) for s in samples])
            wait_until(lambda: pacs.rejected >= 3, timeout=30, message="rejections")
            wait_counters(exporter, lambda c: c.transient_failures >= 3)
            assert exporter.counters.snapshot().permanent_failures == 0
            assert not pacs.stored
        counters = wait_counters(exporter, lambda c: c.exported == len(samples), timeout=60)
    assert counters.permanent_failures == 0 and counters.dead_lettered == 0
    assert sorted(set(pacs.stored)) == sorted(uids)


# --------------------------------------------------------------------------- the waiting SCU


def _store_one(port: int, sample: SampleInstance) -> tuple[int, str]:
    """C-STORE one file to the import adapter; its status and Error Comment."""
    meta = pydicom.dcmread(sample.path, stop_before_pixels=True).file_meta
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(str(meta.MediaStorageSOPClassUID), [str(meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", port, ae_title=IMPORT_AET)
    assert assoc.is_established
    try:
        response = assoc.send_c_store(sample.path)
    finally:
        assoc.release()
    return int(response.Status), str(response.get("ErrorComment", ""))


def test_an_scu_waiting_for_the_spool_is_answered_what_the_table_says(
    fault_server: Callable[..., HttpFaultServer],
    instances: list[SampleInstance],
    tmp_path: Path,
) -> None:
    """Without auto-ack the SCU gets the status upstream: the PACS's own answer passed on, 0x0122
    for a SOP class the PACS takes no context for, and 0x0110 after the first permanent
    rejection (one try: waiting cannot help)."""
    cts, mr = instances[:9], instances[9]
    script = {
        cts[0].sop_instance_uid: [Status.CANNOT_UNDERSTAND],
        cts[1].sop_instance_uid: [Status.ELEMENTS_DISCARDED],
    }
    with _ct_pacs(script) as pacs, spooling_to(
        pacs, fault_server, tmp_path / "spool", auto_ack=False
    ) as adapter:
        port = adapter.server.port
        assert _store_one(port, cts[0])[0] == Status.CANNOT_UNDERSTAND
        assert _store_one(port, cts[1])[0] == Status.ELEMENTS_DISCARDED
        assert _store_one(port, cts[2])[0] == Status.SUCCESS
        assert _store_one(port, mr) == (
            Status.SOP_CLASS_NOT_SUPPORTED, "DIMSE destination does not take this SOP class"
        )
        pacs.refuse_calling = True
        rejected_before = pacs.rejected
        # The sender's association is still open: the PACS must see a new one to reject.
        pacs.ae.active_associations[0].abort()
        assert _store_one(port, cts[3]) == (
            Status.PROCESSING_FAILURE, "DIMSE destination rejected the association"
        )
        assert pacs.rejected == rejected_before + 1
    assert pacs.count(cts[3].sop_instance_uid) == 0
