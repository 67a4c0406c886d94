"""Reading a Part 10 file's meta header without pydicom.

The sender needs three UIDs and the dataset's offset for every file it sends; pydicom's
``read_file_meta_info`` builds a dataset for that. The meta group is always explicit VR little
endian (PS3.10 7.1), so a short loop over its elements is enough.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from common.errors import MalformedDatasetError

_PREAMBLE_LENGTH = 128
_PREFIX = b"DICM"
_SHORT = struct.Struct("<HH2sH")
_LONG_LENGTH = struct.Struct("<I")
#: VRs whose explicit VR little endian header has a reserved field and a 4-byte length.
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR",
                       b"UT"})
_META_GROUP = 0x0002
_SOP_CLASS = 0x0002
_SOP_INSTANCE = 0x0003
_TRANSFER_SYNTAX = 0x0010
#: Enough for any real meta header; a longer one is treated as malformed.
_MAX_META = 1 << 16


@dataclass(frozen=True)
class FileMeta:
    """What sending a Part 10 file needs from its meta header.

    Attributes:
        sop_class_uid / sop_instance_uid / transfer_syntax_uid: the Media Storage UIDs.
        dataset_offset: where the dataset starts in the file.
    """

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    dataset_offset: int


def parse_file_meta(head: bytes) -> FileMeta:
    """Parse the meta header at the start of Part 10 bytes (preamble included).

    ``head`` must hold the whole meta group; the group is walked element by element (rather
    than trusting its group length alone) so a wrong group length cannot shift the dataset.

    Raises:
        MalformedDatasetError: no preamble/``DICM`` prefix, a truncated group or a missing UID.
    """
    if head[_PREAMBLE_LENGTH : _PREAMBLE_LENGTH + 4] != _PREFIX:
        raise MalformedDatasetError("not a DICOM Part 10 file")
    offset = _PREAMBLE_LENGTH + 4
    values: dict[int, str] = {}
    while offset + _SHORT.size <= len(head):
        group, element, vr, length = _SHORT.unpack_from(head, offset)
        if group != _META_GROUP:
            break
        header = _SHORT.size
        if vr in _LONG_VRS:
            if offset + 12 > len(head):
                raise MalformedDatasetError("file meta ends inside an element header")
            (length,) = _LONG_LENGTH.unpack_from(head, offset + 8)
            header = 12
        start = offset + header
        end = start + length
        if end > len(head):
            raise MalformedDatasetError("file meta ends inside an element value")
        if element in (_SOP_CLASS, _SOP_INSTANCE, _TRANSFER_SYNTAX):
            values[element] = head[start:end].decode("ascii", "replace").rstrip("\x00 ")
        offset = end
    else:
        if offset != len(head):
            raise MalformedDatasetError("file meta ends inside an element header")
    missing = [e for e in (_SOP_CLASS, _SOP_INSTANCE, _TRANSFER_SYNTAX) if not values.get(e)]
    if missing:
        raise MalformedDatasetError("file meta lacks a Media Storage or Transfer Syntax UID")
    return FileMeta(
        sop_class_uid=values[_SOP_CLASS],
        sop_instance_uid=values[_SOP_INSTANCE],
        transfer_syntax_uid=values[_TRANSFER_SYNTAX],
        dataset_offset=offset,
    )


def read_file_meta(path: Path) -> FileMeta:
    """The meta header of a Part 10 file.

    Raises:
        MalformedDatasetError: the file cannot be read or has no usable meta header.
    """
    try:
        with path.open("rb") as fp:
            head = fp.read(_MAX_META)
    except OSError as exc:
        raise MalformedDatasetError(f"cannot read {path.name}: {exc.strerror}") from exc
    return parse_file_meta(head)
