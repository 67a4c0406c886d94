"""Unit tests of the error -> DIMSE status table."""

from __future__ import annotations

import pytest

from common.errors import (
    AuthError,
    DicomwebConnectionError,
    DicomwebHttpError,
    DicomwebResponseError,
    DicomwebTimeoutError,
    MalformedDatasetError,
    ShuttingDownError,
    UidMismatchError,
)
from common.status import (
    HTTP_RULES,
    DimseStatus,
    Status,
    http_rules_markdown,
    safe_error_comment,
    store_status_for_error,
)


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
        (502, Status.PROCESSING_FAILURE),
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


def test_transient_flags() -> None:
    assert DicomwebHttpError(503).transient and DicomwebHttpError(429).transient
    assert not DicomwebHttpError(400).transient and not DicomwebHttpError(409).transient
    assert DicomwebConnectionError("x").transient


def test_status_dataset_comment_is_bounded() -> None:
    ds = DimseStatus(Status.PROCESSING_FAILURE, "x" * 200 + "\\").as_dataset()
    assert ds.Status == 0x0110 and len(ds.ErrorComment) == 64


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
    assert DimseStatus(Status.PROCESSING_FAILURE, comment).as_dataset().ErrorComment == sent


def test_classification() -> None:
    assert DimseStatus(0xB000).is_warning and not DimseStatus(0xB000).is_failure
    assert DimseStatus(0xA700).is_failure and DimseStatus(0).is_success


def test_markdown_table_lists_every_rule() -> None:
    table = http_rules_markdown()
    assert table.count("\n") == len(HTTP_RULES) + 1
