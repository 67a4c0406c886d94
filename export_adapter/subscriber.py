"""Streaming pull from a Pub/Sub subscription into a bounded worker pool (the Pub/Sub edge).

Flow control (:class:`FlowSettings`) caps the messages and bytes held at once; callbacks run on
a pool of ``workers`` threads. Every callback goes through :meth:`NotificationSubscriber.
_callback`, which turns the handler's :class:`~export_adapter.outcome.Disposition` into an ack
or nack, and any exception into a log line with the message id and a nack. The client honours
``PUBSUB_EMULATOR_HOST``.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.errors import AdapterError
from export_adapter.exporter import ReceivedMessage
from export_adapter.outcome import Disposition

LOG = logging.getLogger(__name__)


class SubscriptionError(AdapterError):
    """The streaming pull stopped (subscription missing, permission denied, ...)."""


@dataclass(frozen=True)
class FlowSettings:
    """How much work the subscriber takes on at once.

    Attributes:
        workers: threads running callbacks (exports in parallel).
        max_messages: messages held (running or waiting for a worker) at once.
        max_bytes: message bytes held at once.
        max_lease_duration: seconds a message's ack deadline is extended while it is held.
    """

    workers: int = 8
    max_messages: int = 64
    max_bytes: int = 64 * 1024 * 1024
    max_lease_duration: float = 3600.0


Handler = Callable[[ReceivedMessage], Disposition]


class NotificationSubscriber:
    """Pulls one subscription and hands each message to ``handler``."""

    def __init__(
        self,
        subscription_path: str,
        handler: Handler,
        settings: FlowSettings,
        *,
        client: Any = None,
    ) -> None:
        self.subscription_path = subscription_path
        self._handler = handler
        self._settings = settings
        self._client = client
        self._owns_client = client is None
        self._future: Any = None

    def start(self) -> None:
        """Open the streaming pull (non-blocking)."""
        from google.cloud import pubsub_v1
        from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

        if self._client is None:
            self._client = pubsub_v1.SubscriberClient()
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._settings.workers, thread_name_prefix="export-worker"
        )
        flow = pubsub_v1.types.FlowControl(
            max_messages=self._settings.max_messages,
            max_bytes=self._settings.max_bytes,
            max_lease_duration=self._settings.max_lease_duration,
        )
        self._future = self._client.subscribe(
            self.subscription_path,
            callback=self._callback,
            flow_control=flow,
            scheduler=ThreadScheduler(executor),
            await_callbacks_on_shutdown=True,
        )
        LOG.info(
            "pulling %s (workers=%d, max messages=%d, max bytes=%d)",
            self.subscription_path,
            self._settings.workers,
            self._settings.max_messages,
            self._settings.max_bytes,
        )

    def _callback(self, message: Any) -> None:
        """Run the handler for one message, then ack or nack it; never raises."""
        message_id = str(getattr(message, "message_id", "?"))
        try:
            received = ReceivedMessage(
                message_id=message_id,
                data=bytes(message.data),
                attributes=dict(message.attributes),
                delivery_attempt=message.delivery_attempt,
            )
            disposition = self._handler(received)
        except Exception:
            LOG.exception("handling message %s failed; nacking it", message_id)
            disposition = Disposition.NACK
        try:
            if disposition is Disposition.ACK:
                message.ack()
            else:
                message.nack()
        except Exception:
            LOG.exception("cannot %s message %s", disposition.value, message_id)

    @property
    def running(self) -> bool:
        """The streaming pull is open (started, not stopped, not ended by an error)."""
        future = self._future
        return future is not None and not future.done()

    def failure(self) -> SubscriptionError | None:
        """The error that ended the streaming pull, or None while it runs (or was stopped)."""
        future = self._future
        if future is None or not future.done() or future.cancelled():
            return None
        try:
            error = future.exception(timeout=0)
        except concurrent.futures.CancelledError:
            return None
        if error is None:
            return None
        return SubscriptionError(f"streaming pull of {self.subscription_path} ended: {error}")

    def stop(self, timeout: float) -> bool:
        """Stop pulling, let running callbacks finish, nack the messages not started.

        Returns False when callbacks were still running after ``timeout`` seconds (their
        messages are redelivered once their leases lapse).
        """
        future, self._future = self._future, None
        finished = True
        if future is not None:
            future.cancel()
            try:
                future.result(timeout=timeout)
            except concurrent.futures.TimeoutError:
                finished = False
            except Exception as exc:  # the pull may already have failed; it is stopping anyway
                LOG.debug("streaming pull ended with %s", exc)
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None
        return finished
