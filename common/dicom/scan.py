"""Walk an encoded dataset's element headers without loading values.

One pass over a spooled dataset (seeking past every value, including pixel data) checks that the
encoding is complete - every element, item and sequence fits inside the bytes received - and
reads the handful of identifying UIDs we need. Memory stays constant whatever the instance size,
and a truncated or garbled dataset is refused before anything is sent to the store.
"""

from __future__ import annotations

import functools
import io
import mmap
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.uid import UID

from common.errors import MalformedDatasetError

#: What the walker reads from: the bytes of a dataset, or a memory map of its spool file.
Buffer = bytes | bytearray | memoryview | mmap.mmap

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
#: VRs with a 2-byte length in explicit VR encodings (PS3.5 7.1.2).
_SHORT_VRS = frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    }
)
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
    def tag_length(self) -> struct.Struct:
        return _TAG_LENGTH_LE if self.little else _TAG_LENGTH_BE

    @property
    def short_length(self) -> struct.Struct:
        return _SHORT_LE if self.little else _SHORT_BE

    @property
    def long_length(self) -> struct.Struct:
        return _LONG_LE if self.little else _LONG_BE


# Precompiled: the walker runs once per received instance, on the C-STORE's critical path.
_TAG_LENGTH_LE, _TAG_LENGTH_BE = struct.Struct("<HHI"), struct.Struct(">HHI")
_SHORT_LE, _SHORT_BE = struct.Struct("<H"), struct.Struct(">H")
_LONG_LE, _LONG_BE = struct.Struct("<I"), struct.Struct(">I")
_IMPLICIT_LE = _Encoding(implicit=True, little=True)


@functools.lru_cache(maxsize=64)
def encoding_of(transfer_syntax_uid: str) -> tuple[bool, bool, bool]:
    """``(implicit_vr, little_endian, deflated)`` for a transfer syntax (cached: few exist).

    Unknown (private) transfer syntaxes are explicit VR little endian, as PS3.5 10.1 requires of
    every transfer syntax but the three that say otherwise.
    """
    uid = UID(transfer_syntax_uid)
    try:
        return uid.is_implicit_VR, uid.is_little_endian, uid.is_deflated
    except ValueError:
        return False, True, False


#: The short-form VRs as the 16-bit little-endian integers their two letters read as.
_SHORT_VR_CODES = frozenset(int.from_bytes(vr, "little") for vr in _SHORT_VRS)
_EXPLICIT_SHORT_HEADER_LE = struct.Struct("<HHHH")


def _skip_short_elements(buf: Buffer, pos: int, limit: int, top_level: bool) -> int:
    """Skip the explicit VR little endian, short-form VR elements that start at ``pos``.

    Returns the position of the first element that is not one (or ``limit``). The walker's
    hot loop: one unpack and a few integer tests per element, all in locals.
    At the top level it stops at the elements whose values we read.

    Raises:
        MalformedDatasetError: an element's value runs past ``limit``.
    """
    unpack, short, wanted = _EXPLICIT_SHORT_HEADER_LE.unpack_from, _SHORT_VR_CODES, _WANTED
    last = limit - 8
    while pos <= last:
        group, element, vr, length = unpack(buf, pos)
        if vr not in short or group == 0xFFFE or (top_level and (group << 16 | element) in wanted):
            break
        end = pos + 8 + length
        if end > limit:
            raise MalformedDatasetError(
                f"dataset truncated: element ({group:04X},{element:04X}) needs {length} "
                f"bytes, {limit - pos - 8} left"
            )
        pos = end
    return pos


class _Walker:
    """Walks element headers over a buffer (bytes or an mmap of the spool file)."""

    def __init__(self, buf: Buffer, end: int, start: int) -> None:
        self._buf = buf
        self._end = end
        self.pos = start
        self.found: dict[str, str] = {}

    def _truncated(self, what: str) -> MalformedDatasetError:
        return MalformedDatasetError(f"dataset truncated in {what}")

    def _header(self, enc: _Encoding) -> tuple[int, bytes, int]:
        pos = self.pos
        if pos + 8 > self._end:
            raise self._truncated("an element header")
        group, element, word = enc.tag_length.unpack_from(self._buf, pos)
        tag = (group << 16) | element
        if group == 0xFFFE or enc.implicit:
            self.pos = pos + 8
            return tag, b"", int(word)
        vr = bytes(self._buf[pos + 4 : pos + 6])
        if vr in _LONG_VRS:
            if pos + 12 > self._end:
                raise self._truncated("an element header")
            self.pos = pos + 12
            return tag, vr, int(enc.long_length.unpack_from(self._buf, pos + 8)[0])
        if vr.isalpha() and vr.isupper():
            self.pos = pos + 8
            return tag, vr, int(enc.short_length.unpack_from(self._buf, pos + 6)[0])
        raise MalformedDatasetError(
            f"invalid VR {vr!r} at ({group:04X},{element:04X}) in an explicit VR dataset"
        )

    def _skip(self, length: int, limit: int, tag: int) -> None:
        if self.pos + length > limit:
            raise MalformedDatasetError(
                f"dataset truncated: element ({tag >> 16:04X},{tag & 0xFFFF:04X}) needs "
                f"{length} bytes, {limit - self.pos} left"
            )
        self.pos += length

    def walk(self, limit: int, enc: _Encoding, depth: int, stop_at_item_end: bool) -> None:
        """Walk elements until ``limit`` (defined length) or an item delimiter."""
        if depth > _MAX_DEPTH:
            raise MalformedDatasetError("sequences nested too deeply")
        # Runs of short-form elements in explicit VR little endian (most of a dataset) are
        # skipped by a tight loop; anything else takes the general path below, one element.
        fast = not enc.implicit and enc.little
        while True:
            if fast:
                self.pos = _skip_short_elements(self._buf, self.pos, limit, depth == 0)
            if self.pos >= limit:
                break
            tag, vr, length = self._header(enc)
            if tag == _ITEM_END:
                if stop_at_item_end:
                    return
                raise MalformedDatasetError("unexpected item delimiter")
            if tag in (_ITEM, _SEQUENCE_END):
                raise MalformedDatasetError("unexpected item tag outside a sequence")
            if depth == 0 and tag in _WANTED and length != _UNDEFINED:
                if length > _MAX_UID_LENGTH or self.pos + length > limit:
                    raise MalformedDatasetError(f"bad length {length} for a UID element")
                raw = bytes(self._buf[self.pos : self.pos + length])
                self.pos += length
                self.found[_WANTED[tag]] = raw.rstrip(b"\x00 ").decode("ascii", "replace")
                continue
            self._value(tag, vr, length, limit, enc, depth)
        if stop_at_item_end:
            raise MalformedDatasetError("dataset truncated: item without delimiter")

    def _value(
        self, tag: int, vr: bytes, length: int, limit: int, enc: _Encoding, depth: int
    ) -> None:
        if tag == _PIXEL_DATA and length == _UNDEFINED:
            # Encapsulated pixel data, whatever the VR encoding (even mislabelled implicit).
            self._encapsulated(limit, enc, tag)
        elif vr == b"UN" and length == _UNDEFINED:
            # UN with undefined length holds a sequence in implicit VR LE (PS3.5 6.2.2).
            self._sequence(length, limit, _IMPLICIT_LE, depth)
        elif vr == b"SQ" or (enc.implicit and length == _UNDEFINED):
            self._sequence(length, limit, enc, depth)
        elif length == _UNDEFINED:
            self._encapsulated(limit, enc, tag)
        else:
            self._skip(length, limit, tag)

    def _sequence(self, length: int, limit: int, enc: _Encoding, depth: int) -> None:
        seq_limit = limit if length == _UNDEFINED else self.pos + length
        if seq_limit > limit:
            raise MalformedDatasetError("dataset truncated: sequence longer than its parent")
        items = _Encoding(True, enc.little)
        while self.pos < seq_limit:
            tag, _, item_length = self._header(items)
            if tag == _SEQUENCE_END:
                if length != _UNDEFINED:
                    raise MalformedDatasetError("sequence delimiter in a defined-length sequence")
                return
            if tag != _ITEM:
                raise MalformedDatasetError(f"expected an item in a sequence, got {tag:08X}")
            if item_length == _UNDEFINED:
                self.walk(seq_limit, enc, depth + 1, stop_at_item_end=True)
            else:
                item_limit = self.pos + item_length
                if item_limit > seq_limit:
                    raise MalformedDatasetError("dataset truncated: item longer than sequence")
                self.walk(item_limit, enc, depth + 1, stop_at_item_end=False)
        if length == _UNDEFINED:
            raise MalformedDatasetError("dataset truncated: sequence without delimiter")

    def _encapsulated(self, limit: int, enc: _Encoding, tag: int) -> None:
        items = _Encoding(True, enc.little)
        while True:
            item_tag, _, item_length = self._header(items)
            if item_tag == _SEQUENCE_END:
                return
            if item_tag != _ITEM or item_length == _UNDEFINED:
                raise MalformedDatasetError("malformed encapsulated pixel data fragment")
            self._skip(item_length, limit, tag)


def _looks_implicit(buf: Buffer, start: int, end: int) -> bool:
    head = bytes(buf[start : min(start + 6, end)])
    return len(head) == 6 and not (head[4:6].isalpha() and head[4:6].isupper())


def scan_buffer(buf: Buffer, start: int, end: int, transfer_syntax_uid: str) -> DatasetSummary:
    """Check the encoding of the dataset in ``buf[start:end]`` and read its identifying UIDs.

    Raises:
        MalformedDatasetError: the encoding is truncated or invalid.
    """
    implicit, little, deflated = encoding_of(transfer_syntax_uid)
    if deflated:
        # Inflate into memory: deflated datasets are rare and small (PS3.5 A.5).
        try:
            raw = zlib.decompress(bytes(buf[start:end]), -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise MalformedDatasetError(f"deflated dataset cannot be inflated: {exc}") from exc
        buf, start, end = raw, 0, len(raw)
    if not implicit and little and _looks_implicit(buf, start, end):
        # Some SCUs send implicit VR under an explicit VR syntax; like DCMTK and pydicom we
        # accept it and forward the bytes unchanged.
        implicit = True
    walker = _Walker(buf, end, start)
    try:
        walker.walk(end, _Encoding(implicit, little), 0, stop_at_item_end=False)
    except (struct.error, OverflowError) as exc:
        raise MalformedDatasetError(f"dataset cannot be parsed: {exc}") from exc
    return DatasetSummary(**walker.found)


def scan_dataset(fp: BinaryIO, length: int, transfer_syntax_uid: str) -> DatasetSummary:
    """Check the encoding of the dataset at ``fp``'s position (``length`` bytes); read its UIDs.

    A real file is memory-mapped, so even a huge dataset costs no memory beyond the page cache
    and its values are never read; other streams are read into memory.

    Raises:
        MalformedDatasetError: the encoding is truncated or invalid.
    """
    start = fp.tell()
    try:
        fileno = fp.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return scan_buffer(fp.read(length), 0, length, transfer_syntax_uid)
    if length <= 0:
        raise MalformedDatasetError("empty dataset")
    with mmap.mmap(fileno, 0, access=mmap.ACCESS_READ) as mapped:
        end = min(start + length, len(mapped))
        return scan_buffer(mapped, start, end, transfer_syntax_uid)
