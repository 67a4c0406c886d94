"""Log filtering: a library's records about an error we reported ourselves are dropped."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator

import pytest

from common.dimse.sockets import PduGuardAbortError
from common.logs import configure_logging, is_repeat_of_reported_error


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
