"""DICOM Part 10 files assembled from a file meta header and dataset bytes kept on disk.

A received C-STORE dataset is spooled to a file as it arrives; we never load it. To forward it
we pair freshly built file meta (PS3.10 7.1, from the command set and the negotiated transfer
syntax) with the byte range of the spooled dataset, and stream the concatenation. The dataset
bytes stay exactly as the SCU sent them.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.uid import UID

from common.errors import MalformedDatasetError

#: This product's Implementation Class UID (a UUID-derived 2.25 UID) and version name.
IMPLEMENTATION_CLASS_UID = UID("2.25.304361583492442832814601423797810114360")
IMPLEMENTATION_VERSION_NAME = "DICOMADAPTER_01"

PREAMBLE = b"\x00" * 128 + b"DICM"
#: A Part 10 file up to this size is small: it may be held in memory whole (received, checked
#: and uploaded from the same bytes); larger ones are only ever streamed.
IN_MEMORY_LIMIT = 1 << 20
_CHUNK = 1 << 20


def _element(tag: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    """One explicit VR little endian file meta element, padded to even length."""
    if len(value) % 2:
        value += pad
    if vr == b"OB":
        return _LONG_HEADER.pack(tag >> 16, tag & 0xFFFF, vr, 0, len(value)) + value
    return _SHORT_HEADER.pack(tag >> 16, tag & 0xFFFF, vr, len(value)) + value


_SHORT_HEADER = struct.Struct("<HH2sH")
_LONG_HEADER = struct.Struct("<HH2sHI")
#: The elements that are the same in every file meta we write (encoded once).
_VERSION = _element(0x00020001, b"OB", b"\x00\x01", b"\x00")
_IMPLEMENTATION = _element(
    0x00020012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii"), b"\x00"
) + _element(0x00020013, b"SH", IMPLEMENTATION_VERSION_NAME.encode("ascii"), b" ")


def build_file_meta(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_aet: str = "",
) -> bytes:
    """Encode the preamble, ``DICM`` prefix and File Meta Information group for an instance.

    Encoded directly (PS3.10 7.1: explicit VR little endian, group length first) rather than
    through pydicom's dataset writer: this runs for every received instance, and the group
    only ever holds these few elements.
    """
    uids = (sop_class_uid, sop_instance_uid, transfer_syntax_uid)
    if any(not uid or len(uid) > 64 for uid in uids):
        raise MalformedDatasetError("a file meta UID is empty or longer than 64 characters")
    body = b"".join(
        (
            _VERSION,
            _element(0x00020002, b"UI", sop_class_uid.encode("ascii"), b"\x00"),
            _element(0x00020003, b"UI", sop_instance_uid.encode("ascii"), b"\x00"),
            _element(0x00020010, b"UI", transfer_syntax_uid.encode("ascii"), b"\x00"),
            _IMPLEMENTATION,
            _element(0x00020016, b"AE", source_aet.strip().encode("ascii", "replace"), b" ")
            if source_aet.strip()
            else b"",
        )
    )
    group_length = _element(0x00020000, b"UL", struct.pack("<I", len(body)), b"")
    return PREAMBLE + group_length + body


def dataset_offset(path: Path) -> int:
    """Offset of the dataset in a Part 10 file, read from its File Meta group length.

    Raises:
        MalformedDatasetError: the file does not start with a preamble and a group length.
    """
    with path.open("rb") as fp:
        return meta_end(fp.read(144))


def meta_end(head: bytes) -> int:
    """Offset of the dataset in Part 10 bytes (at least the first 144 bytes are needed).

    Raises:
        MalformedDatasetError: no preamble, ``DICM`` prefix and group length.
    """
    if len(head) < 144 or head[128:132] != b"DICM":
        raise MalformedDatasetError("not a DICOM Part 10 file")
    tag, vr, length = struct.unpack("<I2sH", head[132:140])
    if tag != 0x00000002 or vr != b"UL" or length != 4:
        raise MalformedDatasetError("file meta has no group length")
    (group_length,) = struct.unpack("<I", head[140:144])
    return 144 + int(group_length)


@dataclass(frozen=True)
class Part10Instance:
    """A Part 10 file: in-memory file meta, then a dataset in a file or held in memory.

    Read the dataset with :meth:`open_dataset`, :meth:`iter_chunks` or
    :meth:`read_dataset_bytes`, never from ``dataset_path`` directly: a small received instance
    may exist in memory only.

    Attributes:
        sop_class_uid / sop_instance_uid / transfer_syntax_uid: the instance's identity.
        meta: preamble, ``DICM`` and encoded file meta.
        dataset_path: the file that holds the dataset bytes (when ``loaded`` is set, it may not
            exist: it then names where the instance was received, e.g. to derive scratch names).
        dataset_offset: where the dataset starts in that file.
        dataset_length: how many bytes the dataset has.
        loaded: the dataset bytes when they are in memory (a small instance, read or received
            once, checked and uploaded from the same bytes); None: read ``dataset_path``.
        study_instance_uid: the dataset's Study Instance UID when it was read ('' if not).
    """

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    meta: bytes
    dataset_path: Path
    dataset_offset: int
    dataset_length: int
    loaded: bytes | None = field(default=None, repr=False, compare=False)
    study_instance_uid: str = field(default="", compare=False)

    @classmethod
    def from_spooled(
        cls,
        path: Path,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        source_aet: str = "",
        offset: int | None = None,
        loaded: bytes | None = None,
        study_instance_uid: str = "",
    ) -> Part10Instance:
        """Describe the dataset held in ``path`` (from ``offset``) with freshly built meta.

        ``loaded``: the dataset bytes, if the caller has read them already.
        """
        start = dataset_offset(path) if offset is None else offset
        length = len(loaded) if loaded is not None else os.path.getsize(path) - start
        if length < 0:
            raise MalformedDatasetError("spooled dataset is shorter than its header")
        return cls(
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            meta=build_file_meta(
                sop_class_uid=sop_class_uid,
                sop_instance_uid=sop_instance_uid,
                transfer_syntax_uid=transfer_syntax_uid,
                source_aet=source_aet,
            ),
            dataset_path=path,
            dataset_offset=start,
            dataset_length=length,
            loaded=loaded,
            study_instance_uid=study_instance_uid,
        )

    @property
    def size(self) -> int:
        """Size of the whole Part 10 file in bytes."""
        return len(self.meta) + self.dataset_length

    def iter_chunks(self, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        """Yield the Part 10 bytes in chunks of at most ``chunk_size`` (after the meta)."""
        yield self.meta
        if self.loaded is not None:
            view = memoryview(self.loaded)
            for start in range(0, len(view), chunk_size):
                yield bytes(view[start : start + chunk_size])
            return
        remaining = self.dataset_length
        with self.dataset_path.open("rb") as fp:
            fp.seek(self.dataset_offset)
            while remaining > 0:
                chunk = fp.read(min(chunk_size, remaining))
                if not chunk:
                    raise MalformedDatasetError("spooled dataset shrank while being read")
                remaining -= len(chunk)
                yield chunk

    def open_dataset(self) -> io.BytesIO | io.BufferedReader:
        """A binary stream over the file that holds the dataset, positioned where it starts.

        The dataset sits at ``dataset_offset`` in the stream, as in ``dataset_path``, so
        positions read from it are positions in that file; close it (a context manager).
        """
        if self.loaded is not None:
            return _PlacedBytes(self.loaded, self.dataset_offset)
        fp = self.dataset_path.open("rb")
        fp.seek(self.dataset_offset)
        return fp

    def read_dataset_bytes(self) -> bytes:
        """The dataset bytes (for small instances only: this loads them)."""
        if self.loaded is not None:
            return self.loaded
        with self.dataset_path.open("rb") as fp:
            fp.seek(self.dataset_offset)
            return fp.read(self.dataset_length)

    def write_to(self, path: Path) -> None:
        """Write the complete Part 10 file to ``path``."""
        with path.open("wb") as out:
            for chunk in self.iter_chunks():
                out.write(chunk)


class _PlacedBytes(io.BytesIO):
    """In-memory dataset bytes that read as if they sat at ``offset`` in a file.

    ``seek`` and ``tell`` use the file's positions, so code written for the spool file (which
    records and revisits positions) works unchanged on an instance received into memory.
    """

    def __init__(self, data: bytes, offset: int) -> None:
        super().__init__(data)
        self._offset = offset

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``pos`` (a file position when ``whence`` is SEEK_SET)."""
        if whence == io.SEEK_SET:
            if pos < self._offset:
                raise ValueError(f"position {pos} is before the dataset ({self._offset})")
            pos -= self._offset
        return super().seek(pos, whence) + self._offset

    def tell(self) -> int:
        """The current file position."""
        return super().tell() + self._offset
