"""C-FIND through the adapter (QIDO-RS on Orthanc) vs Orthanc's own C-FIND, across the wire.

Two Orthancs hold the same data: ``backend`` is the adapter's DICOMweb store, ``oracle`` is
queried directly with findscu. Every query must return the same matches through both. The
adapter's QIDO page size is 7, so every query with more matches pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.integration.qr_support import ADAPTER_AET, LOCALHOST, Pair, find_matches, start_adapter
from tests.support.dcmtk import QueryModel
from tests.support.orthanc import OrthancServer
from tests.support.samples import SampleInstance, make_corpus, make_samples

CORPUS_STUDIES = 6


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    backend = OrthancServer(workdir=tmp_path_factory.mktemp("backend"))
    oracle = OrthancServer(workdir=tmp_path_factory.mktemp("oracle"))
    with backend, oracle:
        yield Pair(backend, oracle)


@pytest.fixture(scope="module")
def data(pair: Pair, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[SampleInstance]]:
    corpus = make_corpus(tmp_path_factory.mktemp("corpus"), 36, studies=CORPUS_STUDIES)
    samples = make_samples(tmp_path_factory.mktemp("samples"))
    pair.load([s.path for s in corpus + samples])
    return {"corpus": corpus, "samples": samples}


@pytest.fixture(scope="module")
def adapter_port(pair: Pair) -> Iterator[int]:
    adapter = start_adapter(pair.backend.dicomweb_url, page_size=7)
    yield adapter.server.port
    adapter.stop()


def _both(
    pair: Pair, port: int, keys: list[str], tmp_path: Path, model: QueryModel = "study"
) -> tuple[list[pydicom.Dataset], list[pydicom.Dataset]]:
    ours, result = find_matches(port, keys, tmp_path / "adapter", model=model)
    assert result.returncode == 0, result.stderr
    # Orthanc has no Patient/Study Only model; Patient Root answers the same at its levels.
    theirs, result = find_matches(
        pair.oracle.dicom_port, keys, tmp_path / "oracle", called_aet=pair.oracle.aet,
        model="patient" if model == "psonly" else model,
    )
    assert result.returncode == 0, result.stderr
    return ours, theirs


def _values(responses: list[pydicom.Dataset], keyword: str) -> list[str]:
    return sorted(str(r.get(keyword, "") or "") for r in responses)


def _requested(keys: list[str]) -> set[int]:
    return {int(k.split("=")[0].replace(",", ""), 16) for k in keys}


LEVEL_QUERIES: list[tuple[str, QueryModel, list[str], str]] = [
    ("study-all", "study", ["0008,0052=STUDY", "0020,000D", "0010,0020", "0008,0020",
                            "0008,0061", "0010,0010"], "StudyInstanceUID"),
    ("series-all", "study", ["0008,0052=SERIES", "0020,000E", "0008,0060", "0020,0011"],
     "SeriesInstanceUID"),
    ("image-all", "study", ["0008,0052=IMAGE", "0008,0018", "0008,0016", "0020,0013"],
     "SOPInstanceUID"),
    ("patient-root-patients", "patient", ["0008,0052=PATIENT", "0010,0020", "0010,0010",
                                          "0010,0040"], "PatientID"),
    ("patient-root-studies", "patient", ["0008,0052=STUDY", "0010,0020", "0020,000D"],
     "StudyInstanceUID"),
    ("psonly-patients", "psonly", ["0008,0052=PATIENT", "0010,0020"], "PatientID"),
    ("psonly-studies", "psonly", ["0008,0052=STUDY", "0020,000D", "0010,0020"],
     "StudyInstanceUID"),
    ("date-range", "study", ["0008,0052=STUDY", "0008,0020=20000101-20050101", "0020,000D"],
     "StudyInstanceUID"),
    ("open-range", "study", ["0008,0052=STUDY", "0008,0020=-20040120", "0020,000D"],
     "StudyInstanceUID"),
    ("modality-list", "study", ["0008,0052=SERIES", "0008,0060=CT\\NM", "0020,000E"],
     "SeriesInstanceUID"),
    ("wildcard-patient-id", "study", ["0008,0052=STUDY", "0010,0020=CORPUS*", "0020,000D"],
     "StudyInstanceUID"),
]


@pytest.mark.parametrize(("name", "model", "keys", "unique"), LEVEL_QUERIES,
                         ids=[q[0] for q in LEVEL_QUERIES])
def test_same_matches_as_orthanc(
    pair: Pair, data: dict[str, list[SampleInstance]], adapter_port: int, tmp_path: Path,
    name: str, model: QueryModel, keys: list[str], unique: str,
) -> None:
    ours, theirs = _both(pair, adapter_port, keys, tmp_path, model)
    assert theirs, f"{name}: the oracle found nothing; the query does not test anything"
    assert _values(ours, unique) == _values(theirs, unique)
    requested = _requested(keys)
    for response in ours:
        tags = {int(e.tag) for e in response}
        # exactly the requested keys, plus what the standard adds
        assert tags - {0x00080005} == requested | {0x00080054}, name
        assert response.RetrieveAETitle == ADAPTER_AET
        level = next(k.split("=")[1] for k in keys if k.startswith("0008,0052"))
        assert response.QueryRetrieveLevel == level


def test_modalities_in_study_list(
    pair: Pair, data: dict[str, list[SampleInstance]], adapter_port: int, tmp_path: Path
) -> None:
    """ModalitiesInStudy CT\\NM matches studies holding a CT or an NM series.

    Checked against the data itself: Orthanc's own C-FIND ignores a multi-valued
    ModalitiesInStudy (it returns every study), so it cannot be the oracle here. Orthanc's
    QIDO also pages wrongly with this key (``offset`` past the first page returns nothing), so
    this adapter uses one large page.
    """
    expected = {
        s.study_uid
        for s in data["corpus"] + data["samples"]
        if pydicom.dcmread(s.path, stop_before_pixels=True).Modality in ("CT", "NM")
    }
    adapter = start_adapter(pair.backend.dicomweb_url, page_size=1000)
    try:
        ours, _ = find_matches(
            adapter.server.port, ["0008,0052=STUDY", "0008,0061=CT\\NM", "0020,000D"], tmp_path
        )
    finally:
        adapter.stop()
    assert {str(r.StudyInstanceUID) for r in ours} == expected
    for response in ours:
        element = response["ModalitiesInStudy"]
        assert {"CT", "NM"} & set(element.value if element.VM > 1 else [element.value])


def test_hierarchical_keys_and_uid_lists(
    pair: Pair, data: dict[str, list[SampleInstance]], adapter_port: int, tmp_path: Path
) -> None:
    corpus = data["corpus"]
    studies = sorted({s.study_uid for s in corpus})
    series_of_first = sorted({s.series_uid for s in corpus if s.study_uid == studies[0]})
    queries = [
        ["0008,0052=SERIES", f"0020,000D={studies[0]}", "0020,000E", "0008,0060"],
        ["0008,0052=SERIES", f"0020,000D={studies[0]}\\{studies[1]}", "0020,000E"],
        ["0008,0052=IMAGE", f"0020,000D={studies[0]}", f"0020,000E={series_of_first[0]}",
         "0008,0018"],
        ["0008,0052=STUDY", f"0020,000D={studies[2]}\\{studies[3]}\\{studies[4]}", "0010,0020"],
    ]
    for index, keys in enumerate(queries):
        ours, theirs = _both(pair, adapter_port, keys, tmp_path / str(index))
        unique = {"SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID",
                  "STUDY": "StudyInstanceUID"}[keys[0].split("=")[1]]
        assert theirs
        assert _values(ours, unique) == _values(theirs, unique), keys


def test_paging_streams_all_results(
    pair: Pair, data: dict[str, list[SampleInstance]], adapter_port: int, tmp_path: Path
) -> None:
    """More than one QIDO page (page size 7): every instance comes back exactly once."""
    ours, _ = find_matches(adapter_port, ["0008,0052=IMAGE", "0008,0018"], tmp_path)
    uids = [str(r.SOPInstanceUID) for r in ours]
    expected = {s.sop_instance_uid for s in data["corpus"] + data["samples"]}
    assert len(uids) == len(set(uids)) == len(expected) > 7
    assert set(uids) == expected


def test_empty_keys_come_back_empty_and_values_filled(
    pair: Pair, data: dict[str, list[SampleInstance]], adapter_port: int, tmp_path: Path
) -> None:
    sample = data["corpus"][0]
    keys = ["0008,0052=STUDY", f"0020,000D={sample.study_uid}", "0010,0010", "0008,1030",
            "0020,1206", "0032,1064"]  # 0032,1064: a sequence (RequestedProcedureCodeSequence)
    ours, _ = find_matches(adapter_port, keys, tmp_path)
    assert len(ours) == 1
    response = ours[0]
    assert str(response.PatientName).startswith("Corpus^")
    assert "StudyDescription" in response
    assert int(response.NumberOfStudyRelatedSeries) >= 1
    assert "RequestedProcedureCodeSequence" in response


def test_no_match_is_success_without_pending(
    pair: Pair, data: dict[str, list[SampleInstance]], adapter_port: int, tmp_path: Path
) -> None:
    ours, result = find_matches(
        adapter_port, ["0008,0052=STUDY", "0010,0020=NO-SUCH-PATIENT"], tmp_path
    )
    assert result.returncode == 0
    assert ours == []


def test_invalid_level_for_model_is_refused(adapter_port: int, tmp_path: Path) -> None:
    """Study Root has no PATIENT level: 0xA900 (identifier does not match SOP class)."""
    ours, result = find_matches(
        adapter_port, ["0008,0052=PATIENT", "0010,0020"], tmp_path, extra_args=["-v"]
    )
    assert ours == []
    assert "datasetdoesnotmatchsopclass" in (result.stdout + result.stderr).lower()  # 0xA900


def test_cancel_stops_the_query(
    pair: Pair, data: dict[str, list[SampleInstance]], adapter_port: int, tmp_path: Path
) -> None:
    """findscu --cancel 3: C-CANCEL after 3 responses; the adapter stops and says Cancel."""
    ours, result = find_matches(
        adapter_port, ["0008,0052=IMAGE", "0008,0018"], tmp_path, extra_args=["-v", "--cancel", "3"]
    )
    text = (result.stdout + result.stderr).lower()
    assert "cancel" in text
    assert len(ours) < len(data["corpus"]) + len(data["samples"])


def test_dicomweb_down_is_unable_to_process(tmp_path: Path) -> None:
    """A store that cannot be reached: the C-FIND fails with 0xC000, it does not hang."""
    from tests.support.ports import free_port

    adapter = start_adapter(f"http://{LOCALHOST}:{free_port()}/dicom-web")
    try:
        ours, result = find_matches(adapter.server.port, ["0008,0052=STUDY", "0020,000D"],
                                    tmp_path, extra_args=["-v"])
    finally:
        adapter.stop()
    assert ours == []
    assert "unabletoprocess" in (result.stdout + result.stderr).lower()  # 0xC000


def test_find_beside_get_answers_as_find_alone(
    pair: Pair, data: dict[str, list[SampleInstance]], adapter_port: int, tmp_path: Path
) -> None:
    """A C-FIND on an association that also proposed C-GET answers as findscu's alone."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
    )

    keys = ["0008,0052=SERIES", "0020,000E", "0008,0060", "0020,1209"]
    fast, result = find_matches(adapter_port, keys, tmp_path)
    assert result.returncode == 0, result.stderr
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    assoc = ae.associate(LOCALHOST, adapter_port, ae_title=ADAPTER_AET)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.SeriesInstanceUID = ""
    query.Modality = ""
    query.NumberOfSeriesRelatedInstances = ""
    try:
        pending = [identifier for status, identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind) if status.Status == 0xFF00]
    finally:
        assoc.release()
    answers = [identifier for identifier in pending if identifier is not None]
    assert len(answers) == len(pending)  # each pending response carries its match

    def by_series(found: list[pydicom.Dataset]) -> dict[str, tuple[str, int]]:
        return {str(r.SeriesInstanceUID): (str(r.Modality), int(r.NumberOfSeriesRelatedInstances))
                for r in found}

    assert len(fast) > 7  # more than one page on both paths
    assert by_series(answers) == by_series(fast)
