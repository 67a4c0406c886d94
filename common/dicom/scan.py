"""Walk an encoded dataset's element headers without loading values.

One pass over a spooled dataset (seeking past every value, including pixel data) checks that the
encoding is complete - every element, item and sequence fits inside the bytes received - and
reads the handful of identifying UIDs we need. Memory stays constant whatever the instance size,
and a truncated or garbled dataset is refused before anything is sent to the store.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.uid import UID

from common.errors import MalformedDatasetError

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
#: Top-level elements whose values we read, by tag.
_WANTED = {
    0x00080016: "sop_class_uid",
    0x00080018: "sop_instance_uid",
    0x0020000D: "study_instance_uid",
    0x0020000E: "series_instance_uid",
}
_MAX_DEPTH = 32
_MAX_UID_LENGTH = 64


@dataclass(frozen=True)
class DatasetSummary:
    """The identifying UIDs found at the top level of a dataset ('' where absent)."""

    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""


@dataclass(frozen=True)
class _Encoding:
    implicit: bool
    little: bool

    @property
    def prefix(self) -> str:
        return "<" if self.little else ">"


_IMPLICIT_LE = _Encoding(implicit=True, little=True)


def encoding_of(transfer_syntax_uid: str) -> tuple[bool, bool, bool]:
    """``(implicit_vr, little_endian, deflated)`` for a transfer syntax.

    Unknown (private) transfer syntaxes are explicit VR little endian, as PS3.5 10.1 requires of
    every transfer syntax but the three that say otherwise.
    """
    uid = UID(transfer_syntax_uid)
    try:
        return uid.is_implicit_VR, uid.is_little_endian, uid.is_deflated
    except ValueError:
        return False, True, False


class _Walker:
    def __init__(self, fp: BinaryIO, end: int, encoding: _Encoding) -> None:
        self._fp = fp
        self._end = end
        self._enc = encoding
        self.found: dict[str, str] = {}

    def _read(self, count: int, what: str) -> bytes:
        data = self._fp.read(count)
        if len(data) != count:
            raise MalformedDatasetError(f"dataset truncated in {what}")
        return data

    def _skip(self, length: int, limit: int, tag: int) -> None:
        position = self._fp.tell()
        if position + length > limit:
            raise MalformedDatasetError(
                f"dataset truncated: element ({tag >> 16:04X},{tag & 0xFFFF:04X}) needs "
                f"{length} bytes, {limit - position} left"
            )
        self._fp.seek(length, io.SEEK_CUR)

    def _header(self, enc: _Encoding) -> tuple[int, bytes, int]:
        group, element = struct.unpack(enc.prefix + "HH", self._read(4, "element tag"))
        tag = (group << 16) | element
        if group == 0xFFFE or enc.implicit:
            (length,) = struct.unpack(enc.prefix + "I", self._read(4, "element length"))
            return tag, b"", length
        vr = self._read(2, "element VR")
        if vr in _LONG_VRS:
            self._read(2, "reserved bytes")
            (length,) = struct.unpack(enc.prefix + "I", self._read(4, "element length"))
        elif vr.isalpha() and vr.isupper():
            (length,) = struct.unpack(enc.prefix + "H", self._read(2, "element length"))
        else:
            raise MalformedDatasetError(
                f"invalid VR {vr!r} at ({group:04X},{element:04X}) in an explicit VR dataset"
            )
        return tag, vr, length

    def walk(self, limit: int, enc: _Encoding, depth: int, stop_at_item_end: bool) -> None:
        """Walk elements until ``limit`` (defined length) or an item delimiter."""
        if depth > _MAX_DEPTH:
            raise MalformedDatasetError("sequences nested too deeply")
        while self._fp.tell() < limit:
            tag, vr, length = self._header(enc)
            if tag == _ITEM_END:
                if stop_at_item_end:
                    return
                raise MalformedDatasetError("unexpected item delimiter")
            if tag in (_ITEM, _SEQUENCE_END):
                raise MalformedDatasetError("unexpected item tag outside a sequence")
            if depth == 0 and tag in _WANTED and length != _UNDEFINED:
                if length > _MAX_UID_LENGTH or self._fp.tell() + length > limit:
                    raise MalformedDatasetError(f"bad length {length} for a UID element")
                raw = self._read(length, "UID value")
                self.found[_WANTED[tag]] = raw.rstrip(b"\x00 ").decode("ascii", "replace")
                continue
            self._value(tag, vr, length, limit, enc, depth)
        if stop_at_item_end:
            raise MalformedDatasetError("dataset truncated: item without delimiter")

    def _value(
        self, tag: int, vr: bytes, length: int, limit: int, enc: _Encoding, depth: int
    ) -> None:
        # UN with undefined length holds a sequence in implicit VR little endian (PS3.5 6.2.2).
        if tag == _PIXEL_DATA and length == _UNDEFINED:
            # Encapsulated pixel data, whatever the VR encoding (even mislabelled implicit).
            self._encapsulated(limit, enc, tag)
        elif vr == b"UN" and length == _UNDEFINED:
            self._sequence(length, limit, _IMPLICIT_LE, depth)
        elif vr == b"SQ" or (enc.implicit and length == _UNDEFINED):
            self._sequence(length, limit, enc, depth)
        elif length == _UNDEFINED:
            self._encapsulated(limit, enc, tag)
        else:
            self._skip(length, limit, tag)

    def _sequence(self, length: int, limit: int, enc: _Encoding, depth: int) -> None:
        seq_limit = limit if length == _UNDEFINED else self._fp.tell() + length
        if seq_limit > limit:
            raise MalformedDatasetError("dataset truncated: sequence longer than its parent")
        while self._fp.tell() < seq_limit:
            tag, _, item_length = self._header(_Encoding(True, enc.little))
            if tag == _SEQUENCE_END:
                if length != _UNDEFINED:
                    raise MalformedDatasetError("sequence delimiter in a defined-length sequence")
                return
            if tag != _ITEM:
                raise MalformedDatasetError(f"expected an item in a sequence, got {tag:08X}")
            if item_length == _UNDEFINED:
                self.walk(seq_limit, enc, depth + 1, stop_at_item_end=True)
            else:
                item_limit = self._fp.tell() + item_length
                if item_limit > seq_limit:
                    raise MalformedDatasetError("dataset truncated: item longer than sequence")
                self.walk(item_limit, enc, depth + 1, stop_at_item_end=False)
        if length == _UNDEFINED:
            raise MalformedDatasetError("dataset truncated: sequence without delimiter")

    def _encapsulated(self, limit: int, enc: _Encoding, tag: int) -> None:
        while True:
            item_tag, _, item_length = self._header(_Encoding(True, enc.little))
            if item_tag == _SEQUENCE_END:
                return
            if item_tag != _ITEM or item_length == _UNDEFINED:
                raise MalformedDatasetError("malformed encapsulated pixel data fragment")
            self._skip(item_length, limit, tag)


def _looks_implicit(fp: BinaryIO) -> bool:
    start = fp.tell()
    head = fp.read(6)
    fp.seek(start)
    return len(head) == 6 and not (head[4:6].isalpha() and head[4:6].isupper())


def scan_dataset(fp: BinaryIO, length: int, transfer_syntax_uid: str) -> DatasetSummary:
    """Check a dataset's encoding and read its identifying UIDs.

    Args:
        fp: a file positioned at the start of the dataset.
        length: how many bytes the dataset has.
        transfer_syntax_uid: the transfer syntax it is encoded in.

    Raises:
        MalformedDatasetError: the encoding is truncated or invalid.
    """
    implicit, little, deflated = encoding_of(transfer_syntax_uid)
    if deflated:
        # Inflate into memory: deflated datasets are rare and small (PS3.5 A.5).
        try:
            raw = zlib.decompress(fp.read(length), -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise MalformedDatasetError(f"deflated dataset cannot be inflated: {exc}") from exc
        fp, end = io.BytesIO(raw), len(raw)
    else:
        end = fp.tell() + length
    if not implicit and little and _looks_implicit(fp):
        # Some SCUs send implicit VR under an explicit VR syntax; like DCMTK and pydicom we
        # accept it and forward the bytes unchanged.
        implicit = True
    walker = _Walker(fp, end, _Encoding(implicit, little))
    try:
        walker.walk(end, _Encoding(implicit, little), 0, stop_at_item_end=False)
    except (struct.error, OverflowError) as exc:
        raise MalformedDatasetError(f"dataset cannot be parsed: {exc}") from exc
    if fp.tell() != end:
        raise MalformedDatasetError("dataset has trailing bytes past its last element")
    return DatasetSummary(**walker.found)
