"""C-MOVE/C-GET planning: QIDO searches, contexts, syntax choice (pure)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from common.dicom.reference import InstanceReference
from common.errors import InvalidIdentifierError
from import_adapter.query.model import PATIENT_ROOT, STUDY_ROOT, Level
from import_adapter.retrieve.plan import (
    COMMON_SYNTAXES,
    build_retrieve_plan,
    destination_pairs,
    instance_ref,
)

JPEG = "1.2.840.10008.1.2.4.50"
CT = "1.2.840.10008.5.1.4.1.1.2"


def reference(sop: str, sop_class: str, syntaxes: tuple[str, ...] = ()) -> InstanceReference:
    return InstanceReference(
        study_uid="1", series_uid="2", sop_instance_uid=sop, sop_class_uid=sop_class,
        transfer_syntaxes=syntaxes,
    )


def ident(level: str, **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_study_series_image_plans() -> None:
    plan = build_retrieve_plan(ident("STUDY", StudyInstanceUID=["1", "2"]), STUDY_ROOT)
    assert [s.resource for s in plan.searches] == [("studies", "1", "instances"),
                                                  ("studies", "2", "instances")]
    assert plan.whole_series
    plan = build_retrieve_plan(ident("SERIES", StudyInstanceUID="1", SeriesInstanceUID="5"),
                               STUDY_ROOT)
    assert plan.searches[0].resource == ("studies", "1", "series", "5", "instances")
    plan = build_retrieve_plan(
        ident("IMAGE", StudyInstanceUID="1", SeriesInstanceUID="5", SOPInstanceUID=["7", "8"]),
        STUDY_ROOT,
    )
    assert dict(plan.searches[0].query)["SOPInstanceUID"] == "7,8"
    assert not plan.whole_series
    plan = build_retrieve_plan(ident("PATIENT", PatientID="P1"), PATIENT_ROOT)
    assert plan.level == Level.PATIENT and plan.patient_ids == ("P1",)


@pytest.mark.parametrize("keys", [{"StudyInstanceUID": ""}, {}, {"StudyInstanceUID": "1.*"}])
def test_keyless_or_wildcard_retrieves_are_refused(keys: dict[str, str]) -> None:
    with pytest.raises(InvalidIdentifierError):
        build_retrieve_plan(ident("STUDY", **keys), STUDY_ROOT)


def test_instance_ref_from_qido() -> None:
    ref = instance_ref({
        "0020000D": {"vr": "UI", "Value": ["1"]}, "0020000E": {"vr": "UI", "Value": ["2"]},
        "00080018": {"vr": "UI", "Value": ["3"]}, "00080016": {"vr": "UI", "Value": [CT]},
        "00083002": {"vr": "UI", "Value": [JPEG]},
    })
    assert ref == reference("3", CT, (JPEG,))
    assert instance_ref({"0020000D": {"vr": "UI", "Value": ["1"]}}) is None


def test_destination_pairs_cover_stored_syntaxes_in_first_seen_order() -> None:
    pairs = destination_pairs([
        reference("3", CT, (JPEG,)),
        reference("4", CT, (JPEG,)),
        reference("5", "1.2.3.9"),
    ])
    assert pairs == [(CT, JPEG), *(("1.2.3.9", syntax) for syntax in COMMON_SYNTAXES)]
