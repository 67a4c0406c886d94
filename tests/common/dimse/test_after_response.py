"""Deferred work: runs after the marked span, in order, on its thread; or at once outside one."""

from __future__ import annotations

import logging
import threading

import pytest

from common.dimse.after_response import defer, response_pending


def test_outside_a_span_work_runs_at_once() -> None:
    ran: list[str] = []
    defer(lambda: ran.append("now"))
    assert ran == ["now"]


def test_inside_a_span_work_waits_for_its_end_and_keeps_its_order() -> None:
    ran: list[str] = []
    with response_pending():
        defer(lambda: ran.append("first"))
        defer(lambda: ran.append("second"))
        ran.append("response sent")
    assert ran == ["response sent", "first", "second"]


def test_work_runs_even_when_the_span_fails_and_failures_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    with pytest.raises(OSError), response_pending():
        defer(broken)
        defer(lambda: ran.append("after the broken one"))
        raise OSError("peer went away before the response")
    assert ran == ["after the broken one"]
    assert "deferred work after a DIMSE response failed" in caplog.text
    assert caplog.records[0].levelno == logging.ERROR


def test_spans_are_per_thread_and_nest() -> None:
    ran: list[str] = []
    with response_pending():
        other = threading.Thread(target=lambda: defer(lambda: ran.append("other thread")))
        other.start()
        other.join()
        assert ran == ["other thread"]  # no span on that thread: at once
        with response_pending():
            defer(lambda: ran.append("inner"))
        assert ran == ["other thread", "inner"]
        defer(lambda: ran.append("outer"))
        assert ran == ["other thread", "inner"]
    assert ran == ["other thread", "inner", "outer"]
