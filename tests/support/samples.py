"""DICOM test data built at run time, with fresh UIDs, from files that pydicom ships.

- :func:`make_samples` restamps one file per *kind* (a transfer syntax, a multi-frame object, a
  private SOP class...) with a new Study/Series/SOP Instance UID each. Apart from the UID
  elements and the file meta, the datasets are untouched: transfer syntax and pixel data bytes
  are preserved exactly.
- :func:`make_corpus` writes N small instances spread over a few studies and series.
- :func:`make_large_instance` writes a valid uncompressed instance of about N MB, streaming the
  pixel data frame by frame (one frame in memory at a time).

Source files come from the pydicom wheel (``pydicom/data/test_files``) and, for some kinds, from
the optional ``pydicom-data`` package; :func:`sample_files` says which kinds are available here.
Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from tests.support.components import missing

__all__ = [
    "CORPUS_SOURCES",
    "PRIVATE_SOP_CLASS_UID",
    "SAMPLE_SOURCES",
    "SampleInstance",
    "make_corpus",
    "make_large_instance",
    "make_samples",
    "pixel_data_bytes",
    "pixel_data_sha256",
    "restamp",
    "sample_files",
]

PRIVATE_SOP_CLASS_UID = "1.3.6.1.4.1.9590.100.1.2.999.1"
"""A storage SOP class UID that no standard or toolkit knows."""

MULTIFRAME_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"

SAMPLE_SOURCES: dict[str, tuple[str, ...]] = {
    "explicit_le": ("CT_small.dcm",),
    "implicit_le": ("MR_small_implicit.dcm",),
    "big_endian": ("MR_small_bigendian.dcm",),
    "jpeg_baseline": ("SC_rgb_jpeg_dcmtk.dcm",),
    "jpeg_extended": ("JPGExtended.dcm",),
    "jpeg_lossless": ("SC_rgb_jpeg_gdcm.dcm",),
    "jpeg2000_lossless": ("MR_small_jp2klossless.dcm",),
    "jpeg2000": ("693_J2KI.dcm", "JPEG2000.dcm"),
    "jpegls_lossless": ("MR_small_jpeg_ls_lossless.dcm",),
    "rle": ("MR_small_RLE.dcm",),
    "multiframe": ("emri_small.dcm", "rtdose.dcm"),
    "private_sop_class": ("CT_small.dcm",),
}
"""Sample kind -> candidate source files, first available wins."""

CORPUS_SOURCES: dict[str, str] = {"CT": "CT_small.dcm", "MR": "MR_small.dcm"}
"""Corpus kind (a modality) -> source file (both explicit VR little endian)."""

_PIXEL_DATA_TAG = 0x7FE00010


@dataclass(frozen=True)
class SampleInstance:
    """One DICOM file written for a test, with the identifiers a test asserts on."""

    kind: str
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    pixel_sha256: str | None = None

    @property
    def size(self) -> int:
        """File size in bytes."""
        return self.path.stat().st_size


def pydicom_test_file(name: str) -> Path:
    """Return the path of one of pydicom's test files (fetched as pydicom does when missing).

    Raises ``FileNotFoundError`` when pydicom has no file of that name.
    """
    found = get_testdata_file(name)
    if not isinstance(found, str):  # None when unknown; a Dataset only when asked to read it
        raise FileNotFoundError(f"pydicom's test data has no {name}")
    return Path(found)


def _find_source(name: str) -> Path | None:
    found = get_testdata_file(name, download=False)
    return Path(found) if isinstance(found, str) else None


def sample_files() -> dict[str, Path]:
    """Return the available sample kinds and the source file each is built from."""
    available: dict[str, Path] = {}
    for kind, candidates in SAMPLE_SOURCES.items():
        for name in candidates:
            source = _find_source(name)
            if source is not None:
                available[kind] = source
                break
    return available


def _sha256(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


def _record(kind: str, path: Path, ds: Dataset) -> SampleInstance:
    return SampleInstance(
        kind=kind,
        path=path,
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        pixel_sha256=_sha256(ds.get("PixelData")),
    )


def _stamp(
    ds: Dataset,
    *,
    study_uid: str | None,
    series_uid: str | None,
    sop_instance_uid: str | None,
    sop_class_uid: str | None,
) -> None:
    """Set fresh (or given) UIDs on ``ds`` and keep its file meta consistent."""
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if sop_class_uid is not None:
        ds.SOPClassUID = sop_class_uid
        ds.file_meta.MediaStorageSOPClassUID = UID(sop_class_uid)


def restamp(
    source: str | Path,
    destination: str | Path,
    *,
    kind: str = "sample",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
    sop_class_uid: str | None = None,
) -> SampleInstance:
    """Copy a DICOM file with new UIDs (fresh ones unless given), preserving everything else.

    The file is written as it was read (``enforce_file_format=False``), so its transfer syntax
    and pixel data bytes are unchanged.
    """
    ds = pydicom.dcmread(source)
    _stamp(
        ds,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_instance_uid=sop_instance_uid,
        sop_class_uid=sop_class_uid,
    )
    path = Path(destination)
    ds.save_as(path, enforce_file_format=False)
    return _record(kind, path, ds)


def make_samples(directory: str | Path, kinds: Iterable[str] | None = None) -> list[SampleInstance]:
    """Write one sample per kind (default: every available kind) to ``directory``.

    Each sample gets its own fresh study, series and instance UIDs (the source files belong to
    different patients, so sharing a study would mix patients). A requested kind whose source
    file is not installed skips the test (fails it in CI).
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    available = sample_files()
    wanted = list(available) if kinds is None else list(kinds)
    samples: list[SampleInstance] = []
    for kind in wanted:
        if kind not in SAMPLE_SOURCES:
            raise KeyError(f"unknown sample kind {kind!r}; known: {sorted(SAMPLE_SOURCES)}")
        if kind not in available:
            missing(f"no source file for sample kind {kind!r} (tried {SAMPLE_SOURCES[kind]})")
        sop_instance_uid = generate_uid()
        samples.append(
            restamp(
                available[kind],
                target / f"{kind}_{sop_instance_uid}.dcm",
                kind=kind,
                sop_instance_uid=sop_instance_uid,
                sop_class_uid=PRIVATE_SOP_CLASS_UID if kind == "private_sop_class" else None,
            )
        )
    return samples


def make_corpus(
    directory: str | Path,
    n: int,
    kinds: Sequence[str] = ("CT", "MR"),
    *,
    studies: int | None = None,
    series_per_study: int = 2,
) -> list[SampleInstance]:
    """Write ``n`` small explicit-VR-LE instances over a few studies and series.

    Instances cycle through ``kinds`` (keys of :data:`CORPUS_SOURCES`) and are spread over
    ``studies`` studies (default: about one per 10 instances, 1 to 5), each with
    ``series_per_study`` series per kind. Each study gets its own patient (PatientID and
    PatientName are set so a study never mixes patients); InstanceNumber and SeriesNumber are set.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    study_count = studies if studies is not None else max(1, min(5, n // 10))
    sources: dict[str, Dataset] = {}
    for kind in kinds:
        if kind not in CORPUS_SOURCES:
            raise KeyError(f"unknown corpus kind {kind!r}; known: {sorted(CORPUS_SOURCES)}")
        source = _find_source(CORPUS_SOURCES[kind])
        if source is None:
            missing(f"corpus source {CORPUS_SOURCES[kind]!r} not installed")
        sources[kind] = pydicom.dcmread(source)
    corpus_tag = generate_uid()[-8:]
    study_uids = [generate_uid() for _ in range(study_count)]
    series_uids: dict[tuple[int, str, int], str] = {}
    series_numbers: dict[str, int] = {}
    instance_numbers: dict[str, int] = {}
    samples: list[SampleInstance] = []
    for index in range(n):
        kind = kinds[index % len(kinds)]
        study_index = (index // len(kinds)) % study_count
        series_index = (index // (len(kinds) * study_count)) % series_per_study
        key = (study_index, kind, series_index)
        if key not in series_uids:
            series_uids[key] = generate_uid()
            series_numbers[series_uids[key]] = sum(
                1 for other in series_uids if other[0] == study_index
            )
        series_uid = series_uids[key]
        instance_numbers[series_uid] = instance_numbers.get(series_uid, 0) + 1
        ds = sources[kind]  # reused: each instance is written before the next one is stamped
        _stamp(
            ds,
            study_uid=study_uids[study_index],
            series_uid=series_uid,
            sop_instance_uid=None,
            sop_class_uid=None,
        )
        ds.PatientID = f"CORPUS-{corpus_tag}-{study_index}"
        ds.PatientName = f"Corpus^{corpus_tag}^{study_index}"
        ds.SeriesNumber = series_numbers[series_uid]
        ds.InstanceNumber = instance_numbers[series_uid]
        path = target / f"{kind}_{index:05d}_{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=False)
        samples.append(_record(kind, path, ds))
    return samples


def make_large_instance(
    directory: str | Path,
    megabytes: float,
    *,
    rows: int = 512,
    columns: int = 512,
) -> SampleInstance:
    """Write a Multi-frame Grayscale Word Secondary Capture instance with about ``megabytes`` MiB.

    Explicit VR little endian, 16-bit MONOCHROME2 frames of ``rows`` x ``columns``; the header is
    written by pydicom, then the Pixel Data element is appended one frame at a time (frame ``i``
    holds ``(arange(rows*columns) + i) mod 2**16``), so memory use is one frame. The returned
    ``pixel_sha256`` is the digest of the Pixel Data value.
    """
    frame_bytes = rows * columns * 2
    frames = max(1, math.ceil(megabytes * 1024 * 1024 / frame_bytes))
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)

    ds = Dataset()
    ds.SOPClassUID = MULTIFRAME_GRAYSCALE_WORD_SC
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Large^Instance"
    ds.PatientID = f"LARGE-{ds.SOPInstanceUID[-8:]}"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Modality = "OT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ConversionType = "WSD"
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00182001  # Page Number Vector
    ds.PageNumberVector = list(range(1, frames + 1))
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    path = target / f"large_{ds.SOPInstanceUID}.dcm"
    digest = hashlib.sha256()
    base = np.arange(rows * columns, dtype="<u2")  # wraps modulo 2**16
    with path.open("wb") as stream:
        ds.save_as(stream, enforce_file_format=True)
        stream.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frames * frame_bytes))
        for frame in range(frames):
            data = (base + np.uint16(frame % 65536)).tobytes()
            digest.update(data)
            stream.write(data)
    return SampleInstance(
        kind="large",
        path=path,
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        transfer_syntax_uid=str(ExplicitVRLittleEndian),
        pixel_sha256=digest.hexdigest(),
    )


def pixel_data_bytes(source: str | Path | bytes) -> bytes:
    """Return the raw Pixel Data value (as encoded in the file) of a small file or Part 10 bytes."""
    ds = pydicom.dcmread(BytesIO(source) if isinstance(source, bytes) else source)
    value = ds.get("PixelData")
    if not isinstance(value, bytes):
        raise ValueError("no Pixel Data")
    return value


def pixel_data_sha256(path: str | Path) -> str:
    """Return the SHA-256 of the raw Pixel Data value, streaming it when its length is defined."""
    ds = pydicom.dcmread(path, defer_size=4096)
    raw = ds.get_item(_PIXEL_DATA_TAG)
    offset = getattr(raw, "value_tell", None)
    length = getattr(raw, "length", None)
    if raw is None:
        raise ValueError(f"{path}: no Pixel Data")
    if (
        offset is None
        or length is None
        or length == 0xFFFFFFFF
        or getattr(raw, "value", None) is not None
    ):
        return hashlib.sha256(pixel_data_bytes(path)).hexdigest()
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        stream.seek(offset)
        remaining = int(length)
        while remaining:
            chunk = stream.read(min(remaining, 1 << 20))
            if not chunk:
                raise ValueError(f"{path}: truncated Pixel Data")
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def write_minimal_instance(path: Path, sop_class_uid: str, patient_id: str = "TEST") -> Path:
    """Write a Part 10 file with no pixel data: a SOP class, a fresh SOP instance, a patient ID."""
    ds = Dataset()
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path
