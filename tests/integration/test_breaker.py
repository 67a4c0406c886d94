"""The store goes down and comes back, across the real wire (issue 14).

A real ``dicom-adapter import`` process with its default retry budget and breaker settings in
front of a real Orthanc, which is stopped and started again on the same ports; DCMTK's
storescu/dcmsend are the SCUs. While the store is known down, C-STOREs are answered 0xA700 at
once (the first within its first retries) instead of after the whole retry budget; once a probe
gets an answer, they succeed again. Without ``--auto_ack_cstore`` the durable spool refuses at
once and spools nothing; with it, instances keep being accepted and are all uploaded once the
store is back.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.spool_support import queued_files, stored_uids
from tests.support import dcmtk
from tests.support.adapters import IMPORT_AET, AdapterProcess
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port, wait_until
from tests.support.samples import make_corpus

SUCCESS = "Success"
REFUSED = "Refused: OutOfResources"  # how DCMTK shows 0xA700
#: The default --stow_retry_budget: what a C-STORE waited before the breaker.
RETRY_BUDGET = 10.0
#: The default probe backoff cap, plus jitter and Orthanc's start-up.
PROBE_CAP = 10.0 * 1.1 + 3.0
UP = "dicomadapter_import_dicomweb_store_up"
REFUSED_TOTAL = "dicomadapter_import_dicomweb_store_refused_total"


def storescu(port: int, path: Path) -> tuple[str, float]:
    """C-STORE one file on its own association: the response status as DCMTK names it, and
    the seconds the whole exchange took."""
    started = time.monotonic()
    result = dcmtk.storescu("127.0.0.1", port, [path], IMPORT_AET, extra_args=["-v"])
    seconds = time.monotonic() - started
    found = re.search(r"Received Store Response \(([^)]*)\)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    return found.group(1), seconds


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def gauge(port: int, name: str, **labels: str) -> float | None:
    _, text = http_get(port, "/metrics")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def breaker_lines(log: str) -> tuple[list[str], list[str]]:
    """The breaker's "unreachable" and "reachable again" log lines."""
    lines = [line for line in log.splitlines() if " common.breaker: " in line]
    return (
        [line for line in lines if "unreachable" in line],
        [line for line in lines if "reachable again" in line],
    )


@pytest.fixture
def adapter(tmp_path: Path) -> Iterator[Callable[..., tuple[AdapterProcess, int]]]:
    """Factory: a started ``dicom-adapter import`` (default budget and breaker) + metrics port."""
    processes: list[AdapterProcess] = []

    def start(dicomweb_url: str, *args: str) -> tuple[AdapterProcess, int]:
        metrics_port = free_port()
        process = AdapterProcess(
            ["--dimse_aet", IMPORT_AET, "--dicomweb_address", dicomweb_url, "--auth", "none",
             "--metrics_port", str(metrics_port), *args],
            log_path=tmp_path / f"adapter-{len(processes)}.log",
        )
        processes.append(process)
        process.start()

        def serves_metrics() -> bool:
            try:
                return http_get(metrics_port, "/healthz")[0] == 200
            except OSError:
                return False

        wait_until(serves_metrics, timeout=15, message="/healthz")
        return process, metrics_port

    yield start
    for process in processes:
        process.kill()


def test_cstores_fail_fast_while_the_store_is_down_and_succeed_once_it_is_back(
    fresh_orthanc: Callable[..., OrthancServer],
    adapter: Callable[..., tuple[AdapterProcess, int]],
    tmp_path: Path,
) -> None:
    store = fresh_orthanc()
    corpus = make_corpus(tmp_path / "c", 10)
    process, metrics = adapter(store.dicomweb_url)
    destination = {"destination": store.dicomweb_url}
    assert storescu(process.port, corpus[0].path)[0] == SUCCESS
    assert gauge(metrics, UP, **destination) == 1

    store.stop()
    # The first C-STORE finds out: its retries (0.25 s, 0.5 s) open the breaker, not the budget.
    status, first = storescu(process.port, corpus[1].path)
    assert status == REFUSED and first < 2.5 < RETRY_BUDGET, first
    # The next ones are refused without a request.
    for sample in corpus[2:7]:
        status, seconds = storescu(process.port, sample.path)
        assert status == REFUSED and seconds < 1.0, seconds
    assert gauge(metrics, UP, **destination) == 0
    assert gauge(metrics, REFUSED_TOTAL, **destination) == 5
    code, body = http_get(metrics, "/readyz")
    assert code == 503 and "DICOMweb store unreachable" in body and "known down" in body

    time.sleep(2.0)  # down a while longer: the first probes (0.5 s, 1.5 s) fail
    store.start()
    back = time.monotonic()
    wait_until(lambda: gauge(metrics, UP, **destination) == 1, timeout=PROBE_CAP + 5,
               interval=0.1, message="breaker closed")
    assert time.monotonic() - back < PROBE_CAP
    result = dcmtk.dcmsend("127.0.0.1", process.port, [s.path for s in corpus[1:]], IMPORT_AET)
    assert result.returncode == 0, result.stdout[-2000:]
    assert store.count_instances() == len(corpus)
    wait_until(lambda: http_get(metrics, "/readyz")[0] == 200, timeout=15, message="ready")

    assert process.terminate() == 0
    opened, closed = breaker_lines(process.log())
    assert len(opened) == 1, opened  # one line for the outage, not one per C-STORE
    assert "WARNING" in opened[0] and store.dicomweb_url in opened[0]
    assert "Connection refused" in opened[0]  # the last error
    assert len(closed) == 1 and "INFO" in closed[0], closed
    down_for = re.search(r"after ([0-9.]+) s down; 5 requests were refused", closed[0])
    assert down_for and float(down_for.group(1)) > 2.0, closed[0]


def test_synchronous_spool_refuses_at_once_and_spools_nothing(
    fresh_orthanc: Callable[..., OrthancServer],
    adapter: Callable[..., tuple[AdapterProcess, int]],
    tmp_path: Path,
) -> None:
    store = fresh_orthanc()
    corpus = make_corpus(tmp_path / "c", 8)
    spool = tmp_path / "spool"
    process, metrics = adapter(
        store.dicomweb_url, "--persistent_file_storage_location", str(spool),
        "--spool_min_free_disk_mb", "0",
    )
    destination = {"destination": store.dicomweb_url}
    assert storescu(process.port, corpus[0].path)[0] == SUCCESS

    store.stop()
    # Spooled, then its uploads fail until the breaker opens: answered then, not after the
    # 10 s the SCU would otherwise wait for the upload.
    status, first = storescu(process.port, corpus[1].path)
    assert status == REFUSED and first < 2.5, first
    for sample in corpus[2:6]:
        status, seconds = storescu(process.port, sample.path)
        assert status == REFUSED and seconds < 1.0, seconds
    # At most the first one (answered, withdrawn once a worker takes it) is in the spool.
    assert len(queued_files(spool)) <= 1
    refused = gauge(metrics, REFUSED_TOTAL, **destination)
    assert refused is not None and refused >= 4

    store.start()
    wait_until(lambda: gauge(metrics, UP, **destination) == 1, timeout=PROBE_CAP + 5,
               interval=0.1, message="breaker closed")
    result = dcmtk.dcmsend("127.0.0.1", process.port, [s.path for s in corpus[1:]], IMPORT_AET)
    assert result.returncode == 0, result.stdout[-2000:]
    assert stored_uids(store) == {s.sop_instance_uid for s in corpus}
    wait_until(lambda: not queued_files(spool), timeout=15, message="spool empty")
    assert process.terminate() == 0
    opened, closed = breaker_lines(process.log())
    assert len(opened) == 1 and len(closed) == 1, (opened, closed)


def test_auto_ack_keeps_accepting_and_uploads_everything_once_the_store_is_back(
    fresh_orthanc: Callable[..., OrthancServer],
    adapter: Callable[..., tuple[AdapterProcess, int]],
    tmp_path: Path,
) -> None:
    store = fresh_orthanc()
    corpus = make_corpus(tmp_path / "c", 40)
    spool = tmp_path / "spool"
    process, metrics = adapter(
        store.dicomweb_url, "--persistent_file_storage_location", str(spool),
        "--auto_ack_cstore", "--spool_min_free_disk_mb", "0",
    )
    destination = {"destination": store.dicomweb_url}
    result = dcmtk.dcmsend("127.0.0.1", process.port, [s.path for s in corpus[:5]], IMPORT_AET)
    assert result.returncode == 0, result.stdout[-2000:]
    wait_until(lambda: store.count_instances() == 5, timeout=15, message="first 5 stored")

    store.stop()
    started = time.monotonic()
    result = dcmtk.dcmsend("127.0.0.1", process.port, [s.path for s in corpus[5:]], IMPORT_AET)
    assert result.returncode == 0, result.stdout[-2000:]  # every one acknowledged
    assert time.monotonic() - started < 10
    wait_until(lambda: gauge(metrics, UP, **destination) == 0, timeout=15,
               message="breaker open")
    assert queued_files(spool)
    # Readiness does not depend on the store with auto-ack: it only says what is wrong.
    code, body = http_get(metrics, "/readyz")
    assert code == 200 and "known down" in body

    store.start()
    wait_until(lambda: stored_uids(store) == {s.sop_instance_uid for s in corpus},
               timeout=PROBE_CAP + 30, interval=0.5, message="every acknowledged instance")
    wait_until(lambda: not queued_files(spool), timeout=15, message="spool drained")
    assert process.terminate() == 0
    opened, closed = breaker_lines(process.log())
    assert len(opened) == 1 and len(closed) == 1, (opened, closed)
