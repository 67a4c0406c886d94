"""A STOW-RS whose answer is lost and that is then answered 409 is Success, across the wire.

DCMTK dcmsend is the SCU, Orthanc the store, the HTTP fault proxy in front of it forwards one
STOW-RS to Orthanc (which stores the instance) and then resets the connection instead of
relaying Orthanc's answer; the adapter sends the request again and the proxy answers that
409, as the Cloud Healthcare API does for an instance it has (Orthanc itself answers a
duplicate STOW-RS with 200). The adapter looks the instance up with QIDO-RS, finds it, and
answers Success; Orthanc holds it once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from common.status import Status
from tests.integration.spool_support import (
    dead_letter_files,
    queued_files,
    send_files,
    spool_settings,
)
from tests.support import dcmtk
from tests.support.adapters import IMPORT_AET, AdapterProcess, running_import_adapter
from tests.support.http_fault_server import HttpFaultServer
from tests.support.orthanc import OrthancServer
from tests.support.ports import wait_until
from tests.support.samples import make_corpus


def _script_lost_answer_then_conflict(proxy: HttpFaultServer) -> None:
    proxy.lose_answer_next(method="POST", path_contains="/studies")
    proxy.fail_next(
        409, method="POST", path_contains="/studies",
        body=b'{"error": "instance already exists"}', content_type="application/json",
    )


def test_a_lost_answer_then_409_is_success_and_stored_once(
    orthanc: OrthancServer, fault_server: Callable[..., HttpFaultServer], tmp_path: Path
) -> None:
    proxy = fault_server(upstream=orthanc.http_url)
    warm_up, sample = make_corpus(tmp_path / "c", 2, kinds=("CT",))
    with running_import_adapter(f"{proxy.url}/dicom-web") as running:
        port = running.server.port
        # A first store leaves a kept-alive connection to the proxy: the one the STOW-RS whose
        # answer is lost goes out on, so the transport itself sends it again.
        warm = dcmtk.dcmsend("127.0.0.1", port, [warm_up.path], IMPORT_AET)
        assert warm.returncode == 0, warm.stdout + warm.stderr
        _script_lost_answer_then_conflict(proxy)
        result = dcmtk.dcmsend("127.0.0.1", port, [sample.path], IMPORT_AET)
        assert result.returncode == 0, result.stdout + result.stderr
        assert dcmtk.dcmsend_summary(result).get("with status SUCCESS") == 1
    posts = [r for r in proxy.requests if r.method == "POST"]
    assert [(r.status, r.upstream_status) for r in posts] == [(200, None), (None, 200), (409, None)]
    searches = [r for r in proxy.requests if r.method == "GET"]
    assert len(searches) == 1 and searches[0].status == 200
    target = urlsplit(searches[0].path)
    assert target.path == "/dicom-web/instances"
    assert parse_qs(target.query)["SOPInstanceUID"] == [sample.sop_instance_uid]
    assert len(orthanc.qido("/instances", {"SOPInstanceUID": sample.sop_instance_uid})) == 1


def test_through_the_spool_a_lost_answer_then_409_is_not_dead_lettered(
    orthanc: OrthancServer, fault_server: Callable[..., HttpFaultServer], tmp_path: Path
) -> None:
    proxy = fault_server(upstream=orthanc.http_url)
    sample, = make_corpus(tmp_path / "c", 1, kinds=("CT",))
    spool = tmp_path / "spool"
    _script_lost_answer_then_conflict(proxy)
    with running_import_adapter(f"{proxy.url}/dicom-web", spool=spool_settings(spool)) as running:
        statuses = send_files(running.server.port, [sample.path])
        assert statuses == {sample.sop_instance_uid: Status.SUCCESS}
        wait_until(lambda: not queued_files(spool), timeout=20, message="spool drained")
    assert not dead_letter_files(spool)
    posts = [r for r in proxy.requests if r.method == "POST"]
    assert [(r.status, r.upstream_status) for r in posts] == [(None, 200), (409, None)]
    assert len(orthanc.qido("/instances", {"SOPInstanceUID": sample.sop_instance_uid})) == 1


def test_a_replica_killed_after_the_store_took_an_upload_does_not_dead_letter_it_on_restart(
    orthanc: OrthancServer, fault_server: Callable[..., HttpFaultServer], tmp_path: Path
) -> None:
    """The process dies between the store storing an instance and the answer reaching it.

    The next process finds the file in its spool and sends it again; the store answers 409 (as
    the Cloud Healthcare API does for an instance it has). That process never saw the first
    upload, but a file found in the spool at start may have been under way: the 409 is looked
    up, the instance is found, and it is not dead-lettered.
    """
    proxy = fault_server(upstream=orthanc.http_url)
    sample, = make_corpus(tmp_path / "c", 1, kinds=("CT",))
    spool = tmp_path / "spool"
    args = [
        "--dicomweb_address", f"{proxy.url}/dicom-web",
        "--persistent_file_storage_location", str(spool),
        "--auto_ack_cstore", "--spool_min_free_disk_mb", "0",
        "--min_upload_delay", "30000", "--max_waiting_time_between_uploads", "30000",
    ]  # fmt: skip
    # Every STOW-RS reaches Orthanc, and every answer is lost: the first process keeps the file.
    proxy.lose_answer_next(1000, method="POST", path_contains="/studies")
    with AdapterProcess(args, log_path=tmp_path / "first.log") as first:
        result = dcmtk.dcmsend("127.0.0.1", first.port, [sample.path], IMPORT_AET)
        assert result.returncode == 0, result.stdout + result.stderr
        wait_until(
            lambda: any(r.upstream_status == 200 for r in proxy.requests),
            timeout=20, message="the store took the upload",
        )  # fmt: skip
        first.kill()  # SIGKILL: no drain, no goodbye
    assert [p.name for p in queued_files(spool)], "the killed process left its file queued"
    assert len(orthanc.qido("/instances", {"SOPInstanceUID": sample.sop_instance_uid})) == 1
    proxy.clear_faults()
    proxy.fail_next(
        409, 5, method="POST", path_contains="/studies",
        body=b'{"error": "instance already exists"}', content_type="application/json",
    )  # fmt: skip
    seen = len(proxy.requests)
    with AdapterProcess(args, log_path=tmp_path / "second.log") as second:
        wait_until(lambda: not queued_files(spool), timeout=20, message="spool drained")
        log = second.log()
    assert not dead_letter_files(spool), log
    after = proxy.requests[seen:]
    assert [(r.method, r.status) for r in after][:2] == [("POST", 409), ("GET", 200)]
    assert len(orthanc.qido("/instances", {"SOPInstanceUID": sample.sop_instance_uid})) == 1
