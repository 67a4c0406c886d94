"""Identifier -> QIDO and QIDO JSON -> response: pure translation."""

from __future__ import annotations

import copy

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from common.errors import InvalidIdentifierError
from import_adapter.query.model import PATIENT_ROOT, PATIENT_STUDY_ONLY, STUDY_ROOT, Level
from import_adapter.query.translate import (
    build_find_plan,
    dataset_from_json,
    project_response,
    sequence_filters_match,
)


def identifier(level: str, **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def params(plan_query: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return dict(plan_query)


def test_study_query_values_wildcards_ranges_and_return_keys() -> None:
    ds = identifier("STUDY", PatientName="Doe^J*", StudyDate="20200101-20201231",
                    AccessionNumber="A?C", StudyInstanceUID="", ModalitiesInStudy=["CT", "MR"])
    before = copy.deepcopy(ds)
    plan = build_find_plan(ds, STUDY_ROOT, fuzzy=True)
    assert ds == before  # the input is not mutated
    (search,) = plan.searches
    assert search.resource == ("studies",)
    query = params(search.query)
    assert query["PatientName"] == "Doe^J*"
    assert query["StudyDate"] == "20200101-20201231"
    assert query["AccessionNumber"] == "A?C"
    assert query["ModalitiesInStudy"] == "CT,MR"
    assert "StudyInstanceUID" not in query
    assert "0020000D" in query["includefield"].split(",")
    assert query["fuzzymatching"] == "true"


def test_higher_level_uids_go_in_the_path_and_lists_fan_out() -> None:
    plan = build_find_plan(
        identifier("IMAGE", StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3", SOPInstanceUID=""),
        STUDY_ROOT,
    )
    assert [s.resource for s in plan.searches] == [
        ("studies", "1.2", "series", "1.2.3", "instances")
    ]
    plan = build_find_plan(
        identifier("SERIES", StudyInstanceUID=["1.2", "1.3"], SeriesInstanceUID=""), STUDY_ROOT
    )
    assert [s.resource for s in plan.searches] == [
        ("studies", "1.2", "series"), ("studies", "1.3", "series")
    ]
    plan = build_find_plan(identifier("STUDY", StudyInstanceUID=["1.2", "1.3"]), STUDY_ROOT)
    assert params(plan.searches[0].query)["StudyInstanceUID"] == "1.2,1.3"


def test_series_without_study_goes_in_the_query() -> None:
    plan = build_find_plan(identifier("IMAGE", SeriesInstanceUID="9.9"), PATIENT_ROOT)
    (search,) = plan.searches
    assert search.resource == ("instances",)
    assert params(search.query)["SeriesInstanceUID"] == "9.9"


def test_patient_level_is_a_grouped_study_search() -> None:
    ds = identifier("PATIENT", PatientID="P*", PatientName="", NumberOfPatientRelatedStudies="")
    plan = build_find_plan(ds, PATIENT_ROOT)
    assert plan.group_patients and plan.count_patient_studies
    query = params(plan.searches[0].query)
    assert plan.searches[0].resource == ("studies",)
    assert query["PatientID"] == "P*"
    assert "NumberOfPatientRelatedStudies" not in query


@pytest.mark.parametrize(("model", "level"), [(STUDY_ROOT, "PATIENT"),
                                              (PATIENT_STUDY_ONLY, "SERIES"),
                                              (STUDY_ROOT, "FRAME"), (STUDY_ROOT, "")])
def test_bad_levels_are_refused(model: object, level: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        build_find_plan(identifier(level), model)  # type: ignore[arg-type]


def test_json_with_odd_values_does_not_fail() -> None:
    data = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jürgen"}]},
        "00180050": {"vr": "DS", "Value": [2.5]},  # a JSON number for DS
        "00200013": {"vr": "IS", "Value": [3.0]},
        "00280010": {"vr": "US", "Value": ["512"]},  # a string for US
        "7FE00010": {"vr": "OW", "BulkDataURI": "http://x/bulk"},
        "00081190": {"vr": "UR", "Value": ["http://x"]},
        "00091010": {"vr": "ZZ", "Value": ["bad vr"]},
        "nonsense": {"vr": "CS"},
    }
    ds = dataset_from_json(data)
    assert str(ds.PatientName) == "Müller^Jürgen"
    assert float(ds.SliceThickness) == 2.5
    assert int(ds.InstanceNumber) == 3
    assert ds.Rows == 512
    assert 0x00091010 not in ds


def test_response_holds_exactly_the_requested_keys() -> None:
    request = identifier("STUDY", StudyInstanceUID="", PatientName="", StudyDescription="")
    request.SpecificCharacterSet = "ISO_IR 100"
    found = dataset_from_json({
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller"}]},
        "00100020": {"vr": "LO", "Value": ["not asked"]},
    })
    response = project_response(found, request, Level.STUDY, "ADAPTER")
    assert {e.keyword for e in response} == {
        "StudyInstanceUID", "PatientName", "StudyDescription", "QueryRetrieveLevel",
        "RetrieveAETitle", "SpecificCharacterSet",
    }
    assert response.StudyDescription in (None, "")
    assert response.SpecificCharacterSet == "ISO_IR 192"  # non-ASCII values: UTF-8


def test_sequence_items_are_projected_and_filtered() -> None:
    item = Dataset()
    item.CodeValue = "X1"
    item.CodingSchemeDesignator = ""
    request = identifier("STUDY", ProcedureCodeSequence=Sequence([item]))
    found = dataset_from_json({"00081032": {"vr": "SQ", "Value": [
        {"00080100": {"vr": "SH", "Value": ["X1"]}, "00080102": {"vr": "SH", "Value": ["L"]},
         "00080104": {"vr": "LO", "Value": ["not asked"]}}]}})
    assert sequence_filters_match(found, request)
    response = project_response(found, request, Level.STUDY, "A")
    (out,) = response.ProcedureCodeSequence
    assert {e.keyword for e in out} == {"CodeValue", "CodingSchemeDesignator"}
    item.CodeValue = "Y*"
    assert not sequence_filters_match(found, request)
