"""Unit tests of the peer failure table: a peer's answer about an instance, a DIMSE peer's failures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common.errors import (
    AssociationRejectedError,
    DimseError,
    NoAcceptableContextError,
    PeerRejectedError,
    PeerUnavailableError,
)
from common.status import (
    FAILURE_TABLE,
    NO_PRESENTATION_CONTEXT,
    PEER_BUSY,
    PEER_FAILURE_TABLE,
    PEER_REFUSED_ASSOCIATION,
    PEER_UNREACHABLE,
    PROCESSING_FAILED,
    PROCESSING_FAILURE_ATTEMPTS,
    REFUSED,
    REFUSED_FOR_NOW,
    STORED,
    STORED_WITH_WARNING,
    DimseStatus,
    ExportAction,
    FailureRule,
    SpoolAction,
    Status,
    SubOperationAction,
    peer_failure_table_markdown,
    rule_for_error,
    rule_for_store_status,
    store_status_for_error,
)

README = Path(__file__).resolve().parents[2] / "README.md"

_PERMANENT_RJ = AssociationRejectedError("rj", permanent=True, source=1, reason=7)
_TRANSIENT_RJ = AssociationRejectedError("rj", permanent=False, source=3, reason=1)
_NO_CONTEXT = NoAcceptableContextError("no context", sop_class_uid="1.2.840.10008.5.1.4.1.1.2")


@pytest.mark.parametrize(
    ("code", "rule"),
    [
        (Status.SUCCESS, STORED),
        (Status.COERCION_OF_DATA_ELEMENTS, STORED_WITH_WARNING),
        (Status.ELEMENTS_DISCARDED, STORED_WITH_WARNING),
        (Status.DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING, STORED_WITH_WARNING),
        (Status.OPTIONAL_ATTRIBUTES_NOT_SUPPORTED, STORED_WITH_WARNING),
        (Status.OUT_OF_RESOURCES, REFUSED_FOR_NOW),
        (Status.OUT_OF_RESOURCES | 0x00FF, REFUSED_FOR_NOW),
        (Status.PROCESSING_FAILURE, PROCESSING_FAILED),
        (Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, REFUSED),
        (Status.DATASET_DOES_NOT_MATCH_SOP_CLASS | 0x0012, REFUSED),
        (Status.CANNOT_UNDERSTAND, REFUSED),
        (Status.CANNOT_UNDERSTAND | 0x0123, REFUSED),
        (Status.DUPLICATE_SOP_INSTANCE, REFUSED),
        (Status.SOP_CLASS_NOT_SUPPORTED, REFUSED),
        (Status.NOT_AUTHORIZED, REFUSED),
    ],
)
def test_every_peer_status_has_its_row(code: int, rule: FailureRule) -> None:
    assert rule_for_store_status(DimseStatus(code)) is rule


@pytest.mark.parametrize(
    ("error", "rule"),
    [
        (PeerUnavailableError("connection refused"), PEER_UNREACHABLE),
        (PeerUnavailableError("association aborted"), PEER_UNREACHABLE),
        (DimseError("something else went wrong on the association"), PEER_UNREACHABLE),
        (_TRANSIENT_RJ, PEER_BUSY),
        (_PERMANENT_RJ, PEER_REFUSED_ASSOCIATION),
        (PeerRejectedError("TLS certificate not trusted"), PEER_REFUSED_ASSOCIATION),
        (_NO_CONTEXT, NO_PRESENTATION_CONTEXT),
    ],
)
def test_every_peer_failure_has_its_row(error: DimseError, rule: FailureRule) -> None:
    assert rule_for_error(error) is rule


def test_every_row_is_reachable_and_in_one_table_only() -> None:
    reached = {
        rule_for_store_status(DimseStatus(code))
        for code in (
            Status.SUCCESS, Status.COERCION_OF_DATA_ELEMENTS, Status.OUT_OF_RESOURCES,
            Status.PROCESSING_FAILURE, Status.CANNOT_UNDERSTAND,
        )
    }
    reached |= {
        rule_for_error(error)
        for error in (PeerUnavailableError("x"), _TRANSIENT_RJ, _PERMANENT_RJ, _NO_CONTEXT)
    }
    assert reached == set(PEER_FAILURE_TABLE)
    assert not set(PEER_FAILURE_TABLE) & set(FAILURE_TABLE)


@pytest.mark.parametrize("rule", PEER_FAILURE_TABLE, ids=lambda rule: rule.outcome[:40])
def test_every_row_says_what_a_sub_operation_counts_as(rule: FailureRule) -> None:
    """Stored rows count as completed/warning, every failure as failed (or lost)."""
    action = rule.sub_operation
    assert action is not None
    stored = action in (SubOperationAction.COMPLETED, SubOperationAction.WARNING)
    assert stored == (rule.spool is SpoolAction.DONE)
    if rule.attempts is not None:  # a bound only where something is tried again
        assert rule.spool is SpoolAction.RETRY and rule.export is ExportAction.NACK


def test_the_decisions_of_the_task() -> None:
    # 0xA7xx: a state of the peer, tried again.
    assert REFUSED_FOR_NOW.spool is SpoolAction.RETRY and REFUSED_FOR_NOW.export is ExportAction.NACK
    assert REFUSED_FOR_NOW.attempts is None
    # 0xA9xx / 0xCxxx: a verdict on the instance, given up at once.
    assert REFUSED.spool is SpoolAction.DEAD_LETTER and REFUSED.export is ExportAction.DEAD_LETTER
    # 0x0110: tried again, a bounded number of times.
    assert PROCESSING_FAILED.spool is SpoolAction.RETRY
    assert PROCESSING_FAILED.export is ExportAction.NACK
    assert PROCESSING_FAILED.attempts == PROCESSING_FAILURE_ATTEMPTS > 1
    # No presentation context: the spool used to retry it, the export adapter dead-lettered it.
    assert NO_PRESENTATION_CONTEXT.spool is SpoolAction.DEAD_LETTER
    assert NO_PRESENTATION_CONTEXT.export is ExportAction.DEAD_LETTER
    assert NO_PRESENTATION_CONTEXT.sub_operation is SubOperationAction.FAILED
    # A rejected or unreachable peer keeps the work; a C-MOVE has lost its destination.
    for rule in (PEER_UNREACHABLE, PEER_BUSY, PEER_REFUSED_ASSOCIATION):
        assert rule.spool is SpoolAction.UNREACHABLE and rule.export is ExportAction.NACK
        assert rule.sub_operation is SubOperationAction.LOST
    # Only a permanent rejection answers an SCU waiting for the spool at once.
    assert PEER_UNREACHABLE.retried and PEER_BUSY.retried and not PEER_REFUSED_ASSOCIATION.retried


@pytest.mark.parametrize(
    ("error", "code", "comment"),
    [
        (PeerUnavailableError("x"), Status.PROCESSING_FAILURE, "DIMSE destination unreachable"),
        (_TRANSIENT_RJ, Status.OUT_OF_RESOURCES, "DIMSE destination busy, retry later"),
        (_PERMANENT_RJ, Status.PROCESSING_FAILURE, "DIMSE destination rejected the association"),
        (_NO_CONTEXT, Status.SOP_CLASS_NOT_SUPPORTED, "DIMSE destination does not take this SOP class"),
    ],
)
def test_status_upstream_of_peer_failures(error: DimseError, code: int, comment: str) -> None:
    status = store_status_for_error(error)
    assert (status.code, status.comment) == (code, comment)


def _readme_table() -> list[str]:
    text = README.read_text()
    match = re.search(
        r"<!-- BEGIN peer-status-table -->\n(.*?)<!-- END peer-status-table -->", text, re.S
    )
    assert match is not None, "the README has no generated peer status table"
    return match.group(1).rstrip("\n").split("\n")


def test_readme_table_is_the_peer_failure_table_row_by_row() -> None:
    printed = peer_failure_table_markdown().split("\n")
    assert len(printed) == len(PEER_FAILURE_TABLE) + 2
    assert _readme_table() == printed, "the README is stale: run scripts/gen_docs.py"


def test_markdown_row_says_what_the_rule_says() -> None:
    rows = peer_failure_table_markdown([PROCESSING_FAILED, PEER_REFUSED_ASSOCIATION]).split("\n")
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]
    assert cells[0][1:] == [
        "`0x0110` PROCESSING_FAILURE", "yes", "retry with backoff (at most 3 attempts)",
        "nack for redelivery (at most 3 attempts)", "failed, next one sent",
    ]
    assert cells[1][3] == "treat as unreachable, a waiting SCU answered at once"
    assert cells[1][5] == "failed with all the rest"
