"""Converting instances to another transfer syntax (the one converter of the project).

Used when a peer does not accept an instance's transfer syntax (C-MOVE/C-GET sub-operations and
the export adapter, through :mod:`common.dimse.sender`) and for in-transit transcoding of received
instances (``--store_compress_to_transfer_syntax``). Decoding uses pydicom's pixel data handlers
(pylibjpeg with openjpeg and libjpeg, pyjpegls, RLE); encoding uses pydicom's encoders (RLE,
JPEG-LS with pyjpegls, JPEG 2000 with openjpeg) and Pillow for JPEG Baseline, which pydicom
cannot encode.

Conversion loads one instance into memory: pixel data has to be decoded and encoded whole.

Photometric interpretation after conversion:

- decoding a colour instance gives RGB (YBR_FULL, YBR_FULL_422, YBR_ICT, YBR_RCT are converted);
- RLE Lossless, JPEG-LS and JPEG 2000 keep it (JPEG 2000 is encoded without the multiple
  component transform, so RGB stays RGB);
- JPEG Baseline stores colour as YBR_FULL_422 (4:2:2 subsampled YCbCr, PS3.5 8.2.1) and keeps
  MONOCHROME1/MONOCHROME2.

Lossy targets (JPEG Baseline, JPEG 2000) set Lossy Image Compression (0028,2110) to ``01`` and
add the ratio and method (0028,2112/2114). The SOP Instance UID is kept in every case, so the
instance stored is the one the sender announced.
"""

from __future__ import annotations

import io
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filereader import read_dataset
from pydicom.pixels.processing import convert_color_space
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from common.dicom.part10 import Part10Instance
from common.dicom.scan import encoding_of
from common.errors import ConfigError, TranscodeError

if TYPE_CHECKING:
    import numpy as np

LOG = logging.getLogger(__name__)

#: Transfer syntaxes every conversion can produce (no encoder needed).
NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: Transfer syntaxes ``--store_compress_to_transfer_syntax`` accepts, with a short name each.
TARGET_SYNTAXES: dict[str, str] = {
    ExplicitVRLittleEndian: "Explicit VR Little Endian",
    ImplicitVRLittleEndian: "Implicit VR Little Endian",
    RLELossless: "RLE Lossless",
    JPEGBaseline8Bit: "JPEG Baseline (lossy)",
    JPEGLSLossless: "JPEG-LS Lossless",
    JPEG2000Lossless: "JPEG 2000 Lossless",
    JPEG2000: "JPEG 2000 (lossy)",
}
#: Lossy targets and the Lossy Image Compression Method (0028,2114) they record.
_LOSSY_METHODS = {JPEGBaseline8Bit: "ISO_10918_1", JPEG2000: "ISO_15444_1"}
#: OB/OW-like VRs whose raw bytes would need swapping between endiannesses.
_WORD_VRS = frozenset({"OW", "US or OW", "US or SS or OW"})
_YBR_COLOUR = frozenset({"YBR_FULL", "YBR_FULL_422"})


@dataclass(frozen=True)
class LossySettings:
    """How hard lossy targets compress.

    Attributes:
        jpeg_quality: JPEG Baseline quality (1-100, libjpeg scale).
        j2k_compression_ratio: JPEG 2000 (lossy) target compression ratio.
    """

    jpeg_quality: int = 90
    j2k_compression_ratio: float = 10.0


@dataclass(frozen=True)
class TranscodeSettings:
    """In-transit transcoding of received instances.

    Attributes:
        target: the transfer syntax UID to store instances in (one of :data:`TARGET_SYNTAXES`).
        lossy: quality settings for lossy targets.
        strict: fail the C-STORE when an instance cannot be converted, instead of storing it
            unchanged with a warning status.
    """

    target: str
    lossy: LossySettings = LossySettings()
    strict: bool = False

    def __post_init__(self) -> None:
        check_target(self.target)


def check_target(transfer_syntax_uid: str) -> UID:
    """The target as a UID, if we can convert to it.

    Raises:
        ConfigError: not a transfer syntax we can produce.
    """
    if transfer_syntax_uid not in TARGET_SYNTAXES:
        known = ", ".join(f"{uid} ({name})" for uid, name in TARGET_SYNTAXES.items())
        raise ConfigError(f"cannot transcode to {transfer_syntax_uid!r}; supported: {known}")
    return UID(transfer_syntax_uid)


def is_native(transfer_syntax_uid: str) -> bool:
    """Whether a transfer syntax is uncompressed (native) pixel data."""
    try:
        return not UID(transfer_syntax_uid).is_compressed
    except ValueError:
        return False


def _to_little_endian(ds: Dataset) -> None:
    """Re-encode a big endian dataset's raw pixel data as little endian, in place."""
    if "PixelData" in ds:
        array = ds.pixel_array
        ds.PixelData = array.astype(array.dtype.newbyteorder("<")).tobytes()
        ds["PixelData"].VR = "OW" if array.dtype.itemsize > 1 else "OB"
    for element in ds.iterall():
        if element.VR in _WORD_VRS and element.tag != 0x7FE00010 and element.value:
            swapped = bytearray(bytes(element.value))
            swapped[0::2], swapped[1::2] = swapped[1::2], swapped[0::2]
            element.value = bytes(swapped)


def _frames(ds: Dataset) -> np.ndarray:
    """The decoded pixel data as (frames, rows, columns[, samples])."""
    array = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return array.reshape((frames, *array.shape[-3 if ds.SamplesPerPixel > 1 else -2 :]))


def _encode_jpeg_baseline(ds: Dataset, quality: int) -> None:
    """Encode native pixel data as JPEG Baseline (Process 1) with Pillow, in place."""
    # Imported here: numpy and Pillow come with the ``codecs`` extra, and only this target
    # needs Pillow.
    import numpy as np
    from PIL import Image

    samples = int(ds.SamplesPerPixel)
    if ds.BitsAllocated != 8 or ds.get("PixelRepresentation", 0) != 0 or samples not in (1, 3):
        raise TranscodeError(
            "JPEG Baseline needs unsigned 8-bit, 1 or 3 sample pixel data; this has "
            f"{ds.BitsAllocated}-bit, {samples} sample(s), "
            f"pixel representation {ds.get('PixelRepresentation', 0)}"
        )
    photometric = str(ds.PhotometricInterpretation)
    frames = _frames(ds)
    if samples == 3:
        if photometric in _YBR_COLOUR:
            frames = convert_color_space(frames, photometric, "RGB")
        elif photometric != "RGB":
            raise TranscodeError(f"JPEG Baseline cannot encode {photometric} pixel data")
    fragments = []
    for frame in frames:
        buffer = io.BytesIO()
        # subsampling=1 is 4:2:2, what YBR_FULL_422 says; Pillow converts RGB to YCbCr.
        Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).save(
            buffer, format="JPEG", quality=quality, subsampling=1
        )
        fragments.append(buffer.getvalue())
    ds.PixelData = encapsulate(fragments)
    element = ds["PixelData"]
    element.VR = "OB"
    element.is_undefined_length = True
    if samples == 3:
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PlanarConfiguration = 0
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit


def _native_size(ds: Dataset) -> int:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    bytes_per_sample = (int(ds.BitsAllocated) + 7) // 8
    return frames * int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel) * bytes_per_sample


def _values(value: object) -> list[str]:
    """A possibly multi-valued element value as a list of strings ([] when empty)."""
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return [str(value)]
    return [str(item) for item in value]


def _record_lossy(ds: Dataset, method: str, native_size: int) -> None:
    """Set Lossy Image Compression and append this compression's ratio and method."""
    compressed = len(ds.PixelData) or 1
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = [
        *_values(ds.get("LossyImageCompressionRatio")),
        f"{native_size / compressed:.2f}",
    ]
    ds.LossyImageCompressionMethod = [*_values(ds.get("LossyImageCompressionMethod")), method]


def _encode(ds: Dataset, target: UID, lossy: LossySettings) -> None:
    """Encode native pixel data (already little endian) to ``target``, in place."""
    if not target.is_compressed:
        ds.file_meta.TransferSyntaxUID = target
        return
    native = _native_size(ds)
    if target in _LOSSY_METHODS and ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        raise TranscodeError("palette colour indices cannot be compressed lossily")
    if target == JPEGBaseline8Bit:
        _encode_jpeg_baseline(ds, lossy.jpeg_quality)
    elif target == JPEG2000:
        ds.compress(
            target, generate_instance_uid=False, j2k_cr=[lossy.j2k_compression_ratio]
        )
    else:
        ds.compress(target, generate_instance_uid=False)
    if target in _LOSSY_METHODS:
        _record_lossy(ds, _LOSSY_METHODS[target], native)


def convert_dataset(ds: Dataset, target: str, lossy: LossySettings | None = None) -> Dataset:
    """Convert a dataset (with file meta) to ``target`` in place and return it.

    A dataset without pixel data is only relabelled (its header is written the same in every
    syntax but the implicit and big endian ones). The SOP Instance UID is never changed.

    Raises:
        TranscodeError: no decoder or encoder can do it.
    """
    source = UID(ds.file_meta.TransferSyntaxUID)
    target_uid = UID(target)
    if source == target_uid:
        return ds
    try:
        if target_uid == ExplicitVRBigEndian:
            raise TranscodeError("converting to big endian is not supported (retired syntax)")
        if "PixelData" not in ds:
            if any(tag in ds for tag in (0x7FE00008, 0x7FE00009)):
                raise TranscodeError("float pixel data can only be stored uncompressed")
            ds.file_meta.TransferSyntaxUID = target_uid
            return ds
        if source.is_compressed:
            ds.decompress(generate_instance_uid=False)
        elif source == ExplicitVRBigEndian:
            _to_little_endian(ds)
        _encode(ds, target_uid, lossy or LossySettings())
    except TranscodeError:
        raise
    except Exception as exc:  # pydicom raises many kinds (ValueError, RuntimeError, ...)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TranscodeError(
            f"cannot convert {source.name or source} to {target_uid.name or target_uid}: "
            f"{detail}"
        ) from exc
    return ds


def convert_file(
    source: Path, target: str, destination: Path, lossy: LossySettings | None = None
) -> None:
    """Write ``source`` converted to transfer syntax ``target`` as a Part 10 file.

    Raises:
        TranscodeError: the file cannot be read or converted.
    """
    try:
        ds = pydicom.dcmread(source)
    except Exception as exc:
        raise TranscodeError(f"cannot read {source.name}: {exc}") from exc
    convert_dataset(ds, target, lossy)
    _write(ds, destination)


def _write(ds: Dataset, destination: Path) -> None:
    try:
        # dcmwrite, unlike save_as, writes a dataset read as big endian in its new syntax.
        pydicom.dcmwrite(destination, ds, enforce_file_format=True)
    except Exception as exc:
        raise TranscodeError(f"cannot write converted dataset: {exc}") from exc


def read_instance(instance: Part10Instance) -> Dataset:
    """Load a :class:`Part10Instance`'s dataset (with file meta) into memory.

    Raises:
        TranscodeError: the dataset cannot be parsed.
    """
    implicit, little, deflated = encoding_of(instance.transfer_syntax_uid)
    try:
        raw = instance.read_dataset_bytes()
        if deflated:
            raw = zlib.decompress(raw, -zlib.MAX_WBITS)
        ds = read_dataset(io.BytesIO(raw), implicit, little, bytelength=len(raw))
    except Exception as exc:
        raise TranscodeError(f"cannot parse the dataset: {exc}") from exc
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(instance.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(instance.sop_instance_uid)
    meta.TransferSyntaxUID = UID(instance.transfer_syntax_uid)
    ds.file_meta = meta
    return ds


def transcode_instance(
    instance: Part10Instance,
    settings: TranscodeSettings,
    destination: Path,
    *,
    source_aet: str = "",
) -> Part10Instance:
    """``instance`` in ``settings.target``, written to ``destination`` if it had to change.

    Returns ``instance`` itself when it already is in the target syntax (nothing is written).

    Raises:
        TranscodeError: the instance cannot be converted.
    """
    target = UID(settings.target)
    if UID(instance.transfer_syntax_uid) == target:
        return instance
    ds = read_instance(instance)
    convert_dataset(ds, target, settings.lossy)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(instance.sop_instance_uid)
    _write(ds, destination)
    return Part10Instance.from_spooled(
        destination,
        sop_class_uid=instance.sop_class_uid,
        sop_instance_uid=instance.sop_instance_uid,
        transfer_syntax_uid=str(target),
        source_aet=source_aet,
    )
