"""Unit tests of the dataset scanner (structure check + UID extraction)."""

from __future__ import annotations

import io
import struct

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from common.dicom.part10 import dataset_offset
from common.dicom.scan import DatasetSummary, scan_dataset
from common.errors import MalformedDatasetError
from tests.support.samples import pydicom_test_file


def _encode(ds: Dataset, implicit: bool, little: bool = True) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    write_dataset(fp, ds)
    return fp.getvalue()


def _scan(raw: bytes, ts: str) -> DatasetSummary:
    return scan_dataset(io.BytesIO(raw), len(raw), ts)


def _sample() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    item = Dataset()
    item.CodeValue = "X"
    inner = Dataset()
    inner.CodeMeaning = "nested"
    item.ConceptNameCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([item, Dataset()])
    ds.PatientName = "Test^Patient"
    ds.BitsAllocated = 16
    ds.PixelData = b"\x00\x01" * 64
    return ds


@pytest.mark.parametrize(
    ("ts", "implicit", "little"),
    [
        (ImplicitVRLittleEndian, True, True),
        (ExplicitVRLittleEndian, False, True),
        (ExplicitVRBigEndian, False, False),
    ],
)
def test_reads_uids_in_each_uncompressed_syntax(ts: str, implicit: bool, little: bool) -> None:
    raw = _encode(_sample(), implicit, little)
    summary = _scan(raw, ts)
    assert summary.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert summary.sop_instance_uid == "1.2.3.4.5"
    assert summary.study_instance_uid == "1.2.3"
    assert summary.series_instance_uid == "1.2.3.4"


@pytest.mark.parametrize("cut", [1, 3, 7, 20, 100])
def test_any_truncation_is_detected(cut: int) -> None:
    raw = _encode(_sample(), implicit=False)
    with pytest.raises(MalformedDatasetError):
        _scan(raw[:-cut], ExplicitVRLittleEndian)


def test_every_shipped_sample_scans_and_truncated_ones_fail() -> None:
    folder = pydicom_test_file("CT_small.dcm").parent
    checked = 0
    for path in sorted(folder.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            ts = str(ds.file_meta.TransferSyntaxUID)
            offset = dataset_offset(path)
        except Exception:
            continue  # not a Part 10 file with meta: not what the scanner sees
        with path.open("rb") as fp:
            fp.seek(offset)
            if "truncated" in path.name:
                with pytest.raises(MalformedDatasetError):
                    scan_dataset(fp, path.stat().st_size - offset, ts)
                continue
            summary = scan_dataset(fp, path.stat().st_size - offset, ts)
        assert summary.sop_instance_uid == ds.get("SOPInstanceUID", "")
        checked += 1
    assert checked > 50


def test_encapsulated_pixel_data_is_walked() -> None:
    path = pydicom_test_file("JPEG2000.dcm")
    offset = dataset_offset(path)
    raw = path.read_bytes()[offset:]
    ts = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    assert _scan(raw, ts).sop_instance_uid
    # Drop the sequence delimiter of the encapsulated pixel data.
    with pytest.raises(MalformedDatasetError):
        _scan(raw[:-8], ts)


def test_garbage_is_refused() -> None:
    with pytest.raises(MalformedDatasetError):
        _scan(b"\x08\x00\x16\x00ZZ\xff\xff" + b"x" * 10, ExplicitVRLittleEndian)
    with pytest.raises(MalformedDatasetError):
        _scan(struct.pack("<HHI", 0x0010, 0x0010, 1000) + b"abc", ImplicitVRLittleEndian)


def test_implicit_data_under_explicit_syntax_is_accepted() -> None:
    raw = _encode(_sample(), implicit=True)
    assert _scan(raw, ExplicitVRLittleEndian).sop_instance_uid == "1.2.3.4.5"


def test_deeply_nested_sequences_are_refused() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2"
    node = ds
    for _ in range(40):
        child = Dataset()
        node.ReferencedImageSequence = Sequence([child])
        node = child
    raw = _encode(ds, implicit=False)
    with pytest.raises(MalformedDatasetError, match="nested"):
        _scan(raw, ExplicitVRLittleEndian)


def test_deflated_dataset() -> None:
    path = pydicom_test_file("image_dfl.dcm")
    offset = dataset_offset(path)
    ts = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    with path.open("rb") as fp:
        fp.seek(offset)
        summary = scan_dataset(fp, path.stat().st_size - offset, ts)
    assert summary.sop_instance_uid
