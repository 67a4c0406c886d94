"""What C-FIND and C-MOVE/C-GET report to the ImportObserver (in-process; the wire is covered by
tests/integration/test_observability.py): one ``cfind_done`` per request whatever its end, and
the C-STORE sub-operation tally that learns outcomes from pynetdicom's DIMSE events.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from typing import Any

import pytest
from pydicom.dataset import Dataset

from common.errors import DicomwebConnectionError, InvalidIdentifierError
from common.lifecycle import Lifecycle
from common.metrics import NullImportObserver
from common.status import DimseStatus, Status
from import_adapter.query.model import STUDY_ROOT
from import_adapter.query.service import FindRequest, FindService, QuerySettings
from import_adapter.retrieve.tally import SubOperationTally


class Recorder(NullImportObserver):
    """Records the observer calls this module cares about."""

    def __init__(self) -> None:
        self.finds: list[tuple[str, int, int]] = []

    def cfind_done(
        self, calling_aet: str, status: DimseStatus, matches: int, seconds: float
    ) -> None:
        assert seconds >= 0
        self.finds.append((calling_aet, status.code, matches))


class Client:
    """A DicomwebApi answering QIDO-RS with ``studies`` results (or raising ``error``)."""

    def __init__(self, studies: int = 0, error: Exception | None = None) -> None:
        self.studies = studies
        self.error = error

    def search(
        self, resource: Sequence[str], query: Any, *, page_size: int = 0, parallel: int = 1
    ) -> Iterator[dict[str, Any]]:
        if self.error is not None:
            raise self.error
        for i in range(self.studies):
            yield {"0020000D": {"vr": "UI", "Value": [f"1.2.3.{i}"]}}


def request(aet: str = "QUERIER") -> FindRequest:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    return FindRequest(calling_aet=aet, message_id=1, model=STUDY_ROOT, identifier=identifier)


def service(client: Client, observer: Recorder, max_results: int = 0) -> FindService:
    return FindService(client, QuerySettings(max_results=max_results), Lifecycle(), observer)  # type: ignore[arg-type]


def test_a_finished_cfind_is_reported_once_with_its_matches() -> None:
    observer = Recorder()
    results = list(service(Client(studies=3), observer).find(request(), lambda: False))
    assert [s.code for s, _ in results] == [Status.PENDING] * 3 + [Status.SUCCESS]
    assert observer.finds == [("QUERIER", Status.SUCCESS, 3)]


def test_the_report_precedes_the_final_status() -> None:
    """pynetdicom sends the final response as soon as it is yielded: report first."""
    observer = Recorder()
    answers = service(Client(studies=1), observer).find(request(), lambda: False)
    next(answers)
    status, _ = next(answers)
    assert status.code == Status.SUCCESS
    assert observer.finds == [("QUERIER", Status.SUCCESS, 1)]


def test_a_cancelled_cfind_is_reported_as_cancel() -> None:
    observer = Recorder()
    seen: list[int] = []
    answers = service(Client(studies=5), observer).find(request(), lambda: len(seen) >= 2)
    for status, _ in answers:
        seen.append(status.code)
    assert seen[-1] == Status.CANCEL
    assert observer.finds == [("QUERIER", Status.CANCEL, 2)]


def test_a_failed_cfind_is_reported_with_its_failure_status() -> None:
    observer = Recorder()
    error = DicomwebConnectionError("store down")
    [(status, _)] = list(service(Client(error=error), observer).find(request(), lambda: False))
    assert DimseStatus(status.code).is_failure
    assert observer.finds == [("QUERIER", status.code, 0)]


def test_a_cfind_stopped_at_the_match_limit_is_reported() -> None:
    observer = Recorder()
    results = list(service(Client(studies=5), observer, max_results=2).find(
        request(), lambda: False))
    assert results[-1][0].code == Status.OUT_OF_RESOURCES
    assert observer.finds == [("QUERIER", Status.OUT_OF_RESOURCES, 2)]


def test_an_abandoned_cfind_is_reported_when_closed() -> None:
    """The association went away mid-stream: pynetdicom drops the generator."""
    observer = Recorder()
    answers = service(Client(studies=5), observer).find(request(), lambda: False)
    assert isinstance(answers, Generator)  # typed as an Iterator; closing is what is tested
    next(answers)
    assert observer.finds == []
    answers.close()
    [(aet, code, matches)] = observer.finds
    assert (aet, matches) == ("QUERIER", 1) and DimseStatus(code).is_failure


def test_an_unreadable_request_is_reported() -> None:
    observer = Recorder()
    status = service(Client(), observer).refused("QUERIER", InvalidIdentifierError("bad"))
    assert status.is_failure
    assert observer.finds == [("QUERIER", status.code, 0)]


# -- the sub-operation tally -----------------------------------------------------------------


def test_tally_counts_each_sub_operation() -> None:
    tally = SubOperationTally()
    first = tally.record(DimseStatus(0x0000), 100)
    assert (first.size, first.ok) == (100, True)
    assert tally.record(DimseStatus(0xB000), 50).ok  # a warning is stored
    refused = tally.record(DimseStatus(0xA700), 70)
    assert (refused.size, refused.ok) == (70, False)
    missing = tally.record(None, 0)  # not sent, or no answer
    assert (missing.size, missing.ok, missing.status) == (0, False, None)
    assert (tally.completed, tally.warning, tally.failed) == (1, 1, 2)
    assert tally.final_status().code == Status.SUB_OPERATIONS_COMPLETE_WITH_FAILURES


@pytest.mark.parametrize(
    ("outcomes", "final"),
    [
        ([0x0000, 0x0000], Status.SUCCESS),
        ([0xA700, None], Status.OUT_OF_RESOURCES_SUB_OPERATIONS),
        ([0x0000, None], Status.SUB_OPERATIONS_COMPLETE_WITH_FAILURES),
        ([0xB007], Status.SUB_OPERATIONS_COMPLETE_WITH_FAILURES),
    ],
)
def test_tally_final_status(outcomes: list[int | None], final: Status) -> None:
    tally = SubOperationTally()
    for outcome in outcomes:
        tally.record(DimseStatus(outcome) if outcome is not None else None, 10)
    assert tally.final_status().code == final
