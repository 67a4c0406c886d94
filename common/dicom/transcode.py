"""Converting a Part 10 file to another transfer syntax (the one converter of the project).

Used when a peer does not accept an instance's transfer syntax (C-MOVE/C-GET sub-operations,
the export adapter) and for in-transit transcoding. Decoding uses pydicom's pixel data handlers
(pylibjpeg, openjpeg, libjpeg, RLE); encoding uses pydicom's encoders. Conversion loads one
instance into memory: it is the exception path, never the pass-through path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from common.errors import TranscodeError

LOG = logging.getLogger(__name__)

#: Transfer syntaxes every conversion can produce (no encoder needed).
NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: OB/OW-like VRs whose raw bytes would need swapping between endiannesses.
_WORD_VRS = frozenset({"OW", "US or OW", "US or SS or OW"})


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


def convert_dataset(ds: Dataset, target: str) -> Dataset:
    """Convert a dataset (with file meta) to ``target`` in place and return it.

    Raises:
        TranscodeError: no decoder or encoder can do it.
    """
    source = UID(ds.file_meta.TransferSyntaxUID)
    target_uid = UID(target)
    if source == target_uid:
        return ds
    try:
        if source.is_compressed:
            ds.decompress()
        elif source == ExplicitVRBigEndian:
            _to_little_endian(ds)
        if target_uid.is_compressed:
            ds.compress(target_uid)
        elif target_uid == ExplicitVRBigEndian:
            raise TranscodeError("converting to big endian is not supported (retired syntax)")
        else:
            ds.file_meta.TransferSyntaxUID = target_uid
    except TranscodeError:
        raise
    except Exception as exc:  # pydicom raises many kinds (ValueError, RuntimeError, ...)
        raise TranscodeError(
            f"cannot convert {source.name or source} to {target_uid.name or target_uid}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    return ds


def convert_file(source: Path, target: str, destination: Path) -> None:
    """Write ``source`` converted to transfer syntax ``target`` as a Part 10 file.

    Raises:
        TranscodeError: the file cannot be read or converted.
    """
    try:
        ds = pydicom.dcmread(source)
    except Exception as exc:
        raise TranscodeError(f"cannot read {source.name}: {exc}") from exc
    convert_dataset(ds, target)
    try:
        # dcmwrite, unlike save_as, writes a dataset read as big endian in its new syntax.
        pydicom.dcmwrite(destination, ds, enforce_file_format=True)
    except Exception as exc:
        raise TranscodeError(f"cannot write converted dataset: {exc}") from exc
