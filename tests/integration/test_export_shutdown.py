"""``python -m export_adapter`` as a process: configured from the environment, stopped by SIGTERM.

In-flight exports finish and are acknowledged; every other message the process took is nacked.
(Redelivery after the restart is not asserted here: the emulator holds messages of a closed
streaming pull for a minute or more, which would dominate the test's run time.)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from export_adapter.counters import CountersSnapshot
from tests.integration.test_export import (
    bare_notification,
    dataset_bytes,
    publish_all,
    received_by_uid,
)
from tests.support.dcmtk import StoreSCP
from tests.support.orthanc import OrthancServer
from tests.support.ports import wait_until
from tests.support.pubsub_emulator import PubSubEmulator
from tests.support.samples import SampleInstance, make_corpus

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_finishes_in_flight_and_loses_nothing(
    pubsub_emulator: PubSubEmulator,
    orthanc: OrthancServer,
    store_scp: Callable[..., StoreSCP],
    tmp_path: Path,
) -> None:
    samples: list[SampleInstance] = make_corpus(tmp_path / "corpus", 8)
    orthanc.upload_all(s.path for s in samples)
    topic, subscription = pubsub_emulator.new_topic_and_subscription("export-sigterm")
    slow = store_scp(extra_args=["--sleep-after", "1"])
    env = dict(
        os.environ,
        DICOM_ADAPTER_PROJECT_ID=pubsub_emulator.project_id,
        DICOM_ADAPTER_SUBSCRIPTION_ID=subscription.rsplit("/", 1)[1],
        DICOM_ADAPTER_DICOMWEB_ADDR=orthanc.dicomweb_url,
        DICOM_ADAPTER_PEER_DIMSE_AET=slow.aet,
        DICOM_ADAPTER_PEER_DIMSE_IP="127.0.0.1",
        DICOM_ADAPTER_PEER_DIMSE_PORT=str(slow.port),
        DICOM_ADAPTER_WORKERS="2",
        PYTHONPATH=str(ROOT),
    )
    log = tmp_path / "adapter.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "export_adapter"], env=env, stdout=out, stderr=out, cwd=ROOT
        )
        try:
            publish_all(pubsub_emulator, topic, [bare_notification(s) for s in samples])
            wait_until(lambda: len(slow.received_files()) >= 1, timeout=30, message="first file")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = log.read_text()
    assert "received SIGTERM; shutting down" in text
    final = re.search(r"export adapter stopped: CountersSnapshot\((.*)\)", text)
    assert final is not None, text
    counters = CountersSnapshot(
        **{key: int(value) for key, value in (kv.split("=") for kv in final.group(1).split(", "))}
    )
    delivered = set(received_by_uid(slow))
    # Everything the adapter took was either delivered (then acked) or nacked: none dropped.
    assert counters.exported == len(delivered) >= 1
    assert counters.received == counters.exported + counters.transient_failures
    assert counters.permanent_failures == 0
    assert len(delivered) < len(samples)
    # Exports that were running when SIGTERM came finished: their files are complete.
    for sample in samples:
        if sample.sop_instance_uid in delivered:
            path = received_by_uid(slow)[sample.sop_instance_uid]
            assert dataset_bytes(path) == dataset_bytes(sample.path)
