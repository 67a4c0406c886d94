"""Logging set-up: one line per event, human-readable text or JSON for Cloud Logging.

Log records carry identifiers (AE titles, UIDs, message ids, durations) and never patient data.
pynetdicom's own loggers are capped at WARNING because at INFO/DEBUG they dump identifiers and
datasets, which may hold PHI.
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


class JsonFormatter(logging.Formatter):
    """Formats records as one JSON object per line, with fields Cloud Logging understands."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON (``severity``, ``message``, ``time``, ``logger`` and extras).

        The extras are the record's ``fields``: a dict, or a callable returning one.
        """
        payload: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, record.levelname),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if callable(fields):  # built on demand: only this formatter uses them
            fields = fields()
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


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
