"""Handling one notification: parse, retrieve, send, and decide ack or nack (no Pub/Sub here).

:meth:`Exporter.handle` never raises: every outcome becomes a :class:`Disposition`, decided for
failures by :func:`export_adapter.outcome.classify`.

Each outcome is recorded by one method (``_exported``, ``_transient``, ...) that feeds both the
in-process :class:`~export_adapter.counters.ExportCounters` (the shutdown summary) and the
:class:`~common.metrics.ExportObserver` (Prometheus): every message naming an instance is one
``export_done`` (ok or not); a nack is also a ``retry``; a copy published to the dead-letter
topic is a ``dead_lettered``. Skipped messages (not an instance) are only counted in-process.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from common.errors import AdapterError, ShuttingDownError
from common.lifecycle import Lifecycle
from common.metrics import NULL_EXPORT_OBSERVER, ExportObserver
from common.sinks import InstanceSink
from common.status import DimseStatus, ExportAction, rule_for_store_status
from export_adapter.counters import ExportCounters
from export_adapter.deadletter import DeadLetterError, DeadLetterSink
from export_adapter.errors import PeerRefusedInstanceError
from export_adapter.fetch import FetchedInstance
from export_adapter.notification import NotifiedInstance, parse_notification
from export_adapter.outcome import Disposition, classify

LOG = logging.getLogger(__name__)
#: Seconds a worker pauses before nacking a message delivered while the adapter drains.
_DRAINING_PAUSE = 0.1


@dataclass(frozen=True)
class ReceivedMessage:
    """What the exporter needs of a Pub/Sub message.

    Attributes:
        message_id: the Pub/Sub message id.
        data: the message payload.
        attributes: the message attributes.
        delivery_attempt: the delivery count when the subscription tracks it.
    """

    message_id: str
    data: bytes
    attributes: Mapping[str, str] = field(default_factory=dict)
    delivery_attempt: int | None = None


class FailedAttempts:
    """How many times each message failed to export in this process (thread-safe, bounded).

    A failure whose row bounds its attempts (:attr:`common.status.FailureRule.attempts`) is
    final on its last one. Pub/Sub counts deliveries only for a subscription with a dead-letter
    policy (``delivery_attempt``), so the exporter counts too; the larger count wins. The count
    is this replica's: with several replicas a message may get that many tries on each.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def failed(self, message_id: str) -> int:
        """Count one more failed attempt of a message; returns its failed attempts so far."""
        with self._lock:
            count = self._counts.pop(message_id, 0) + 1
            self._counts[message_id] = count
            while len(self._counts) > self._limit:
                self._counts.popitem(last=False)  # the oldest: most likely settled elsewhere
            return count

    def forget(self, message_id: str) -> None:
        """Forget a message that was acknowledged."""
        with self._lock:
            self._counts.pop(message_id, None)


class Fetcher(Protocol):
    """Retrieves an instance from the source into a file."""

    def fetch(self, instance: NotifiedInstance, destination: Path) -> FetchedInstance:
        """Write the instance to ``destination``."""
        ...


class Exporter:
    """Exports the instance a notification names, then says whether to ack (thread-safe)."""

    def __init__(
        self,
        fetcher: Fetcher,
        sink: InstanceSink,
        counters: ExportCounters,
        dead_letter: DeadLetterSink,
        lifecycle: Lifecycle,
        *,
        spool_dir: Path | None = None,
        transient_backoff: float = 1.0,
        observer: ExportObserver = NULL_EXPORT_OBSERVER,
        destination: str = "",
    ) -> None:
        """Build an exporter.

        Args:
            fetcher: retrieves instances from the source.
            sink: the peer.
            counters: the in-process counters.
            dead_letter: where messages that can never succeed go.
            lifecycle: shutdown state and in-flight tracking.
            spool_dir: where retrieved instances are written (None: the temp directory).
            transient_backoff: seconds to wait before nacking after a transient failure.
            observer: receives every outcome (Prometheus metrics).
            destination: the peer's metrics label (default: the sink's description).
        """
        self._fetcher = fetcher
        self._sink = sink
        self._counters = counters
        self._observer = observer
        self._destination = destination or sink.describe()
        self._dead_letter = dead_letter
        self._lifecycle = lifecycle
        self._spool_dir = spool_dir
        self._transient_backoff = transient_backoff
        self._attempts = FailedAttempts()

    def handle(self, message: ReceivedMessage) -> Disposition:
        """Export one message's instance; ACK when done or hopeless, NACK to try again."""
        self._counters.add("received")
        started = time.perf_counter()
        try:
            with self._lifecycle.operation():
                notification = parse_notification(
                    message.message_id, message.data, message.attributes
                )
                if notification.instance is None:
                    self._counters.add("skipped")
                    LOG.info(
                        "skipped message %s: %s", message.message_id, notification.skip_reason
                    )
                    return Disposition.ACK
                status, fetched = self._export(notification.instance)
        except Exception as exc:  # every failure becomes a disposition here
            return self._failed(message, exc, started)
        self._attempts.forget(message.message_id)
        self._exported(fetched.size, started)
        LOG.info(
            "exported message=%s sop_instance=%s to=%s status=%s bytes=%d ms=%.1f",
            message.message_id,
            fetched.sop_instance_uid,
            self._sink.describe(),
            status,
            fetched.size,
            (time.perf_counter() - started) * 1000,
        )
        return Disposition.ACK

    def _export(self, instance: NotifiedInstance) -> tuple[DimseStatus, FetchedInstance]:
        handle, name = tempfile.mkstemp(prefix="export-", suffix=".dcm", dir=self._spool_dir)
        os.close(handle)
        path = Path(name)
        try:
            fetched = self._fetcher.fetch(instance, path)
            status = self._sink.deliver(fetched.instance, fetched.origin)
        finally:
            path.unlink(missing_ok=True)
        if rule_for_store_status(status).export is not ExportAction.ACK:  # the peer table's
            raise PeerRefusedInstanceError(status, self._sink.describe())
        return status, fetched

    # -- recording outcomes: each feeds the in-process counters and the observer -------------

    def _exported(self, size: int, started: float) -> None:
        self._counters.add("exported")
        self._observer.export_done(self._destination, size, True, time.perf_counter() - started)

    def _transient(self, started: float) -> None:
        self._counters.add("transient_failures")
        self._observer.export_done(self._destination, 0, False, time.perf_counter() - started)
        self._observer.retry(self._destination)

    def _permanent(self, started: float) -> None:
        self._counters.add("permanent_failures")
        self._observer.export_done(self._destination, 0, False, time.perf_counter() - started)

    def _dead_lettered(self) -> None:
        self._counters.add("dead_lettered")
        self._observer.dead_lettered(self._destination)

    def _kept_for_redelivery(self) -> None:
        """A permanent failure nacked because its dead-letter copy could not be published."""
        self._observer.retry(self._destination)

    def _failed(self, message: ReceivedMessage, error: Exception, started: float) -> Disposition:
        attempt = max(self._attempts.failed(message.message_id), message.delivery_attempt or 0)
        kind = classify(error, attempt)
        if kind.permanent:
            self._attempts.forget(message.message_id)
        ours = isinstance(error, AdapterError)
        if not kind.permanent:
            self._transient(started)
            LOG.warning(
                "message %s not exported, will be redelivered (%s): %s",
                message.message_id,
                kind.label,
                error,
                exc_info=not ours,  # a traceback only for our bugs
            )
            # Pause before the nack so a peer that is down is not hammered by redeliveries;
            # a busy worker also holds back pulling through flow control. While draining, the
            # stop event is set: a short fixed pause keeps redeliveries from spinning.
            if isinstance(error, ShuttingDownError):
                time.sleep(_DRAINING_PAUSE)
            elif self._transient_backoff > 0:
                self._lifecycle.stop_requested.wait(self._transient_backoff)
            return Disposition.NACK
        self._permanent(started)
        LOG.warning(
            "message %s cannot be exported, acknowledging it (%s): %s",
            message.message_id,
            kind.label,
            error,
            exc_info=not ours,
        )
        try:
            published = self._dead_letter.publish(
                message.message_id, message.data, message.attributes, kind.label, str(error)
            )
        except DeadLetterError as exc:
            LOG.error("message %s kept for redelivery: %s", message.message_id, exc)
            self._kept_for_redelivery()
            return Disposition.NACK
        if published:
            self._dead_lettered()
        return Disposition.ACK
