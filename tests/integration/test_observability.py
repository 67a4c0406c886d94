"""Observability of a running import adapter (a real `dicom-adapter import` process):
/metrics counters match what DCMTK sent, /healthz and /readyz follow the DICOMweb store,
JSON log lines parse, and no patient data reaches the logs even at DEBUG (--verbose).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.dicom.part10 import meta_end
from tests.support import dcmtk
from tests.support.adapters import IMPORT_AET, AdapterProcess
from tests.support.http_fault_server import HttpFaultServer
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port
from tests.support.samples import SampleInstance, make_corpus

ROOT = Path(__file__).resolve().parents[2]


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def healthz_answers(port: int) -> bool:
    """``/healthz`` answers 200 (False while the port is not bound yet)."""
    try:
        return http_get(port, "/healthz")[0] == 200
    except OSError:  # URLError: connection refused
        return False


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = http_get(port, "/metrics")
    assert status == 200
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return predicate()


def dataset_bytes_sent(path: Path) -> int:
    """The dataset bytes DCMTK sends for a file: it drops Data Set Trailing Padding."""
    raw = path.read_bytes()
    size = len(raw) - meta_end(raw)
    ds = pydicom.dcmread(path)
    if (0xFFFC, 0xFFFC) in ds:
        size -= 12 + len(ds[0xFFFC, 0xFFFC].value)  # explicit VR OB: 12-byte header
    return size


@pytest.fixture
def adapter_process(tmp_path: Path) -> Iterator[Callable[..., tuple[AdapterProcess, int]]]:
    """Factory: a started `dicom-adapter import` with /metrics on a free port."""
    processes: list[AdapterProcess] = []

    def factory(dicomweb_url: str, *args: str) -> tuple[AdapterProcess, int]:
        metrics_port = free_port()
        process = AdapterProcess(
            ["--dimse_aet", IMPORT_AET, "--dicomweb_address", dicomweb_url, "--auth", "none",
             "--metrics_port", str(metrics_port), "--stow_retry_budget", "1", *args],
            log_path=tmp_path / f"adapter-{len(processes)}.log",
        )
        processes.append(process)
        process.start()
        # The DIMSE listener starts first: the metrics port may not be bound yet.
        assert wait_for(lambda: healthz_answers(metrics_port), 15), process.log()
        return process, metrics_port

    yield factory
    for process in processes:
        process.kill()


def test_metrics_count_what_was_sent(
    orthanc: OrthancServer, adapter_process: Any, tmp_path: Path
) -> None:
    adapter, metrics_port = adapter_process(orthanc.dicomweb_url)
    corpus = make_corpus(tmp_path / "corpus", 6)
    result = dcmtk.dcmsend("127.0.0.1", adapter.port, [s.path for s in corpus], IMPORT_AET,
                           calling_aet="MODALITY1")
    assert result.returncode == 0, result.stdout + result.stderr
    more = make_corpus(tmp_path / "more", 2)
    result = dcmtk.dcmsend("127.0.0.1", adapter.port, [s.path for s in more], IMPORT_AET,
                           calling_aet="MODALITY2")
    assert result.returncode == 0, result.stdout + result.stderr

    # The association's close is reported when its socket closes, just after dcmsend returns.
    assert wait_for(lambda: metric(scrape(metrics_port), "dicomadapter_import_open_associations",
                                   calling_aet="MODALITY1") == 0, 10)
    samples = scrape(metrics_port)
    first, second = {"calling_aet": "MODALITY1"}, {"calling_aet": "MODALITY2"}
    assert metric(samples, "dicomadapter_import_cstore_requests_total", **first) == 6
    assert metric(samples, "dicomadapter_import_cstore_requests_total", **second) == 2
    assert metric(samples, "dicomadapter_import_cstore_errors_total", **first) == 0
    assert metric(samples, "dicomadapter_import_cstore_bytes_total", **first) == sum(
        dataset_bytes_sent(s.path) for s in corpus)
    assert metric(samples, "dicomadapter_import_cstore_stow_seconds_count", **first) == 6
    assert metric(samples, "dicomadapter_import_cstore_stow_seconds_sum", **first) > 0
    assert metric(samples, "dicomadapter_import_associations_total", **first) == 1
    assert metric(samples, "dicomadapter_import_open_associations", **second) == 0
    assert metric(samples, "dicomadapter_info", service="import", version="0.1.0") == 1
    # Labels are AE titles only: no UIDs, no patient data in any label value.
    uids = {s.sop_instance_uid for s in corpus} | {s.study_uid for s in corpus}
    for (_, labels) in samples:
        for _, value in labels:
            assert value not in uids


def test_failed_cstores_and_rejections_are_counted(
    orthanc: OrthancServer, adapter_process: Any, tmp_path: Path,
    fault_server: Callable[..., HttpFaultServer],
) -> None:
    proxy = fault_server(upstream=orthanc.http_url)
    adapter, metrics_port = adapter_process(f"{proxy.url}/dicom-web")
    proxy.fail_next(403, times=2, method="POST", body=b"Permission denied")
    corpus = make_corpus(tmp_path / "corpus", 3)
    dcmtk.dcmsend("127.0.0.1", adapter.port, [s.path for s in corpus], IMPORT_AET,
                  calling_aet="MODALITY")
    rejected = dcmtk.echoscu("127.0.0.1", adapter.port, "NOTTHEADAPTER")
    assert rejected.returncode != 0
    samples = scrape(metrics_port)
    aet = {"calling_aet": "MODALITY"}
    assert metric(samples, "dicomadapter_import_cstore_requests_total", **aet) == 3
    assert metric(samples, "dicomadapter_import_cstore_errors_total", **aet) == 2
    assert sum(v for (name, _), v in samples.items()
               if name == "dicomadapter_import_associations_rejected_total") == 1


def _destinations(**entries: int) -> str:
    return json.dumps([{"name": name, "host": "127.0.0.1", "port": port}
                       for name, port in entries.items()])


def _counts(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], prefix: str,
            **labels: str) -> dict[str, float]:
    """Every non-zero ``prefix*`` counter with exactly ``labels``, by name without the prefix
    (a labelled counter appears once it was first incremented)."""
    wanted = tuple(sorted(labels.items()))
    return {name.removeprefix(prefix): value for (name, got), value in samples.items()
            if name.startswith(prefix) and name.endswith("_total") and got == wanted and value}


def test_cfind_cmove_and_cget_are_counted(
    fresh_orthanc: Callable[..., OrthancServer], adapter_process: Any, store_scp: Any,
    tmp_path: Path,
) -> None:
    """findscu, movescu and getscu through a running adapter: the C-FIND and C-MOVE/C-GET
    counters match the responses the SCUs got and the bytes storescp received."""
    from tests.support.scripted_pacs import ScriptedPacs

    store = fresh_orthanc()
    corpus = make_corpus(tmp_path / "corpus", 6, studies=1)
    store.upload_all([s.path for s in corpus])
    study = corpus[0].study_uid
    scp = store_scp(aet="MOVEDEST", syntaxes="all")
    refuse = corpus[2].sop_instance_uid
    scripted = ScriptedPacs({refuse: 0xA700}, aet="PICKY")
    try:
        adapter, metrics_port = adapter_process(
            store.dicomweb_url, "--aet_dictionary_inline",
            _destinations(MOVEDEST=scp.port, PICKY=scripted.port, DOWNSCP=free_port()),
        )
        # C-FIND: one study; its series; a query the store cannot answer (no level: refused).
        out = tmp_path / "find"
        for directory in (out / "study", out / "series", tmp_path / "got"):
            directory.mkdir(parents=True)
        studies = dcmtk.findscu("127.0.0.1", adapter.port,
                                ["0008,0052=STUDY", f"0020,000D={study}"], IMPORT_AET,
                                calling_aet="QUERIER", output_dir=out / "study")
        assert studies.returncode == 0, studies.stderr
        series = dcmtk.findscu("127.0.0.1", adapter.port,
                               ["0008,0052=SERIES", f"0020,000D={study}", "0020,000E"],
                               IMPORT_AET, calling_aet="QUERIER", output_dir=out / "series")
        assert series.returncode == 0, series.stderr
        matches = len(dcmtk.read_responses(out / "study")) + len(
            dcmtk.read_responses(out / "series"))
        assert len(dcmtk.read_responses(out / "study")) == 1 and matches > 2
        dcmtk.findscu("127.0.0.1", adapter.port, ["0008,0052=NOSUCHLEVEL"], IMPORT_AET,
                      calling_aet="QUERIER")

        keys = ["0008,0052=STUDY", f"0020,000D={study}"]
        # C-MOVE: all stored; one refused by the peer (a warning); unknown and down peers.
        moved = dcmtk.movescu("127.0.0.1", adapter.port, keys, IMPORT_AET,
                              calling_aet="MOVER", destination="MOVEDEST")
        assert moved.returncode == 0, moved.stderr
        dcmtk.movescu("127.0.0.1", adapter.port, keys, IMPORT_AET, calling_aet="MOVER",
                      destination="PICKY")
        dcmtk.movescu("127.0.0.1", adapter.port, keys, IMPORT_AET, calling_aet="MOVER",
                      destination="NOWHERE")
        dcmtk.movescu("127.0.0.1", adapter.port, keys, IMPORT_AET, calling_aet="MOVER",
                      destination="DOWNSCP")
        # C-GET: the sub-operations go back to the caller.
        got = dcmtk.getscu("127.0.0.1", adapter.port, keys, IMPORT_AET, calling_aet="GETTER",
                           output_dir=tmp_path / "got")
        assert got.returncode == 0, got.stderr
    finally:
        scripted.stop()

    received = scp.wait_for_files(len(corpus))
    sent_bytes = sum(len(raw) - meta_end(raw) for raw in (p.read_bytes() for p in received))
    assert len(list((tmp_path / "got").iterdir())) == len(corpus)
    assert len(scripted.received) == len(corpus)

    def find_counts() -> dict[str, float]:
        return _counts(scrape(metrics_port), "dicomadapter_import_cfind_",
                       calling_aet="QUERIER")

    assert wait_for(lambda: find_counts().get("requests_total") == 3, 10), find_counts()
    samples = scrape(metrics_port)
    assert find_counts() == {"requests_total": 3, "errors_total": 1, "matches_total": matches}
    assert metric(samples, "dicomadapter_import_cfind_seconds_count", calling_aet="QUERIER") == 3

    def move(destination: str) -> dict[str, float]:
        return _counts(samples, "dicomadapter_import_cmove_", calling_aet="MOVER",
                       destination=destination)

    def sub(destination: str) -> dict[str, float]:
        return _counts(samples, "dicomadapter_import_cmove_sub_cstore_", destination=destination)

    no_issue = {"requests_total": 1}
    assert move("MOVEDEST") == no_issue
    assert sub("MOVEDEST") == {"requests_total": len(corpus), "bytes_total": sent_bytes}
    assert move("PICKY") == {**no_issue, "warnings_total": 1}
    assert sub("PICKY")["requests_total"] == len(corpus)
    assert sub("PICKY")["errors_total"] == 1
    assert move("NOWHERE") == {**no_issue, "errors_total": 1}
    assert move("DOWNSCP") == {**no_issue, "errors_total": 1}
    assert sub("NOWHERE") == {} and sub("DOWNSCP") == {}
    # C-GET: the destination is the calling AE.
    assert _counts(samples, "dicomadapter_import_cmove_", calling_aet="GETTER",
                   destination="GETTER") == no_issue
    # Same instances, same (explicit VR little endian) encoding as to storescp.
    assert sub("GETTER") == {"requests_total": len(corpus), "bytes_total": sent_bytes}
    # Labels are AE titles only.
    uids = {s.sop_instance_uid for s in corpus} | {study}
    assert not [v for (_, labels) in samples for _, v in labels if v in uids]


def test_health_and_readiness_follow_the_store(
    fresh_orthanc: Callable[..., OrthancServer], adapter_process: Any
) -> None:
    store = fresh_orthanc()
    adapter, metrics_port = adapter_process(store.dicomweb_url)
    status, body = http_get(metrics_port, "/readyz")
    assert status == 200, body
    checks = json.loads(body)["checks"]
    assert checks["dimse_listener"]["ok"] and checks["dicomweb"]["ok"]

    store.stop()
    assert wait_for(lambda: http_get(metrics_port, "/readyz")[0] == 503, 30)
    status, body = http_get(metrics_port, "/readyz")
    detail = json.loads(body)["checks"]["dicomweb"]["detail"]
    assert "unreachable" in detail
    assert http_get(metrics_port, "/healthz")[0] == 200  # alive, just not ready
    assert "not ready: dicomweb: DICOMweb store unreachable" in adapter.log()

    store.start()
    assert wait_for(lambda: http_get(metrics_port, "/readyz")[0] == 200, 30)
    assert "ready: all checks pass" in adapter.log()


def test_readiness_explains_refused_credentials(
    orthanc: OrthancServer, adapter_process: Any, fault_server: Callable[..., HttpFaultServer],
) -> None:
    proxy = fault_server(upstream=orthanc.http_url)
    proxy.fail_next(403, times=1000, method="GET", path_contains="/studies",
                    body=b'{"error": {"code": 403, "status": "PERMISSION_DENIED"}}',
                    content_type="application/json")
    adapter, metrics_port = adapter_process(f"{proxy.url}/dicom-web")
    status, body = http_get(metrics_port, "/readyz")
    assert status == 503
    detail = json.loads(body)["checks"]["dicomweb"]["detail"]
    assert "refused our credentials" in detail and "HTTP 403" in detail
    assert "not ready: dicomweb: DICOMweb store refused our credentials" in adapter.log()


def test_helm_test_echo_command_against_the_adapter(
    orthanc: OrthancServer, adapter_process: Any
) -> None:
    adapter, _ = adapter_process(orthanc.dicomweb_url)
    command = [sys.executable, "-m", "common.echo", "127.0.0.1", str(adapter.port)]
    ok = subprocess.run([*command, "--aec", IMPORT_AET], capture_output=True, text=True,
                        cwd=ROOT, timeout=60, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "answered Success" in ok.stdout
    wrong = subprocess.run([*command, "--aec", "WRONG"], capture_output=True, text=True,
                           cwd=ROOT, timeout=60, check=False)
    assert wrong.returncode == 1
    assert "association rejected" in wrong.stderr


def _stamp_phi(samples: list[SampleInstance], name: str, patient_id: str) -> None:
    for sample in samples:
        ds = pydicom.dcmread(sample.path)
        ds.PatientName = name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19230704"
        ds.save_as(sample.path, enforce_file_format=False)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_patient_data_in_logs_at_debug(
    orthanc: OrthancServer, adapter_process: Any, tmp_path: Path, log_format: str
) -> None:
    marker = os.urandom(4).hex().upper()
    name, patient_id = f"Canary^Phi{marker}", f"PHIID{marker}"
    corpus = make_corpus(tmp_path / "corpus", 4)
    _stamp_phi(corpus, name, patient_id)
    adapter, metrics_port = adapter_process(
        orthanc.dicomweb_url, "--verbose", "--log_format", log_format)
    result = dcmtk.dcmsend("127.0.0.1", adapter.port, [s.path for s in corpus], IMPORT_AET)
    assert result.returncode == 0, result.stdout + result.stderr
    # A C-FIND carrying the patient's name and id as matching keys.
    dcmtk.findscu("127.0.0.1", adapter.port,
                  ["0008,0052=STUDY", f"0010,0010={name}", f"0010,0020={patient_id}",
                   "0020,000D"], IMPORT_AET)
    dcmtk.echoscu("127.0.0.1", adapter.port, IMPORT_AET)
    http_get(metrics_port, "/readyz")
    assert orthanc.qido("studies", {"PatientID": patient_id})  # stored: the test is meaningful
    adapter.terminate()
    log = adapter.log()
    assert "DEBUG" in log  # --verbose took effect
    assert corpus[0].sop_instance_uid in log  # identifiers are logged...
    for secret in (name, f"Phi{marker}", patient_id, "19230704", "Canary"):
        assert secret not in log, f"patient data {secret!r} found in the {log_format} log"
    if log_format == "json":
        lines = [line for line in log.splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        assert all({"severity", "message", "time", "logger"} <= set(r) for r in records)
        stores = [r for r in records if r.get("event") == "c-store"]
        assert len(stores) == 4
        assert {r["sop_instance_uid"] for r in stores} == {s.sop_instance_uid for s in corpus}
        assert all(r["calling_aet"] == "DCMSEND" and r["status"] == "0x0000" for r in stores)
        assert all(isinstance(r["duration_ms"], float) for r in stores)
