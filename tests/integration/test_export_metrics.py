"""The export adapter's operations endpoint on a real ``python -m export_adapter`` process,
configured from the environment as the Helm chart does (``DICOM_ADAPTER_METRICS_PORT``).

Notifications go through Google's Pub/Sub emulator, Orthanc is the source, DCMTK ``storescp``
the peer. After publishing, ``/metrics`` must count exactly what happened (exports, failures,
bytes, dead-letters, retries), and ``/readyz`` must follow the streaming pull and the source.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.test_export import STORE, bare_notification, instance_path, publish_all
from tests.integration.test_observability import (
    healthz_answers,
    http_get,
    metric,
    scrape,
    wait_for,
)
from tests.support.dcmtk import StoreSCP
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port
from tests.support.pubsub_emulator import PubSubEmulator
from tests.support.samples import SampleInstance, make_corpus

# As in test_export.py: the emulator occasionally stalls a fresh streaming pull under load.
pytestmark = pytest.mark.flaky(reruns=2, reruns_delay=1)

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def export_process(
    emulator: PubSubEmulator,
    subscription: str,
    source: OrthancServer,
    peer_aet: str,
    peer_port: int,
    log: Path,
    **env: str,
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python -m export_adapter`` with /metrics on a free port; yields it and the port."""
    metrics_port = free_port()
    environment = dict(
        os.environ,
        DICOM_ADAPTER_PROJECT_ID=emulator.project_id,
        DICOM_ADAPTER_SUBSCRIPTION_ID=subscription.rsplit("/", 1)[1],
        DICOM_ADAPTER_DICOMWEB_ADDR=source.dicomweb_url,
        DICOM_ADAPTER_PEER_DIMSE_AET=peer_aet,
        DICOM_ADAPTER_PEER_DIMSE_IP="127.0.0.1",
        DICOM_ADAPTER_PEER_DIMSE_PORT=str(peer_port),
        DICOM_ADAPTER_METRICS_PORT=str(metrics_port),
        DICOM_ADAPTER_WORKERS="2",
        DICOM_ADAPTER_TRANSIENT_BACKOFF="0.2",
        DICOM_ADAPTER_DICOMWEB_RETRY_BUDGET="0.5",
        PYTHONPATH=str(ROOT),
        **env,
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "export_adapter"],
            env=environment, stdout=out, stderr=out, cwd=ROOT,
        )
    try:
        assert wait_for(lambda: healthz_answers(metrics_port), 20), log.read_text()
        yield process, metrics_port
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_metrics_count_what_was_published(
    pubsub_emulator: PubSubEmulator,
    orthanc: OrthancServer,
    store_scp: Callable[..., StoreSCP],
    tmp_path: Path,
) -> None:
    samples: list[SampleInstance] = make_corpus(tmp_path / "corpus", 5)
    orthanc.upload_all(s.path for s in samples)
    topic, subscription = pubsub_emulator.new_topic_and_subscription("export-metrics")
    dlq_topic, _ = pubsub_emulator.new_topic_and_subscription("export-metrics-dlq")
    scp = store_scp(aet="EXPORTPEER")
    gone = samples[0]
    missing = [
        f"/studies/{gone.study_uid}/series/{gone.series_uid}/instances/1.2.3.{i}".encode()
        for i in (901, 902)
    ]
    messages = [bare_notification(s) for s in samples]
    messages += [(data, {}) for data in missing]  # permanent: instance not in the source
    messages.append(  # skipped: not an instance being stored
        (f"{STORE}/{instance_path(gone)}".encode(), {"action": "DeleteInstances"}))
    exported_bytes = sum(
        len(orthanc.wado_instance(s.study_uid, s.series_uid, s.sop_instance_uid))
        for s in samples
    )
    log = tmp_path / "export.log"
    with export_process(pubsub_emulator, subscription, orthanc, scp.aet, scp.port, log,
                        DICOM_ADAPTER_DEAD_LETTER_TOPIC=dlq_topic) as (_, port):
        assert wait_for(lambda: http_get(port, "/readyz")[0] == 200, 30), http_get(port, "/readyz")
        checks = json.loads(http_get(port, "/readyz")[1])["checks"]
        assert checks["subscriber"] == {"ok": True, "detail": f"pulling {subscription}"}
        assert checks["dicomweb"]["ok"], checks

        publish_all(pubsub_emulator, topic, messages)
        peer = {"destination": "EXPORTPEER"}

        def requests() -> float:
            return metric(scrape(port), "dicomadapter_export_total_requests_total", **peer)

        attempts = len(samples) + len(missing)
        assert wait_for(lambda: requests() >= attempts, 60), (requests(), log.read_text())
        scp.wait_for_files(len(samples))
        samples_now = scrape(port)
    assert metric(samples_now, "dicomadapter_export_total_requests_total", **peer) == attempts
    assert metric(samples_now, "dicomadapter_export_total_errors_total", **peer) == len(missing)
    assert metric(samples_now, "dicomadapter_export_total_bytes_total", **peer) == exported_bytes
    assert metric(samples_now, "dicomadapter_export_dead_letters_total", **peer) == len(missing)
    assert metric(samples_now, "dicomadapter_export_retries_total", **peer) == 0
    assert metric(samples_now, "dicomadapter_export_export_seconds_count", **peer) == attempts
    assert metric(samples_now, "dicomadapter_export_export_seconds_sum", **peer) > 0
    assert metric(samples_now, "dicomadapter_info", service="export", version="0.1.0") == 1
    # Labels name the peer's AE title only: no UIDs.
    uids = {s.sop_instance_uid for s in samples} | {s.study_uid for s in samples}
    labels = {value for (_, pairs) in samples_now for _, value in pairs}
    assert not labels & uids
    # The in-process counters tell the same story at shutdown.
    text = log.read_text()
    assert "received=8, exported=5, skipped=1, permanent_failures=2" in text, text


def test_retries_and_readiness_follow_the_peer_and_the_source(
    pubsub_emulator: PubSubEmulator,
    fresh_orthanc: Callable[..., OrthancServer],
    tmp_path: Path,
) -> None:
    source = fresh_orthanc()
    samples = make_corpus(tmp_path / "corpus", 2)
    source.upload_all(s.path for s in samples)
    topic, subscription = pubsub_emulator.new_topic_and_subscription("export-metrics-down")
    log = tmp_path / "export.log"
    down = free_port()  # nothing listens: every export fails transiently and is nacked
    with export_process(pubsub_emulator, subscription, source, "DOWNPEER", down, log) as (_, port):
        assert wait_for(lambda: http_get(port, "/readyz")[0] == 200, 30), http_get(port, "/readyz")
        publish_all(pubsub_emulator, topic, [bare_notification(s) for s in samples])
        peer = {"destination": "DOWNPEER"}

        def retries() -> float:
            return metric(scrape(port), "dicomadapter_export_retries_total", **peer)

        assert wait_for(lambda: retries() >= 3, 60), log.read_text()
        current = scrape(port)
        errors = metric(current, "dicomadapter_export_total_errors_total", **peer)
        nacks = metric(current, "dicomadapter_export_retries_total", **peer)
        # Every nack is a failed attempt (a worker may be between the two counts).
        assert nacks <= errors <= nacks + 2
        assert metric(current, "dicomadapter_export_dead_letters_total", **peer) == 0
        assert metric(current, "dicomadapter_export_total_bytes_total", **peer) == 0
        # The peer being down does not make the pod unready; the source going away does.
        assert http_get(port, "/readyz")[0] == 200

        source.stop()
        assert wait_for(lambda: http_get(port, "/readyz")[0] == 503, 30)
        status, body = http_get(port, "/readyz")
        assert status == 503
        checks = json.loads(body)["checks"]
        assert checks["subscriber"]["ok"] and not checks["dicomweb"]["ok"]
        assert "unreachable" in checks["dicomweb"]["detail"]
        assert http_get(port, "/healthz")[0] == 200  # alive, just not ready
        source.start()
        assert wait_for(lambda: http_get(port, "/readyz")[0] == 200, 30)
    assert "not ready: dicomweb: DICOMweb store unreachable" in log.read_text()
