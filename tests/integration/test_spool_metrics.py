"""Spool depth/age gauges and readiness with a durable spool, on a running adapter."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from common.health import HealthConfig
from common.status import Status
from tests.integration.spool_support import send_files, spool_settings
from tests.support.adapters import running_import_adapter
from tests.support.http_fault_server import HttpFaultServer
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port, wait_until
from tests.support.samples import make_corpus


def _gauge(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^dicomadapter_import_{name} (\S+)$", text, re.M)
    assert match, name
    return float(match.group(1))


def _ready(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_spool_gauges_follow_an_outage(
    orthanc: OrthancServer, fault_server: Callable[..., HttpFaultServer], tmp_path: Path
) -> None:
    proxy = fault_server(upstream=orthanc.http_url)
    corpus = make_corpus(tmp_path / "c", 4)
    metrics_port = free_port()
    proxy.fail_next(503, times=100000, method="POST")
    proxy.fail_next(503, times=100000, method="GET")
    with running_import_adapter(
        f"{proxy.url}/dicom-web",
        spool=spool_settings(tmp_path / "spool", retry_amount=1000),
        health=HealthConfig(port=metrics_port, bind_address="127.0.0.1", cache_seconds=0),
    ) as adapter:
        acked = send_files(adapter.server.port, [s.path for s in corpus])
        assert set(acked.values()) == {Status.SUCCESS}
        wait_until(lambda: _gauge(metrics_port, "spool_depth") == 4, timeout=10,
                   message="spool depth 4 while the store is down")
        assert _gauge(metrics_port, "spool_oldest_age_seconds") > 0
        # Images are acknowledged once spooled, so a down store does not make the pod unready.
        assert _ready(metrics_port) == 200
        proxy.clear_faults()
        wait_until(lambda: _gauge(metrics_port, "spool_depth") == 0, timeout=30,
                   message="spool drained after the store returned")
