"""The spool without a network: commit protocol, recovery, dead letters, queue policy, flags."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import import_adapter.app
from common.cli.main import cli, run
from common.dicom.part10 import dataset_offset, meta_end
from common.dicomweb.address import parse_dicomweb_address
from common.errors import (
    DicomwebConnectionError,
    DicomwebHttpError,
    RoutingError,
    SpoolFullError,
)
from common.sinks import Origin
from common.status import PROCESSING_FAILURE_ATTEMPTS, SUCCESS, DimseStatus, Status
from import_adapter.config import ImportConfig
from import_adapter.routing.destinations import DicomwebDestination
from import_adapter.spool.concurrency import ConcurrencySettings
from import_adapter.spool.disk import DurableSpool, SpoolLimits
from import_adapter.spool.layout import SpoolLayout, entry_calling_aet, new_entry_name
from import_adapter.spool.manager import SpoolManager, SpoolSettings
from import_adapter.spool.outcome import Kind, UploadResult, result_for_error, result_for_status
from import_adapter.spool.queue import BatchSettings, Receipt, UploadSettings
from import_adapter.store import StoreRequest, check_instance

DEST_A = DicomwebDestination(parse_dicomweb_address("http://a.example/dicom-web"))
DEST_B = DicomwebDestination(parse_dicomweb_address("http://b.example/dicom-web"))


def received(
    folder: Path, sop_instance_uid: str | None = None, series: str = "", study: str = ""
) -> StoreRequest:
    """A file as the receiver leaves it in incoming/, and its request."""
    ds = Dataset()
    if study:
        ds.StudyInstanceUID = study
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.file_meta = Dataset()  # type: ignore[assignment]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"tmp{generate_uid()[-8:]}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return StoreRequest("SCU1", "IMPORTADAPTER", 1, ds.SOPClassUID, ds.SOPInstanceUID,
                        ExplicitVRLittleEndian, path)


def spool_at(root: Path, **limits: int) -> DurableSpool:
    spool = DurableSpool(SpoolLayout(root), SpoolLimits(min_free_bytes=0, **limits))
    spool.recover()
    for dest in (DEST_A, DEST_B):
        spool.ensure_queue(dest.key, dest.describe())
    return spool


def test_names_are_unique_ordered_and_carry_the_calling_ae() -> None:
    names = [new_entry_name("CT 1") for _ in range(1000)]
    assert len(set(names)) == 1000 and names == sorted(names)
    assert entry_calling_aet(names[0]) == "CT 1"


def test_commit_one_destination_renames_the_received_file(tmp_path: Path) -> None:
    spool = spool_at(tmp_path / "s")
    request = received(spool.layout.incoming)
    name = spool.commit(check_instance(request), request.origin, [DEST_A.key])
    assert not request.spool_path.exists()
    assert (spool.layout.queue(DEST_A.key) / name).is_file()
    assert spool.queued_bytes > 0
    spool.remove(DEST_A.key, name)
    assert spool.queued_bytes == 0


@pytest.mark.parametrize("destinations", [1, 2])
def test_commit_writes_an_instance_received_into_memory(tmp_path: Path, destinations: int) -> None:
    """Our DIMSE engine keeps a small instance in memory only: the spool writes it itself."""
    spool = spool_at(tmp_path / "s")
    on_disk = received(spool.layout.incoming)
    content = on_disk.spool_path.read_bytes()
    on_disk.spool_path.unlink()
    request = replace(on_disk, content=content)
    keys = [DEST_A.key, DEST_B.key][:destinations]
    name = spool.commit(check_instance(request), request.origin, keys)
    dataset = content[meta_end(content[:144]) :]
    for key in keys:
        queued = spool.layout.queue(key) / name
        assert queued.read_bytes()[dataset_offset(queued) :] == dataset
    assert not request.spool_path.exists()
    assert not any(spool.layout.staging.iterdir())


def test_same_sop_instance_uid_in_two_series_does_not_collide(tmp_path: Path) -> None:
    spool = spool_at(tmp_path / "s")
    uid = generate_uid()
    names = set()
    for series in (generate_uid(), generate_uid()):
        request = received(spool.layout.incoming, uid, series)
        names.add(spool.commit(check_instance(request), request.origin, [DEST_A.key]))
    for name in names:
        spool.queued(name)
    assert len(names) == 2 and len(spool.scan(DEST_A.key)) == 2


def test_commit_several_destinations_links_one_file(tmp_path: Path) -> None:
    spool = spool_at(tmp_path / "s")
    request = received(spool.layout.incoming)
    name = spool.commit(check_instance(request), request.origin, [DEST_A.key, DEST_B.key])
    a, b = (spool.layout.queue(d.key) / name for d in (DEST_A, DEST_B))
    assert a.stat().st_ino == b.stat().st_ino and a.stat().st_nlink == 2
    assert not any(spool.layout.staging.iterdir())
    size = a.stat().st_size
    spool.remove(DEST_A.key, name)
    assert spool.queued_bytes == size  # counted once, freed with the last link
    spool.remove(DEST_B.key, name)
    assert spool.queued_bytes == 0


def test_instance_without_a_file_to_take_over_is_copied_with_its_own_meta(
    tmp_path: Path,
) -> None:
    spool = spool_at(tmp_path / "s")
    other = received(tmp_path / "elsewhere")
    instance = check_instance(other)
    name = spool.commit(instance, Origin("SCU1"), [DEST_A.key])
    assert other.spool_path.exists()  # not taken from its owner
    copy = spool.layout.queue(DEST_A.key) / name
    assert copy.read_bytes()[: len(instance.meta)] == instance.meta


def test_instance_without_a_file_is_written_once_for_several_queues(tmp_path: Path) -> None:
    spool = spool_at(tmp_path / "s")
    instance = check_instance(received(tmp_path / "elsewhere"))
    name = spool.commit(instance, Origin("SCU1"), [DEST_A.key, DEST_B.key])
    whole = b"".join(instance.iter_chunks())
    first, second = (spool.layout.queue(key) / name for key in (DEST_A.key, DEST_B.key))
    assert first.read_bytes() == whole and first.samefile(second)
    assert list(spool.layout.staging.iterdir()) == []  # committed
    assert spool.queued_bytes == len(whole)


def test_no_destination_is_refused(tmp_path: Path) -> None:
    spool = spool_at(tmp_path / "s")
    request = received(spool.layout.incoming)
    with pytest.raises(RoutingError):
        spool.commit(check_instance(request), request.origin, [])


def test_recovery_discards_incomplete_receipts_all_or_nothing(tmp_path: Path) -> None:
    spool = spool_at(tmp_path / "s")
    done = received(spool.layout.incoming)
    kept = spool.commit(check_instance(done), done.origin, [DEST_A.key, DEST_B.key])
    # A receipt interrupted after linking into one queue: still in staging.
    half = received(spool.layout.incoming)
    staged = spool.layout.staging / new_entry_name("SCU1")
    half.spool_path.rename(staged)
    (spool.layout.queue(DEST_A.key) / staged.name).hardlink_to(staged)
    leftover = received(spool.layout.incoming)  # a receipt pynetdicom was still writing
    again = DurableSpool(spool.layout, SpoolLimits(min_free_bytes=0))
    queues = {q.key: q.names for q in again.recover()}
    assert queues == {DEST_A.key: (kept,), DEST_B.key: (kept,)}
    assert not leftover.spool_path.exists() and not staged.exists()
    assert again.queued_bytes == (spool.layout.queue(DEST_A.key) / kept).stat().st_size


def test_admission_control(tmp_path: Path) -> None:
    spool = spool_at(tmp_path / "s", max_bytes=1)
    spool.admit()
    request = received(spool.layout.incoming)
    spool.commit(check_instance(request), request.origin, [DEST_A.key])
    with pytest.raises(SpoolFullError):
        spool.admit()
    floor = DurableSpool(SpoolLayout(tmp_path / "s"), SpoolLimits(min_free_bytes=1 << 62))
    with pytest.raises(SpoolFullError, match="free"):
        floor.admit()


def test_outcome_classification() -> None:
    codes = frozenset({409})
    assert result_for_error(DicomwebHttpError(503), frozenset()).kind is Kind.RETRY
    assert result_for_error(DicomwebHttpError(429), frozenset()).kind is Kind.RETRY
    assert result_for_error(DicomwebHttpError(400), frozenset()).kind is Kind.DEAD
    assert result_for_error(DicomwebHttpError(409), codes).kind is Kind.RETRY
    assert result_for_error(DicomwebConnectionError("refused"), frozenset()).kind is (
        Kind.UNREACHABLE
    )


class ScriptedUploader:
    """Answers uploads from a script (shared by workers), recording the order of attempts."""

    def __init__(self, script: list[UploadResult], seen: list[str]) -> None:
        self.script = script
        self.seen = seen
        self.maybe_stored: list[bool] = []
        self.lock = threading.Lock()

    def upload(self, path: Path, *, maybe_stored: bool = False) -> UploadResult:
        with self.lock:
            self.seen.append(path.name)
            self.maybe_stored.append(maybe_stored)
            return self.script.pop(0) if self.script else UploadResult(Kind.DONE, SUCCESS)

    def upload_batch(self, paths: Sequence[Path]) -> list[UploadResult | None]:
        """Batches are off in these tests; were one sent, each file is answered in turn."""
        return [self.upload(path) for path in paths]

    def close(self) -> None:
        pass


def _manager(
    root: Path,
    script: list[UploadResult],
    seen: list[str],
    uploader: ScriptedUploader | None = None,
    **upload: object,
) -> SpoolManager:
    settings = SpoolSettings(
        root, auto_ack=True, limits=SpoolLimits(min_free_bytes=0),
        upload=UploadSettings(
            min_delay=0.01, max_delay=0.05, concurrency=ConcurrencySettings.fixed(1),
            rescan_interval=0.05, **{"batch": BatchSettings.off(), **upload},  # type: ignore[arg-type]
        ),
    )
    scripted = uploader if uploader is not None else ScriptedUploader(script, seen)
    return SpoolManager(settings, [DEST_A], lambda _d: lambda: scripted)


def _submit(manager: SpoolManager, receipt: Receipt | None = None) -> StoreRequest:
    request = received(manager.layout.incoming)
    manager.submit(check_instance(request), request.origin, [DEST_A], receipt)
    return request


def _drained(manager: SpoolManager) -> None:
    deadline = time.monotonic() + 5
    while manager.queue(DEST_A.key).depth and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_file_found_at_start_is_uploaded_as_maybe_stored(tmp_path: Path) -> None:
    """Its upload may have been under way when the last process stopped (see StowUploader)."""
    refused = UploadResult(Kind.UNREACHABLE, DimseStatus(Status.PROCESSING_FAILURE), "refused")
    first = ScriptedUploader([refused] * 1000, [])
    manager = _manager(tmp_path / "s", [], [], first)
    manager.start()
    try:
        _submit(manager)
        deadline = time.monotonic() + 5
        while not first.maybe_stored and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        manager.stop()
    assert first.maybe_stored and not any(first.maybe_stored)  # received by this process
    second = ScriptedUploader([], [])
    manager = _manager(tmp_path / "s", [], [], second)
    manager.start()
    try:
        _drained(manager)
    finally:
        manager.stop()
    assert second.maybe_stored == [True]


def test_unreachable_does_not_use_up_retries_and_order_is_kept(tmp_path: Path) -> None:
    refused = UploadResult(Kind.UNREACHABLE, DimseStatus(Status.PROCESSING_FAILURE), "refused")
    seen: list[str] = []
    manager = _manager(tmp_path / "s", [refused] * 10, seen, retry_amount=0)
    manager.start()
    try:
        first, second = _submit(manager), _submit(manager)
        _drained(manager)
        assert not manager.is_pending(first.sop_instance_uid)
        assert not manager.is_pending(second.sop_instance_uid)
    finally:
        manager.stop()
    assert not list(manager.layout.dead_letter.rglob("*.dcm"))
    # The oldest entry is retried until the destination answers; then the next one.
    assert len(set(seen[:11])) == 1 and seen[-1] != seen[0]


def test_refused_credentials_answer_a_waiting_scu_at_once_and_keep_the_others(
    tmp_path: Path,
) -> None:
    denied = result_for_error(DicomwebHttpError(403), frozenset())  # as the table says
    assert denied.kind is Kind.UNREACHABLE and denied.answer_waiting_scu
    seen: list[str] = []
    manager = _manager(tmp_path / "s", [denied] * 2, seen)
    manager.start()
    try:
        receipt = Receipt(1)
        started = time.monotonic()
        waiting = _submit(manager, receipt)
        status = receipt.wait(5)
        waited = time.monotonic() - started
        queued = _submit(manager)  # nobody waits for it: kept until the store lets it in
        _drained(manager)
    finally:
        manager.stop()
    # The SCU got 0x0124 from the first answer, not at the end of its wait; its instance is
    # withdrawn (the SCU owns it again), the other one was stored after the refusals.
    assert status is not None and status.code == Status.NOT_AUTHORIZED and waited < 2
    assert not manager.is_pending(waiting.sop_instance_uid)
    assert not manager.is_pending(queued.sop_instance_uid)
    assert not list(manager.layout.dead_letter.rglob("*.dcm"))
    assert len(seen) == 3


def test_processing_failure_is_tried_the_rows_attempts_then_dead_lettered(
    tmp_path: Path,
) -> None:
    """A peer's 0x0110 gets PROCESSING_FAILURE_ATTEMPTS tries in all, fewer than the flag."""
    failing = result_for_status(DimseStatus(Status.PROCESSING_FAILURE))
    seen: list[str] = []
    manager = _manager(tmp_path / "s", [failing] * 10, seen, retry_amount=5)
    manager.start()
    try:
        _submit(manager)
        _drained(manager)
    finally:
        manager.stop()
    dead = list(manager.layout.dead_letter.rglob("*.dcm"))
    assert len(dead) == 1 and len(seen) == PROCESSING_FAILURE_ATTEMPTS < 5 + 1
    sidecar = json.loads(dead[0].with_name(dead[0].name + ".json").read_text())
    assert sidecar["attempts"] == PROCESSING_FAILURE_ATTEMPTS
    assert sidecar["dimse_status"] == f"0x{Status.PROCESSING_FAILURE:04X}"


def test_retries_exhausted_goes_to_dead_letter_then_requeue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    failing = UploadResult(Kind.RETRY, DimseStatus(Status.PROCESSING_FAILURE), "HTTP 500",
                           http_status=500)
    seen: list[str] = []
    manager = _manager(tmp_path / "s", [failing] * 3, seen, retry_amount=2)
    manager.start()
    try:
        request = _submit(manager)
        _drained(manager)
        dead = list(manager.layout.dead_letter.rglob("*.dcm"))
        assert len(dead) == 1 and len(seen) == 3
        sidecar = json.loads(dead[0].with_name(dead[0].name + ".json").read_text())
        assert sidecar["reason"].startswith("retries exhausted (2)")
        assert sidecar["sop_instance_uid"] == request.sop_instance_uid
        assert sidecar["attempts"] == 3 and sidecar["http_status"] == 500
        location = ["--persistent_file_storage_location", str(tmp_path / "s")]
        assert run(cli, ["dead-letter", "list", *location]) == 0
        assert request.sop_instance_uid in capsys.readouterr().out
        assert run(cli, ["dead-letter", "requeue", *location]) == 2  # names or --all
        assert run(cli, ["dead-letter", "requeue", dead[0].name, *location]) == 0
        deadline = time.monotonic() + 5
        while len(seen) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        _drained(manager)
        assert len(seen) == 4  # picked up by the running adapter and uploaded
    finally:
        manager.stop()
    assert not list(manager.layout.root.rglob("*.dcm"))


def test_synchronous_receipt_gets_the_failure_not_a_dead_letter(tmp_path: Path) -> None:
    refused = UploadResult(Kind.DEAD, DimseStatus(Status.CANNOT_UNDERSTAND), "HTTP 400")
    manager = _manager(tmp_path / "s", [refused], [])
    manager.start()
    try:
        receipt = Receipt(1)
        _submit(manager, receipt)
        assert receipt.wait(5) == DimseStatus(Status.CANNOT_UNDERSTAND)
    finally:
        manager.stop()
    assert not list(manager.layout.root.rglob("*.dcm"))


def test_restart_uploads_what_was_left(tmp_path: Path) -> None:
    refused = UploadResult(Kind.UNREACHABLE, DimseStatus(Status.PROCESSING_FAILURE), "down")
    seen: list[str] = []
    first = _manager(tmp_path / "s", [refused] * 1000, seen)
    first.start()
    request = _submit(first)
    first.stop()
    seen.clear()
    second = _manager(tmp_path / "s", [], seen)
    second.start()
    try:
        assert second.wait_uploaded([request.sop_instance_uid], 5) == set()
    finally:
        second.stop()
    assert len(seen) == 1


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[ImportConfig]:
    configs: list[ImportConfig] = []

    def run(config: ImportConfig) -> int:
        configs.append(config)
        return 0

    monkeypatch.setattr(import_adapter.app, "run", run)
    return configs


def test_flags_to_config(captured: list[ImportConfig], tmp_path: Path) -> None:
    routes = json.dumps([{"filter": "Modality=CT", "dicomweb_destination": "http://b/dicom-web"}])
    assert run(cli, [
        "import", "--dicomweb_address", "http://a/dicom-web",
        "--persistent_file_storage_location", str(tmp_path), "--auto-ack-cstore",
        "--persistent_file_upload_retry_amount", "7", "--min_upload_delay", "200",
        "--max_waiting_time_between_uploads", "3000", "--http_error_codes_to_retry", "408,409",
        "--stow_overwrite", "--spool_max_size_mb", "10", "--destination_config_inline", routes,
        "--send_to_all_matching_destinations",
    ]) == 0
    config = captured[0]
    assert config.spool is not None and config.spool.auto_ack
    upload = config.spool.upload
    assert (upload.retry_amount, upload.min_delay, upload.max_delay) == (7, 0.2, 3.0)
    assert upload.retry_codes == {408, 409} and upload.overwrite
    assert config.spool.limits.max_bytes == 10 << 20
    assert config.routing.send_to_all and len(config.routing.rules) == 1
    assert config.spool_drain_timeout == 60.0 and config.commitment.wait == 120.0


@pytest.mark.parametrize("flag", ["--storage_commitment_wait", "--storage-commitment-wait",
                                  "--storage_commitment_spool_wait"])
def test_commitment_wait_and_drain_flags(captured: list[ImportConfig], flag: str) -> None:
    assert run(cli, ["import", "--dicomweb_address", "http://a/dicom-web", flag, "8",
                     "--spool_drain_timeout", "0"]) == 0
    assert captured[0].commitment.wait == 8.0 and captured[0].spool_drain_timeout == 0.0


def test_the_older_commitment_wait_variable_is_still_read(
    captured: list[ImportConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DICOM_ADAPTER_STORAGE_COMMITMENT_SPOOL_WAIT", "30")
    assert run(cli, ["import", "--dicomweb_address", "http://a/dicom-web"]) == 0
    monkeypatch.setenv("DICOM_ADAPTER_STORAGE_COMMITMENT_WAIT", "40")  # the new name wins
    assert run(cli, ["import", "--dicomweb_address", "http://a/dicom-web"]) == 0
    assert [config.commitment.wait for config in captured] == [30.0, 40.0]
    monkeypatch.delenv("DICOM_ADAPTER_STORAGE_COMMITMENT_WAIT")
    monkeypatch.setenv("DICOM_ADAPTER_STORAGE_COMMITMENT_SPOOL_WAIT", "soon")
    assert run(cli, ["import", "--dicomweb_address", "http://a/dicom-web"]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--auto_ack_cstore"], "needs --persistent_file_storage_location"),
        (["--http_error_codes_to_retry", "500"], "not an HTTP 4xx"),
        (["--destination_config_inline", '[{"filter": "X=1"}]'], "entry 0"),
    ],
)
def test_flag_errors(
    captured: list[ImportConfig], capsys: pytest.CaptureFixture[str], args: list[str],
    message: str,
) -> None:
    assert run(cli, ["import", "--dicomweb_address", "http://a/dicom-web", *args]) == 2
    assert message in capsys.readouterr().err
    assert not captured


# -- shutdown: drain, what is left, one process per spool ---------------------------------------


def test_drain_uploads_everything_then_stop_says_nothing_is_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    manager = _manager(tmp_path / "s", [], seen)
    manager.start()
    requests = [_submit(manager) for _ in range(5)]
    assert manager.drain(5.0)
    assert manager.stop() == {}
    assert len(seen) == 5 and not manager.is_pending(requests[0].sop_instance_uid)
    assert "nothing left to upload" in caplog.text


def test_drain_timeout_leaves_the_rest_on_disk_logged_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = UploadResult(Kind.UNREACHABLE, DimseStatus(Status.PROCESSING_FAILURE), "refused")
    manager = _manager(tmp_path / "s", [down] * 10_000, [])
    manager.start()
    for _ in range(3):
        _submit(manager)
    started = time.monotonic()
    assert not manager.drain(0.3)
    assert 0.25 < time.monotonic() - started < 2.0
    assert manager.drain(0) is False  # 0: does not wait at all
    caplog.clear()
    assert manager.stop() == {str(DEST_A): 3}
    lines = [r.getMessage() for r in caplog.records if "left in the spool" in r.getMessage()]
    assert lines == [f"3 instances left in the spool for {DEST_A} (3); "
                     "they are uploaded at the next start"]
    assert len(list((tmp_path / "s" / "queues").rglob("*.dcm"))) == 3
    # The next start uploads them.
    seen: list[str] = []
    again = _manager(tmp_path / "s", [], seen)
    again.start()
    try:
        assert again.drain(5.0) and len(seen) == 3
    finally:
        assert again.stop() == {}


def test_one_process_at_a_time_serves_a_spool(tmp_path: Path) -> None:
    from common.errors import ConfigError

    first = _manager(tmp_path / "s", [], [])
    first.start()
    second = _manager(tmp_path / "s", [], [])
    try:
        with pytest.raises(ConfigError, match="in use by another process"):
            second.start()
    finally:
        first.stop()
    second.start()  # the lock went with the first one's stop
    second.stop()
