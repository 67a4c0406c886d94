"""A reference to one SOP instance: the UIDs that name it, as far as they are known.

One type for every place that names instances without holding them: the instances a C-MOVE or
C-GET retrieves (:mod:`import_adapter.retrieve`), those a Storage Commitment request names
(:mod:`import_adapter.commitment`) and the one a Pub/Sub notification names
(:mod:`export_adapter.notification`). Each fills in what it knows; UIDs it does not know are
``""``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: A UID as PS3.5 9.1 has it: digits and dots, no empty component, 64 characters at most.
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_UID_MAX = 64


def is_uid(value: str) -> bool:
    """Whether ``value`` is a well-formed UID (safe to put in a DICOMweb URL path)."""
    return len(value) <= _UID_MAX and _UID.fullmatch(value) is not None


@dataclass(frozen=True, kw_only=True)
class InstanceReference:
    """One SOP instance, by its UIDs (hashable: references are deduplicated and used as keys).

    Attributes:
        sop_instance_uid: the SOP Instance UID (always known).
        sop_class_uid: the SOP Class UID ('' when the source did not say).
        study_uid / series_uid: the Study and Series Instance UIDs ('' when not known).
        transfer_syntaxes: the syntaxes the instance is stored in, as a QIDO-RS search reported
            them (AvailableTransferSyntaxUID; empty when not reported).
    """

    sop_instance_uid: str
    sop_class_uid: str = ""
    study_uid: str = ""
    series_uid: str = ""
    transfer_syntaxes: tuple[str, ...] = ()

    @property
    def dicomweb_segments(self) -> tuple[str, ...]:
        """The path below a DICOMweb root: ``("studies", A, "series", B, "instances", C)``.

        Raises:
            ValueError: the study or series UID is not known.
        """
        if not self.study_uid or not self.series_uid:
            raise ValueError(f"instance {self.sop_instance_uid} has no study or series UID")
        return (
            "studies", self.study_uid, "series", self.series_uid,
            "instances", self.sop_instance_uid,
        )  # fmt: skip
