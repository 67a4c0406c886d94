"""The import adapter against a far or throttling store, across the real wire.

Orthanc is the store, made far away by the latency proxy (and reached over HTTPS through a TLS
front, as a cloud store is), or behind a fault proxy that answers 429 with Retry-After, as the
Cloud Healthcare API does past a quota. pynetdicom is the SCU and records what was
acknowledged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from common.http import HttpSettings
from common.status import Status
from tests.integration.spool_support import (
    dead_letter_files,
    queued_files,
    send_files,
    spool_settings,
    stored_uids,
)
from tests.support.adapters import IMPORT_AET, running_import_adapter
from tests.support.dcmtk import dcmsend, dcmsend_summary
from tests.support.http_fault_server import HttpFaultServer
from tests.support.latency_proxy import far_store
from tests.support.orthanc import OrthancServer
from tests.support.ports import wait_until
from tests.support.samples import make_corpus


def _stows(proxy: HttpFaultServer) -> list[float]:
    return [r.at for r in proxy.requests if r.method == "POST"]


def test_429_with_retry_after_pauses_the_whole_destination(
    fresh_orthanc: Callable[..., OrthancServer],
    fault_server: Callable[..., HttpFaultServer],
    tmp_path: Path,
) -> None:
    store = fresh_orthanc()
    proxy = fault_server(upstream=store.http_url)
    corpus = make_corpus(tmp_path / "c", 60)
    spool = tmp_path / "spool"
    acked: dict[str, int] = {}
    with running_import_adapter(
        f"{proxy.url}/dicom-web", spool=spool_settings(spool, min_delay=0.05, max_delay=0.2)
    ) as adapter:
        assert adapter.spooling is not None
        queue = adapter.spooling.manager.queue(adapter.spooling.router.destinations[0].key)
        send_files(adapter.server.port, [s.path for s in corpus[:20]], results=acked)
        wait_until(lambda: len(stored_uids(store)) == 20, timeout=30, message="20 stored")
        before = queue.concurrency
        proxy.fail_next(429, retry_after=2, method="POST",
                        body=b'{"error": "Quota exceeded"}', content_type="application/json")
        send_files(adapter.server.port, [s.path for s in corpus[20:]], results=acked)
        wait_until(lambda: len(stored_uids(store)) == len(corpus), timeout=60,
                   message="every instance stored after the pause")
        assert queue.concurrency >= 1
    assert len(acked) == len(corpus) and set(acked.values()) == {Status.SUCCESS}
    refused = next(r for r in proxy.requests if r.status == 429)
    # Uploads in flight when the 429 came back could finish, but none started during the
    # 2 s the store asked for; the refused instance was stored afterwards, nothing was lost.
    during = [at for at in _stows(proxy) if refused.at + 0.3 < at < refused.at + 1.9]
    assert not during, f"{len(during)} STOW-RS sent during the pause"
    assert before >= 1
    assert not dead_letter_files(spool) and not queued_files(spool)


def test_uploads_to_a_throttling_store_lose_nothing_acknowledged(
    fresh_orthanc: Callable[..., OrthancServer],
    fault_server: Callable[..., HttpFaultServer],
    tmp_path: Path,
) -> None:
    store = fresh_orthanc()
    proxy = fault_server(upstream=store.http_url)
    corpus = make_corpus(tmp_path / "c", 200)
    spool = tmp_path / "spool"
    acked: dict[str, int] = {}
    # Every fifth STOW-RS refused: 503 without Retry-After, then 429 with it, then a reset.
    for _ in range(8):
        proxy.fail_next(503, method="POST")
        proxy.fail_next(429, retry_after=0.2, method="POST")
        proxy.drop_next(method="POST")
    with running_import_adapter(
        f"{proxy.url}/dicom-web", spool=spool_settings(spool, min_delay=0.02, max_delay=0.2)
    ) as adapter:
        senders = [
            threading.Thread(
                target=send_files, args=(adapter.server.port, [s.path for s in part]),
                kwargs={"results": acked, "calling_aet": f"SCU{n}"},
            )
            for n, part in enumerate((corpus[:100], corpus[100:]))
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(timeout=60)
        wait_until(lambda: set(acked) <= stored_uids(store), timeout=60, interval=0.5,
                   message="every acknowledged instance in Orthanc")
    assert len(acked) == len(corpus) and set(acked.values()) == {Status.SUCCESS}
    assert proxy.pending_faults == 0
    assert not dead_letter_files(spool) and not queued_files(spool)


def test_auto_ack_uploads_to_a_far_store_overlap(
    fresh_orthanc: Callable[..., OrthancServer], tmp_path: Path
) -> None:
    store = fresh_orthanc()
    corpus = make_corpus(tmp_path / "c", 300)
    spool = tmp_path / "spool"
    with far_store(store.http_port, one_way_ms=25, tls=True, workdir=tmp_path) as far:
        http = HttpSettings(ca_bundle=str(far.ca_bundle))
        with running_import_adapter(
            far.url("/dicom-web"), http=http, spool=spool_settings(spool)
        ) as adapter:
            assert adapter.spooling is not None
            queue = adapter.spooling.manager.queue(adapter.spooling.router.destinations[0].key)
            initial = queue.concurrency
            # dcmsend (DCMTK) answers at its own pace, faster than uploads 50 ms away.
            result = dcmsend(
                "127.0.0.1", adapter.server.port, [s.path for s in corpus], IMPORT_AET
            )
            assert result.returncode == 0, dcmsend_summary(result)
            assert dcmsend_summary(result).get("with status SUCCESS") == len(corpus)
            wait_until(lambda: len(stored_uids(store)) == len(corpus), timeout=60,
                       interval=0.5, message="every acknowledged instance in Orthanc")
            grown = max(initial, queue.concurrency)
        stats = far.proxy.stats()
    # More uploads overlapped than the adapter started with (and than the old fixed 4).
    assert initial == 4
    assert stats.peak_in_flight > 8, stats
    assert grown >= 4
    # Connections were kept: a handful of TLS handshakes, not one per instance.
    assert stats.connections <= stats.peak_in_flight + 8, stats
    assert not dead_letter_files(spool) and not queued_files(spool)


def test_synchronous_c_store_to_a_far_store_is_one_round_trip_on_one_connection(
    fresh_orthanc: Callable[..., OrthancServer], tmp_path: Path
) -> None:
    store = fresh_orthanc()
    corpus = make_corpus(tmp_path / "c", 20)
    acked: dict[str, int] = {}
    with far_store(store.http_port, one_way_ms=25, tls=True, workdir=tmp_path) as far:
        with running_import_adapter(
            far.url("/dicom-web"), http=replace(HttpSettings(), ca_bundle=str(far.ca_bundle))
        ) as adapter:
            send_files(adapter.server.port, [s.path for s in corpus], results=acked)
        stats = far.proxy.stats()
    assert len(acked) == len(corpus) and set(acked.values()) == {Status.SUCCESS}
    assert stored_uids(store) == set(acked)
    # One kept-alive connection and one TLS handshake for the whole association; each C-STORE
    # was one exchange (no Expect: 100-continue, no second request per instance).
    assert stats.connections == 1, stats
    assert stats.peak_in_flight == 1, stats
