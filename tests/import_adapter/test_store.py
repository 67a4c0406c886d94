"""StoreService and StoreRequest: what the sink is given besides the instance."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from common.dicom.part10 import Part10Instance
from common.lifecycle import Lifecycle
from common.sinks import Origin
from common.status import SUCCESS, DimseStatus
from import_adapter.commitment.known_studies import KnownStudies
from import_adapter.store import StoreRequest, StoreService
from tests.support.samples import SampleInstance, make_samples


class Recording:
    def __init__(self) -> None:
        self.delivered: list[tuple[Part10Instance, Origin]] = []

    def deliver(self, instance: Part10Instance, origin: Origin) -> DimseStatus:
        self.delivered.append((instance, origin))
        return SUCCESS

    def describe(self) -> str:
        return "recording"

    def close(self) -> None:
        pass


def request_for(tmp_path: Path) -> StoreRequest:
    return _request(make_samples(tmp_path / "incoming", ["explicit_le"])[0])


def _request(sample: SampleInstance) -> StoreRequest:
    return StoreRequest(
        calling_aet="MODALITY",
        called_aet="IMPORTADAPTER",
        message_id=3,
        sop_class_uid=sample.sop_class_uid,
        sop_instance_uid=sample.sop_instance_uid,
        transfer_syntax_uid=sample.transfer_syntax_uid,
        spool_path=sample.path,
    )


def test_a_received_file_is_offered_to_the_sink(tmp_path: Path) -> None:
    request = request_for(tmp_path)
    sink = Recording()
    assert StoreService(sink, Lifecycle()).handle(request) == SUCCESS
    ((instance, origin),) = sink.delivered
    assert origin == Origin("MODALITY", request.spool_path)
    assert instance.dataset_path == request.spool_path
    assert instance.sop_instance_uid == request.sop_instance_uid


def test_a_dataset_received_into_memory_has_no_file(tmp_path: Path) -> None:
    on_disk = request_for(tmp_path)
    content = on_disk.spool_path.read_bytes()
    on_disk.spool_path.unlink()
    request = replace(on_disk, content=content)
    sink = Recording()
    assert StoreService(sink, Lifecycle()).handle(request) == SUCCESS
    ((instance, origin),) = sink.delivered
    assert origin == Origin("MODALITY", None)
    assert instance.loaded is not None and not request.spool_path.exists()


def test_the_study_of_each_received_instance_is_recorded_for_commitment(tmp_path: Path) -> None:
    samples = make_samples(tmp_path / "incoming", ["explicit_le", "implicit_le"])
    known = KnownStudies()
    service = StoreService(Recording(), Lifecycle(), known_studies=known)
    for sample in samples:
        assert service.handle(_request(sample)) == SUCCESS
    assert known.studies_of(s.sop_instance_uid for s in samples) == {
        s.sop_instance_uid: s.study_uid for s in samples
    }
