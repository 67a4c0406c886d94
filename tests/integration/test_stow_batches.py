"""Batched STOW-RS from the spool, across the real wire: per-instance outcomes kept.

The import adapter (auto-ack spool, one upload at a time so that a backlog builds up) stores
into Orthanc through a proxy that refuses one chosen instance inside a STOW-RS request (202
with that instance in FailedSOPSequence, the others stored), as a store refusing one instance
of a batch does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from common.status import Status
from import_adapter.spool.concurrency import ConcurrencySettings
from import_adapter.spool.queue import BatchSettings
from tests.integration.spool_support import (
    dead_letter_files,
    queued_files,
    send_files,
    spool_settings,
    stored_uids,
)
from tests.support.adapters import running_import_adapter
from tests.support.orthanc import OrthancServer
from tests.support.ports import wait_until
from tests.support.refusing_stow_proxy import RefusingStowProxy
from tests.support.samples import make_corpus


def test_one_refused_instance_in_a_batch_of_ten_is_dead_lettered_alone(
    fresh_orthanc: Callable[..., OrthancServer], tmp_path: Path
) -> None:
    store = fresh_orthanc()
    corpus = make_corpus(tmp_path / "c", 11, studies=1)
    refused = corpus[5].sop_instance_uid
    spool = tmp_path / "spool"
    settings = spool_settings(
        spool, concurrency=ConcurrencySettings.fixed(1), batch=BatchSettings(max_instances=10)
    )
    acked: dict[str, int] = {}
    with (
        RefusingStowProxy(store.http_url) as proxy,
        running_import_adapter(f"{proxy.url}/dicom-web", spool=settings) as adapter,
    ):
        proxy.refuse.add(refused)
        proxy.open.clear()  # the first upload waits: the other ten queue up behind it
        send_files(adapter.server.port, [s.path for s in corpus], results=acked)
        proxy.open.set()
        wait_until(
            lambda: not queued_files(spool) and len(dead_letter_files(spool)) == 1,
            timeout=30, message="every instance settled",
        )  # fmt: skip
    assert len(acked) == 11 and set(acked.values()) == {Status.SUCCESS}
    everyone = {s.sop_instance_uid for s in corpus}
    assert stored_uids(store) == everyone - {refused}
    # One request held, the ten behind it in one request, then the refused one alone.
    assert [len(request) for request in proxy.stow_requests] == [1, 10, 1]
    assert refused in proxy.stow_requests[1] and proxy.stow_requests[2] == [refused]
    (dead,) = dead_letter_files(spool)
    sidecars = [path.read_text() for path in dead.parent.glob(f"{dead.name}*.json")]
    assert len(sidecars) == 1 and refused in sidecars[0] and "0xC000" in sidecars[0]
