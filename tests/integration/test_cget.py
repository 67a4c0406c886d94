"""C-GET through the adapter: sub-operations on the requesting association (getscu, pynetdicom)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, build_role, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)

from import_adapter.app import ImportAdapter
from tests.integration.qr_support import (
    ADAPTER_AET,
    LOCALHOST,
    retrieve_statuses,
    start_adapter,
)
from tests.support import dcmtk
from tests.support.orthanc import OrthancServer
from tests.support.samples import SampleInstance, make_corpus, make_samples


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[SampleInstance]]:
    return {
        "corpus": make_corpus(tmp_path_factory.mktemp("corpus"), 20, studies=1),
        "samples": make_samples(tmp_path_factory.mktemp("samples")),
    }


@pytest.fixture(scope="module")
def adapter(data: dict[str, list[SampleInstance]],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImportAdapter]:
    with OrthancServer(workdir=tmp_path_factory.mktemp("backend")) as backend:
        backend.upload_all([s.path for s in data["corpus"] + data["samples"]])
        server = start_adapter(backend.dicomweb_url, page_size=7)
        yield server
        server.stop()


def _received(folder: Path) -> dict[str, pydicom.Dataset]:
    out: dict[str, pydicom.Dataset] = {}
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        out[str(ds.SOPInstanceUID)] = ds
    return out


def test_getscu_delivers_every_sample(adapter: ImportAdapter, data: dict[str, list[SampleInstance]],
                                      tmp_path: Path) -> None:
    """getscu proposes uncompressed storage syntaxes: uncompressed samples arrive with
    identical elements and Pixel Data, compressed ones decompressed with identical pixels.
    (getscu offers no context for the private SOP class, so that sample cannot be got.)"""
    samples = [s for s in data["samples"] if s.kind != "private_sop_class"]
    for sample in samples:
        result = dcmtk.getscu(LOCALHOST, adapter.server.port,
                              ["0008,0052=STUDY", f"0020,000D={sample.study_uid}"],
                              called_aet=ADAPTER_AET, output_dir=tmp_path)
        assert result.returncode == 0, result.stderr
    received = _received(tmp_path)
    assert set(received) == {s.sop_instance_uid for s in samples}
    for sample in samples:
        ds, source = received[sample.sop_instance_uid], pydicom.dcmread(sample.path)
        if sample.kind in ("explicit_le", "implicit_le"):
            assert ds.PixelData == source.PixelData, sample.kind
            for element in source:
                assert ds[element.tag].value == element.value, (sample.kind, element)
        else:
            assert numpy.array_equal(ds.pixel_array, source.pixel_array), sample.kind


def test_getscu_in_the_stored_compressed_syntax(
    adapter: ImportAdapter, data: dict[str, list[SampleInstance]], tmp_path: Path
) -> None:
    """getscu +xs (prefers JPEG lossless): the JPEG lossless sample arrives byte-identical."""
    sample = next(s for s in data["samples"] if s.kind == "jpeg_lossless")
    result = dcmtk.getscu(LOCALHOST, adapter.server.port,
                          ["0008,0052=STUDY", f"0020,000D={sample.study_uid}"],
                          called_aet=ADAPTER_AET, output_dir=tmp_path, extra_args=["+xs"])
    assert result.returncode == 0, result.stderr
    ds = _received(tmp_path)[sample.sop_instance_uid]
    assert ds.file_meta.TransferSyntaxUID == sample.transfer_syntax_uid
    assert ds.PixelData == pydicom.dcmread(sample.path).PixelData


def _get(port: int, keys: Dataset, *, cancel_after: int | None = None) -> tuple[list[Dataset], list[str]]:
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        assert isinstance(event.request, C_STORE)  # EVT_C_STORE's request
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="GETSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(sop_class)
    assoc = ae.associate(
        LOCALHOST, port, ae_title=ADAPTER_AET,
        ext_neg=[build_role(c, scp_role=True) for c in (CTImageStorage, MRImageStorage)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    model = StudyRootQueryRetrieveInformationModelGet
    try:
        responses = assoc.send_c_get(keys, model, msg_id=9)
        return retrieve_statuses(assoc, responses, 9, model, cancel_after), received
    finally:
        assoc.release()


def _study(uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = uid
    return ds


def test_counts_paging_and_success(adapter: ImportAdapter,
                                   data: dict[str, list[SampleInstance]]) -> None:
    corpus = data["corpus"]
    statuses, received = _get(adapter.server.port, _study(corpus[0].study_uid))
    assert sorted(received) == sorted(s.sop_instance_uid for s in corpus)
    assert [s.Status for s in statuses[:-1]] == [0xFF00] * len(corpus)
    assert statuses[-1].Status == 0x0000
    assert statuses[-1].NumberOfCompletedSuboperations == len(corpus)


def test_cancel(adapter: ImportAdapter, data: dict[str, list[SampleInstance]]) -> None:
    corpus = data["corpus"]
    statuses, received = _get(adapter.server.port, _study(corpus[0].study_uid), cancel_after=2)
    assert statuses[-1].Status == 0xFE00
    assert len(received) < len(corpus)


def test_sop_class_without_a_context_fails_that_sub_operation(
    adapter: ImportAdapter, data: dict[str, list[SampleInstance]]
) -> None:
    """The SCU offered CT and MR storage only: a Secondary Capture instance fails (listed in
    FailedSOPInstanceUIDList), the move does not abort."""
    sample = next(s for s in data["samples"] if s.kind == "jpeg_baseline")
    assert UID(sample.sop_class_uid) not in (CTImageStorage, MRImageStorage)
    statuses, received = _get(adapter.server.port, _study(sample.study_uid))
    assert received == []
    assert statuses[-1].Status == 0xA702
    assert statuses[-1].FailedSOPInstanceUIDList == sample.sop_instance_uid


def test_keyless_get_is_refused(adapter: ImportAdapter) -> None:
    keys = Dataset()
    keys.QueryRetrieveLevel = "SERIES"
    keys.SeriesInstanceUID = ""
    statuses, received = _get(adapter.server.port, keys)
    assert received == []
    assert statuses[-1].Status == 0xA900
