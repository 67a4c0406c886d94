"""Pure parts of C-MOVE/C-GET: which QIDO searches find the instances, what to negotiate.

- :func:`build_retrieve_plan`: the identifier's unique keys at and above its level -> QIDO
  instance searches (a request without keys at its level is refused, never a move of the whole
  store).
- :func:`instance_ref`: one QIDO instance result -> :class:`InstanceReference`.
- :func:`destination_pairs`: the (SOP class, transfer syntax) pairs to propose to a move
  destination, from what QIDO reported (AvailableTransferSyntaxUID).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from common.dicom.reference import InstanceReference
from common.errors import InvalidIdentifierError
from import_adapter.query.model import InformationModel, Level
from import_adapter.query.translate import QidoSearch, Query, attribute_id, tag_id

#: The most presentation contexts one association may propose (odd IDs 1-255).
MAX_CONTEXTS = 128
#: Proposed, each in its own context, for a SOP class whose stored syntaxes QIDO did not tell.
COMMON_SYNTAXES = tuple(
    str(ts)
    for ts in (
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        JPEGBaseline8Bit,
        JPEGExtended12Bit,
        JPEGLosslessSV1,
        JPEG2000Lossless,
        JPEG2000,
        JPEGLSLossless,
        JPEGLSNearLossless,
        RLELossless,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
    )
)
_INCLUDE = ",".join(
    tag_id(t) for t in (0x0020000D, 0x0020000E, 0x00080016, 0x00080018, 0x00083002)
)


@dataclass(frozen=True)
class RetrievePlan:
    """The QIDO searches that list a C-MOVE/C-GET request's instances.

    Attributes:
        level: the request's level.
        patient_ids: PATIENT level: the patients whose studies are listed first.
        searches: instance-level searches (empty at PATIENT level until studies are known).
        whole_series: every instance of each series is wanted (fetch series at once).
    """

    level: Level
    patient_ids: tuple[str, ...]
    searches: tuple[QidoSearch, ...]
    whole_series: bool


def _keys(identifier: Dataset, keyword: str) -> list[str]:
    element = identifier.get(Tag(keyword))
    if element is None or element.value is None or element.value == "":
        return []
    value = element.value
    values = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    out = [str(v).strip() for v in values if str(v).strip()]
    if any("*" in v or "?" in v for v in out):
        raise InvalidIdentifierError(f"{keyword} of a retrieve cannot hold wildcards")
    return list(dict.fromkeys(out))


def instance_search(
    study: str, series: str | None = None, sop_uids: Iterable[str] = ()
) -> QidoSearch:
    """The QIDO search for the instances of a study (or series), optionally a UID list."""
    resource: tuple[str, ...] = ("studies", study, "instances")
    if series:
        resource = ("studies", study, "series", series, "instances")
    query: Query = (("includefield", _INCLUDE),)
    uids = list(sop_uids)
    if uids:
        query = ((attribute_id(0x00080018), ",".join(uids)), *query)
    return QidoSearch(resource, query)


def build_retrieve_plan(identifier: Dataset, model: InformationModel) -> RetrievePlan:
    """The QIDO searches for a C-MOVE/C-GET identifier.

    Raises:
        InvalidIdentifierError: bad level, no unique key at the level (a keyless retrieve), or
            wildcards in unique keys.
    """
    level = model.check_level(identifier)
    patients = _keys(identifier, "PatientID")
    studies = _keys(identifier, "StudyInstanceUID")
    series = _keys(identifier, "SeriesInstanceUID")
    sops = _keys(identifier, "SOPInstanceUID")
    required = {Level.PATIENT: patients, Level.STUDY: studies, Level.SERIES: series,
                Level.IMAGE: sops}[level]
    if not required:
        key = {Level.PATIENT: "PatientID", Level.STUDY: "StudyInstanceUID",
               Level.SERIES: "SeriesInstanceUID", Level.IMAGE: "SOPInstanceUID"}[level]
        raise InvalidIdentifierError(f"a {level.value} level retrieve needs {key}")
    searches: list[QidoSearch] = []
    if level == Level.STUDY:
        searches = [instance_search(study) for study in studies]
    elif level == Level.SERIES:
        if len(studies) == 1:
            searches = [instance_search(studies[0], one) for one in series]
        else:
            query: Query = (
                (attribute_id(0x0020000E), ",".join(series)),
                ("includefield", _INCLUDE),
            )
            searches = [QidoSearch(("instances",), query)]
    elif level == Level.IMAGE:
        if len(studies) == 1 and len(series) == 1:
            searches = [instance_search(studies[0], series[0], sops)]
        else:
            query = ((attribute_id(0x00080018), ",".join(sops)), ("includefield", _INCLUDE))
            searches = [QidoSearch(("instances",), query)]
    return RetrievePlan(
        level=level,
        patient_ids=tuple(patients) if level == Level.PATIENT else (),
        searches=tuple(searches),
        whole_series=level != Level.IMAGE,
    )


def _first(data: Mapping[str, Any], tag: str) -> str:
    element = data.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return str(values[0]) if isinstance(values, list) and values and values[0] else ""


def instance_ref(data: Mapping[str, Any]) -> InstanceReference | None:
    """An :class:`InstanceReference` from one QIDO instance result (None if UIDs are missing)."""
    element = data.get("00083002")
    syntaxes: tuple[str, ...] = ()
    if isinstance(element, dict):
        syntaxes = tuple(str(ts) for ts in element.get("Value") or [] if ts)
    ref = InstanceReference(
        study_uid=_first(data, "0020000D"),
        series_uid=_first(data, "0020000E"),
        sop_instance_uid=_first(data, "00080018"),
        sop_class_uid=_first(data, "00080016"),
        transfer_syntaxes=syntaxes,
    )
    if not (ref.study_uid and ref.series_uid and ref.sop_instance_uid and ref.sop_class_uid):
        return None
    return ref


def destination_pairs(instances: Iterable[InstanceReference]) -> list[tuple[str, str]]:
    """(SOP class, transfer syntax) pairs to propose for these instances, in first-seen order.

    The stored syntaxes QIDO reported, or the common ones when it reported none (the sender
    adds an uncompressed fallback per class).
    """
    pairs: dict[tuple[str, str], None] = {}
    for ref in instances:
        for syntax in ref.transfer_syntaxes or COMMON_SYNTAXES:
            pairs[(ref.sop_class_uid, syntax)] = None
    return list(pairs)
