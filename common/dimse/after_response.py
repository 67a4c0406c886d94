"""Work a request handler may leave until its DIMSE response has been sent.

A C-STORE's log line and metrics need not delay its C-STORE-RSP: while the SCU reads the
response and sends its next request, the adapter writes them. A DIMSE engine marks the span in
which a handler runs and the response goes out with :func:`response_pending`; inside it,
:func:`defer` queues work, which runs on the same thread right after the span (whether the
response could be sent or not). Outside such a span - an engine that does not mark it, such
as pynetdicom - :func:`defer` runs the work at once, so handlers need not know which engine
serves them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

LOG = logging.getLogger(__name__)

_local = threading.local()


def defer(work: Callable[[], object]) -> None:
    """Run ``work`` once the response this thread is preparing has been sent (or now)."""
    pending: list[Callable[[], object]] | None = getattr(_local, "pending", None)
    if pending is None:
        work()
    else:
        pending.append(work)


class response_pending:  # named like the function it replaced: ``with response_pending():``
    """Collect deferred work while the block runs; run it afterwards, in order.

    The block runs a handler and sends its response. Work that raises is logged and does not
    stop the rest. A class rather than a generator-based context manager: it wraps every
    C-STORE, and a generator's set-up and tear-down cost several times more.
    """

    __slots__ = ("_outer", "_pending")

    def __enter__(self) -> None:
        self._outer: list[Callable[[], object]] | None = getattr(_local, "pending", None)
        self._pending: list[Callable[[], object]] = []
        _local.pending = self._pending

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _local.pending = self._outer
        for work in self._pending:
            try:
                work()
            except Exception:  # bookkeeping must never break the association
                LOG.exception("deferred work after a DIMSE response failed")
