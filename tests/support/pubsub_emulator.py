"""The Google Cloud Pub/Sub emulator (a Java jar from the gcloud SDK), driven by real clients.

:class:`PubSubEmulator` starts ``java -jar cloud-pubsub-emulator-*-all.jar`` on a free
127.0.0.1 port, waits until it answers HTTP ``GET /`` with ``Ok`` (about one second), and sets
``PUBSUB_EMULATOR_HOST`` in ``os.environ`` while it runs (restored on stop), so that every
``google.cloud.pubsub_v1`` client created meanwhile talks to it without credentials.

:meth:`PubSubEmulator.new_topic_and_subscription` creates a fresh, uniquely named pair per call,
so tests sharing one emulator never see each other's messages.

The emulator cannot be installed in CI: a missing jar or ``java`` skips the test, and fails it
when ``CI=true`` (see :mod:`tests.support.components`).
"""

from __future__ import annotations

import glob
import importlib.util
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import requests

from tests.support.components import missing, require, require_executable
from tests.support.ports import free_port, wait_until

__all__ = ["EMULATOR_JAR_GLOBS", "PubSubEmulator", "find_emulator_jar"]

EMULATOR_JAR_GLOBS = (
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar",
    "/usr/share/google-cloud-sdk/platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar",
)


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def find_emulator_jar() -> Path:
    """Return the emulator jar, or skip (fail in CI) if the SDK component is not installed."""
    for pattern in EMULATOR_JAR_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[-1])
    missing(
        "Pub/Sub emulator jar not found (apt package google-cloud-cli-pubsub-emulator); looked for "
        + ", ".join(EMULATOR_JAR_GLOBS)
    )


class PubSubEmulator:
    """A running Pub/Sub emulator plus publisher/subscriber clients pointed at it."""

    _counter = itertools.count(1)

    def __init__(
        self,
        *,
        project_id: str = "test-project",
        log_dir: str | Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        """Locate java and the jar and pick a port; nothing runs until :meth:`start`.

        The emulator's output goes to ``log_dir/emulator.log`` (default: a directory removed
        on :meth:`stop`).
        """
        require(
            _has_module("google.cloud.pubsub_v1"),
            "python package google-cloud-pubsub not installed",
        )
        self.java = require_executable("java", "Java runtime for the Pub/Sub emulator")
        self.jar = find_emulator_jar()
        self.project_id = project_id
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self._own_log_dir = log_dir is None
        directory = (
            Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="pubsub-"))
        )
        directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / "emulator.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._saved_env: str | None = None
        self._env_set = False
        self._publisher: Any = None
        self._subscriber: Any = None

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT``, the value of ``PUBSUB_EMULATOR_HOST``."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> PubSubEmulator:
        """Start the emulator, wait until it answers, and set ``PUBSUB_EMULATOR_HOST``."""
        if self._process is not None and self._process.poll() is None:
            return self
        self._log_file = self.log_path.open("ab")
        self._process = subprocess.Popen(
            # -XX:-UsePerfData: no /tmp/hsperfdata_USER left behind.
            [self.java, "-XX:-UsePerfData", "-jar", str(self.jar), "--host=127.0.0.1",
             f"--port={self.port}"],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                self._answers,
                timeout=self.startup_timeout,
                interval=0.05,
                message="Pub/Sub emulator",
            )
        except (TimeoutError, RuntimeError) as exc:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(f"Pub/Sub emulator did not start: {exc}\n{tail}") from exc
        self._saved_env = os.environ.get("PUBSUB_EMULATOR_HOST")
        os.environ["PUBSUB_EMULATOR_HOST"] = self.host_port
        self._env_set = True
        return self

    def _answers(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"emulator exited with code {self._process.returncode}")
        try:
            return requests.get(f"http://{self.host_port}/", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        """Close the clients, stop the emulator and restore ``PUBSUB_EMULATOR_HOST``."""
        if self._publisher is not None:
            self._publisher.stop()
            self._publisher = None
        if self._subscriber is not None:
            self._subscriber.close()
            self._subscriber = None
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_log_dir:
            shutil.rmtree(self.log_path.parent, ignore_errors=True)
        if self._env_set:
            self._env_set = False
            if self._saved_env is None:
                os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = self._saved_env

    def __enter__(self) -> PubSubEmulator:
        """Start the emulator."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the emulator."""
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """Return the end of the emulator's output."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no emulator log)"

    # -- clients (created lazily, after PUBSUB_EMULATOR_HOST is set)

    @property
    def publisher(self) -> Any:
        """A ``pubsub_v1.PublisherClient`` talking to the emulator."""
        if self._publisher is None:
            from google.cloud import pubsub_v1

            self._publisher = pubsub_v1.PublisherClient()
        return self._publisher

    @property
    def subscriber(self) -> Any:
        """A ``pubsub_v1.SubscriberClient`` talking to the emulator."""
        if self._subscriber is None:
            from google.cloud import pubsub_v1

            self._subscriber = pubsub_v1.SubscriberClient()
        return self._subscriber

    def new_topic_and_subscription(
        self,
        prefix: str = "test",
        *,
        ack_deadline_seconds: int = 10,
        **subscription_fields: Any,
    ) -> tuple[str, str]:
        """Create a fresh topic and a subscription to it; return their full resource paths.

        Extra keyword arguments become fields of the Subscription (e.g. ``retry_policy``).
        """
        unique = f"{prefix}-{next(self._counter)}-{uuid.uuid4().hex[:8]}"
        topic_path: str = self.publisher.topic_path(self.project_id, f"{unique}-topic")
        subscription_path: str = self.subscriber.subscription_path(self.project_id, f"{unique}-sub")
        self.publisher.create_topic(request={"name": topic_path})
        self.subscriber.create_subscription(
            request={
                "name": subscription_path,
                "topic": topic_path,
                "ack_deadline_seconds": ack_deadline_seconds,
                **subscription_fields,
            }
        )
        return topic_path, subscription_path

    def publish(self, topic_path: str, data: bytes, **attributes: str) -> str:
        """Publish one message and return its message id once the emulator has it."""
        future = self.publisher.publish(topic_path, data, **attributes)
        message_id: str = future.result(timeout=30)
        return message_id

    def pull(
        self,
        subscription_path: str,
        max_messages: int = 10,
        *,
        timeout: float = 10.0,
        ack: bool = True,
    ) -> list[Any]:
        """Synchronously pull up to ``max_messages`` (waiting up to ``timeout`` s for the first).

        Returns ``ReceivedMessage`` objects (``.message.data``, ``.message.attributes``); they are
        acknowledged unless ``ack`` is False.
        """
        from google.api_core.exceptions import DeadlineExceeded

        deadline = time.monotonic() + timeout
        received: list[Any] = []
        while not received:
            try:
                response = self.subscriber.pull(
                    request={"subscription": subscription_path, "max_messages": max_messages},
                    timeout=max(1.0, deadline - time.monotonic()),
                )
                received = list(response.received_messages)
            except DeadlineExceeded:
                received = []
            if received or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if received and ack:
            self.subscriber.acknowledge(
                request={
                    "subscription": subscription_path,
                    "ack_ids": [message.ack_id for message in received],
                }
            )
        return received
