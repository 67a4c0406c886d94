"""Unit tests of the exporter's decisions, with in-memory fetcher, sink and dead-letter sink."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from common.dicom.part10 import Part10Instance
from common.errors import DicomwebHttpError, PeerUnavailableError
from common.lifecycle import Lifecycle
from common.sinks import Origin
from common.status import PROCESSING_FAILURE_ATTEMPTS, SUCCESS, DimseStatus, Status
from export_adapter.counters import CountersSnapshot, ExportCounters
from export_adapter.deadletter import DeadLetterError, NoDeadLetter
from export_adapter.errors import InstanceNotFoundError
from export_adapter.exporter import Exporter, ReceivedMessage
from export_adapter.fetch import FetchedInstance
from export_adapter.notification import NotifiedInstance
from export_adapter.outcome import Disposition

PATH = b"/studies/1.2/series/1.3/instances/1.4"


class Fetcher:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.paths: list[Path] = []

    def fetch(self, instance: NotifiedInstance, destination: Path) -> FetchedInstance:
        self.paths.append(destination)
        if self.error is not None:
            raise self.error
        destination.write_bytes(b"x" * 10)
        part10 = Part10Instance.from_spooled(
            destination, sop_class_uid="1.2.840.10008.5.1.4.1.1.7", sop_instance_uid="1.4",
            transfer_syntax_uid="1.2.840.10008.1.2.1", offset=0,
        )
        return FetchedInstance(part10)


class Sink:
    def __init__(self, status: DimseStatus = SUCCESS, error: Exception | None = None) -> None:
        self.status = status
        self.error = error
        self.sent: list[bytes] = []

    def deliver(self, instance: Part10Instance, origin: Origin) -> DimseStatus:
        assert origin.file is not None and origin.source_aet == ""
        self.sent.append(origin.file.read_bytes())
        if self.error is not None:
            raise self.error
        return self.status

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "PEER@127.0.0.1:1"


class DeadLetters:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.published: list[tuple[str, bytes, dict[str, str], str]] = []

    def publish(
        self, message_id: str, data: bytes, attributes: Mapping[str, str], reason: str, error: str
    ) -> bool:
        if self.fail:
            raise DeadLetterError("topic gone")
        self.published.append((message_id, data, dict(attributes), reason))
        return True


def make(
    tmp_path: Path,
    fetcher: Fetcher | None = None,
    sink: Sink | None = None,
    dead: DeadLetters | NoDeadLetter | None = None,
    lifecycle: Lifecycle | None = None,
) -> tuple[Exporter, ExportCounters]:
    counters = ExportCounters()
    exporter = Exporter(
        fetcher or Fetcher(),
        sink or Sink(),
        counters,
        dead if dead is not None else DeadLetters(),
        lifecycle or Lifecycle(),
        spool_dir=tmp_path,
        transient_backoff=0,
    )
    return exporter, counters


def test_exported_then_acked_and_temp_file_removed(tmp_path: Path) -> None:
    fetcher, sink = Fetcher(), Sink()
    exporter, counters = make(tmp_path, fetcher, sink)
    assert exporter.handle(ReceivedMessage("m", PATH)) is Disposition.ACK
    assert sink.sent == [b"x" * 10]
    assert not fetcher.paths[0].exists()
    assert counters.snapshot() == CountersSnapshot(received=1, exported=1)


def test_warning_status_counts_as_delivered(tmp_path: Path) -> None:
    exporter, counters = make(tmp_path, sink=Sink(DimseStatus(0xB000)))
    assert exporter.handle(ReceivedMessage("m", PATH)) is Disposition.ACK
    assert counters.snapshot().exported == 1


def test_skipped_action(tmp_path: Path) -> None:
    fetcher = Fetcher()
    exporter, counters = make(tmp_path, fetcher)
    message = ReceivedMessage("m", PATH, {"action": "DeleteInstances"})
    assert exporter.handle(message) is Disposition.ACK
    assert fetcher.paths == []
    assert counters.snapshot() == CountersSnapshot(received=1, skipped=1)


@pytest.mark.parametrize(
    ("fetcher", "sink", "reason"),
    [
        (Fetcher(), Sink(), "malformed-message"),
        (Fetcher(InstanceNotFoundError("gone")), Sink(), "instance-not-found"),
        (Fetcher(), Sink(DimseStatus(0xC000)), "peer-refused"),
    ],
)
def test_permanent_failures_are_acked_and_dead_lettered(
    tmp_path: Path, fetcher: Fetcher, sink: Sink, reason: str
) -> None:
    dead = DeadLetters()
    exporter, counters = make(tmp_path, fetcher, sink, dead)
    data = b"not a path" if reason == "malformed-message" else PATH
    message = ReceivedMessage("m9", data, {"k": "v"})
    assert exporter.handle(message) is Disposition.ACK
    assert dead.published == [("m9", data, {"k": "v"}, reason)]
    assert counters.snapshot() == CountersSnapshot(
        received=1, permanent_failures=1, dead_lettered=1
    )


def test_permanent_failure_without_dead_letter_topic(tmp_path: Path) -> None:
    exporter, counters = make(tmp_path, dead=NoDeadLetter())
    assert exporter.handle(ReceivedMessage("m", b"junk")) is Disposition.ACK
    assert counters.snapshot() == CountersSnapshot(received=1, permanent_failures=1)


def test_dead_letter_failure_keeps_the_message(tmp_path: Path) -> None:
    exporter, _ = make(tmp_path, dead=DeadLetters(fail=True))
    assert exporter.handle(ReceivedMessage("m", b"junk")) is Disposition.NACK


@pytest.mark.parametrize(
    ("fetcher", "sink"),
    [
        (Fetcher(DicomwebHttpError(503)), Sink()),
        (Fetcher(), Sink(error=PeerUnavailableError("down"))),
        (Fetcher(), Sink(DimseStatus(0xA700))),
        (Fetcher(RuntimeError("bug")), Sink()),
    ],
)
def test_transient_failures_are_nacked(tmp_path: Path, fetcher: Fetcher, sink: Sink) -> None:
    dead = DeadLetters()
    exporter, counters = make(tmp_path, fetcher, sink, dead)
    assert exporter.handle(ReceivedMessage("m", PATH)) is Disposition.NACK
    assert dead.published == []
    assert counters.snapshot() == CountersSnapshot(received=1, transient_failures=1)
    assert not any(path.exists() for path in fetcher.paths)


def test_processing_failure_is_nacked_until_the_rows_last_attempt(tmp_path: Path) -> None:
    """0x0110 from the peer: nacked, then dead-lettered on its last attempt (counted here)."""
    dead = DeadLetters()
    exporter, counters = make(tmp_path, sink=Sink(DimseStatus(Status.PROCESSING_FAILURE)), dead=dead)
    answers = [
        exporter.handle(ReceivedMessage("m", PATH)) for _ in range(PROCESSING_FAILURE_ATTEMPTS)
    ]
    assert answers == [Disposition.NACK] * (PROCESSING_FAILURE_ATTEMPTS - 1) + [Disposition.ACK]
    assert [entry[3] for entry in dead.published] == ["peer-processing-failure"]
    # Another message has its own count; a message's count ends with its outcome.
    assert exporter.handle(ReceivedMessage("other", PATH)) is Disposition.NACK
    assert exporter.handle(ReceivedMessage("m", PATH)) is Disposition.NACK
    assert counters.snapshot().permanent_failures == 1


def test_processing_failure_counts_pubsubs_delivery_attempts(tmp_path: Path) -> None:
    """A subscription with a dead-letter policy counts deliveries across replicas: it wins."""
    exporter, _ = make(tmp_path, sink=Sink(DimseStatus(Status.PROCESSING_FAILURE)))
    first = ReceivedMessage("m", PATH, delivery_attempt=1)
    last = ReceivedMessage("m2", PATH, delivery_attempt=PROCESSING_FAILURE_ATTEMPTS)
    assert exporter.handle(first) is Disposition.NACK
    assert exporter.handle(last) is Disposition.ACK


def test_draining_nacks_new_messages(tmp_path: Path) -> None:
    lifecycle = Lifecycle()
    lifecycle.start_draining()
    fetcher = Fetcher()
    exporter, _ = make(tmp_path, fetcher, lifecycle=lifecycle)
    assert exporter.handle(ReceivedMessage("m", PATH)) is Disposition.NACK
    assert fetcher.paths == []


class Observed:
    """An ExportObserver recording its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def export_done(self, destination: str, size: int, ok: bool, seconds: float) -> None:
        assert seconds >= 0
        self.calls.append(("done", destination, str(size), str(ok)))

    def retry(self, destination: str) -> None:
        self.calls.append(("retry", destination))

    def dead_lettered(self, destination: str) -> None:
        self.calls.append(("dead", destination))


@pytest.mark.parametrize(
    ("fetcher", "sink", "dead", "data", "expected"),
    [
        (Fetcher(), Sink(), DeadLetters(), PATH, [("done", "PEER", "10", "True")]),
        (Fetcher(), Sink(error=PeerUnavailableError("down")), DeadLetters(), PATH,
         [("done", "PEER", "0", "False"), ("retry", "PEER")]),
        (Fetcher(InstanceNotFoundError("gone")), Sink(), DeadLetters(), PATH,
         [("done", "PEER", "0", "False"), ("dead", "PEER")]),
        (Fetcher(), Sink(), NoDeadLetter(), b"junk", [("done", "PEER", "0", "False")]),
        (Fetcher(), Sink(), DeadLetters(fail=True), b"junk",
         [("done", "PEER", "0", "False"), ("retry", "PEER")]),
    ],
    ids=["exported", "transient", "dead-lettered", "permanent-no-topic", "dead-letter-failed"],
)
def test_every_outcome_reaches_the_observer_once(
    tmp_path: Path, fetcher: Fetcher, sink: Sink, dead: DeadLetters | NoDeadLetter, data: bytes,
    expected: list[tuple[str, ...]],
) -> None:
    observer = Observed()
    exporter = Exporter(fetcher, sink, ExportCounters(), dead, Lifecycle(), spool_dir=tmp_path,
                        transient_backoff=0, observer=observer, destination="PEER")
    exporter.handle(ReceivedMessage("m", data))
    assert observer.calls == expected


def test_skipped_messages_are_not_exports(tmp_path: Path) -> None:
    observer = Observed()
    exporter = Exporter(Fetcher(), Sink(), ExportCounters(), DeadLetters(), Lifecycle(),
                        spool_dir=tmp_path, observer=observer)
    exporter.handle(ReceivedMessage("m", PATH, {"action": "DeleteInstances"}))
    assert observer.calls == []
