"""Routing across the real wire: filters by modality, calling AE, tags and wildcards, first match
or send-to-all, a DIMSE destination (DCMTK storescp), and one dead destination among three."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from common.status import Status
from import_adapter.routing.config import parse_destination_config
from import_adapter.routing.router import RoutingConfig
from tests.integration.spool_support import queued_files, send_files, spool_settings
from tests.support.adapters import running_import_adapter
from tests.support.dcmtk import StoreSCP
from tests.support.http_fault_server import HttpFaultServer
from tests.support.ports import wait_until
from tests.support.samples import SampleInstance, make_corpus


def _uids(sink: HttpFaultServer) -> set[str]:
    return {uid for _, uid in sink.stored_instances}


def _rules(rules: list[dict[str, object]], send_to_all: bool = False) -> RoutingConfig:
    return RoutingConfig(parse_destination_config(json.dumps(rules), source="test"), None,
                         send_to_all)


def _by_kind(corpus: list[SampleInstance], kind: str) -> list[SampleInstance]:
    return [s for s in corpus if s.kind == kind]


def test_first_match_by_modality_calling_ae_tags_and_wildcards(
    fault_server: Callable[..., HttpFaultServer],
    store_scp: Callable[..., StoreSCP],
    tmp_path: Path,
) -> None:
    a, b, default = fault_server(), fault_server(), fault_server()
    scp = store_scp(aet="ROUTEDSCP")
    corpus = make_corpus(tmp_path / "c", 6)  # CT, MR, CT, MR...; PatientID CORPUS-...
    routing = _rules([
        {"filter": "Modality=CT&AETitle=MODALITY1", "dicomweb_destination": f"{a.url}/dicom-web"},
        {"filter": "00100020=CORPUS-*&Modality=M?", "dicomweb_destination": f"{b.url}/dicom-web"},
        {"filter": "AETitle=DIMSE*",
         "dicom_destination": {"name": scp.aet, "host": scp.host, "port": scp.port}},
    ])
    ct, mr = _by_kind(corpus, "CT"), _by_kind(corpus, "MR")
    spool = tmp_path / "spool"
    with running_import_adapter(
        f"{default.url}/dicom-web", spool=spool_settings(spool), routing=routing
    ) as adapter:
        port = adapter.server.port
        sent: dict[str, int] = {}
        sent |= send_files(port, [ct[0].path, mr[0].path], calling_aet="MODALITY1")
        sent |= send_files(port, [ct[1].path, mr[1].path], calling_aet="OTHER")
        sent |= send_files(port, [ct[2].path, mr[2].path], calling_aet="DIMSEAE")
        assert set(sent.values()) == {Status.SUCCESS} and len(sent) == 6
        wait_until(lambda: not queued_files(spool), timeout=20, message="all delivered")
    assert _uids(a) == {ct[0].sop_instance_uid}
    assert _uids(b) == {s.sop_instance_uid for s in mr}  # rule 2 wins before rule 3
    assert _uids(default) == {ct[1].sop_instance_uid}
    received = scp.wait_for_files(1)
    assert [p.name.split(".", 1)[1] for p in received] == [ct[2].sop_instance_uid]


def test_send_to_all_matching_destinations(
    fault_server: Callable[..., HttpFaultServer],
    store_scp: Callable[..., StoreSCP],
    tmp_path: Path,
) -> None:
    a, default = fault_server(), fault_server()
    scp = store_scp(aet="ROUTEDSCP")
    corpus = make_corpus(tmp_path / "c", 4)
    routing = _rules([
        {"filter": "Modality=MR", "dicomweb_destination": f"{a.url}/dicom-web"},
        {"filter": "AETitle=ALL*",
         "dicom_destination": {"name": scp.aet, "host": scp.host, "port": scp.port}},
    ], send_to_all=True)
    spool = tmp_path / "spool"
    with running_import_adapter(
        f"{default.url}/dicom-web", spool=spool_settings(spool), routing=routing
    ) as adapter:
        sent = send_files(adapter.server.port, [s.path for s in corpus], calling_aet="ALLSCU")
        assert set(sent.values()) == {Status.SUCCESS}
        wait_until(lambda: not queued_files(spool), timeout=20, message="all delivered")
    mr = {s.sop_instance_uid for s in _by_kind(corpus, "MR")}
    assert _uids(a) == mr
    assert {p.name.split(".", 1)[1] for p in scp.wait_for_files(4)} == {
        s.sop_instance_uid for s in corpus
    }
    assert not _uids(default), "matched instances do not also go to the default"


def test_one_dead_destination_does_not_stop_the_others(
    fault_server: Callable[..., HttpFaultServer], tmp_path: Path
) -> None:
    a, c, default = fault_server(), fault_server(), fault_server()
    dead = HttpFaultServer()  # never started: nothing listens on its port
    corpus = make_corpus(tmp_path / "c", 20)
    routing = _rules([
        {"filter": "", "dicomweb_destination": f"{a.url}/dicom-web"},
        {"filter": "", "dicomweb_destination": f"{dead.url}/dicom-web"},
        {"filter": "", "dicomweb_destination": f"{c.url}/dicom-web"},
    ], send_to_all=True)
    spool = tmp_path / "spool"
    with running_import_adapter(
        f"{default.url}/dicom-web", spool=spool_settings(spool), routing=routing
    ) as adapter:
        sent = send_files(adapter.server.port, [s.path for s in corpus])
        assert set(sent.values()) == {Status.SUCCESS} and len(sent) == 20
        everything = {s.sop_instance_uid for s in corpus}
        wait_until(lambda: _uids(a) == everything and _uids(c) == everything, timeout=20,
                   message="live destinations served")
        # The dead destination's copies wait in its own queue (one link per instance). A live
        # destination records an instance before the adapter reads its answer and removes the
        # link: wait for the links to go, not only for the instances to arrive.
        wait_until(lambda: len(queued_files(spool)) == 20, timeout=10,
                   message="only the dead destination's copies left")
    assert not _uids(default)
