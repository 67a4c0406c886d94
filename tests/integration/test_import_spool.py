"""Store-and-forward across the real wire: kill -9, store outages, dead letters, a full spool.

pynetdicom is the SCU (it records which instances were acknowledged), Orthanc with its DICOMweb
plugin the store, an HTTP fault proxy in front of it injects 4xx/409 answers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from common.cli.main import cli, run
from common.status import Status
from import_adapter.spool.concurrency import ConcurrencySettings
from tests.integration.spool_support import (
    dead_letter_files,
    queued_files,
    send_files,
    spool_settings,
    stored_uids,
)
from tests.support.adapters import AdapterProcess, running_import_adapter
from tests.support.http_fault_server import HttpFaultServer
from tests.support.orthanc import OrthancServer
from tests.support.ports import wait_until
from tests.support.samples import make_corpus


def test_kill_9_while_receiving_loses_no_acknowledged_instance(
    fresh_orthanc: Callable[..., OrthancServer], tmp_path: Path
) -> None:
    store = fresh_orthanc()
    corpus = make_corpus(tmp_path / "c", 1000)
    spool = tmp_path / "spool"
    args = [
        "--dicomweb_address", store.dicomweb_url,
        "--persistent_file_storage_location", str(spool),
        "--auto_ack_cstore", "--spool_min_free_disk_mb", "0",
        "--min_upload_delay", "50", "--max_waiting_time_between_uploads", "500",
    ]
    acked: dict[str, int] = {}
    first = AdapterProcess(args, log_path=tmp_path / "first.log").start()
    try:
        sender = threading.Thread(
            target=send_files, args=(first.port, [s.path for s in corpus]),
            kwargs={"results": acked},
        )
        sender.start()
        wait_until(lambda: len(acked) >= 400, timeout=60, message="400 acknowledged")
        first.kill()  # SIGKILL mid-stream
        sender.join(timeout=30)
    finally:
        first.kill()
    assert 400 <= len(acked) < len(corpus), "the kill should land mid-run"
    assert set(acked.values()) == {Status.SUCCESS}
    # Some acknowledged instances were not uploaded yet: the spool holds them.
    with AdapterProcess(args, log_path=tmp_path / "second.log") as second:
        wait_until(
            lambda: set(acked) <= stored_uids(store), timeout=90, interval=0.5,
            message="every acknowledged instance in Orthanc",
        )
        wait_until(lambda: not queued_files(spool), timeout=30, message="spool drained")
        log = second.log()
    assert not dead_letter_files(spool)
    assert not any((spool / "incoming").iterdir())
    assert "incomplete receipts discarded" in log


def test_store_outage_then_everything_acknowledged_arrives(
    fresh_orthanc: Callable[..., OrthancServer], tmp_path: Path
) -> None:
    store = fresh_orthanc()
    corpus = make_corpus(tmp_path / "c", 150)
    spool = tmp_path / "spool"
    acked: dict[str, int] = {}
    with running_import_adapter(store.dicomweb_url, spool=spool_settings(spool)) as adapter:
        sender = threading.Thread(
            target=send_files, args=(adapter.server.port, [s.path for s in corpus]),
            kwargs={"results": acked},
        )
        sender.start()
        wait_until(lambda: len(acked) >= 30, timeout=30, message="30 acknowledged")
        down_since = time.monotonic()
        store.stop()
        # Keep the store down for 5 s, however long Orthanc took to stop.
        time.sleep(max(0.0, 5.0 - (time.monotonic() - down_since)))
        during_outage = len(acked)
        store.start()
        sender.join(timeout=60)
        assert len(acked) == len(corpus) and set(acked.values()) == {Status.SUCCESS}
        assert during_outage > 30, "C-STOREs are answered while the store is down"
        wait_until(
            lambda: set(acked) <= stored_uids(store), timeout=60, interval=0.5,
            message="every acknowledged instance in Orthanc",
        )
    assert not dead_letter_files(spool) and not queued_files(spool)


def test_4xx_goes_to_dead_letter_and_requeue_delivers_it(
    fresh_orthanc: Callable[..., OrthancServer],
    fault_server: Callable[..., HttpFaultServer],
    tmp_path: Path,
    capsys: object,
) -> None:
    store = fresh_orthanc()
    proxy = fault_server(upstream=store.http_url)
    corpus = make_corpus(tmp_path / "c", 12)
    spool = tmp_path / "spool"
    proxy.fail_next(400, method="POST", path_contains="/studies", body=b"bad instance")
    settings = spool_settings(spool, concurrency=ConcurrencySettings.fixed(1))
    with running_import_adapter(f"{proxy.url}/dicom-web", spool=settings) as adapter:
        acked = send_files(adapter.server.port, [s.path for s in corpus])
        assert set(acked.values()) == {Status.SUCCESS} and len(acked) == len(corpus)
        wait_until(lambda: len(dead_letter_files(spool)) == 1, timeout=20, message="dead letter")
        wait_until(lambda: len(stored_uids(store)) == len(corpus) - 1, timeout=20,
                   message="the rest stored")
        dead = dead_letter_files(spool)[0]
        sidecar = json.loads(dead.with_name(dead.name + ".json").read_text())
        assert sidecar["http_status"] == 400 and "400" in sidecar["reason"]
        assert sidecar["sop_instance_uid"] not in stored_uids(store)
        assert sidecar["calling_aet"] == "PYSCU"
        # The CLI lists it and puts it back; the running adapter picks it up.
        location = ["--persistent_file_storage_location", str(spool)]
        assert run(cli, ["dead-letter", "list", "--json", *location]) == 0
        listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # type: ignore[attr-defined]
        assert [item["sop_instance_uid"] for item in listed] == [sidecar["sop_instance_uid"]]
        assert run(cli, ["dead-letter", "requeue", "--all", *location]) == 0
        wait_until(lambda: len(stored_uids(store)) == len(corpus), timeout=20,
                   message="re-queued instance stored")
    assert not dead_letter_files(spool) and not queued_files(spool)


def test_501_is_dead_lettered_at_once_and_403_keeps_the_instance(
    fault_server: Callable[..., HttpFaultServer], tmp_path: Path
) -> None:
    """The failure table's spool column on the wire: 501 is final (no retries), 401/403 pause
    the destination and keep the entry, which is stored once the store lets us in."""
    sink = fault_server()
    corpus = make_corpus(tmp_path / "c", 2)
    spool = tmp_path / "spool"
    settings = spool_settings(spool, concurrency=ConcurrencySettings.fixed(1))
    with running_import_adapter(f"{sink.url}/dicom-web", spool=settings) as adapter:
        sink.fail_next(501, method="POST", path_contains="/studies", body=b"no STOW here")
        assert send_files(adapter.server.port, [corpus[0].path]) == {
            corpus[0].sop_instance_uid: Status.SUCCESS
        }
        wait_until(lambda: len(dead_letter_files(spool)) == 1, timeout=20, message="dead letter")
        dead = dead_letter_files(spool)[0]
        sidecar = json.loads(dead.with_name(dead.name + ".json").read_text())
        assert sidecar["http_status"] == 501
        assert [r.status for r in sink.requests if r.method == "POST"] == [501]  # no retry
        # Forbidden four times (more than the retries an entry has): kept, then stored.
        sink.fail_next(403, times=4, method="POST", path_contains="/studies")
        assert send_files(adapter.server.port, [corpus[1].path]) == {
            corpus[1].sop_instance_uid: Status.SUCCESS
        }
        wait_until(
            lambda: [r.status for r in sink.requests if r.method == "POST"][1:]
            == [403, 403, 403, 403, 200],
            timeout=20, message="four 403s, then stored",
        )
        wait_until(lambda: not queued_files(spool), timeout=20, message="queue empty")
    assert len(dead_letter_files(spool)) == 1
    stored = [uid for r in sink.requests if r.status == 200 for _, uid in r.sop_instances]
    assert stored == [corpus[1].sop_instance_uid]


def test_conflict_is_dead_lettered_or_overwritten(
    fresh_orthanc: Callable[..., OrthancServer],
    fault_server: Callable[..., HttpFaultServer],
    tmp_path: Path,
) -> None:
    store = fresh_orthanc()
    proxy = fault_server(upstream=store.http_url)
    corpus = make_corpus(tmp_path / "c", 2)
    url = f"{proxy.url}/dicom-web"
    # Without --stow_overwrite: reported in dead-letter, not retried.
    proxy.fail_next(409, method="POST", path_contains="/studies")
    spool = tmp_path / "plain"
    with running_import_adapter(url, spool=spool_settings(spool)) as adapter:
        assert send_files(adapter.server.port, [corpus[0].path]) == {
            corpus[0].sop_instance_uid: Status.SUCCESS
        }
        wait_until(lambda: len(dead_letter_files(spool)) == 1, timeout=10, message="dead letter")
    posts = [r for r in proxy.requests if r.method == "POST"]
    assert len(posts) == 1
    # With it: DELETE the instance, store again.
    proxy.reset()
    proxy.fail_next(409, method="POST", path_contains="/studies")
    proxy.fail_next(204, method="DELETE")
    spool = tmp_path / "overwrite"
    with running_import_adapter(url, spool=spool_settings(spool, overwrite=True)) as adapter:
        send_files(adapter.server.port, [corpus[1].path])
        wait_until(lambda: corpus[1].sop_instance_uid in stored_uids(store), timeout=10,
                   message="overwritten instance stored")
    methods = [(r.method, r.status) for r in proxy.requests]
    assert methods == [("POST", 409), ("DELETE", 204), ("POST", 200)]
    delete = proxy.requests[1]
    assert delete.path.endswith(
        f"/studies/{corpus[1].study_uid}/series/{corpus[1].series_uid}"
        f"/instances/{corpus[1].sop_instance_uid}"
    )
    assert not dead_letter_files(spool)


def test_spool_full_refuses_with_out_of_resources_then_recovers(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "c", 12, kinds=("CT",))  # all the same size
    sink = HttpFaultServer()  # not started yet: connections are refused
    spool = tmp_path / "spool"
    size = corpus[0].path.stat().st_size
    settings = spool_settings(spool)
    settings = type(settings)(
        directory=spool, auto_ack=True,
        limits=type(settings.limits)(max_bytes=int(size * 4.5), min_free_bytes=0),
        upload=settings.upload,
    )
    try:
        with running_import_adapter(f"{sink.url}/dicom-web", spool=settings) as adapter:
            statuses = send_files(adapter.server.port, [s.path for s in corpus[:8]])
            codes = [statuses[s.sop_instance_uid] for s in corpus[:8]]
            assert codes[:5] == [Status.SUCCESS] * 5
            assert codes[5:] == [Status.OUT_OF_RESOURCES] * 3
            sink.start()  # the destination comes back: the queue drains
            wait_until(lambda: not queued_files(spool), timeout=20, message="spool drained")
            statuses = send_files(adapter.server.port, [s.path for s in corpus[8:]])
            assert set(statuses.values()) == {Status.SUCCESS}
            wait_until(lambda: len(sink.stored_instances) == 9, timeout=10,
                       message="all accepted instances stored")
    finally:
        sink.stop()


def test_synchronous_mode_answers_after_upload_through_the_spool(
    fresh_orthanc: Callable[..., OrthancServer],
    fault_server: Callable[..., HttpFaultServer],
    tmp_path: Path,
) -> None:
    store = fresh_orthanc()
    proxy = fault_server(upstream=store.http_url)
    corpus = make_corpus(tmp_path / "c", 4)
    spool = tmp_path / "spool"
    proxy.fail_next(503, method="POST")  # retried
    settings = spool_settings(spool, auto_ack=False, concurrency=ConcurrencySettings.fixed(1))
    with running_import_adapter(f"{proxy.url}/dicom-web", spool=settings) as adapter:
        statuses = send_files(adapter.server.port, [s.path for s in corpus[:2]])
        assert set(statuses.values()) == {Status.SUCCESS}
        assert {s.sop_instance_uid for s in corpus[:2]} <= stored_uids(store)
        proxy.fail_next(400, method="POST")  # not retried: the SCU is told
        statuses = send_files(adapter.server.port, [corpus[2].path])
        assert statuses == {corpus[2].sop_instance_uid: Status.CANNOT_UNDERSTAND}
    assert not dead_letter_files(spool) and not queued_files(spool)
