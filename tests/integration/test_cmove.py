"""C-MOVE through the adapter (QIDO-RS + WADO-RS on Orthanc) to real C-STORE SCPs.

Deliveries are checked byte for byte against the source files (every data element and the
Pixel Data) and against Orthanc's own C-MOVE of the same data (Orthanc's DicomModalities config
names the storescp). Statuses and counts are read with a pynetdicom SCU.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelMove,
)

from import_adapter.app import ImportAdapter
from tests.integration.qr_support import (
    ADAPTER_AET,
    LOCALHOST,
    c_move,
    start_adapter,
    study_keys,
)
from tests.support import dcmtk
from tests.support.dcmtk import StoreSCP
from tests.support.http_fault_server import HttpFaultServer
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port
from tests.support.samples import SampleInstance, make_corpus, make_samples
from tests.support.scripted_pacs import ScriptedPacs


@pytest.fixture(scope="module")
def scps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("scps")
    servers = {
        "ALL": StoreSCP(root / "all" / "in", aet="ALLSCP", syntaxes="all"),
        "ORACLEDEST": StoreSCP(root / "oracle" / "in", aet="ORACLEDEST", syntaxes="all"),
        "PLAIN": StoreSCP(root / "plain" / "in", aet="PLAINSCP", syntaxes="uncompressed"),
    }
    for server in servers.values():
        server.start()
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[SampleInstance]]:
    return {
        "corpus": make_corpus(tmp_path_factory.mktemp("corpus"), 24, studies=1),
        "samples": make_samples(tmp_path_factory.mktemp("samples")),
    }


@pytest.fixture(scope="module")
def backend(data: dict[str, list[SampleInstance]],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    with OrthancServer(workdir=tmp_path_factory.mktemp("backend")) as server:
        server.upload_all([s.path for s in data["corpus"] + data["samples"]])
        yield server


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedPacs]:
    server = ScriptedPacs()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def adapter(backend: OrthancServer, scps: dict[str, StoreSCP],
            scripted: ScriptedPacs) -> Iterator[ImportAdapter]:
    destinations = [
        ("ALLSCP", LOCALHOST, scps["ALL"].port),
        ("PLAINSCP", LOCALHOST, scps["PLAIN"].port),
        ("SCRIPTED", LOCALHOST, scripted.port),
        ("DOWNSCP", LOCALHOST, free_port()),
    ]
    server = start_adapter(backend.dicomweb_url, destinations=destinations, page_size=7,
                           prefetch=4)
    yield server
    server.stop()


def _clear(scp: StoreSCP) -> None:
    for path in scp.received_files():
        path.unlink()


def _by_uid(paths: list[Path]) -> dict[str, pydicom.Dataset]:
    out: dict[str, pydicom.Dataset] = {}
    for path in paths:
        ds = pydicom.dcmread(path)
        out[str(ds.SOPInstanceUID)] = ds
    return out


def _assert_identical(received: pydicom.Dataset, source_path: Path) -> None:
    """Every data element (file meta aside) and the raw Pixel Data bytes are identical."""
    source = pydicom.dcmread(source_path)
    assert received.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
    assert received.PixelData == source.PixelData
    for element in source:
        assert element.tag in received, element
        assert received[element.tag].value == element.value, element


def test_movescu_delivers_identical_instances_in_every_syntax(
    adapter: ImportAdapter, scps: dict[str, StoreSCP], data: dict[str, list[SampleInstance]]
) -> None:
    """movescu, one study per sample kind: explicit/implicit/big endian, JPEG, JPEG 2000,
    JPEG-LS, RLE, multi-frame and a private SOP class all arrive byte-identical."""
    scp = scps["ALL"]
    _clear(scp)
    samples = data["samples"]
    for sample in samples:
        result = dcmtk.movescu(
            LOCALHOST, adapter.server.port,
            ["0008,0052=STUDY", f"0020,000D={sample.study_uid}"],
            called_aet=ADAPTER_AET, destination="ALLSCP",
        )
        assert result.returncode == 0, result.stderr
    received = _by_uid(scp.wait_for_files(len(samples)))
    for sample in samples:
        _assert_identical(received[sample.sop_instance_uid], sample.path)


def test_same_instances_as_orthancs_own_move(
    adapter: ImportAdapter, backend: OrthancServer, scps: dict[str, StoreSCP],
    data: dict[str, list[SampleInstance]], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A multi-page study (24 instances, QIDO page 7) through the adapter and through an
    oracle Orthanc's own C-MOVE (its DicomModalities names the storescp): same instances,
    same bytes."""
    corpus = data["corpus"]
    study = corpus[0].study_uid
    ours, theirs = scps["ALL"], scps["ORACLEDEST"]
    _clear(ours)
    _clear(theirs)
    oracle = OrthancServer(
        workdir=tmp_path_factory.mktemp("oracle"),
        modalities={"dest": ("ORACLEDEST", LOCALHOST, theirs.port)},
    )
    with oracle:
        oracle.upload_all([s.path for s in corpus])
        result = dcmtk.movescu(LOCALHOST, oracle.dicom_port,
                               ["0008,0052=STUDY", f"0020,000D={study}"],
                               called_aet=oracle.aet, destination="ORACLEDEST")
        assert result.returncode == 0, result.stderr
    result = dcmtk.movescu(LOCALHOST, adapter.server.port,
                           ["0008,0052=STUDY", f"0020,000D={study}"],
                           called_aet=ADAPTER_AET, destination="ALLSCP")
    assert result.returncode == 0, result.stderr
    mine = _by_uid(ours.wait_for_files(len(corpus)))
    oracle_files = _by_uid(theirs.wait_for_files(len(corpus)))
    assert set(mine) == set(oracle_files) == {s.sop_instance_uid for s in corpus}
    for uid, ds in mine.items():
        theirs_ds = oracle_files[uid]
        assert ds.PixelData == theirs_ds.PixelData
        differ = [e.tag for e in theirs_ds if e.tag not in ds or ds[e.tag].value != e.value]
        assert differ == [], (differ, [ds.get(t) for t in differ], [theirs_ds.get(t) for t in differ])


def test_levels_and_counts(adapter: ImportAdapter, data: dict[str, list[SampleInstance]],
                           scps: dict[str, StoreSCP]) -> None:
    """SERIES, IMAGE (UID list) and Patient Root PATIENT level moves, with Pending counts."""
    corpus = data["corpus"]
    series = corpus[0].series_uid
    in_series = [s for s in corpus if s.series_uid == series]
    keys = Dataset()
    keys.QueryRetrieveLevel = "SERIES"
    keys.StudyInstanceUID = corpus[0].study_uid
    keys.SeriesInstanceUID = series
    statuses = c_move(adapter.server.port, keys, "ALLSCP")
    assert [s.Status for s in statuses] == [0xFF00] * len(in_series) + [0x0000]
    assert [s.NumberOfRemainingSuboperations for s in statuses[:-1]] == list(
        range(len(in_series) - 1, -1, -1)
    )
    assert statuses[-1].NumberOfCompletedSuboperations == len(in_series)

    keys = Dataset()
    keys.QueryRetrieveLevel = "IMAGE"
    keys.StudyInstanceUID = corpus[0].study_uid
    keys.SeriesInstanceUID = series
    keys.SOPInstanceUID = [s.sop_instance_uid for s in in_series[:2]]
    statuses = c_move(adapter.server.port, keys, "ALLSCP")
    assert statuses[-1].Status == 0 and statuses[-1].NumberOfCompletedSuboperations == 2

    patient = pydicom.dcmread(corpus[0].path, stop_before_pixels=True).PatientID
    keys = Dataset()
    keys.QueryRetrieveLevel = "PATIENT"
    keys.PatientID = patient
    statuses = c_move(adapter.server.port, keys, "ALLSCP",
                     model=PatientRootQueryRetrieveInformationModelMove)
    assert statuses[-1].Status == 0
    assert statuses[-1].NumberOfCompletedSuboperations == len(corpus)


def test_destination_refusing_compressed_syntaxes_gets_decompressed_pixels(
    adapter: ImportAdapter, scps: dict[str, StoreSCP], data: dict[str, list[SampleInstance]]
) -> None:
    scp = scps["PLAIN"]
    _clear(scp)
    compressed = [s for s in data["samples"]
                  if pydicom.uid.UID(s.transfer_syntax_uid).is_compressed
                  and s.kind in ("jpeg_lossless", "jpeg2000_lossless", "rle", "jpegls_lossless")]
    assert compressed
    for sample in compressed:
        statuses = c_move(adapter.server.port, study_keys(sample.study_uid), "PLAINSCP")
        assert statuses[-1].Status == 0x0000, sample.kind
    received = _by_uid(scp.wait_for_files(len(compressed)))
    for sample in compressed:
        assert sample.sop_instance_uid in received, (
            sample.kind, {s.sop_instance_uid[-8:]: s.kind for s in data["samples"]},
            [u[-8:] for u in received])
        ds = received[sample.sop_instance_uid]
        assert not ds.file_meta.TransferSyntaxUID.is_compressed
        source = pydicom.dcmread(sample.path)
        assert numpy.array_equal(ds.pixel_array, source.pixel_array), sample.kind


def test_destination_warnings_and_failures(
    adapter: ImportAdapter, scripted: ScriptedPacs, data: dict[str, list[SampleInstance]]
) -> None:
    """One instance answered 0xA700, one 0xB000: the move goes on; final 0xB000 with the
    failed UID, Completed/Failed/Warning counted."""
    corpus = data["corpus"]
    failed, warned = corpus[0].sop_instance_uid, corpus[2].sop_instance_uid
    scripted.statuses.update({failed: 0xA700, warned: 0xB000})
    statuses = c_move(adapter.server.port, study_keys(corpus[0].study_uid), "SCRIPTED")
    final = statuses[-1]
    assert final.Status == 0xB000
    assert final.NumberOfFailedSuboperations == 1
    assert final.NumberOfWarningSuboperations == 1
    assert final.NumberOfCompletedSuboperations == len(corpus) - 2
    assert final.FailedSOPInstanceUIDList == failed


def test_every_sub_operation_failing_is_a702(
    adapter: ImportAdapter, scripted: ScriptedPacs, data: dict[str, list[SampleInstance]]
) -> None:
    sample = data["samples"][0]
    scripted.statuses[sample.sop_instance_uid] = 0xA700
    statuses = c_move(adapter.server.port, study_keys(sample.study_uid), "SCRIPTED")
    assert statuses[-1].Status == 0xA702


def test_unknown_destination_is_a801(adapter: ImportAdapter,
                                     data: dict[str, list[SampleInstance]]) -> None:
    statuses = c_move(adapter.server.port, study_keys(data["corpus"][0].study_uid), "NOBODY")
    assert [s.Status for s in statuses] == [0xA801]


def test_destination_down_fails(adapter: ImportAdapter,
                                data: dict[str, list[SampleInstance]]) -> None:
    statuses = c_move(adapter.server.port, study_keys(data["corpus"][0].study_uid), "DOWNSCP")
    assert len(statuses) == 1
    assert statuses[0].Status == 0xA801  # pynetdicom: cannot associate with the destination


def test_keyless_move_is_refused(adapter: ImportAdapter, scripted: ScriptedPacs) -> None:
    keys = Dataset()
    keys.QueryRetrieveLevel = "STUDY"
    keys.StudyInstanceUID = ""
    before = len(scripted.received)
    statuses = c_move(adapter.server.port, keys, "SCRIPTED")
    assert statuses[-1].Status == 0xA900
    assert len(scripted.received) == before


def test_cancel_stops_the_move(adapter: ImportAdapter, scripted: ScriptedPacs,
                               data: dict[str, list[SampleInstance]]) -> None:
    corpus = data["corpus"]
    before = len(scripted.received)
    statuses = c_move(adapter.server.port, study_keys(corpus[0].study_uid), "SCRIPTED",
                     cancel_after=3)
    final = statuses[-1]
    assert final.Status == 0xFE00
    assert final.NumberOfRemainingSuboperations > 0
    assert len(scripted.received) - before < len(corpus)


def test_wado_failure_counts_failed_sub_operations(
    backend: OrthancServer, scps: dict[str, StoreSCP], data: dict[str, list[SampleInstance]],
    fault_server: Any,
) -> None:
    """The DICOMweb store errors on the WADO-RS of one series: its instances fail, the
    others are delivered, the final status is 0xB000 listing the failed instances."""
    corpus = data["corpus"]
    proxy: HttpFaultServer = fault_server(backend.http_url)
    bad_series = corpus[0].series_uid
    proxy.fail_next(500, times=50, method="GET", path_contains=f"/series/{bad_series}")
    adapter = start_adapter(f"{proxy.url}/dicom-web",
                            destinations=[("ALLSCP", LOCALHOST, scps["ALL"].port)])
    try:
        statuses = c_move(adapter.server.port, study_keys(corpus[0].study_uid), "ALLSCP")
    finally:
        adapter.stop()
    final = statuses[-1]
    bad = {s.sop_instance_uid for s in corpus if s.series_uid == bad_series}
    assert final.Status == 0xB000
    assert final.NumberOfFailedSuboperations == len(bad)
    assert final.NumberOfCompletedSuboperations == len(corpus) - len(bad)
    failed = final.FailedSOPInstanceUIDList
    assert set([failed] if isinstance(failed, str) else failed) == bad
