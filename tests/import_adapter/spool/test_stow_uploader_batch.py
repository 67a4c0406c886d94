"""StowUploader.upload_batch: what each instance of a batched STOW-RS comes to."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydicom.filereader import read_file_meta_info

from common.dicom.part10 import Part10Instance
from common.dicomweb.client import StowResult
from common.errors import DicomwebConnectionError, DicomwebHttpError, DicomwebResponseError
from common.status import SUCCESS, DimseStatus, Status
from import_adapter.spool.layout import new_entry_name
from import_adapter.spool.outcome import Kind
from import_adapter.spool.uploaders import StowUploader, UnconfirmedStores
from tests.import_adapter.spool.test_spool import received


class BatchClient:
    """A DICOMweb client whose batched STOW-RS answers from a script."""

    def __init__(self, answer: list[StowResult] | Exception) -> None:
        self.answer = answer
        self.batches: list[list[str]] = []

    def store_batch(self, instances: Sequence[Part10Instance]) -> list[StowResult]:
        self.batches.append([instance.sop_instance_uid for instance in instances])
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    paths = []
    for _ in range(3):
        request = received(tmp_path / "in")
        path = tmp_path / new_entry_name("MODALITY")
        shutil.move(request.spool_path, path)
        paths.append(path)
    return paths


def _uploader(client: BatchClient, unconfirmed: UnconfirmedStores) -> StowUploader:
    return StowUploader(
        client, overwrite=False, retry_codes=frozenset(), unconfirmed=unconfirmed  # type: ignore[arg-type]
    )


def _uid(path: Path) -> str:
    return str(read_file_meta_info(path).MediaStorageSOPInstanceUID)


def test_each_instance_gets_its_own_outcome(files: list[Path]) -> None:
    refused = DimseStatus(Status.CANNOT_UNDERSTAND, "Store refused instance (0xC000)")
    client = BatchClient(
        [StowResult(SUCCESS, 202), StowResult(refused, 202), StowResult(SUCCESS, 202)]
    )
    results = _uploader(client, UnconfirmedStores()).upload_batch(files)
    assert client.batches == [[_uid(path) for path in files]]
    assert results[0] is not None and results[0].kind is Kind.DONE
    assert results[1] is None  # sent again alone: its own answer decides
    assert results[2] is not None and results[2].kind is Kind.DONE


def test_an_unanswered_batch_leaves_every_instance_unconfirmed(files: list[Path]) -> None:
    unconfirmed = UnconfirmedStores()
    client = BatchClient(DicomwebConnectionError("connection reset"))
    results = _uploader(client, unconfirmed).upload_batch(files)
    assert all(r is not None and r.kind is Kind.UNREACHABLE for r in results)
    assert all(_uid(path) in unconfirmed for path in files)


@pytest.mark.parametrize("status", [500, 503, 429, 403])
def test_a_batch_refused_for_the_store_s_state_is_one_outcome_for_all(
    files: list[Path], status: int
) -> None:
    results = _uploader(BatchClient(DicomwebHttpError(status)), UnconfirmedStores()).upload_batch(
        files
    )
    first = results[0]
    assert first is not None and first.kind in (Kind.RETRY, Kind.UNREACHABLE)
    assert results == [first] * len(files)


@pytest.mark.parametrize("status", [400, 409, 413, 501])
def test_a_batch_refused_as_a_whole_sends_each_again_alone(files: list[Path], status: int) -> None:
    unconfirmed = UnconfirmedStores()
    error = DicomwebHttpError(status, resent=True)
    results = _uploader(BatchClient(error), unconfirmed).upload_batch(files)
    assert results == [None, None, None]
    # The request had been sent twice: a 409 for any of them, alone, is looked up first.
    assert all(_uid(path) in unconfirmed for path in files)


def test_an_unreadable_file_is_judged_alone(files: list[Path]) -> None:
    files[1].write_bytes(b"not DICOM")
    client = BatchClient([StowResult(SUCCESS, 200), StowResult(SUCCESS, 200)])
    results = _uploader(client, UnconfirmedStores()).upload_batch(files)
    assert len(client.batches[0]) == 2
    assert results[1] is not None and results[1].kind is Kind.DEAD
    assert results[0] is not None and results[0].kind is Kind.DONE


def test_an_unreadable_answer_is_retried_with_every_instance_maybe_stored(
    files: list[Path],
) -> None:
    unconfirmed = UnconfirmedStores()
    client = BatchClient(DicomwebResponseError("STOW-RS response is not JSON"))
    results = _uploader(client, unconfirmed).upload_batch(files)
    assert all(r is not None and r.kind is Kind.RETRY for r in results)
    # Retried, a 409 for any of them is looked up rather than dead-lettered.
    assert all(_uid(path) in unconfirmed for path in files)
