"""De-identification of DICOM instances (``--redact_remove_list``/``keep_list``/``filter_profile``).

Four policies, one at a time:

- a **remove list**: the listed attributes are emptied (zero length; a sequence loses its items),
  everything else is kept;
- a **keep list**: every attribute not listed is emptied, except the few an instance cannot be
  stored or displayed without (SOP Class UID, Specific Character Set, the Image Pixel module);
- **CHC_BASIC**, the reference adapter's profile: a keep list that keeps every public attribute
  except names and dates/times (PN, DA, DT, TM), UIDs other than class and transfer syntax UIDs,
  and every attribute the PS3.15 Basic Profile does not keep (IDs, institution, descriptions,
  comments, identifying sequences, private attributes);
- **ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE**: the PS3.15 Basic Application Level Confidentiality
  Profile (Table E.1-1, :mod:`common.dicom.ps315_basic_profile`): D (dummy), Z (empty), X
  (remove), U (consistent UID); of the choices Z/D, X/Z, X/D and X/Z/D the first is applied, and
  X/Z/U* sequences are kept with their UIDs replaced.

With every policy, Study, Series and SOP Instance UID (and Media Storage SOP Instance UID) are
replaced by :func:`name_based_uid` of their value, as the reference adapter does, so both give the
same UIDs for the same input. Unlike the reference, the rules apply in nested sequence items as
well as at the top level. Patient Identity Removed (0012,0062) is set to ``YES`` and
De-identification Method (0012,0063) names the policy.

:meth:`Redactor.redact_instance` works on a spooled instance with bounded memory: it parses the
header up to the pixel data, redacts it, writes it, then copies the pixel data element's bytes
from the source file in chunks, then the (small) rest of the dataset.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import BinaryIO

from pydicom.datadict import dictionary_VR, get_entry, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomFileLike
from pydicom.filereader import read_dataset
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian

from common.dicom.part10 import Part10Instance, build_file_meta
from common.dicom.ps315_basic_profile import BASIC_PROFILE_TABLE
from common.dicom.scan import encoding_of
from common.dicom.transcode import read_instance
from common.errors import ConfigError, MalformedDatasetError, TranscodeError

#: The UIDs every policy replaces (the reference adapter's list, minus the file meta one).
REGENERATED_UIDS = frozenset({0x00080018, 0x0020000D, 0x0020000E})
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
#: Attributes a keep list never empties: without them the instance cannot be stored or shown.
STRUCTURAL_TAGS = frozenset(
    tag_for_keyword(keyword) or 0
    for keyword in (
        "SpecificCharacterSet", "SOPClassUID", "SamplesPerPixel", "PhotometricInterpretation",
        "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
        "PlanarConfiguration", "NumberOfFrames", "PixelAspectRatio",
        "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
        "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
        "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
        "ExtendedOffsetTable", "ExtendedOffsetTableLengths", "FloatPixelData",
        "DoubleFloatPixelData", "PixelData",
    )
)  # fmt: skip
#: UI attributes CHC_BASIC keeps besides the ``...ClassUID`` ones: they name no instance.
_CHC_KEPT_UIDS = frozenset({"TransferSyntaxUID", "CodingSchemeUID", "ContextUID"})
_CHC_REMOVED_VRS = frozenset({"PN", "DA", "DT", "TM"})
_BYTES_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})
_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT", "US or SS"})
_DUMMY_TEXT = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000Y"}
_DUMMY_DEFAULT = "ANONYMIZED"
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})  # fmt: skip
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_SEQUENCE_END = 0xFFFEE0DD
_CHUNK = 1 << 20


class FilterProfile(StrEnum):
    """Predefined de-identification profiles (``--redact_filter_profile``)."""

    CHC_BASIC = "CHC_BASIC"
    ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE = "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"


class Action(Enum):
    """What happens to one attribute."""

    KEEP = "K"
    EMPTY = "Z"
    REMOVE = "X"
    DUMMY = "D"
    UID = "U"


def name_based_uid(uid: str) -> str:
    """``2.25.`` + the integer of the name-based (MD5, version 3) UUID of ``uid``'s bytes.

    This is dcm4che's ``UIDUtils.createNameBasedUID`` as the reference adapter calls it: Java's
    ``UUID.nameUUIDFromBytes`` hashes the name alone (no namespace UUID is prepended, unlike
    Python's ``uuid.uuid3``), then sets the version (3) and variant bits.
    """
    digest = bytearray(hashlib.md5(uid.encode("ascii"), usedforsecurity=False).digest())
    digest[6] = (digest[6] & 0x0F) | 0x30
    digest[8] = (digest[8] & 0x3F) | 0x80
    return f"2.25.{int.from_bytes(digest, 'big')}"


def parse_tags(text: str) -> frozenset[int]:
    """Tags from a comma-separated list of keywords or 8-hex-digit tags (``PatientName,00100020``).

    Raises:
        ConfigError: an item is neither a known keyword nor 8 hexadecimal digits.
    """
    tags: set[int] = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        tag = tag_for_keyword(item)
        if tag is None:
            if len(item) != 8 or any(c not in "0123456789abcdefABCDEF" for c in item):
                raise ConfigError(f"not a DICOM keyword or 8-hex-digit tag: {item!r}")
            tag = int(item, 16)
        tags.add(tag)
    return frozenset(tags)


def _load_basic_profile() -> tuple[dict[int, str], list[tuple[int, int, str]]]:
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, str]] = []
    for line in BASIC_PROFILE_TABLE.split("\n"):
        if not line.strip():
            continue
        tag_text, action = line.split()[:2]
        if "x" in tag_text:
            mask = int("".join("0" if c == "x" else "F" for c in tag_text), 16)
            masked.append((mask, int(tag_text.replace("x", "0"), 16), action))
        else:
            exact[int(tag_text, 16)] = action
    return exact, masked


_BASIC_EXACT, _BASIC_MASKED = _load_basic_profile()
_BASIC_ACTIONS = {
    "D": Action.DUMMY, "Z": Action.EMPTY, "Z/D": Action.EMPTY, "X": Action.REMOVE,
    "X/Z": Action.REMOVE, "X/D": Action.REMOVE, "X/Z/D": Action.REMOVE, "U": Action.UID,
    "X/Z/U": Action.UID,
}  # fmt: skip


def basic_profile_code(tag: int) -> str | None:
    """The PS3.15 Basic Profile action code of a public tag (None when the table omits it)."""
    code = _BASIC_EXACT.get(tag)
    if code is None:
        code = next((a for mask, value, a in _BASIC_MASKED if tag & mask == value), None)
    return code


@functools.lru_cache(maxsize=8192)
def basic_profile_action(tag: int) -> Action:
    """What the PS3.15 Basic Profile does to an attribute (private ones are removed)."""
    if BaseTag(tag).is_private:
        return Action.REMOVE
    code = basic_profile_code(tag)
    return Action.KEEP if code is None else _BASIC_ACTIONS[code]


@functools.lru_cache(maxsize=8192)
def chc_basic_keeps(tag: int) -> bool:
    """Whether CHC_BASIC keeps an attribute (see the module docstring)."""
    if tag in STRUCTURAL_TAGS:
        return True
    if BaseTag(tag).is_private or basic_profile_code(tag) is not None:
        return False
    try:
        vr, _, _, _, keyword = get_entry(tag)
    except KeyError:
        return False  # not a public attribute we know: nothing says it is safe
    if vr in _CHC_REMOVED_VRS:
        return False
    if vr == "UI":
        return keyword.endswith("ClassUID") or keyword in _CHC_KEPT_UIDS
    return True


@dataclass(frozen=True)
class RedactionConfig:
    """One de-identification policy; exactly one of the three fields is set.

    Attributes:
        remove_tags: attributes to empty (``--redact_remove_list``).
        keep_tags: attributes to keep, all others emptied (``--redact_keep_list``).
        profile: a predefined profile (``--redact_filter_profile``).
    """

    remove_tags: frozenset[int] | None = None
    keep_tags: frozenset[int] | None = None
    profile: FilterProfile | None = None

    def __post_init__(self) -> None:
        chosen = [x for x in (self.remove_tags, self.keep_tags, self.profile) if x is not None]
        if len(chosen) != 1:
            raise ConfigError(
                "give exactly one of --redact_remove_list, --redact_keep_list and "
                "--redact_filter_profile"
            )

    @classmethod
    def from_options(
        cls, remove_list: str | None, keep_list: str | None, profile: str | None
    ) -> RedactionConfig | None:
        """The policy the three flags describe, or None when none is given.

        Raises:
            ConfigError: more than one is given, a tag is unknown, or the profile is unknown.
        """
        if remove_list is None and keep_list is None and profile is None:
            return None
        if sum(x is not None for x in (remove_list, keep_list, profile)) > 1:
            raise ConfigError(
                "--redact_remove_list, --redact_keep_list and --redact_filter_profile are "
                "mutually exclusive"
            )
        if profile is not None:
            try:
                return cls(profile=FilterProfile(profile))
            except ValueError as exc:
                known = ", ".join(p.value for p in FilterProfile)
                raise ConfigError(f"unknown filter profile {profile!r} ({known})") from exc
        if remove_list is not None:
            return cls(remove_tags=parse_tags(remove_list))
        return cls(keep_tags=parse_tags(keep_list or ""))

    @property
    def method(self) -> str:
        """The De-identification Method (0012,0063) text for this policy."""
        if self.profile is FilterProfile.ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE:
            return "dicom-adapter: PS3.15 Basic Application Confidentiality Profile"
        if self.profile is FilterProfile.CHC_BASIC:
            return "dicom-adapter: CHC_BASIC"
        return "dicom-adapter: remove list" if self.remove_tags is not None else (
            "dicom-adapter: keep list"
        )


def _empty(element: DataElement) -> None:
    if element.VR == "SQ":
        element.value = Sequence()
    elif element.VR in _BYTES_VRS:
        element.value = b""
    elif element.VR in _NUMBER_VRS:
        element.value = None
    else:
        element.value = ""


def _dummy(element: DataElement) -> None:
    if element.VR == "SQ" or element.VR in _BYTES_VRS:
        _empty(element)
    elif element.VR in _NUMBER_VRS or element.VR in ("IS", "DS"):
        element.value = 0 if element.VR not in ("IS", "DS") else "0"
    elif element.VR == "UI":
        _replace_uids(element)
    else:
        element.value = _DUMMY_TEXT.get(element.VR, _DUMMY_DEFAULT)


def _replace_uids(element: DataElement) -> None:
    if element.VR != "UI" or element.value in (None, ""):
        return
    if element.VM > 1:
        element.value = [name_based_uid(str(v)) for v in element.value]
    else:
        element.value = name_based_uid(str(element.value))


def _raw_vr(ds: Dataset, tag: BaseTag) -> str:
    """An element's VR without converting its value (the dictionary's when implicit)."""
    vr = getattr(ds.get_item(tag), "VR", None)
    if vr and vr != "UN":
        return str(vr)
    try:
        known = str(dictionary_VR(tag))
    except KeyError:
        return "UN"
    if " or " in known:  # ambiguous (US or SS, OB or OW): a UN stays UN
        return "UN" if vr == "UN" else known.partition(" or ")[0]
    return known


def _may_hold_items(ds: Dataset, tag: BaseTag) -> bool:
    """Whether an element is (or may be decoded as) a sequence, without converting it."""
    return _raw_vr(ds, tag) == "SQ"


def _at_pixel_data(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return int(tag) in _PIXEL_TAGS


class Redactor:
    """Applies one :class:`RedactionConfig` to datasets and spooled instances."""

    def __init__(self, config: RedactionConfig) -> None:
        self.config = config
        self._action: Callable[[int], Action] = self._policy(config)

    @staticmethod
    def _policy(config: RedactionConfig) -> Callable[[int], Action]:
        if config.remove_tags is not None:
            removed = config.remove_tags
            return lambda tag: Action.EMPTY if tag in removed else Action.KEEP
        if config.keep_tags is not None:
            kept = config.keep_tags | STRUCTURAL_TAGS
            return lambda tag: Action.KEEP if tag in kept else Action.EMPTY
        if config.profile is FilterProfile.CHC_BASIC:
            return lambda tag: Action.KEEP if chc_basic_keeps(tag) else Action.EMPTY
        return basic_profile_action

    def action(self, tag: int) -> Action:
        """What this policy does to the attribute ``tag`` (at any nesting level)."""
        if tag in REGENERATED_UIDS:
            return Action.UID
        return self._action(tag)

    # -- datasets -------------------------------------------------------------------------------

    def redact(self, ds: Dataset) -> Dataset:
        """A de-identified copy of ``ds`` (``ds`` itself is not changed).

        Meant for headers: pixel data, if present, is copied too.
        """
        result = copy.deepcopy(ds)
        self._redact_items(result)
        self._mark(result)
        return result

    def _redact_items(self, ds: Dataset) -> None:
        """Apply the policy to every element of ``ds`` and of its sequences, in place."""
        for tag in list(ds.keys()):
            if tag.element == 0 and tag.group > 0x0002:
                del ds[tag]  # group lengths (retired) would be wrong once values change
                continue
            action = self.action(int(tag))
            if action is Action.REMOVE:
                del ds[tag]
                continue
            if action is Action.KEEP and not _may_hold_items(ds, tag):
                continue  # left raw: no value conversion for what is kept as it is
            if action is Action.EMPTY:
                # A new empty element of the same VR: the old value is never decoded.
                vr = _raw_vr(ds, tag)
                element = DataElement(tag, vr, None)
                _empty(element)
                ds[tag] = element
                continue
            element = ds[tag]
            if action is Action.DUMMY:
                _dummy(element)
            elif element.VR == "SQ":  # KEEP or UID (X/Z/U*): the items' own rules apply
                for item in element.value:
                    self._redact_items(item)
            elif action is Action.UID:
                _replace_uids(element)

    def _mark(self, ds: Dataset) -> None:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = self.config.method
        if self.config.profile is FilterProfile.ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE:
            code = Dataset()
            code.CodeValue = "113100"
            code.CodingSchemeDesignator = "DCM"
            code.CodeMeaning = "Basic Application Confidentiality Profile"
            ds.DeidentificationMethodCodeSequence = [code]

    # -- spooled instances ----------------------------------------------------------------------

    def redact_instance(
        self, instance: Part10Instance, destination: Path, *, source_aet: str = ""
    ) -> Part10Instance:
        """Write the de-identified ``instance`` to ``destination`` and describe it.

        Memory holds the header and the elements after the pixel data, never the pixel data.

        Raises:
            MalformedDatasetError: the dataset cannot be parsed or written.
        """
        implicit, little, deflated = encoding_of(instance.transfer_syntax_uid)
        if deflated:
            return self._redact_in_memory(instance, destination, source_aet)
        new_uid = name_based_uid(instance.sop_instance_uid)
        with instance.open_dataset() as source:
            try:
                parts = _split(source, instance, implicit, little)
            except _EncodingMismatch:
                return self._redact_in_memory(instance, destination, source_aet)
            except (MalformedDatasetError, TranscodeError):
                raise
            except Exception as exc:
                raise MalformedDatasetError(f"cannot parse the dataset: {exc}") from exc
            header, pixels, tail = parts
            self._redact_items(header)
            self._redact_items(tail)
            self._mark(header)
            syntax = UID(instance.transfer_syntax_uid)
            pixel_action = self.action(pixels.tag) if pixels is not None else Action.REMOVE
            if pixels is not None and pixel_action is not Action.KEEP and syntax.is_compressed:
                syntax = ExplicitVRLittleEndian  # no encapsulated pixel data left
            meta = build_file_meta(
                sop_class_uid=instance.sop_class_uid,
                sop_instance_uid=new_uid,
                transfer_syntax_uid=syntax,
                source_aet=source_aet,
            )
            try:
                with destination.open("wb") as out:
                    out.write(meta)
                    writer = DicomFileLike(out)
                    writer.is_little_endian = little
                    writer.is_implicit_VR = implicit
                    write_dataset(writer, header)
                    if pixels is not None and pixel_action is Action.KEEP:
                        _copy_range(source, out, pixels.start, pixels.end)
                    elif pixels is not None and pixel_action is not Action.REMOVE:
                        empty = Dataset()
                        empty.add_new(pixels.tag, "OB", b"")
                        write_dataset(writer, empty)
                    write_dataset(writer, tail)
            except OSError:
                raise
            except Exception as exc:
                raise MalformedDatasetError(f"cannot write the redacted dataset: {exc}") from exc
        return _described(destination, instance.sop_class_uid, new_uid, syntax, meta)

    def _redact_in_memory(
        self, instance: Part10Instance, destination: Path, source_aet: str
    ) -> Part10Instance:
        """Deflated or mislabelled datasets: load, redact and rewrite the whole dataset."""
        try:
            ds = read_instance(instance)
        except TranscodeError as exc:
            raise MalformedDatasetError(str(exc)) from exc
        self._redact_items(ds)
        self._mark(ds)
        syntax = UID(instance.transfer_syntax_uid)
        pixels = ds.get("PixelData")
        if syntax.is_compressed and (pixels is None or not pixels.value):
            syntax = ExplicitVRLittleEndian
        new_uid = name_based_uid(instance.sop_instance_uid)
        ds.file_meta.MediaStorageSOPInstanceUID = UID(new_uid)
        ds.file_meta.TransferSyntaxUID = syntax
        if source_aet:
            ds.file_meta.SourceApplicationEntityTitle = source_aet.strip()
        try:
            dcmwrite(destination, ds, enforce_file_format=True)
        except Exception as exc:
            raise MalformedDatasetError(f"cannot write the redacted dataset: {exc}") from exc
        return Part10Instance.from_spooled(
            destination,
            sop_class_uid=instance.sop_class_uid,
            sop_instance_uid=new_uid,
            transfer_syntax_uid=syntax,
            source_aet=source_aet,
        )


@dataclass(frozen=True)
class _PixelExtent:
    tag: int
    start: int
    end: int


class _EncodingMismatch(Exception):
    """The dataset is not encoded as its transfer syntax says (e.g. implicit VR as explicit)."""


def _split(
    source: BinaryIO, instance: Part10Instance, implicit: bool, little: bool
) -> tuple[Dataset, _PixelExtent | None, Dataset]:
    """Parse the header (before the pixel data) and the tail; locate the pixel data bytes."""
    start = instance.dataset_offset
    end = start + instance.dataset_length
    source.seek(start)
    header = read_dataset(
        source, implicit, little, bytelength=instance.dataset_length, stop_when=_at_pixel_data
    )
    if header.original_encoding[:2] != (implicit, little):
        raise _EncodingMismatch
    position = source.tell()
    if position >= end:
        return header, None, Dataset()
    pixels = _pixel_extent(source, position, end, implicit, little)
    tail = Dataset()
    if pixels.end < end:
        source.seek(pixels.end)
        tail = read_dataset(source, implicit, little, bytelength=end - pixels.end)
    return header, pixels, tail


def _pixel_extent(
    source: BinaryIO, start: int, end: int, implicit: bool, little: bool
) -> _PixelExtent:
    """Where the pixel data element that starts at ``start`` ends (walking fragments if needed)."""
    prefix = "<" if little else ">"

    def read(count: int) -> bytes:
        data = source.read(count)
        if len(data) != count:
            raise MalformedDatasetError("dataset truncated in pixel data")
        return data

    source.seek(start)
    group, number = struct.unpack(prefix + "HH", read(4))
    tag = (group << 16) | number
    if implicit:
        (length,) = struct.unpack(prefix + "I", read(4))
    else:
        vr = read(2)
        if vr in _LONG_VRS:
            read(2)
            (length,) = struct.unpack(prefix + "I", read(4))
        else:
            (length,) = struct.unpack(prefix + "H", read(2))
    if length != _UNDEFINED:
        value_end = source.tell() + length
        if value_end > end:
            raise MalformedDatasetError("dataset truncated in pixel data")
        return _PixelExtent(tag, start, value_end)
    while True:
        item_tag_group, item_tag_number, item_length = struct.unpack(prefix + "HHI", read(8))
        item_tag = (item_tag_group << 16) | item_tag_number
        if item_tag == _SEQUENCE_END:
            return _PixelExtent(tag, start, source.tell())
        if item_tag != _ITEM or item_length == _UNDEFINED or source.tell() + item_length > end:
            raise MalformedDatasetError("malformed encapsulated pixel data")
        source.seek(item_length, io.SEEK_CUR)


def _copy_range(source: BinaryIO, out: BinaryIO, start: int, end: int) -> None:
    source.seek(start)
    remaining = end - start
    while remaining > 0:
        chunk = source.read(min(_CHUNK, remaining))
        if not chunk:
            raise MalformedDatasetError("spooled dataset shrank while being read")
        out.write(chunk)
        remaining -= len(chunk)


def _described(
    path: Path, sop_class_uid: str, sop_instance_uid: str, syntax: str, meta: bytes
) -> Part10Instance:
    return Part10Instance(
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        transfer_syntax_uid=str(syntax),
        meta=meta,
        dataset_path=path,
        dataset_offset=len(meta),
        dataset_length=path.stat().st_size - len(meta),
    )


__all__ = [
    "REGENERATED_UIDS",
    "STRUCTURAL_TAGS",
    "Action",
    "FilterProfile",
    "RedactionConfig",
    "Redactor",
    "basic_profile_action",
    "chc_basic_keeps",
    "name_based_uid",
    "parse_tags",
]
