"""Import adapter, C-ECHO and C-STORE -> STOW-RS, across the real wire.

DCMTK (echoscu, dcmsend, storescu) and pynetdicom are the SCUs; Orthanc with its DICOMweb plugin
is the store; an HTTP fault proxy in front of Orthanc makes it answer 4xx/5xx on demand.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from common.dicom.part10 import build_file_meta, meta_end
from common.dimse.fast.acse import decode_associate_rj
from common.dimse.fast.constants import PduType, RejectReason
from common.status import Status
from tests.support import dcmtk
from tests.support.adapters import IMPORT_AET, running_import_adapter
from tests.support.http_fault_server import HttpFaultServer
from tests.support.orthanc import OrthancServer
from tests.support.ports import wait_until
from tests.support.raw_pdu import association_answer
from tests.support.samples import SampleInstance, make_corpus, pixel_data_bytes


@pytest.fixture
def adapter(orthanc: OrthancServer) -> Iterator[int]:
    """An import adapter in front of the shared Orthanc; yields its DIMSE port."""
    with running_import_adapter(orthanc.dicomweb_url) as running:
        yield running.server.port


def pynetdicom_store(port: int, path: Path, called_aet: str = IMPORT_AET) -> int:
    """C-STORE a file's bytes exactly as they are on disk (pynetdicom chunked send)."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    meta = pydicom.filereader.read_file_meta_info(path)
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", port, ae_title=called_aet)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(path)
        return int(status.Status)
    finally:
        assoc.release()


def dataset_bytes(raw: bytes) -> bytes:
    """The dataset part of a Part 10 file's bytes."""
    return raw[meta_end(raw) :]


# -- C-ECHO and association policy ------------------------------------------------------------


def test_echo_succeeds(adapter: int) -> None:
    result = dcmtk.echoscu("127.0.0.1", adapter, IMPORT_AET)
    assert result.returncode == 0, result.stdout + result.stderr


def test_wrong_called_ae_title_is_rejected(adapter: int) -> None:
    result = dcmtk.echoscu("127.0.0.1", adapter, "SOMEONEELSE")
    assert result.returncode != 0
    assert "Called AE Title Not Recognized" in result.stdout + result.stderr


def test_sockets_have_nodelay_and_associations_are_limited(orthanc: OrthancServer) -> None:
    with running_import_adapter(orthanc.dicomweb_url, dimse_max_associations=2) as running:
        ae = AE(ae_title="PYSCU")
        ae.add_requested_context(Verification)
        held = [ae.associate("127.0.0.1", running.server.port, ae_title=IMPORT_AET)]
        held.append(ae.associate("127.0.0.1", running.server.port, ae_title=IMPORT_AET))
        try:
            assert all(a.is_established for a in held)
            for serving in running.server.active_associations:
                sock = serving.socket
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            third = association_answer(running.server.port, IMPORT_AET)
            assert third[0] == PduType.ASSOCIATE_RJ
            reject = decode_associate_rj(third[6:])
            assert reject.reason == RejectReason.LOCAL_LIMIT_EXCEEDED
        finally:
            for assoc in held:
                assoc.release()


# -- round trips --------------------------------------------------------------------------------


def _assert_stored_identically(orthanc: OrthancServer, sample: SampleInstance) -> None:
    fetched = orthanc.wado_instance(sample.study_uid, sample.series_uid, sample.sop_instance_uid)
    stored = pydicom.dcmread(io.BytesIO(fetched))
    original = pydicom.dcmread(sample.path)
    assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert stored.SOPInstanceUID == sample.sop_instance_uid
    if "PixelData" in original:
        assert pixel_data_bytes(fetched) == pixel_data_bytes(sample.path), sample.kind
    for element in original:
        # Pixel data is compared above; DCMTK drops Data Set Trailing Padding when it sends.
        if element.tag.group not in (0x7FE0, 0xFFFC):
            assert stored[element.tag].value == element.value, (sample.kind, element.keyword)


def test_every_sample_kind_round_trips_with_dcmtk(
    adapter: int, orthanc: OrthancServer, tmp_samples: list[SampleInstance]
) -> None:
    result = dcmtk.storescu(
        "127.0.0.1", adapter, [s.path for s in tmp_samples], IMPORT_AET, per_file_syntax=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for sample in tmp_samples:
        _assert_stored_identically(orthanc, sample)


def test_dataset_bytes_reach_the_store_unchanged(
    adapter: int, orthanc: OrthancServer, tmp_samples: list[SampleInstance]
) -> None:
    for sample in tmp_samples:
        assert pynetdicom_store(adapter, sample.path) == Status.SUCCESS, sample.kind
        fetched = orthanc.wado_instance(
            sample.study_uid, sample.series_uid, sample.sop_instance_uid
        )
        assert dataset_bytes(fetched) == dataset_bytes(sample.path.read_bytes()), sample.kind


def test_many_instances_over_one_and_several_associations(
    adapter: int, orthanc: OrthancServer, tmp_path: Path
) -> None:
    corpus = make_corpus(tmp_path / "corpus", 160)
    result = dcmtk.dcmsend("127.0.0.1", adapter, [s.path for s in corpus[:80]], IMPORT_AET)
    assert result.returncode == 0, result.stdout[-2000:]
    chunks = [corpus[80 + i :: 4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda chunk: dcmtk.dcmsend(
                    "127.0.0.1", adapter, [s.path for s in chunk], IMPORT_AET
                ),
                chunks,
            )
        )
    assert all(r.returncode == 0 for r in results)
    for sample in corpus:
        hits = orthanc.qido("/instances", {"SOPInstanceUID": sample.sop_instance_uid})
        assert len(hits) == 1, sample.sop_instance_uid


# -- bad input --------------------------------------------------------------------------------


def _variant(sample: SampleInstance, tmp_path: Path, mutate: Callable[[bytearray], None]) -> Path:
    raw = bytearray(sample.path.read_bytes())
    mutate(raw)
    path = tmp_path / f"variant-{generate_uid()}.dcm"
    path.write_bytes(bytes(raw))
    return path


def test_truncated_dataset_is_refused_and_not_stored(
    adapter: int, orthanc: OrthancServer, tmp_samples: list[SampleInstance], tmp_path: Path
) -> None:
    sample = next(s for s in tmp_samples if s.kind == "explicit_le")
    truncated = _variant(sample, tmp_path, lambda raw: raw.__delitem__(slice(-100, None)))
    assert pynetdicom_store(adapter, truncated) == Status.CANNOT_UNDERSTAND
    assert orthanc.qido("/instances", {"SOPInstanceUID": sample.sop_instance_uid}) == []
    # The adapter keeps serving.
    assert pynetdicom_store(adapter, sample.path) == Status.SUCCESS


def _with_meta(sample: SampleInstance, tmp_path: Path, **meta: str) -> Path:
    """The sample's dataset bytes behind file meta that says something else."""
    uids = {
        "sop_class_uid": sample.sop_class_uid,
        "sop_instance_uid": sample.sop_instance_uid,
        "transfer_syntax_uid": sample.transfer_syntax_uid,
        **meta,
    }
    path = tmp_path / f"meta-{generate_uid()}.dcm"
    path.write_bytes(build_file_meta(**uids) + dataset_bytes(sample.path.read_bytes()))
    return path


def test_command_dataset_uid_mismatch_is_refused(
    adapter: int, orthanc: OrthancServer, tmp_samples: list[SampleInstance], tmp_path: Path
) -> None:
    sample = next(s for s in tmp_samples if s.kind == "explicit_le")
    other_instance = _with_meta(sample, tmp_path, sop_instance_uid=generate_uid())
    assert pynetdicom_store(adapter, other_instance) == Status.CANNOT_UNDERSTAND
    other_class = _with_meta(sample, tmp_path, sop_class_uid="1.2.840.10008.5.1.4.1.1.4")
    assert pynetdicom_store(adapter, other_class) == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert orthanc.qido("/instances", {"SOPInstanceUID": sample.sop_instance_uid}) == []


@pytest.mark.parametrize(
    ("http_status", "dimse_status"),
    [
        (400, Status.CANNOT_UNDERSTAND),
        (403, Status.NOT_AUTHORIZED),
        (409, Status.DUPLICATE_SOP_INSTANCE),
        (413, Status.OUT_OF_RESOURCES),
        (503, Status.OUT_OF_RESOURCES),
        (500, Status.PROCESSING_FAILURE),
    ],
)
def test_http_errors_map_to_statuses(
    orthanc: OrthancServer,
    fault_server: Callable[..., HttpFaultServer],
    tmp_samples: list[SampleInstance],
    http_status: int,
    dimse_status: int,
) -> None:
    proxy = fault_server(upstream=orthanc.http_url)
    sample = next(s for s in tmp_samples if s.kind == "explicit_le")
    with running_import_adapter(f"{proxy.url}/dicom-web") as running:
        proxy.fail_next(http_status, times=1000, body=b'{"error": "scripted"}')
        assert pynetdicom_store(running.server.port, sample.path) == dimse_status
        assert orthanc.qido("/instances", {"SOPInstanceUID": sample.sop_instance_uid}) == []
        proxy.clear_faults()
        assert pynetdicom_store(running.server.port, sample.path) == Status.SUCCESS
    assert len(orthanc.qido("/instances", {"SOPInstanceUID": sample.sop_instance_uid})) == 1


@pytest.mark.parametrize(
    ("http_status", "dimse_status", "retried"),
    [
        (501, Status.PROCESSING_FAILURE, False),  # Not Implemented: final
        (505, Status.PROCESSING_FAILURE, True),  # any other 5xx: retried within the budget
        (507, Status.OUT_OF_RESOURCES, True),
        (403, Status.NOT_AUTHORIZED, False),  # permissions: not fixed by a retry
    ],
)
def test_failure_table_retry_column_on_the_wire(
    fault_server: Callable[..., HttpFaultServer],
    tmp_samples: list[SampleInstance],
    http_status: int,
    dimse_status: int,
    retried: bool,
) -> None:
    """What the failure table says a C-STORE retries is what goes out as STOW-RS requests."""
    sink = fault_server()
    sample = next(s for s in tmp_samples if s.kind == "explicit_le")
    with running_import_adapter(f"{sink.url}/dicom-web") as running:
        sink.fail_next(http_status, times=1000, method="POST", body=b"scripted")
        assert pynetdicom_store(running.server.port, sample.path) == dimse_status
    posts = [r for r in sink.requests if r.method == "POST"]
    assert (len(posts) > 1) is retried, [r.status for r in posts]


def test_transient_errors_are_retried_then_stored(
    orthanc: OrthancServer,
    fault_server: Callable[..., HttpFaultServer],
    tmp_samples: list[SampleInstance],
) -> None:
    proxy = fault_server(upstream=orthanc.http_url)
    sample = next(s for s in tmp_samples if s.kind == "explicit_le")
    with running_import_adapter(f"{proxy.url}/dicom-web") as running:
        proxy.fail_next(503, times=2, retry_after=0)
        proxy.fail_next(429, times=1)
        proxy.drop_next(times=1)
        assert pynetdicom_store(running.server.port, sample.path) == Status.SUCCESS
    posts = [r for r in proxy.requests if r.method == "POST"]
    assert len(posts) == 5
    assert len(orthanc.qido("/instances", {"SOPInstanceUID": sample.sop_instance_uid})) == 1


def test_store_failure_reason_is_passed_through(
    fault_server: Callable[..., HttpFaultServer], tmp_samples: list[SampleInstance]
) -> None:
    sink = fault_server()
    sample = next(s for s in tmp_samples if s.kind == "explicit_le")
    failed = (
        '{"00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["%s"]},'
        ' "00081197": {"vr": "US", "Value": [43264]}}]}}' % sample.sop_instance_uid
    )
    with running_import_adapter(f"{sink.url}/dicom-web") as running:
        sink.fail_next(200, body=failed.encode(), content_type="application/dicom+json")
        assert pynetdicom_store(running.server.port, sample.path) == 0xA900


def test_store_down_then_back(fresh_orthanc: Callable[..., OrthancServer], tmp_path: Path) -> None:
    store = fresh_orthanc()
    corpus = make_corpus(tmp_path / "c", 3)
    with running_import_adapter(store.dicomweb_url) as running:
        port = running.server.port
        assert pynetdicom_store(port, corpus[0].path) == Status.SUCCESS
        store.stop()
        # Its retries open the store's circuit breaker: "known down", try later.
        assert pynetdicom_store(port, corpus[1].path) == Status.OUT_OF_RESOURCES
        store.start()
        breaker = running.breakers.get(running.config.dicomweb)
        assert breaker is not None
        wait_until(lambda: not breaker.is_open, timeout=20, message="store probed back up")
        assert pynetdicom_store(port, corpus[2].path) == Status.SUCCESS
        assert pynetdicom_store(port, corpus[1].path) == Status.SUCCESS
    assert store.count_instances() == 3


def test_concurrent_associations_into_a_sink(
    fault_server: Callable[..., HttpFaultServer], tmp_path: Path
) -> None:
    sink = fault_server()
    corpus = make_corpus(tmp_path / "c", 40)
    with running_import_adapter(f"{sink.url}/dicom-web") as running:
        results: list[int] = []
        lock = threading.Lock()

        def send(chunk: list[SampleInstance]) -> None:
            r = dcmtk.dcmsend("127.0.0.1", running.server.port, [s.path for s in chunk], IMPORT_AET)
            with lock:
                results.append(r.returncode)

        threads = [threading.Thread(target=send, args=(corpus[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == [0, 0, 0, 0]
    assert len(sink.stored_instances) == 40
