"""``dicom-adapter spool drain``: the adapter's upload path, once, for a spool without its pod."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from common.cli.main import cli, run
from common.dicomweb.address import parse_dicomweb_address
from common.status import DimseStatus, Status
from import_adapter.routing.destinations import DicomwebDestination
from import_adapter.spool.disk import SpoolLimits
from import_adapter.spool.manager import SpoolManager, SpoolSettings
from import_adapter.spool.outcome import Kind, UploadResult
from import_adapter.spool.queue import UploadSettings
from import_adapter.store import check_instance
from tests.import_adapter.spool.test_spool import received
from tests.support.http_fault_server import HttpFaultServer


class Refusing:
    """An uploader for a store that cannot be reached."""

    def upload(self, path: Path, *, maybe_stored: bool = False) -> UploadResult:
        return UploadResult(Kind.UNREACHABLE, DimseStatus(Status.PROCESSING_FAILURE), "down")

    def upload_batch(self, paths: Sequence[Path]) -> list[UploadResult | None]:
        return [self.upload(path) for path in paths]

    def close(self) -> None:
        pass


@pytest.fixture
def store() -> Iterator[HttpFaultServer]:
    with HttpFaultServer() as server:  # a STOW-RS sink
        yield server


def _left_behind(spool: Path, destination: DicomwebDestination, count: int) -> list[str]:
    """A spool as an adapter leaves it when its store was down: ``count`` queued instances."""
    settings = SpoolSettings(spool, auto_ack=True, limits=SpoolLimits(min_free_bytes=0),
                             upload=UploadSettings(min_delay=0.01, max_delay=0.05))
    manager = SpoolManager(settings, [destination], lambda _d: Refusing)
    manager.start()
    uids = []
    for _ in range(count):
        request = received(manager.layout.incoming)
        manager.submit(check_instance(request), request.origin, [destination], None)
        uids.append(request.sop_instance_uid)
    assert manager.stop() == {str(destination): count}
    return uids


def test_drain_uploads_what_was_left_and_exits_0(
    store: HttpFaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    destination = DicomwebDestination(parse_dicomweb_address(f"{store.url}/dicom-web"))
    spool = tmp_path / "spool"
    uids = _left_behind(spool, destination, 4)
    # No --dicomweb_address: the queue folder names its destination.
    code = run(cli, ["spool", "drain", "--persistent_file_storage_location", str(spool),
                     "--auth", "none", "--timeout", "20"])
    assert code == 0
    assert sorted(uid for _, uid in store.stored_instances) == sorted(uids)
    assert not list((spool / "queues").rglob("*.dcm"))
    assert "spool drain: nothing left to upload" in capsys.readouterr().err


def test_drain_exits_1_with_a_summary_when_the_store_stays_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    down = HttpFaultServer()  # never started: connections are refused
    destination = DicomwebDestination(parse_dicomweb_address(f"{down.url}/dicom-web"))
    spool = tmp_path / "spool"
    _left_behind(spool, destination, 2)
    code = run(cli, ["spool", "drain", "--persistent_file_storage_location", str(spool),
                     "--dicomweb_address", f"{down.url}/dicom-web", "--auth", "none",
                     "--timeout", "0.5", "--min_upload_delay", "10"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"spool drain: 2 uploads left in {spool} after 0.5 s ({destination}: 2)" in err
    assert len(list((spool / "queues").rglob("*.dcm"))) == 2  # still there


def test_drain_refuses_a_spool_an_adapter_serves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    destination = DicomwebDestination(parse_dicomweb_address("http://127.0.0.1:9/dicom-web"))
    settings = SpoolSettings(tmp_path / "spool", auto_ack=True,
                             limits=SpoolLimits(min_free_bytes=0))
    running = SpoolManager(settings, [destination], lambda _d: Refusing)
    running.start()
    try:
        code = run(cli, ["spool", "drain", "--persistent_file_storage_location",
                         str(tmp_path / "spool"), "--auth", "none"])
    finally:
        running.stop()
    assert code == 2
    assert "is in use by another process" in capsys.readouterr().err
    assert run(cli, ["spool", "drain", "--persistent_file_storage_location",
                     str(tmp_path / "nowhere")]) == 2
