"""Unit tests of the converter: every sample syntax to every target, pixels and photometrics."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from common.dicom.part10 import Part10Instance
from common.dicom.transcode import (
    TARGET_SYNTAXES,
    TranscodeSettings,
    check_target,
    convert_dataset,
    convert_file,
    transcode_instance,
)
from common.errors import ConfigError, TranscodeError
from tests.support.samples import make_samples, pydicom_test_file

LOSSY = {JPEGBaseline8Bit, JPEG2000}
KINDS = ["explicit_le", "implicit_le", "big_endian", "jpeg_baseline", "jpeg_extended",
         "jpeg_lossless", "jpeg2000_lossless", "jpeg2000", "jpegls_lossless", "rle",
         "multiframe"]  # fmt: skip


def decoded(path_or_bytes: Path | bytes) -> tuple[Dataset, np.ndarray]:
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    ds = pydicom.dcmread(source)
    return ds, ds.pixel_array


def instance_of(path: Path) -> Part10Instance:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return Part10Instance.from_spooled(
        path,
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
    )


def jpeg_baseline_possible(ds: Dataset) -> bool:
    return bool(
        ds.BitsAllocated == 8
        and ds.PixelRepresentation == 0
        and ds.PhotometricInterpretation != "PALETTE COLOR"
    )


def assert_close(before: np.ndarray, after: np.ndarray, lossy: bool, bits: int) -> None:
    assert before.shape == after.shape
    difference = np.abs(before.astype(np.int64) - after.astype(np.int64))
    if not lossy:
        assert difference.max() == 0
    else:
        # Mean error under 2% of the range: close, not equal.
        assert difference.mean() < 0.02 * (1 << bits), difference.mean()


@pytest.mark.parametrize("target", list(TARGET_SYNTAXES), ids=lambda t: TARGET_SYNTAXES[t])
@pytest.mark.parametrize("kind", KINDS)
def test_every_sample_to_every_target(tmp_path: Path, kind: str, target: str) -> None:
    (sample,) = make_samples(tmp_path / "in", [kind])
    source, before = decoded(sample.path)
    settings = TranscodeSettings(target=target)
    destination = tmp_path / "out.dcm"
    if target == JPEGBaseline8Bit and not jpeg_baseline_possible(source) and (
        sample.transfer_syntax_uid != JPEGBaseline8Bit
    ):
        with pytest.raises(TranscodeError):
            transcode_instance(instance_of(sample.path), settings, destination)
        return
    result = transcode_instance(instance_of(sample.path), settings, destination)
    if sample.transfer_syntax_uid == target:
        assert result.dataset_path == sample.path  # nothing done
        assert not destination.exists() or destination.stat().st_size == 0
        return
    out, after = decoded(b"".join(result.iter_chunks()))
    assert out.file_meta.TransferSyntaxUID == target == result.transfer_syntax_uid
    assert out.SOPInstanceUID == sample.sop_instance_uid
    assert out.file_meta.MediaStorageSOPInstanceUID == sample.sop_instance_uid
    lossy = target in LOSSY
    assert_close(before, after, lossy, int(source.BitsStored))
    if lossy:
        assert out.LossyImageCompression == "01"
    samples = int(source.SamplesPerPixel)
    if samples == 1:
        assert out.PhotometricInterpretation == source.PhotometricInterpretation
    elif target == JPEGBaseline8Bit:
        assert out.PhotometricInterpretation == "YBR_FULL_422"
    else:
        assert out.PhotometricInterpretation == "RGB"


def test_unsupported_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        check_target("1.2.840.10008.1.2.2")
    with pytest.raises(ConfigError):
        TranscodeSettings(target="1.2.3")


def test_lossy_palette_colour_is_refused() -> None:
    ds = pydicom.dcmread(pydicom_test_file("OBXXXX1A.dcm"))
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    with pytest.raises(TranscodeError, match="palette"):
        convert_dataset(ds, JPEG2000)


def test_sixteen_bit_to_jpeg_baseline_is_refused() -> None:
    ds = pydicom.dcmread(pydicom_test_file("CT_small.dcm"))
    with pytest.raises(TranscodeError, match="8-bit"):
        convert_dataset(ds, JPEGBaseline8Bit)


def test_lossy_ratio_and_method_are_recorded_and_accumulate() -> None:
    ds = pydicom.dcmread(pydicom_test_file("SC_rgb.dcm"))
    convert_dataset(ds, JPEGBaseline8Bit)
    assert ds.LossyImageCompressionMethod == "ISO_10918_1"
    convert_dataset(ds, JPEG2000)
    assert list(ds.LossyImageCompressionMethod) == ["ISO_10918_1", "ISO_15444_1"]
    assert len(ds.LossyImageCompressionRatio) == 2
    assert ds.PhotometricInterpretation == "RGB"


def test_dataset_without_pixels_is_relabelled() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.SOPInstanceUID = "1.2.3"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    convert_dataset(ds, JPEG2000Lossless)
    assert ds.file_meta.TransferSyntaxUID == JPEG2000Lossless


def test_convert_file_keeps_the_sop_instance_uid(tmp_path: Path) -> None:
    # pydicom's decompress() makes a new SOP Instance UID unless told not to.
    source = pydicom_test_file("MR_small_RLE.dcm")
    original = pydicom.dcmread(source)
    for target in (ExplicitVRLittleEndian, JPEGLSLossless, RLELossless):
        convert_file(source, target, tmp_path / "out.dcm")
        out = pydicom.dcmread(tmp_path / "out.dcm")
        assert out.SOPInstanceUID == original.SOPInstanceUID
        assert out.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
        assert (out.pixel_array == original.pixel_array).all()


def test_eight_bit_grayscale_to_jpeg_baseline_keeps_monochrome() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns, ds.NumberOfFrames = 64, 64, 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    frames = np.stack([np.add.outer(np.arange(64), np.arange(64)).astype(np.uint8) + i
                       for i in (0, 40)])  # fmt: skip
    ds.PixelData = frames.tobytes()
    convert_dataset(ds, JPEGBaseline8Bit)
    out, after = decoded(_written(ds))
    assert out.PhotometricInterpretation == "MONOCHROME1"
    assert out.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert_close(frames, after, lossy=True, bits=8)


def _written(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
