"""The import adapter reports C-STORE outcomes and associations to its metrics observer."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from common.dicom.part10 import Part10Instance
from common.dimse.fast.scp import AssociationEvent
from common.errors import DicomwebHttpError
from common.lifecycle import Lifecycle
from common.logs import JsonFormatter
from common.sinks import Origin
from common.status import DimseStatus, Status
from import_adapter.associations import AssociationMetrics
from import_adapter.store import StoreRequest, StoreService

CT = "1.2.840.10008.5.1.4.1.1.2"


class Recorder:
    """An ImportObserver that records calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any) -> None:
            self.calls.append((name, args))

        return record


class Sink:
    def __init__(self, result: DimseStatus | Exception) -> None:
        self.result = result

    def deliver(self, instance: Part10Instance, origin: Origin) -> DimseStatus:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result

    def describe(self) -> str:
        return "test sink"

    def close(self) -> None:
        pass


def spooled(tmp_path: Path) -> StoreRequest:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Secret^Patient"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(CT)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "spooled.dcm"
    ds.save_as(path, enforce_file_format=True)
    return StoreRequest(
        calling_aet="MODALITY",
        called_aet="IMPORTADAPTER",
        message_id=7,
        sop_class_uid=CT,
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        spool_path=path,
    )


def test_successful_cstore_is_reported_with_dataset_bytes(tmp_path: Path) -> None:
    request = spooled(tmp_path)
    recorder = Recorder()
    status = StoreService(Sink(DimseStatus(Status.SUCCESS)), Lifecycle(), recorder).handle(request)
    assert status.is_success
    [(name, (aet, size, reported, seconds))] = recorder.calls
    instance = Part10Instance.from_spooled(
        request.spool_path, sop_class_uid=CT, sop_instance_uid=request.sop_instance_uid,
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    assert (name, aet, reported) == ("cstore_done", "MODALITY", status)
    assert size == instance.dataset_length > 0
    assert 0 <= seconds < 5


def test_failed_cstore_is_reported_with_its_status(tmp_path: Path) -> None:
    recorder = Recorder()
    service = StoreService(Sink(DicomwebHttpError(403, reason="Forbidden")), Lifecycle(), recorder)
    status = service.handle(spooled(tmp_path))
    assert status.code == Status.NOT_AUTHORIZED
    assert recorder.calls[0][0] == "cstore_done"
    assert recorder.calls[0][1][2] == status


def test_store_service_works_without_metrics(tmp_path: Path) -> None:
    status = StoreService(Sink(DimseStatus(Status.SUCCESS)), Lifecycle()).handle(spooled(tmp_path))
    assert status.is_success


def test_cstore_json_log_has_identifiers_not_patient_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    request = spooled(tmp_path)
    with caplog.at_level(logging.DEBUG):
        StoreService(Sink(DimseStatus(Status.SUCCESS)), Lifecycle()).handle(request)
    [record] = [r for r in caplog.records if r.name == "import_adapter.store"]
    line = json.loads(JsonFormatter().format(record))
    assert line["severity"] == "INFO"
    assert line["calling_aet"] == "MODALITY"
    assert line["sop_instance_uid"] == request.sop_instance_uid
    assert line["message_id"] == 7
    assert line["status"] == "0x0000"
    assert isinstance(line["duration_ms"], float)
    assert "Secret" not in json.dumps(line)


def test_association_handlers_count_each_association_once() -> None:
    recorder = Recorder()
    notify = AssociationMetrics(recorder)
    first: Any = SimpleNamespace(requestor=SimpleNamespace(ae_title="MODALITY"))
    second: Any = SimpleNamespace(requestor=SimpleNamespace(ae_title="OTHER"))
    stranger: Any = SimpleNamespace(requestor=SimpleNamespace(ae_title="STRANGER"))
    notify(AssociationEvent.ESTABLISHED, first)
    notify(AssociationEvent.ESTABLISHED, second)
    notify(AssociationEvent.CONN_CLOSE, first)
    notify(AssociationEvent.CONN_CLOSE, first)  # closed twice: counted once
    notify(AssociationEvent.REJECTED, stranger)
    notify(AssociationEvent.CONN_CLOSE, stranger)  # never established: not counted
    assert recorder.calls == [
        ("association_opened", ("MODALITY",)),
        ("association_opened", ("OTHER",)),
        ("association_closed", ("MODALITY",)),
        ("association_rejected", ("STRANGER",)),
    ]
