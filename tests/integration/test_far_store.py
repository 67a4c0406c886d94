"""The import adapter against a far or throttling store, across the real wire.

Orthanc is the store; a fault proxy in front of it answers 429 with Retry-After, as the Cloud
Healthcare API does past a quota. pynetdicom is the SCU and records what was acknowledged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from common.status import Status
from tests.integration.spool_support import (
    dead_letter_files,
    queued_files,
    send_files,
    spool_settings,
    stored_uids,
)
from tests.support.adapters import running_import_adapter
from tests.support.http_fault_server import HttpFaultServer
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
