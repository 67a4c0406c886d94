"""Copies of permanently failed messages, published to a dead-letter topic (Pub/Sub edge)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from common.errors import AdapterError

LOG = logging.getLogger(__name__)

#: Attributes added to the dead-letter copy (the original attributes are kept).
ERROR_ATTRIBUTE = "exportError"
REASON_ATTRIBUTE = "exportFailure"
SOURCE_MESSAGE_ATTRIBUTE = "sourceMessageId"
_MAX_ERROR = 1024


class DeadLetterError(AdapterError):
    """The dead-letter copy could not be published (the message is nacked instead)."""


class DeadLetterSink(Protocol):
    """Where messages that can never be exported are copied."""

    def publish(
        self, message_id: str, data: bytes, attributes: Mapping[str, str], reason: str, error: str
    ) -> bool:
        """Publish a copy and wait until the topic has it; False when there is no topic.

        Raises:
            DeadLetterError: the copy could not be published.
        """
        ...


class NoDeadLetter:
    """No dead-letter topic configured: permanent failures are only logged."""

    def publish(
        self, message_id: str, data: bytes, attributes: Mapping[str, str], reason: str, error: str
    ) -> bool:
        """Do nothing."""
        return False


class PubSubDeadLetter:
    """Publishes to a Pub/Sub topic with the real client (honours ``PUBSUB_EMULATOR_HOST``)."""

    def __init__(self, topic_path: str, publisher: Any, *, timeout: float = 30.0) -> None:
        self.topic_path = topic_path
        self._publisher = publisher
        self._timeout = timeout

    @classmethod
    def create(cls, topic_path: str) -> PubSubDeadLetter:
        """A publisher client for ``topic_path``."""
        from google.cloud import pubsub_v1

        return cls(topic_path, pubsub_v1.PublisherClient())

    def publish(
        self, message_id: str, data: bytes, attributes: Mapping[str, str], reason: str, error: str
    ) -> bool:
        """Publish a copy with the failure in its attributes, and wait for the message id."""
        extra = {
            REASON_ATTRIBUTE: reason,
            ERROR_ATTRIBUTE: error[:_MAX_ERROR],
            SOURCE_MESSAGE_ATTRIBUTE: message_id,
        }
        try:
            future = self._publisher.publish(self.topic_path, data, **{**attributes, **extra})
            future.result(timeout=self._timeout)
        except Exception as exc:  # google.api_core raises many kinds; all mean "not published"
            raise DeadLetterError(
                f"cannot publish message {message_id} to {self.topic_path}: {exc}"
            ) from exc
        return True

    def close(self) -> None:
        """Flush and stop the publisher."""
        self._publisher.stop()
