"""Unit tests of the spool's outcomes: the failure table's spool column, as queue kinds."""

from __future__ import annotations

import pytest

from common.errors import (
    AssociationRejectedError,
    AuthError,
    DicomwebConnectionError,
    DicomwebError,
    DicomwebHttpError,
    DicomwebResponseError,
    DicomwebTimeoutError,
    MalformedDatasetError,
    NoAcceptableContextError,
    PeerUnavailableError,
    StoreUnavailableError,
)
from common.status import (
    FAILURE_TABLE,
    OVERLOAD_HTTP_STATUSES,
    PEER_FAILURE_TABLE,
    PROCESSING_FAILURE_ATTEMPTS,
    DimseStatus,
    FailureRule,
    SpoolAction,
    Status,
    rule_for_error,
    rule_for_http,
    rule_for_store_status,
)
from import_adapter.spool.outcome import Kind, kind_for_http, result_for_error, result_for_status

NONE: frozenset[int] = frozenset()
_KIND = {
    SpoolAction.DONE: Kind.DONE,
    SpoolAction.RETRY: Kind.RETRY,
    SpoolAction.PAUSE: Kind.RETRY,
    SpoolAction.UNREACHABLE: Kind.UNREACHABLE,
    SpoolAction.DEAD_LETTER: Kind.DEAD,
}


@pytest.mark.parametrize(
    ("http", "kind"),
    [
        (400, Kind.DEAD),
        (401, Kind.UNREACHABLE),  # credentials/permissions: kept, not dead-lettered
        (403, Kind.UNREACHABLE),
        (404, Kind.DEAD),
        (408, Kind.RETRY),
        (409, Kind.DEAD),
        (413, Kind.DEAD),
        (425, Kind.RETRY),
        (429, Kind.RETRY),
        (500, Kind.RETRY),
        (501, Kind.DEAD),  # Not Implemented: final (it used to be retried, as any >= 500)
        (502, Kind.RETRY),
        (503, Kind.RETRY),
        (504, Kind.RETRY),
        (505, Kind.RETRY),
        (507, Kind.RETRY),
    ],
)
def test_http_errors(http: int, kind: Kind) -> None:
    result = result_for_error(DicomwebHttpError(http, retry_after=3.0), NONE)
    assert result.kind is kind
    assert (result.http_status, result.retry_after) == (http, 3.0)
    assert result.status.code == rule_for_http(http).status


def test_overload_is_told_to_the_queue_by_its_http_status() -> None:
    """429/503 come back as RETRY with their HTTP status, which the queue turns into a pause."""
    for http in OVERLOAD_HTTP_STATUSES:
        result = result_for_error(DicomwebHttpError(http), NONE)
        assert result.kind is Kind.RETRY and result.http_status in OVERLOAD_HTTP_STATUSES
    assert 500 not in OVERLOAD_HTTP_STATUSES


def test_http_error_codes_to_retry_turn_dead_letters_into_retries() -> None:
    codes = frozenset({404, 409, 413, 401})
    assert result_for_error(DicomwebHttpError(409), codes).kind is Kind.RETRY
    assert result_for_error(DicomwebHttpError(404), codes).kind is Kind.RETRY
    assert result_for_error(DicomwebHttpError(413), codes).kind is Kind.RETRY
    assert result_for_error(DicomwebHttpError(400), codes).kind is Kind.DEAD
    # Listed or not, what the table already keeps stays as it is.
    assert kind_for_http(401, codes) is Kind.UNREACHABLE
    assert kind_for_http(503, codes) is Kind.RETRY


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (DicomwebConnectionError("refused"), Kind.UNREACHABLE),
        (DicomwebTimeoutError("slow"), Kind.UNREACHABLE),
        (StoreUnavailableError("known down"), Kind.UNREACHABLE),
        (AuthError("no credentials"), Kind.UNREACHABLE),
        (DicomwebResponseError("not JSON"), Kind.RETRY),
        (DicomwebError("the file ended early"), Kind.RETRY),
        (RuntimeError("a bug"), Kind.RETRY),
        (OSError("disk hiccup"), Kind.RETRY),
        (MalformedDatasetError("cut"), Kind.DEAD),
        (FileNotFoundError("gone"), Kind.DEAD),
        (PeerUnavailableError("PACS down"), Kind.UNREACHABLE),
        # A rejected association keeps the work (it used to be retried a few times, then
        # dead-lettered); no presentation context is final (it used to be retried).
        (AssociationRejectedError("rj", permanent=True, source=1, reason=7), Kind.UNREACHABLE),
        (AssociationRejectedError("rj", permanent=False, source=3, reason=1), Kind.UNREACHABLE),
        (NoAcceptableContextError("none", sop_class_uid="1.2"), Kind.DEAD),
    ],
)
def test_other_errors(error: BaseException, kind: Kind) -> None:
    result = result_for_error(error, NONE)
    assert result.kind is kind and result.http_status is None
    assert type(error).__name__ in result.reason


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (0x0000, Kind.DONE),
        (0xB000, Kind.DONE),
        (0xA700, Kind.RETRY),
        (0xA7FF, Kind.RETRY),
        (0x0110, Kind.RETRY),
        (0x0111, Kind.DEAD),
        (0xA900, Kind.DEAD),
        (0xC000, Kind.DEAD),
    ],
)
def test_store_answers(code: int, kind: Kind) -> None:
    result = result_for_status(DimseStatus(code), 200)
    assert result.kind is kind and result.status.code == code and result.http_status == 200
    assert (result.reason == "") == (kind is Kind.DONE)
    assert result.max_attempts == rule_for_store_status(DimseStatus(code)).attempts


def test_processing_failure_is_retried_a_bounded_number_of_times() -> None:
    result = result_for_status(DimseStatus(Status.PROCESSING_FAILURE))
    assert result.kind is Kind.RETRY and result.max_attempts == PROCESSING_FAILURE_ATTEMPTS


@pytest.mark.parametrize(
    ("error", "answered"),
    [
        (PeerUnavailableError("PACS down"), False),
        (AssociationRejectedError("rj", permanent=False, source=3, reason=1), False),
        (AssociationRejectedError("rj", permanent=True, source=1, reason=3), True),
    ],
)
def test_a_waiting_scu_is_answered_at_once_only_after_a_permanent_rejection(
    error: BaseException, answered: bool
) -> None:
    assert result_for_error(error, NONE).answer_waiting_scu is answered


@pytest.mark.parametrize("rule", PEER_FAILURE_TABLE, ids=lambda rule: rule.outcome[:40])
def test_every_peer_row_gives_its_spool_action(rule: FailureRule) -> None:
    """The peer failure table's spool column, for peer statuses and DIMSE failures alike."""
    kinds = [
        result_for_status(DimseStatus(code)).kind
        for code in (0x0000, 0xB000, 0xB006, 0xB007, 0xA700, 0xA702, 0x0110, 0xA900, 0xC000)
        if rule_for_store_status(DimseStatus(code)) is rule
    ]
    kinds += [
        result_for_error(error, NONE).kind
        for error in (
            PeerUnavailableError("x"),
            AssociationRejectedError("rj", permanent=False, source=3, reason=1),
            AssociationRejectedError("rj", permanent=True, source=1, reason=7),
            NoAcceptableContextError("none", sop_class_uid="1.2"),
        )
        if rule_for_error(error) is rule
    ]
    assert kinds, rule.outcome
    assert set(kinds) == {_KIND[rule.spool]}


@pytest.mark.parametrize("rule", FAILURE_TABLE, ids=lambda rule: rule.outcome[:40])
def test_every_row_gives_its_spool_action(rule: FailureRule) -> None:
    """For each row, every way to reach it ends in the kind of the row's spool action."""
    expected = _KIND[rule.spool]
    kinds = [kind_for_http(code, NONE) for code in range(400, 600) if rule_for_http(code) is rule]
    kinds += [
        result_for_error(error, NONE).kind
        for error in (
            DicomwebConnectionError("x"), DicomwebTimeoutError("x"), StoreUnavailableError("x"),
            DicomwebResponseError("x"), AuthError("x"), RuntimeError("x"),
        )
        if rule_for_error(error) is rule
    ]
    kinds += [
        result_for_status(DimseStatus(code)).kind
        for code in (0x0000, 0xB000, 0xA700, 0x0110)
        if rule_for_store_status(DimseStatus(code)) is rule
    ]
    assert kinds, rule.outcome
    assert set(kinds) == {expected}


def test_status_comes_from_the_table() -> None:
    assert result_for_error(DicomwebHttpError(403), NONE).status.code == Status.NOT_AUTHORIZED
    assert result_for_error(StoreUnavailableError("x"), NONE).status.code == (
        Status.OUT_OF_RESOURCES
    )


@pytest.mark.parametrize(
    ("error", "answered_now"),
    [
        (DicomwebHttpError(403), True),
        (DicomwebHttpError(401), True),
        (AuthError("no credentials"), True),
        (DicomwebConnectionError("refused"), False),
        (DicomwebTimeoutError("read timed out"), False),
        (DicomwebHttpError(503), False),
    ],
)
def test_a_waiting_scu_is_answered_now_where_a_c_store_would_not_retry(
    error: Exception, answered_now: bool
) -> None:
    result = result_for_error(error, frozenset())
    assert result.answer_waiting_scu is answered_now
    if answered_now:
        assert result.kind is Kind.UNREACHABLE  # nobody waiting: the entry stays queued
