"""C-MOVE/C-GET planning: QIDO searches, contexts, syntax choice (pure)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from common.errors import InvalidIdentifierError
from import_adapter.query.model import PATIENT_ROOT, STUDY_ROOT, Level
from import_adapter.retrieve.plan import (
    COMMON_SYNTAXES,
    MAX_CONTEXTS,
    NATIVE,
    InstanceRef,
    build_retrieve_plan,
    choose_syntax,
    destination_contexts,
    instance_ref,
)

JPEG = "1.2.840.10008.1.2.4.50"
CT = "1.2.840.10008.5.1.4.1.1.2"


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
    assert ref == InstanceRef("1", "2", "3", CT, (JPEG,))
    assert instance_ref({"0020000D": {"vr": "UI", "Value": ["1"]}}) is None


def test_contexts_cover_stored_syntaxes_with_a_fallback_and_the_limit() -> None:
    contexts = destination_contexts([InstanceRef("1", "2", "3", CT, (JPEG,))])
    assert [(c.abstract_syntax, c.transfer_syntax) for c in contexts] == [
        (CT, list(NATIVE)), (CT, [JPEG])
    ]
    unknown = destination_contexts([InstanceRef("1", "2", "3", CT)])
    assert len(unknown) == 1 + len(COMMON_SYNTAXES)
    many = [InstanceRef("1", "2", str(i), f"1.2.3.{i}") for i in range(40)]
    contexts = destination_contexts(many)
    assert len(contexts) == MAX_CONTEXTS
    assert {c.abstract_syntax for c in contexts} == {f"1.2.3.{i}" for i in range(40)}


def test_choose_syntax() -> None:
    accepted = {CT: frozenset({JPEG, NATIVE[1]})}
    assert choose_syntax(CT, JPEG, accepted) == JPEG
    assert choose_syntax(CT, "1.2.840.10008.1.2.4.90", accepted) == NATIVE[1]
    assert choose_syntax("9.9", JPEG, accepted) is None
