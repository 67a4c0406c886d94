"""Logging set-up: one line per event, human-readable text or JSON for Cloud Logging.

Log records carry identifiers (AE titles, UIDs, message ids, durations) and never patient data.
pynetdicom's own loggers are capped at WARNING because at INFO/DEBUG they dump identifiers and
datasets, which may hold PHI.

Much of what is logged comes from peers (AE titles, UIDs, Error Comments, the text of a library's
exception about a malformed PDU), so the formatters escape, in every record whoever logged it
(pynetdicom's records pass through the same handler, and so do Python warnings, which pydicom
issues about malformed values), every character that is not printable:
line breaks, NUL, ESC and the other C0/C1 controls, DEL, Unicode separators and format
characters (:func:`escape`). The text format escapes the whole line; the JSON format escapes the
message and every string in the record's fields, keys included. A traceback keeps its own line
breaks (its other non-printables are escaped) and, in the text format, each of its lines is
indented by :data:`CONTINUATION`: a line that starts at the first column is always the start of
a record, whatever a peer sent.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

from common.errors import ReportedError

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}
#: Library loggers that may log dataset contents; never below WARNING.
_QUIET_LOGGERS = ("pynetdicom", "pydicom", "urllib3", "google", "grpc")
#: What starts each line of a text record after its first (a traceback's lines).
CONTINUATION = "  | "
#: Escapes of the common controls; any other non-printable is written ``\xNN`` or ``\uNNNN``.
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(char: str) -> str:
    if char.isprintable():
        return char
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str) -> str:
    r"""``text`` with every non-printable character escaped as in a Python literal.

    Line breaks, NUL, ESC, other C0 and C1 controls, DEL, Unicode line/paragraph separators,
    format characters and lone surrogates become ``\n``, ``\x00``, ``\x1b``, ``\u2028``...;
    printable text (any script) is kept. Backslashes are not doubled, so a peer can make text
    that reads like an escape, never a control character.
    """
    if text.isprintable():  # the common case, checked in C
        return text
    return "".join(map(_escape_char, text))


def peer_label(ae_title: str, address: str, port: int) -> str:
    """A DIMSE peer as logs and error messages name it: ``AE@address:port``, escaped.

    An empty AE title (a requestor whose association request has not been read yet) is
    written ``-``.
    """
    return escape(f"{ae_title or '-'}@{address}:{port}")


def escape_block(text: str) -> str:
    """:func:`escape` for multi-line text (a traceback): its line feeds are kept."""
    return "\n".join(escape(line) for line in text.split("\n"))


#: JSON scalars written as they are (exact types: a str or int subclass may print otherwise).
_PLAIN_SCALARS = frozenset({int, float, bool, type(None)})


def _escape_value(value: Any) -> Any:
    """A JSON field's value with every string in it escaped (other scalars kept)."""
    kind = type(value)
    if kind is str:
        return value if value.isprintable() else escape(value)
    if kind in _PLAIN_SCALARS:
        return value
    if isinstance(value, dict):
        return {escape(str(key)): _escape_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_escape_value(item) for item in value]
    return escape(str(value))  # what json.dumps(default=str) would write, escaped


def _details(
    formatter: logging.Formatter, record: logging.LogRecord
) -> tuple[str | None, str | None]:
    """A record's exception text and stack text (either None), not yet escaped.

    The exception is formatted from ``exc_info`` when there is one, never taken from the
    record's cache first (another handler may have put it there unescaped).
    """
    exception = None
    if record.exc_info:
        exception = formatter.formatException(record.exc_info)
    elif record.exc_text:
        exception = record.exc_text
    stack = formatter.formatStack(record.stack_info) if record.stack_info else None
    return exception, stack


class JsonFormatter(logging.Formatter):
    """Formats records as one JSON object per line, with fields Cloud Logging understands."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON (``severity``, ``message``, ``time``, ``logger`` and extras).

        The extras are the record's ``fields``: a dict, or a callable returning one.
        """
        payload: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, record.levelname),
            "message": escape(record.getMessage()),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": escape(record.name),
        }
        fields = getattr(record, "fields", None)
        if callable(fields):  # built on demand: only this formatter uses them
            fields = fields()
        if isinstance(fields, dict):
            payload.update(_escape_value(fields))
        exception, stack = _details(self, record)
        if exception is not None:
            payload["exception"] = escape_block(exception)
        if stack is not None:
            payload["stack"] = escape_block(stack)
        return json.dumps(payload)  # every value is a JSON type by now (_escape_value)


class TextFormatter(logging.Formatter):
    """The text format: ``asctime level logger: message``, one line per record.

    ``asctime`` is what :class:`logging.Formatter` writes (local time, milliseconds), with the
    seconds part formatted once per second: ``time.strftime`` on every record was a few per
    cent of a small C-STORE's CPU, and an adapter logs one line per instance.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        #: (second, its text): one tuple, read and replaced whole, so threads never mix them.
        self._cached: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        """The record's line, escaped; a traceback follows on lines indented by ``  | ``.

        What :meth:`logging.Formatter.format` does, except that the exception text is never
        taken from the record's cache (another handler may have put it there unescaped).
        """
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        text = escape(self.formatMessage(record))
        for detail in _details(self, record):
            if detail is None:
                continue
            text += "".join(
                f"\n{CONTINUATION}{line}" for line in escape_block(detail).split("\n")
            )
        return text

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The record's local time as ``YYYY-MM-DD HH:MM:SS,mmm``."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached_second, text = self._cached
        if second != cached_second:
            text = time.strftime(self.default_time_format, self.converter(second))
            self._cached = (second, text)
        return f"{text},{int(record.msecs):03d}"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record.

    A handler bound to the stream object of its creation time breaks when that object is
    replaced and closed (output capture in tests, an embedding host redirecting stderr).
    """

    def emit(self, record: logging.LogRecord) -> None:
        """Emit to the current ``sys.stderr``."""
        self.stream = sys.stderr
        super().emit(record)


def is_repeat_of_reported_error(record: logging.LogRecord) -> bool:
    """Whether a library's record is about a :class:`~common.errors.ReportedError`.

    The error is the record's exception, or the one being handled while it is logged
    (pynetdicom logs "Exception in DUL.run(), aborting association" in its ``except`` block,
    then the exception itself).
    """
    if not record.name.startswith(_QUIET_LOGGERS):
        return False
    error = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
    return isinstance(error, ReportedError)


def configure_logging(*, verbose: bool = False, json_format: bool = False) -> None:
    """Configure the root logger once for a service process."""
    handler = _StderrHandler(sys.stderr)
    handler.addFilter(lambda record: not is_repeat_of_reported_error(record))
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    # Our formats name no thread or process: skip collecting them for every record (the
    # logging HOWTO's "Optimization"; a per-instance log line is on the C-STORE hot path).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Nor where a record was logged from (file, line, function): the same table's
    # "set logging._srcfile to None" spares a walk up the stack for every record.
    logging._srcfile = None
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Python warnings (pydicom warns about a peer's malformed UID, quoting it) would otherwise
    # be written to stderr beside the handler: unescaped, and not JSON.
    logging.captureWarnings(True)
