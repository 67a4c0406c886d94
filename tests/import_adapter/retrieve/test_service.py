"""The retrieval core's sub-operations: each fetched file's meta is read once and sent along."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

import import_adapter.retrieve.fetch as fetch_module
from common.dicomweb.multipart import Part
from common.dimse.aet_dictionary import AetDictionary
from common.dimse.fast.meta import FileMeta, read_file_meta
from common.lifecycle import Lifecycle
from common.status import SUCCESS, DimseStatus, Status
from import_adapter.query.model import STUDY_ROOT
from import_adapter.retrieve.service import RetrieveRequest, RetrieveService, RetrieveSettings
from tests.support.samples import write_minimal_instance

CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY, SERIES = "1.2.3", "1.2.3.4"


class Store:
    """A DicomwebApi holding Part 10 files of one series: QIDO lists them, WADO-RS sends them."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = list(files)

    def search(
        self, resource: Sequence[str], query: Any, *, page_size: int = 0, parallel: int = 1
    ) -> Iterator[dict[str, Any]]:
        for path in self.files:
            ds = pydicom.dcmread(path)
            yield {
                "0020000D": {"vr": "UI", "Value": [STUDY]},
                "0020000E": {"vr": "UI", "Value": [SERIES]},
                "00080018": {"vr": "UI", "Value": [str(ds.SOPInstanceUID)]},
                "00080016": {"vr": "UI", "Value": [str(ds.SOPClassUID)]},
            }

    def retrieve(self, resource: Sequence[str], *, accept: str = "") -> Iterator[Part]:
        for path in self.files:
            yield Part({"content-type": "application/dicom"}, iter([path.read_bytes()]))


class Sender:
    """A SubOperationSender that records the meta it was handed with each file."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, FileMeta]] = []

    def send(
        self,
        path: Path,
        *,
        meta: FileMeta,
        move_originator: tuple[str, int] | None = None,
    ) -> DimseStatus:
        self.sent.append((path.read_bytes(), meta))
        return SUCCESS


def _request() -> RetrieveRequest:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = STUDY
    identifier.SeriesInstanceUID = SERIES
    return RetrieveRequest(
        calling_aet="GETTER", message_id=7, model=STUDY_ROOT, identifier=identifier
    )


def test_each_fetched_file_is_sent_with_the_meta_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [write_minimal_instance(tmp_path / f"{i}.dcm", CT) for i in range(3)]
    reads: list[Path] = []

    def counting(path: Path) -> FileMeta:
        reads.append(path)
        return read_file_meta(path)

    monkeypatch.setattr(fetch_module, "read_file_meta", counting)
    service = RetrieveService(
        Store(files),  # type: ignore[arg-type]
        AetDictionary([]),
        RetrieveSettings(spool_dir=tmp_path),
        Lifecycle(),
    )
    sender = Sender()
    updates = list(service.get(_request(), sender, lambda: False))

    assert updates[-1].status.code == Status.SUCCESS
    assert updates[-1].counts is not None and updates[-1].counts.completed == 3
    assert len(reads) == 3  # once per fetched file, in the prefetcher
    assert [data for data, _ in sender.sent] == [path.read_bytes() for path in files]
    # The meta handed over is the sent file's own.
    assert [meta for _, meta in sender.sent] == [read_file_meta(path) for path in files]
