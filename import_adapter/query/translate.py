r"""Pure translation between C-FIND identifiers and QIDO-RS (no I/O, inputs never mutated).

Identifier -> QIDO (:func:`build_find_plan`):

- empty keys (and sequences) are return keys -> ``includefield``;
- values are passed as QIDO matching values: exact, ``*``/``?`` wildcards and ``a-b`` date/time
  ranges have the same syntax in DIMSE and QIDO;
- multi-valued keys (UID lists, ModalitiesInStudy ``CT\\MR``) become comma-separated lists;
- unique keys of levels above the query level (StudyInstanceUID for SERIES/IMAGE,
  SeriesInstanceUID for IMAGE) go in the resource path; a list of them fans out into one
  search per value;
- PATIENT level is a study search whose results are grouped into distinct patients;
- ``fuzzymatching=true`` when enabled.

QIDO JSON -> Dataset (:func:`dataset_from_json`): pydicom's ``Dataset.from_json`` after
cleaning what stores return in odd forms (JSON numbers for DS/IS, strings for binary numbers,
BulkDataURI); an element that still cannot be read is dropped, never failing the query.

Dataset -> C-FIND response (:func:`project_response`): exactly the requested keys (values
found, empty where none), plus QueryRetrieveLevel, RetrieveAETitle and SpecificCharacterSet.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import VR, format_number_as_ds

from common.errors import InvalidIdentifierError
from import_adapter.query.model import (
    QUERY_RETRIEVE_LEVEL,
    RETRIEVE_AE_TITLE,
    SPECIFIC_CHARACTER_SET,
    InformationModel,
    Level,
)

LOG = logging.getLogger(__name__)

STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
PATIENT_ID = 0x00100020
#: Patient-level counts computed from the studies of each patient when asked for.
NUMBER_OF_PATIENT_RELATED_STUDIES = 0x00201200
NUMBER_OF_PATIENT_RELATED_SERIES = 0x00201202
NUMBER_OF_PATIENT_RELATED_INSTANCES = 0x00201204
NUMBER_OF_STUDY_RELATED_SERIES = 0x00201206
NUMBER_OF_STUDY_RELATED_INSTANCES = 0x00201208
_PATIENT_COUNTS = (
    NUMBER_OF_PATIENT_RELATED_STUDIES,
    NUMBER_OF_PATIENT_RELATED_SERIES,
    NUMBER_OF_PATIENT_RELATED_INSTANCES,
)
#: Keys that are never matching keys: they describe the query or the response itself.
_NOT_MATCHED = frozenset({QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET, RETRIEVE_AE_TITLE})
_TEXT_VRS = frozenset({"AE", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
                       "UR", "UT", "AS", "DS", "IS"})

_KNOWN_VRS = frozenset(VR.__members__)

Query = tuple[tuple[str, str], ...]


def tag_id(tag: int) -> str:
    """A tag as a QIDO attribute ID (``0020000D``)."""
    return f"{int(tag):08X}"


def attribute_id(tag: int) -> str:
    """A matching key's QIDO attribute ID: its keyword when it has one, else its tag.

    Both are valid (PS3.18 8.3.4.1); keywords are what stores implement most carefully
    (Orthanc applies ModalitiesInStudy matching only when it is named by keyword).
    """
    return keyword_for_tag(tag) or tag_id(tag)


@dataclass(frozen=True)
class QidoSearch:
    """One QIDO-RS search: a resource path and its query parameters (without paging)."""

    resource: tuple[str, ...]
    query: Query


@dataclass(frozen=True)
class FindPlan:
    """How to answer one C-FIND request with QIDO-RS.

    Attributes:
        level: the query level.
        searches: the QIDO searches whose results together are the matches (more than one
            when a list of higher-level UIDs fans out).
        request: a private copy of the identifier, the template of every response.
        unique_key: the tag that identifies one match (duplicates across searches dropped).
        group_patients: PATIENT level: results are studies, grouped into distinct patients.
        count_patient_studies: the SCU asked for NumberOfPatientRelated* counts, so all
            studies must be seen before a patient can be answered.
        result_keys: the attributes of a QIDO result the answer needs (DICOM JSON keys);
            the others a store returns by default are not even converted. None: all.
    """

    level: Level
    searches: tuple[QidoSearch, ...]
    request: Dataset
    unique_key: int
    group_patients: bool = False
    count_patient_studies: bool = False
    result_keys: frozenset[str] | None = None


def _values(element: DataElement) -> list[str]:
    """The element's values as strings ([] when empty)."""
    value = element.value
    if value is None or (isinstance(value, (str, bytes)) and not value):
        return []
    items = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    return [str(item) for item in items if item is not None and str(item) != ""]


def _is_pattern(values: list[str]) -> bool:
    return any(("*" in v or "?" in v) for v in values)


def _path_key(level: Level, tag: BaseTag) -> bool:
    """Whether ``tag`` is a unique key of a level above ``level`` that QIDO puts in the path."""
    return (tag == STUDY_INSTANCE_UID and level in (Level.SERIES, Level.IMAGE)) or (
        tag == SERIES_INSTANCE_UID and level == Level.IMAGE
    )


def _resource(level: Level, study: str | None, series: str | None) -> tuple[str, ...]:
    if level in (Level.PATIENT, Level.STUDY):
        return ("studies",)
    if level == Level.SERIES:
        return ("studies", study, "series") if study else ("series",)
    if study and series:
        return ("studies", study, "series", series, "instances")
    if study:
        return ("studies", study, "instances")
    return ("instances",)


def build_find_plan(
    identifier: Dataset, model: InformationModel, *, fuzzy: bool = False
) -> FindPlan:
    """Translate a C-FIND identifier into QIDO-RS searches.

    Raises:
        InvalidIdentifierError: bad level, or a key whose value cannot be read.
    """
    level = model.check_level(identifier)
    params: list[tuple[str, str]] = []
    include: list[str] = []
    path_values: dict[int, list[str]] = {}
    try:
        elements = list(identifier)
    except Exception as exc:  # pydicom decodes lazily; a bad encoding surfaces here
        raise InvalidIdentifierError(f"identifier cannot be decoded: {exc}") from exc
    for element in elements:
        tag = element.tag
        if tag in _NOT_MATCHED or tag.element == 0 or tag.group in (0x0000, 0x0002):
            continue
        if element.VR == "SQ":
            include.append(tag_id(tag))
            continue
        try:
            values = _values(element)
        except Exception as exc:
            raise InvalidIdentifierError(f"key {tag_id(tag)} cannot be decoded: {exc}") from exc
        if _path_key(level, tag) and values and not _is_pattern(values):
            path_values[int(tag)] = values
            continue
        if level == Level.PATIENT and tag in _PATIENT_COUNTS:
            continue  # computed from the study results
        if values:
            params.append((attribute_id(tag), ",".join(values)))
        include.append(tag_id(tag))
    group = level == Level.PATIENT
    count = group and any(tag in identifier for tag in _PATIENT_COUNTS)
    if group:
        include.append(tag_id(PATIENT_ID))
        if count:
            include += [tag_id(NUMBER_OF_STUDY_RELATED_SERIES),
                        tag_id(NUMBER_OF_STUDY_RELATED_INSTANCES)]
    if include:
        params.append(("includefield", ",".join(dict.fromkeys(include))))
    if fuzzy:
        params.append(("fuzzymatching", "true"))
    studies: list[str | None] = list(path_values.get(STUDY_INSTANCE_UID, [None]))
    series_list: list[str | None] = list(path_values.get(SERIES_INSTANCE_UID, [None]))
    searches: list[QidoSearch] = []
    for study in studies:
        for series in series_list:
            query = list(params)
            in_path = series
            if series is not None and study is None:
                # No study in the path: the series goes in the query instead.
                query.insert(0, (attribute_id(SERIES_INSTANCE_UID), series))
                in_path = None
            searches.append(QidoSearch(_resource(level, study, in_path), tuple(query)))
    unique = dict.fromkeys(searches)  # a repeated UID must not search twice
    needed = [tag_id(element.tag) for element in elements]
    needed += [tag_id(level.unique_key), *include]
    return FindPlan(
        level=level,
        searches=tuple(unique),
        request=copy.deepcopy(identifier),
        unique_key=level.unique_key,
        group_patients=group,
        count_patient_studies=count,
        result_keys=frozenset(needed),
    )


# -- QIDO JSON -> Dataset ----------------------------------------------------------------------


def _clean_value(vr: str, value: Any) -> Any:
    if value is None:
        return None
    if vr == "DS" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_number_as_ds(float(value)) if isinstance(value, float) else str(value)
    if vr == "IS" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    if vr in ("FD", "FL") and isinstance(value, str):
        return float(value)
    if vr in ("US", "SS", "UL", "SL", "UV", "SV") and isinstance(value, str):
        return int(float(value))
    return value


def _clean_element(element: Any) -> dict[str, Any] | None:
    """A DICOM JSON element pydicom can read, or None to drop it."""
    if not isinstance(element, Mapping):
        return None
    vr = element.get("vr")
    if not isinstance(vr, str) or vr not in _KNOWN_VRS:
        return None
    clean: dict[str, Any] = {"vr": vr}
    if "BulkDataURI" in element:
        return clean  # the value lives elsewhere; an empty element is an honest answer
    if "InlineBinary" in element:
        clean["InlineBinary"] = element["InlineBinary"]
        return clean
    values = element.get("Value")
    if values is None:
        return clean
    if not isinstance(values, list):
        values = [values]
    if vr == "SQ":
        clean["Value"] = [
            _clean_dataset(item) for item in values if isinstance(item, Mapping)
        ]
    elif vr == "PN":
        clean["Value"] = [
            item if isinstance(item, Mapping) else {"Alphabetic": str(item)}
            for item in values
            if item is not None
        ]
    else:
        clean["Value"] = [_clean_value(vr, item) for item in values]
    return clean


def _clean_dataset(
    data: Mapping[str, Any], keys: frozenset[str] | None = None
) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, element in data.items():
        if not isinstance(key, str) or len(key) != 8:
            continue
        if keys is not None and key.upper() not in keys:
            continue
        try:
            int(key, 16)
        except ValueError:
            continue
        clean = _clean_element(element)
        if clean is not None:
            cleaned[key.upper()] = clean
    return cleaned


def dataset_from_json(data: Mapping[str, Any], keys: frozenset[str] | None = None) -> Dataset:
    """A Dataset from one QIDO-RS result, tolerating the odd forms stores return.

    Args:
        data: the DICOM JSON object.
        keys: the attributes to keep (uppercase DICOM JSON keys, ``"0020000D"``); None: all.

    Elements that cannot be read even after cleaning are dropped (and logged at debug level);
    bulk data URIs become empty values (pydicom's behaviour without a bulk data handler).
    """
    cleaned = _clean_dataset(data, keys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return Dataset.from_json(cleaned)
        except Exception:  # one bad element: read them one by one and drop the bad ones
            LOG.debug("QIDO result not readable as a whole; reading element by element")
        ds = Dataset()
        for key, element in cleaned.items():
            try:
                ds.update(Dataset.from_json({key: element}))
            except Exception as exc:
                LOG.debug("dropping unreadable element %s from a QIDO result: %s", key, exc)
        return ds


# -- Dataset -> C-FIND response ----------------------------------------------------------------


def _empty(tag: BaseTag, vr: str) -> DataElement:
    return DataElement(tag, vr, Sequence([]) if vr == "SQ" else None)


def _project_sequence(found: DataElement, asked: DataElement) -> DataElement:
    template = asked.value[0] if asked.value else None
    if template is None or len(template) == 0:
        return found  # universal sequence matching: the whole sequence
    items = Sequence([project_keys(item, template) for item in found.value or []])
    return DataElement(found.tag, "SQ", items)


def project_keys(found: Dataset, request: Dataset) -> Dataset:
    """The elements of ``request`` with the values of ``found`` (empty where it has none).

    The result shares its elements with ``found`` (a QIDO result converted for this one
    response): copying each element cost more than the rest of a response together.
    """
    out = Dataset()
    for asked in request:
        tag = asked.tag
        if tag in _NOT_MATCHED or tag.element == 0:
            continue
        if tag in found:
            element = found[tag]
            if asked.VR == "SQ" and element.VR == "SQ":
                out.add(_project_sequence(element, asked))
            else:
                out.add(element)
        else:
            vr = asked.VR if asked.VR and "or" not in asked.VR else _dictionary_vr(tag)
            out.add(_empty(tag, vr))
    return out


def _dictionary_vr(tag: BaseTag) -> str:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return vr.split(" or ")[0]


def _has_non_ascii(ds: Dataset) -> bool:
    for element in ds.iterall():
        if element.VR in _TEXT_VRS and element.value is not None:
            values = element.value if isinstance(element.value, (list, MultiValue)) else [
                element.value
            ]
            if any(not str(value).isascii() for value in values):
                return True
    return False


def project_response(
    found: Dataset, request: Dataset, level: Level, retrieve_aet: str
) -> Dataset:
    """The C-FIND response identifier for one match."""
    out = project_keys(found, request)
    out.QueryRetrieveLevel = level.value
    out.RetrieveAETitle = retrieve_aet
    if _has_non_ascii(out):
        out.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: everything QIDO JSON can hold
    elif SPECIFIC_CHARACTER_SET in request:
        out.SpecificCharacterSet = request.SpecificCharacterSet
    return out


def sequence_filters_match(found: Dataset, request: Dataset) -> bool:
    """Whether ``found`` matches the request's sequence items (QIDO cannot express them).

    A sequence key with an item holding values matches when some item of the found sequence
    has equal values for every non-empty key of the request item (``*`` accepts anything).
    """
    for asked in request:
        if asked.VR != "SQ" or not asked.value:
            continue
        template = asked.value[0]
        wanted = [(e.tag, _values(e)) for e in template if e.VR != "SQ" and _values(e)]
        if not wanted:
            continue
        items = found[asked.tag].value if asked.tag in found else []
        if not any(_item_matches(item, wanted) for item in items or []):
            return False
    return True


def _item_matches(item: Dataset, wanted: list[tuple[BaseTag, list[str]]]) -> bool:
    from fnmatch import fnmatchcase

    for tag, patterns in wanted:
        if tag not in item:
            return False
        have = _values(item[tag])
        if not any(
            fnmatchcase(value, pattern.replace("[", "[[]"))
            for value in have
            for pattern in patterns
        ):
            return False
    return True


def patient_key(found: Dataset) -> str:
    """The grouping key of a study result at PATIENT level (its PatientID)."""
    element = found.get(Tag(PATIENT_ID))
    return str(element.value or "") if element is not None else ""
