"""Unit tests of the error -> DIMSE status functions and the one failure table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common.dimse.fast.commands import CStoreRsp, decode_command_set
from common.dimse.fast.constants import Tag
from common.errors import (
    AuthError,
    DicomwebConnectionError,
    DicomwebError,
    DicomwebHttpError,
    DicomwebResponseError,
    DicomwebTimeoutError,
    MalformedDatasetError,
    ShuttingDownError,
    StoreUnavailableError,
    UidMismatchError,
)
from common.status import (
    BAD_REQUEST,
    CONFLICT,
    CONNECTION_FAILED,
    CREDENTIALS,
    FAILURE_TABLE,
    INSUFFICIENT_STORAGE,
    MALFORMED_RESPONSE,
    NOT_IMPLEMENTED,
    OTHER_FAILURE,
    OVERLOAD_HTTP_STATUSES,
    OVERLOADED,
    PEER_FAILURE_TABLE,
    PROCESSING_FAILED,
    REFUSED,
    REFUSED_FOR_NOW,
    SERVER_ERROR,
    STORE_DOWN,
    STORED,
    STORED_WITH_WARNING,
    TIMED_OUT,
    TOO_LARGE,
    UNAUTHORIZED,
    DimseStatus,
    ExportAction,
    FailureRule,
    SpoolAction,
    Status,
    failure_table_markdown,
    find_status_for_error,
    is_retried_at_once,
    retrieve_status_for_error,
    rule_for_error,
    rule_for_http,
    rule_for_store_status,
    safe_error_comment,
    store_status_for_error,
)

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize(
    ("http", "expected"),
    [
        (401, Status.NOT_AUTHORIZED),
        (403, Status.NOT_AUTHORIZED),
        (409, Status.DUPLICATE_SOP_INSTANCE),
        (413, Status.OUT_OF_RESOURCES),
        (429, Status.OUT_OF_RESOURCES),
        (503, Status.OUT_OF_RESOURCES),
        (507, Status.OUT_OF_RESOURCES),
        (400, Status.CANNOT_UNDERSTAND),
        (404, Status.CANNOT_UNDERSTAND),
        (415, Status.CANNOT_UNDERSTAND),
        (408, Status.PROCESSING_FAILURE),
        (500, Status.PROCESSING_FAILURE),
        (501, Status.PROCESSING_FAILURE),
        (502, Status.PROCESSING_FAILURE),
        (505, Status.PROCESSING_FAILURE),
    ],
)
def test_http_errors(http: int, expected: Status) -> None:
    assert store_status_for_error(DicomwebHttpError(http)).code == expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DicomwebConnectionError("refused"), Status.PROCESSING_FAILURE),
        (DicomwebTimeoutError("slow"), Status.PROCESSING_FAILURE),
        (DicomwebResponseError("junk"), Status.PROCESSING_FAILURE),
        (StoreUnavailableError("known down"), Status.OUT_OF_RESOURCES),
        (DicomwebError("body file shrank"), Status.PROCESSING_FAILURE),
        (AuthError("no creds"), Status.NOT_AUTHORIZED),
        (MalformedDatasetError("cut"), Status.CANNOT_UNDERSTAND),
        (UidMismatchError("x", sop_class=True), Status.DATASET_DOES_NOT_MATCH_SOP_CLASS),
        (UidMismatchError("x", sop_class=False), Status.CANNOT_UNDERSTAND),
        (ShuttingDownError("bye"), Status.OUT_OF_RESOURCES),
        (RuntimeError("bug"), Status.PROCESSING_FAILURE),
    ],
)
def test_other_errors(error: Exception, expected: Status) -> None:
    assert store_status_for_error(error).code == expected


def _sent(status: DimseStatus) -> tuple[int, str]:
    """The Status and Error Comment a C-STORE-RSP carries for ``status`` on the wire."""
    command = decode_command_set(
        CStoreRsp(1, "1.2.3", "1.2.3.4", status.code, status.comment).encode()
    )
    return command.us(Tag.STATUS), command.text(Tag.ERROR_COMMENT)


def test_status_dataset_comment_is_bounded() -> None:
    code, comment = _sent(DimseStatus(Status.PROCESSING_FAILURE, "x" * 200 + "\\"))
    assert code == 0x0110 and len(comment) == 64


@pytest.mark.parametrize(
    ("comment", "sent"),
    [
        ("Spool full, try again later", "Spool full, try again later"),
        ("Unknown destination A\nFORGED\r\x00", "Unknown destination A?FORGED??"),
        ("UID 1.2\x1b[31m3 \x7f\x85 caf\u00e9", "UID 1.2?[31m3 ?? caf?"),
        ("C:\\path", "C:/path"),
        ("\u2028" * 100, "?" * 64),
    ],
)
def test_error_comments_never_carry_peer_bytes_raw(comment: str, sent: str) -> None:
    assert safe_error_comment(comment) == sent
    assert _sent(DimseStatus(Status.PROCESSING_FAILURE, comment))[1] == sent


def test_classification() -> None:
    assert DimseStatus(0xB000).is_warning and not DimseStatus(0xB000).is_failure
    assert DimseStatus(0xA700).is_failure and DimseStatus(0).is_success


@pytest.mark.parametrize(
    ("http", "rule"),
    [
        (400, BAD_REQUEST),
        (401, UNAUTHORIZED),
        (403, UNAUTHORIZED),
        (404, BAD_REQUEST),
        (408, SERVER_ERROR),
        (409, CONFLICT),
        (413, TOO_LARGE),
        (415, BAD_REQUEST),
        (425, SERVER_ERROR),
        (429, OVERLOADED),
        (499, BAD_REQUEST),
        (500, SERVER_ERROR),
        (501, NOT_IMPLEMENTED),
        (502, SERVER_ERROR),
        (503, OVERLOADED),
        (504, SERVER_ERROR),
        (505, SERVER_ERROR),
        (507, INSUFFICIENT_STORAGE),
        (599, SERVER_ERROR),
    ],
)
def test_every_http_status_has_its_row(http: int, rule: FailureRule) -> None:
    assert rule_for_http(http) is rule
    assert rule_for_error(DicomwebHttpError(http)) is rule


@pytest.mark.parametrize(
    ("error", "rule"),
    [
        (DicomwebConnectionError("refused"), CONNECTION_FAILED),
        (DicomwebConnectionError("TLS failure: certificate verify failed"), CONNECTION_FAILED),
        (DicomwebTimeoutError("read timed out"), TIMED_OUT),
        (StoreUnavailableError("known down"), STORE_DOWN),
        (DicomwebResponseError("multipart body truncated"), MALFORMED_RESPONSE),
        (AuthError("token refresh failed"), CREDENTIALS),
        (DicomwebError("the file behind the request body ended early"), OTHER_FAILURE),
        (RuntimeError("a bug"), OTHER_FAILURE),
    ],
)
def test_every_other_outcome_has_its_row(error: BaseException, rule: FailureRule) -> None:
    assert rule_for_error(error) is rule


@pytest.mark.parametrize(
    ("status", "rule"),
    [
        (DimseStatus(0x0000), STORED),
        (DimseStatus(0xB000), STORED_WITH_WARNING),
        (DimseStatus(0xB007), STORED_WITH_WARNING),
        (DimseStatus(0xA700), REFUSED_FOR_NOW),
        (DimseStatus(0xA7FF), REFUSED_FOR_NOW),
        (DimseStatus(0x0110), PROCESSING_FAILED),
        (DimseStatus(0x0111), REFUSED),
        (DimseStatus(0xA900), REFUSED),
        (DimseStatus(0xC000), REFUSED),
    ],
)
def test_store_answers_have_their_rows(status: DimseStatus, rule: FailureRule) -> None:
    assert rule_for_store_status(status) is rule


def test_every_row_is_reachable() -> None:
    """No dead rows: each one is what some HTTP status or error maps to (the peer table's rows:
    tests/common/test_status_peers.py)."""
    reached = {rule_for_http(code) for code in range(400, 600)}
    reached |= {
        rule_for_error(error)
        for error in (
            DicomwebConnectionError("x"), DicomwebTimeoutError("x"), StoreUnavailableError("x"),
            DicomwebResponseError("x"), AuthError("x"), RuntimeError("x"),
        )
    }
    assert reached == set(FAILURE_TABLE)


@pytest.mark.parametrize(
    "rule", FAILURE_TABLE + PEER_FAILURE_TABLE, ids=lambda rule: rule.outcome[:40]
)
def test_the_paths_agree_within_each_row(rule: FailureRule) -> None:
    """One meaning per row: the spool, the export adapter and "transient" cannot disagree."""
    done = rule.spool is SpoolAction.DONE
    assert done == (rule.export is ExportAction.ACK) == (not DimseStatus(rule.status).is_failure)
    if done:
        return
    final = rule.spool is SpoolAction.DEAD_LETTER
    assert final == (rule.export is ExportAction.DEAD_LETTER) == (not rule.transient)
    if rule.retried:  # only what may succeed later is tried again at once
        assert rule.transient


def test_decisions_where_the_paths_used_to_disagree() -> None:
    # 501: the C-STORE path did not retry it, the spool retried it, the export adapter nacked.
    assert not NOT_IMPLEMENTED.transient and not NOT_IMPLEMENTED.retried
    assert NOT_IMPLEMENTED.spool is SpoolAction.DEAD_LETTER
    assert NOT_IMPLEMENTED.export is ExportAction.DEAD_LETTER
    # 401/403: dead-lettered by the spool, nacked by the export adapter: the work is kept.
    assert UNAUTHORIZED.spool is SpoolAction.UNREACHABLE and UNAUTHORIZED.export is ExportAction.NACK
    # Other 5xx and 507: not retried by a C-STORE, retried by the spool and the export adapter.
    assert rule_for_http(505).retried and INSUFFICIENT_STORAGE.retried
    # Overload pauses the destination; nothing else does.
    assert {429, 503} == OVERLOAD_HTTP_STATUSES
    assert [rule for rule in FAILURE_TABLE if rule.spool is SpoolAction.PAUSE] == [OVERLOADED]


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (DicomwebConnectionError("refused"), True),
        (DicomwebTimeoutError("slow"), True),
        (DicomwebHttpError(408), True),
        (DicomwebHttpError(429), True),
        (DicomwebHttpError(503), True),
        (DicomwebHttpError(505), True),
        (DicomwebHttpError(501), False),
        (DicomwebHttpError(401), False),
        (DicomwebHttpError(409), False),
        (StoreUnavailableError("known down"), False),
        (DicomwebResponseError("junk"), False),
    ],
)
def test_retried_at_once(error: BaseException, retried: bool) -> None:
    assert is_retried_at_once(error) is retried


@pytest.mark.parametrize(
    ("error", "find", "retrieve"),
    [
        (DicomwebHttpError(503), Status.OUT_OF_RESOURCES, Status.OUT_OF_RESOURCES_MATCHES),
        (DicomwebHttpError(413), Status.OUT_OF_RESOURCES, Status.OUT_OF_RESOURCES_MATCHES),
        (DicomwebHttpError(507), Status.OUT_OF_RESOURCES, Status.OUT_OF_RESOURCES_MATCHES),
        (StoreUnavailableError("x"), Status.OUT_OF_RESOURCES, Status.OUT_OF_RESOURCES_MATCHES),
        (DicomwebHttpError(403), Status.NOT_AUTHORIZED, Status.NOT_AUTHORIZED),
        (AuthError("x"), Status.NOT_AUTHORIZED, Status.NOT_AUTHORIZED),
        (DicomwebHttpError(409), Status.UNABLE_TO_PROCESS, Status.UNABLE_TO_PROCESS),
        (DicomwebHttpError(501), Status.UNABLE_TO_PROCESS, Status.UNABLE_TO_PROCESS),
        (DicomwebTimeoutError("x"), Status.UNABLE_TO_PROCESS, Status.UNABLE_TO_PROCESS),
        (RuntimeError("bug"), Status.UNABLE_TO_PROCESS, Status.UNABLE_TO_PROCESS),
    ],
)
def test_query_retrieve_statuses_follow_the_table(
    error: BaseException, find: Status, retrieve: Status
) -> None:
    assert find_status_for_error(error).code == find
    assert retrieve_status_for_error(error).code == retrieve


def test_error_comments() -> None:
    assert find_status_for_error(DicomwebTimeoutError("x")).comment == "DICOMweb search timed out"
    assert store_status_for_error(DicomwebConnectionError("x")).comment == (
        "DICOMweb store unreachable"
    )
    assert store_status_for_error(DicomwebHttpError(400)).comment == "DICOMweb store: HTTP 400"
    assert store_status_for_error(RuntimeError("secret")).comment == "Internal error in adapter"


def _readme_table() -> list[str]:
    text = README.read_text()
    match = re.search(r"<!-- BEGIN status-table -->\n(.*?)<!-- END status-table -->", text, re.S)
    assert match is not None, "the README has no generated status table"
    return match.group(1).rstrip("\n").split("\n")


def test_readme_table_is_the_failure_table_row_by_row() -> None:
    printed = failure_table_markdown().split("\n")
    published = _readme_table()
    assert len(printed) == len(FAILURE_TABLE) + 2
    for number, (mine, theirs) in enumerate(zip(printed, published, strict=False)):
        assert theirs == mine, f"README table line {number + 1} differs: run scripts/gen_docs.py"
    assert len(published) == len(printed)


def test_markdown_row_says_what_the_rule_says() -> None:
    row = failure_table_markdown([NOT_IMPLEMENTED]).split("\n")[2]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells == [
        "501 Not Implemented", "`0x0110` PROCESSING_FAILURE", "no", "no", "dead-letter",
        "dead-letter",
    ]
