"""Query/Retrieve information models and levels (PS3.4 C.6): what each model allows.

Shared by C-FIND (:mod:`import_adapter.query`) and C-MOVE/C-GET (:mod:`import_adapter.retrieve`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydicom.dataset import Dataset

from common.errors import InvalidIdentifierError


class Level(StrEnum):
    """Query/Retrieve Level (0008,0052), from the top of the hierarchy down."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        """0 for PATIENT ... 3 for IMAGE."""
        return list(Level).index(self)

    @property
    def unique_key(self) -> int:
        """The tag of the level's unique key (PatientID for PATIENT)."""
        return _UNIQUE_KEYS[self]


_UNIQUE_KEYS = {
    Level.PATIENT: 0x00100020,  # PatientID
    Level.STUDY: 0x0020000D,  # StudyInstanceUID
    Level.SERIES: 0x0020000E,  # SeriesInstanceUID
    Level.IMAGE: 0x00080018,  # SOPInstanceUID
}

QUERY_RETRIEVE_LEVEL = 0x00080052
SPECIFIC_CHARACTER_SET = 0x00080005
RETRIEVE_AE_TITLE = 0x00080054


@dataclass(frozen=True)
class InformationModel:
    """One Query/Retrieve information model and its FIND/MOVE/GET SOP classes."""

    name: str
    find: str
    move: str
    get: str
    levels: tuple[Level, ...]

    def check_level(self, identifier: Dataset) -> Level:
        """The identifier's Query/Retrieve Level, checked against this model.

        Raises:
            InvalidIdentifierError: the level is missing, unknown or not in this model.
        """
        element = identifier.get(QUERY_RETRIEVE_LEVEL)
        value = str(element.value or "").strip().upper() if element is not None else ""
        if not value:
            raise InvalidIdentifierError("identifier has no Query/Retrieve Level")
        try:
            level = Level(value)
        except ValueError as exc:
            raise InvalidIdentifierError(f"unknown Query/Retrieve Level {value!r}") from exc
        if level not in self.levels:
            raise InvalidIdentifierError(f"level {value} is not part of the {self.name} model")
        return level


PATIENT_ROOT = InformationModel(
    "Patient Root",
    find="1.2.840.10008.5.1.4.1.2.1.1",
    move="1.2.840.10008.5.1.4.1.2.1.2",
    get="1.2.840.10008.5.1.4.1.2.1.3",
    levels=(Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE),
)
STUDY_ROOT = InformationModel(
    "Study Root",
    find="1.2.840.10008.5.1.4.1.2.2.1",
    move="1.2.840.10008.5.1.4.1.2.2.2",
    get="1.2.840.10008.5.1.4.1.2.2.3",
    levels=(Level.STUDY, Level.SERIES, Level.IMAGE),
)
PATIENT_STUDY_ONLY = InformationModel(
    "Patient/Study Only",
    find="1.2.840.10008.5.1.4.1.2.3.1",
    move="1.2.840.10008.5.1.4.1.2.3.2",
    get="1.2.840.10008.5.1.4.1.2.3.3",
    levels=(Level.PATIENT, Level.STUDY),
)
MODELS = (PATIENT_ROOT, STUDY_ROOT, PATIENT_STUDY_ONLY)


def model_for(sop_class_uid: str) -> InformationModel:
    """The information model a FIND, MOVE or GET SOP class belongs to.

    Raises:
        InvalidIdentifierError: the SOP class is not a supported Query/Retrieve model.
    """
    for model in MODELS:
        if sop_class_uid in (model.find, model.move, model.get):
            return model
    raise InvalidIdentifierError(f"unsupported Query/Retrieve SOP class {sop_class_uid}")
