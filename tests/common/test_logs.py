"""Log filtering (a library's records about an error we reported ourselves are dropped) and the
text format's time stamps."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator

import pytest

from common.errors import ReportedError
from common.logs import TextFormatter, configure_logging, is_repeat_of_reported_error


class PduGuardAbortError(ConnectionAbortedError, ReportedError):
    """An error we logged where we raised it."""


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """Logging configured as in a service; what it has written to stderr so far."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging()
    try:
        yield lambda: capsys.readouterr().err
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def _pynetdicom_reader_fails(error: Exception) -> None:
    """What pynetdicom's DUL reader thread logs when a read raises."""
    logger = logging.getLogger("pynetdicom.dul")
    try:
        raise error
    except Exception as exc:
        logger.error("Exception in DUL.run(), aborting association")
        logger.exception(exc)


def test_pynetdicom_repeating_a_guard_abort_is_dropped(stderr: Callable[[], str]) -> None:
    _pynetdicom_reader_fails(PduGuardAbortError("P-DATA-TF PDU of 4294967280 bytes"))
    logging.getLogger("common.dimse.sockets").warning("association from X aborted: too big")
    text = stderr()
    assert text.count("\n") == 1, text
    assert "association from X aborted" in text


def test_other_library_errors_and_our_own_records_are_kept(stderr: Callable[[], str]) -> None:
    _pynetdicom_reader_fails(ValueError("a pynetdicom bug"))
    text = stderr()
    assert "Exception in DUL.run(), aborting association" in text
    assert "Traceback" in text and "a pynetdicom bug" in text
    ours = logging.LogRecord("import_adapter.x", logging.ERROR, "", 0, "m", None, None)
    try:
        raise PduGuardAbortError("ours to log")
    except PduGuardAbortError:
        ours.exc_info = sys.exc_info()
        assert not is_repeat_of_reported_error(ours)


@pytest.mark.parametrize(
    "created",
    [0.0, 1_764_000_000.0, 1_764_000_000.9995, 1_764_000_001.0004, 1_764_000_059.999, 1e9 + 0.5],
)
def test_text_format_matches_the_standard_formatter(created: float) -> None:
    standard = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    ours = TextFormatter()
    # Records in and out of order, so that the once-per-second cache is both hit and missed.
    for when in (created, created - 1, created, created + 0.25, created):
        record = logging.LogRecord("adapter", logging.INFO, __file__, 1, "x=%d", (1,), None)
        record.created, record.msecs = when, (when - int(when)) * 1000
        assert ours.format(record) == standard.format(record)


def test_text_format_honours_an_explicit_date_format() -> None:
    record = logging.LogRecord("adapter", logging.INFO, __file__, 1, "m", (), None)
    assert TextFormatter().formatTime(record, "%Y") == logging.Formatter().formatTime(record, "%Y")
