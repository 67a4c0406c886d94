"""Unit tests of the one table deciding ack (permanent) or nack (transient)."""

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
    ShuttingDownError,
    StoreUnavailableError,
    TranscodeError,
)
from common.status import (
    FAILURE_TABLE,
    PEER_FAILURE_TABLE,
    PROCESSING_FAILURE_ATTEMPTS,
    DimseStatus,
    ExportAction,
    FailureRule,
    rule_for_error,
    rule_for_http,
    rule_for_store_status,
)
from export_adapter.errors import (
    InstanceNotFoundError,
    NotificationError,
    PeerRefusedInstanceError,
)
from export_adapter.outcome import classify


@pytest.mark.parametrize(
    "error",
    [
        NotificationError("bad"),
        InstanceNotFoundError("gone"),
        PeerRefusedInstanceError(DimseStatus(0xC000), "P"),
        PeerRefusedInstanceError(DimseStatus(0xA900), "P"),
        MalformedDatasetError("no meta"),
        TranscodeError("no codec"),
        NoAcceptableContextError("P accepted no context for 1.2", sop_class_uid="1.2"),
        DicomwebHttpError(400),
        DicomwebHttpError(406),
        DicomwebHttpError(409),
        DicomwebHttpError(413),
        # 501 Not Implemented: the server will not start supporting the request (it used to be
        # nacked, as any 5xx).
        DicomwebHttpError(501),
    ],
)
def test_permanent(error: BaseException) -> None:
    assert classify(error).permanent


@pytest.mark.parametrize(
    "error",
    [
        PeerUnavailableError("down"),
        AssociationRejectedError("P rejected the association", permanent=False, source=1, reason=1),
        AssociationRejectedError("P rejected the association", permanent=True, source=1, reason=7),
        PeerRefusedInstanceError(DimseStatus(0xA700), "P"),
        PeerRefusedInstanceError(DimseStatus(0xA7FF), "P"),
        DicomwebConnectionError("refused"),
        DicomwebTimeoutError("slow"),
        DicomwebHttpError(401),
        DicomwebHttpError(403),
        DicomwebHttpError(429),
        DicomwebHttpError(408),
        DicomwebHttpError(425),
        DicomwebHttpError(500),
        DicomwebHttpError(502),
        DicomwebHttpError(503),
        DicomwebHttpError(504),
        DicomwebHttpError(505),
        DicomwebHttpError(507),
        StoreUnavailableError("known down"),
        DicomwebResponseError("truncated"),
        # A DICOMweb failure of no known kind (a local fault) is kept, as a bug is (it used to
        # be dead-lettered).
        DicomwebError("the request body file ended early"),
        AuthError("no credentials"),
        ShuttingDownError("bye"),
        RuntimeError("a bug"),
    ],
)
def test_transient(error: BaseException) -> None:
    assert not classify(error).permanent


def test_processing_failure_is_nacked_until_its_last_attempt() -> None:
    """0x0110: nacked a bounded number of times (it used to be dead-lettered at once)."""
    error = PeerRefusedInstanceError(DimseStatus(0x0110), "P")
    kinds = [classify(error, attempt) for attempt in range(1, PROCESSING_FAILURE_ATTEMPTS + 2)]
    assert [kind.permanent for kind in kinds] == [False] * (PROCESSING_FAILURE_ATTEMPTS - 1) + [
        True, True,
    ]
    assert {kind.label for kind in kinds} == {"peer-processing-failure"}
    # Rows without a bound are not affected by the attempt count.
    assert not classify(PeerRefusedInstanceError(DimseStatus(0xA700), "P"), 100).permanent
    assert not classify(PeerUnavailableError("down"), 100).permanent


@pytest.mark.parametrize("rule", PEER_FAILURE_TABLE, ids=lambda rule: rule.outcome[:40])
def test_peer_outcomes_follow_the_peer_failure_table(rule: FailureRule) -> None:
    """Every failure row of the peer table: its export action is what classify decides."""
    errors: list[BaseException] = [
        PeerRefusedInstanceError(DimseStatus(code), "P")
        for code in (0xA700, 0x0110, 0xA900, 0xC000)
        if rule_for_store_status(DimseStatus(code)) is rule
    ]
    errors += [
        error
        for error in (
            PeerUnavailableError("x"),
            AssociationRejectedError("rj", permanent=False, source=3, reason=1),
            AssociationRejectedError("rj", permanent=True, source=1, reason=7),
            NoAcceptableContextError("none", sop_class_uid="1.2"),
        )
        if rule_for_error(error) is rule
    ]
    if rule.export is ExportAction.ACK:
        assert not errors
        return
    assert errors, rule.outcome
    for error in errors:
        assert classify(error).permanent == (rule.export is ExportAction.DEAD_LETTER), error


def test_out_of_resources_is_the_transient_status_family() -> None:
    assert not classify(PeerRefusedInstanceError(DimseStatus(0xA701), "P")).permanent
    assert classify(PeerRefusedInstanceError(DimseStatus(0xA900), "P")).permanent


@pytest.mark.parametrize("rule", FAILURE_TABLE, ids=lambda rule: rule.outcome[:40])
def test_dicomweb_outcomes_follow_the_failure_table(rule: FailureRule) -> None:
    """Every failure row of the table: its export action is what classify decides."""
    errors: list[BaseException] = []
    errors += [DicomwebHttpError(code) for code in range(400, 600) if rule_for_http(code) is rule]
    errors += [
        error
        for error in (
            DicomwebConnectionError("x"), DicomwebTimeoutError("x"), StoreUnavailableError("x"),
            DicomwebResponseError("x"), AuthError("x"), RuntimeError("x"),
        )
        if rule_for_error(error) is rule
    ]
    if rule.export is ExportAction.ACK:
        assert not errors  # only successes are acked without a dead-letter copy
        return
    assert errors, rule.outcome
    for error in errors:
        assert classify(error).permanent == (rule.export is ExportAction.DEAD_LETTER), error


def test_labels() -> None:
    assert classify(DicomwebHttpError(503)).label == "http-503"
    assert classify(StoreUnavailableError("x")).label == "store-down"
    assert classify(AuthError("x")).label == "auth"
    assert classify(DicomwebResponseError("x")).label == "bad-response"
    assert classify(RuntimeError("x")).label == "internal-error"
