"""C-FIND -> QIDO-RS: answers one query as a stream of (status, identifier) pairs.

Protocol-free: :meth:`FindService.find` takes the request identifier and its information model
and yields (status, identifier) pairs: Pending responses as QIDO pages arrive, then one final
status. Every error becomes a status via :func:`common.status.find_status_for_error`.
Each request is reported once to the :class:`~common.metrics.ImportObserver` with its final
status (Cancel after a C-CANCEL), the matches returned and its duration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pydicom.dataset import Dataset

from common.dicomweb.client import DicomwebApi
from common.errors import AdapterError
from common.lifecycle import Lifecycle
from common.metrics import NULL_IMPORT_OBSERVER, ImportObserver
from common.status import (
    SUCCESS,
    DimseStatus,
    Status,
    find_status_for_error,
    too_many_matches_status,
)
from import_adapter.query.model import InformationModel, Level
from import_adapter.query.translate import (
    NUMBER_OF_PATIENT_RELATED_INSTANCES,
    NUMBER_OF_PATIENT_RELATED_SERIES,
    NUMBER_OF_PATIENT_RELATED_STUDIES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_SERIES,
    FindPlan,
    build_find_plan,
    dataset_from_json,
    patient_key,
    project_response,
    sequence_filters_match,
)

LOG = logging.getLogger(__name__)

PENDING = DimseStatus(Status.PENDING)
CANCELLED = DimseStatus(Status.CANCEL)
#: Reported when the request ends without a final status (the association went away).
ABANDONED = DimseStatus(Status.UNABLE_TO_PROCESS, "association ended before the final response")
FindResult = tuple[DimseStatus, Dataset | None]


@dataclass(frozen=True)
class QuerySettings:
    """How queries are answered.

    Attributes:
        retrieve_aet: the AE title put in RetrieveAETitle (where matches can be moved from).
        page_size: QIDO ``limit`` per page; results are paged with ``offset`` until done.
        parallel_pages: pages requested at once after a full first page (see
            :meth:`common.dicomweb.client.DicomwebClient.search`).
        fuzzy_matching: ask the store for fuzzy matching of person names.
        max_results: the most matches one C-FIND returns (0 = no limit); past it the query
            ends with :func:`common.status.too_many_matches_status` (0xA700).
    """

    retrieve_aet: str = "IMPORTADAPTER"
    page_size: int = 200
    parallel_pages: int = 2
    fuzzy_matching: bool = False
    max_results: int = 0


@dataclass(frozen=True)
class FindRequest:
    """One C-FIND request, its identifier decoded."""

    calling_aet: str
    message_id: int
    model: InformationModel
    identifier: Dataset


class FindService:
    """The C-FIND SCP's logic, independent of the protocol."""

    def __init__(
        self,
        client: DicomwebApi,
        settings: QuerySettings,
        lifecycle: Lifecycle,
        observer: ImportObserver = NULL_IMPORT_OBSERVER,
    ) -> None:
        self._client = client
        self._settings = settings
        self._lifecycle = lifecycle
        self._observer = observer

    def find(self, request: FindRequest, is_cancelled: Callable[[], bool]) -> Iterator[FindResult]:
        """Yield (Pending, match) for each match as it arrives, then the final status.

        The request is reported to the observer exactly once: just before its final status is
        yielded (so the report precedes the SCU seeing it), or when the generator is closed
        before that (the association ended).
        """
        started = time.perf_counter()
        matches = 0
        reported = False
        try:
            for status, identifier in self._answer(request, is_cancelled):
                if status.code in (Status.PENDING, Status.PENDING_WITH_WARNINGS):
                    matches += 1
                else:
                    reported = True
                    self._observer.cfind_done(
                        request.calling_aet, status, matches, time.perf_counter() - started
                    )
                yield status, identifier
        finally:
            if not reported:
                self._observer.cfind_done(
                    request.calling_aet, ABANDONED, matches, time.perf_counter() - started
                )

    def refused(self, calling_aet: str, error: BaseException) -> DimseStatus:
        """Report a C-FIND whose request could not be read; returns its failure status."""
        status = find_status_for_error(error)
        LOG.warning("C-FIND calling=%s refused: status=%s error=%s", calling_aet, status, error)
        self._observer.cfind_done(calling_aet, status, 0, 0.0)
        return status

    def _answer(
        self, request: FindRequest, is_cancelled: Callable[[], bool]
    ) -> Iterator[FindResult]:
        """The responses of one request (the logic of :meth:`find`, without reporting)."""
        started = time.perf_counter()
        matches = 0
        try:
            with self._lifecycle.operation():
                plan = build_find_plan(
                    request.identifier, request.model, fuzzy=self._settings.fuzzy_matching
                )
                for match in self._matches(plan):
                    if is_cancelled():
                        LOG.info(
                            "C-FIND cancelled: calling=%s msg_id=%d after %d matches",
                            request.calling_aet, request.message_id, matches,
                        )
                        yield CANCELLED, None
                        return
                    limit = self._settings.max_results
                    if limit and matches >= limit:
                        LOG.warning(
                            "C-FIND calling=%s msg_id=%d stopped after %d matches (limit)",
                            request.calling_aet, request.message_id, matches,
                        )
                        yield too_many_matches_status(limit), None
                        return
                    matches += 1
                    yield PENDING, match
                if is_cancelled():
                    yield CANCELLED, None
                    return
        except Exception as exc:  # every failure must become a C-FIND status
            status = find_status_for_error(exc)
            LOG.warning(
                "C-FIND failed: calling=%s msg_id=%d model=%s status=%s error=%s",
                request.calling_aet, request.message_id, request.model.name, status, exc,
                exc_info=not isinstance(exc, AdapterError),
            )
            yield status, None
            return
        LOG.info(
            "C-FIND calling=%s msg_id=%d model=%s level=%s matches=%d ms=%.1f",
            request.calling_aet, request.message_id, request.model.name, plan.level.value,
            matches, (time.perf_counter() - started) * 1000,
        )
        yield SUCCESS, None

    def _results(self, plan: FindPlan) -> Iterator[Dataset]:
        """Every distinct QIDO result of the plan's searches, as pages arrive."""
        seen: set[str] = set()
        key = plan.unique_key if not plan.group_patients else None
        for search in plan.searches:
            for item in self._client.search(
                search.resource,
                search.query,
                page_size=self._settings.page_size,
                parallel=self._settings.parallel_pages,
            ):
                found = dataset_from_json(item, plan.result_keys)
                if not sequence_filters_match(found, plan.request):
                    continue
                if key is not None and len(plan.searches) > 1:
                    uid = str(found.get(key).value if key in found else "")
                    if uid in seen:
                        continue
                    seen.add(uid)
                yield found

    def _matches(self, plan: FindPlan) -> Iterator[Dataset]:
        aet = self._settings.retrieve_aet
        if not plan.group_patients:
            for found in self._results(plan):
                yield project_response(found, plan.request, plan.level, aet)
            return
        if not plan.count_patient_studies:
            patients: set[str] = set()
            for found in self._results(plan):
                key = patient_key(found)
                if key not in patients:
                    patients.add(key)
                    yield project_response(found, plan.request, Level.PATIENT, aet)
            return
        # Counts need every study of a patient before the patient can be answered.
        grouped: dict[str, tuple[Dataset, list[int]]] = {}
        for found in self._results(plan):
            first, counts = grouped.setdefault(patient_key(found), (found, [0, 0, 0]))
            counts[0] += 1
            counts[1] += _int(found, NUMBER_OF_STUDY_RELATED_SERIES)
            counts[2] += _int(found, NUMBER_OF_STUDY_RELATED_INSTANCES)
        for first, counts in grouped.values():
            patient = Dataset()
            patient.update(first)
            for tag, value in zip(
                (NUMBER_OF_PATIENT_RELATED_STUDIES, NUMBER_OF_PATIENT_RELATED_SERIES,
                 NUMBER_OF_PATIENT_RELATED_INSTANCES),
                counts,
                strict=True,
            ):
                patient.add_new(tag, "IS", value)
            yield project_response(patient, plan.request, Level.PATIENT, aet)


def _int(ds: Dataset, tag: int) -> int:
    element = ds.get(tag)
    try:
        return int(element.value) if element is not None and element.value is not None else 0
    except (TypeError, ValueError):
        return 0
