"""Log filtering (a library's records about an error we reported ourselves are dropped), the
text format's time stamps, and the escaping of peer input in both formats."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator

import pytest

from common.errors import ReportedError
from common.logs import (
    CONTINUATION,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    escape,
    escape_block,
    is_repeat_of_reported_error,
    peer_label,
)


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


# -- peer input is escaped --------------------------------------------------------------------

#: What a hostile peer might put in an AE title, a UID or an Error Comment.
HOSTILE = "A\nFORGED line\r\x00\x1b[31m\x7f\x85\u2028\u202e\udc80Z"


def _record(msg: str, *args: object, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("pynetdicom.acse", logging.ERROR, __file__, 1, msg, args, None)
    if fields:
        record.fields = fields
    return record


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("IMPORTADAPTER", "IMPORTADAPTER"),
        ("naïve 日本", "naïve 日本"),  # printable text of any script is kept
        ("a\nb\r\tc", "a\\nb\\r\\tc"),
        ("\x00\x1b\x7f\x85", "\\x00\\x1b\\x7f\\x85"),
        ("\u2028\u2029\u200b\ufeff", "\\u2028\\u2029\\u200b\\ufeff"),
        ("\udc80", "\\udc80"),  # a byte that was not ASCII, as surrogateescape decodes it
        ("\U000e0001", "\\U000e0001"),
    ],
)
def test_escape(raw: str, escaped: str) -> None:
    assert escape(raw) == escaped
    assert escape(escaped) == escaped  # nothing left to escape


def test_peer_label() -> None:
    assert peer_label("STORESCU", "10.0.0.7", 104) == "STORESCU@10.0.0.7:104"
    assert peer_label("", "10.0.0.7", 104) == "-@10.0.0.7:104"  # before the request is read
    assert peer_label("EVIL\nAE", "::1", 11112) == "EVIL\\nAE@::1:11112"


def test_escape_block_keeps_only_the_line_feeds() -> None:
    assert escape_block("Traceback\n  x\r\x00\nValueError: \x1b") == (
        "Traceback\n  x\\r\\x00\nValueError: \\x1b"
    )


def test_text_format_is_one_printable_line_whatever_the_message() -> None:
    line = TextFormatter().format(_record("Invalid 'Called AE Title' value '%s'", HOSTILE))
    assert "\n" not in line and line.isprintable()
    assert line.endswith("Invalid 'Called AE Title' value 'A\\nFORGED line\\r\\x00\\x1b[31m"
                         "\\x7f\\x85\\u2028\\u202e\\udc80Z'")


def test_text_format_indents_a_traceback_so_no_line_of_it_starts_a_record() -> None:
    record = _record("decoding failed")
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        record.exc_info = sys.exc_info()
    lines = TextFormatter().format(record).split("\n")
    assert lines[0].endswith("pynetdicom.acse: decoding failed")
    assert lines[1] == "  | Traceback (most recent call last):"
    assert all(line.startswith(CONTINUATION) and line.isprintable() for line in lines[1:])
    assert lines[-2] == "  | ValueError: A"
    assert lines[-1].startswith("  | FORGED line\\r\\x00")


def test_text_format_ignores_an_exception_text_cached_unescaped() -> None:
    record = _record("m")
    record.exc_text = "Traceback\nValueError: \x00"  # what another handler's formatter left
    assert TextFormatter().format(record).split("\n")[1:] == [
        "  | Traceback", "  | ValueError: \\x00"
    ]


def test_json_format_escapes_the_message_and_every_field() -> None:
    class Peer:
        def __str__(self) -> str:
            return HOSTILE

    record = _record(
        "association from %s", HOSTILE,
        calling_aet=HOSTILE, nested={HOSTILE: [HOSTILE, 3, None, Peer()]}, bytes=12, ok=True,
    )
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        record.exc_info = sys.exc_info()
    text = JsonFormatter().format(record)
    assert "\n" not in text
    payload = json.loads(text)
    expected = escape(HOSTILE)
    assert payload["message"] == f"association from {expected}"
    assert payload["calling_aet"] == expected
    assert payload["nested"] == {expected: [expected, 3, None, expected]}
    assert (payload["bytes"], payload["ok"]) == (12, True)
    assert all(line.isprintable() for line in payload["exception"].split("\n"))

    def strings(value: object) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield key
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)

    payload.pop("exception")
    assert all(s.isprintable() for s in strings(payload))


@pytest.mark.parametrize("json_format", [False, True])
def test_pynetdicom_records_pass_escaped(
    json_format: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """pynetdicom's own ERROR line quoting a peer's AE title, through the service's handler."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging(json_format=json_format)
    try:
        logging.getLogger("pynetdicom.utils").error(
            "Invalid 'Called AE Title' value '%s' - must not contain control characters", HOSTILE
        )
        text = capsys.readouterr().err
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert text.count("\n") == 1 and text.endswith("\n"), text
    line = text[:-1]
    assert line.isprintable()
    if json_format:
        assert json.loads(line)["message"].startswith("Invalid 'Called AE Title' value 'A\\n")
    else:
        assert "ERROR   pynetdicom.utils: Invalid 'Called AE Title' value 'A\\nFORGED" in line


def test_python_warnings_go_through_the_handler(stderr: Callable[[], str]) -> None:
    """pydicom warns about a peer's malformed UID; the warning must not bypass the formatter."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"Invalid value for VR UI: {HOSTILE}", UserWarning, stacklevel=1)
    text = stderr()
    assert text.count("\n") == 1 and text[:-1].isprintable(), text
    assert "WARNING py.warnings: " in text and "UserWarning: Invalid value for VR UI: A\\n" in text
