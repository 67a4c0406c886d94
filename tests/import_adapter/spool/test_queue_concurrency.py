"""A destination queue's adaptive concurrency and its overload pause, without a network."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from common.metrics import NullImportObserver
from common.status import SUCCESS, DimseStatus, Status
from import_adapter.spool.concurrency import ConcurrencySettings
from import_adapter.spool.disk import SpoolLimits
from import_adapter.spool.manager import SpoolManager, SpoolSettings
from import_adapter.spool.outcome import Kind, UploadResult
from import_adapter.spool.queue import BatchSettings, UploadSettings
from tests.import_adapter.spool.test_spool import DEST_A, _drained, _submit


class Recorder(NullImportObserver):
    """What the queue reports to metrics (every other observer call is ignored)."""

    def __init__(self) -> None:
        self.limits: list[int] = []
        self.pauses: list[float] = []

    def upload_concurrency(self, destination: str, limit: int) -> None:
        self.limits.append(limit)

    def upload_paused(self, destination: str, seconds: float) -> None:
        self.pauses.append(seconds)


class FarStore:
    """An uploader 50 ms away that never queues: only concurrency makes it faster."""

    def __init__(
        self,
        script: list[UploadResult] | None = None,
        latency: float = 0.05,
        together: bool = False,
    ) -> None:
        self.lock = threading.Lock()
        self.in_flight = self.peak = 0
        self.starts: list[float] = []
        self.script = list(script or [])
        self.latency = latency
        # together: the scripted answers are given at once, when all of their uploads are in
        # flight (else, on a loaded machine, the first could pause the queue before the others
        # start).
        self.together = threading.Barrier(len(self.script)) if together and script else None

    def upload(self, path: Path, *, maybe_stored: bool = False) -> UploadResult:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.starts.append(time.monotonic())
            scripted = bool(self.script)
            answer = self.script.pop(0) if scripted else UploadResult(Kind.DONE, SUCCESS)
        if scripted and self.together is not None:
            self.together.wait(timeout=5)
        time.sleep(self.latency)
        with self.lock:
            self.in_flight -= 1
        return answer

    def upload_batch(self, paths: Sequence[Path]) -> list[UploadResult | None]:
        """Batches are off in these tests; were one sent, each file is answered in turn."""
        return [self.upload(path) for path in paths]

    def close(self) -> None:
        pass


def _manager(root: Path, store: FarStore, observer: Recorder, **upload: object) -> SpoolManager:
    settings = SpoolSettings(
        root, auto_ack=True, limits=SpoolLimits(min_free_bytes=0),
        upload=UploadSettings(min_delay=0.05, max_delay=0.2, rescan_interval=0.05,
                              batch=BatchSettings.off(), **upload),  # type: ignore[arg-type]
    )
    return SpoolManager(settings, [DEST_A], lambda _d: lambda: store, observer)


def test_uploads_to_a_far_store_overlap_beyond_the_initial_limit(tmp_path: Path) -> None:
    store, observer = FarStore(), Recorder()
    manager = _manager(tmp_path / "s", store, observer)
    manager.start()
    try:
        for _ in range(300):
            _submit(manager)
        _drained(manager)
        assert manager.queue(DEST_A.key).depth == 0
    finally:
        manager.stop()
    assert ConcurrencySettings().initial == 4
    # Beyond the initial limit, and reported. How far it grows depends on how steady this
    # machine's sleeps are (a loaded one makes a 50 ms sleep look like queueing and ends slow
    # start early); the growth rule itself is tested on a fake clock in test_concurrency.py.
    assert store.peak > 4, store.peak
    assert observer.limits[0] == 4 and max(observer.limits) > 4


def test_cap_is_never_exceeded(tmp_path: Path) -> None:
    store, observer = FarStore(latency=0.02), Recorder()
    manager = _manager(
        tmp_path / "s", store, observer, concurrency=ConcurrencySettings(cap=6, initial=2)
    )
    manager.start()
    try:
        for _ in range(150):
            _submit(manager)
        _drained(manager)
    finally:
        manager.stop()
    # Above the initial 2, never above the cap (how close to it depends on the machine's load).
    assert 2 < store.peak <= 6, store.peak


def test_429_with_retry_after_pauses_every_worker_and_halves_concurrency(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    quota = UploadResult(
        Kind.RETRY, DimseStatus(Status.OUT_OF_RESOURCES), "HTTP 429", http_status=429,
        retry_after=0.5,
    )
    store, observer = FarStore([quota] * 3, latency=0.01, together=True), Recorder()
    manager = _manager(
        tmp_path / "s", store, observer, retry_amount=0,
        concurrency=ConcurrencySettings(cap=8, initial=8, floor=8),
    )
    caplog.set_level(logging.WARNING, "import_adapter.spool.queue")
    manager.start()
    try:
        for _ in range(40):
            _submit(manager)
        _drained(manager)
        assert manager.queue(DEST_A.key).depth == 0
    finally:
        manager.stop()
    # Nothing was dead-lettered although retry_amount is 0: a quota is not the instance's fault.
    assert not list(manager.layout.dead_letter.rglob("*.dcm"))
    # The first three attempts (all in flight at once) were refused; after them, no upload
    # started until the 0.5 s the store asked for had passed.
    first, later = store.starts[:8], store.starts[8:]
    assert later and min(later) - min(first) >= 0.45
    assert observer.pauses and min(observer.pauses) >= 0.5
    # Halved once per refusal (8 -> 4 -> 2 -> 1), then grown back by the successes.
    assert min(observer.limits) == 1 and observer.limits[-1] > 1
    pause_lines = [r for r in caplog.records if "overloaded" in r.getMessage()]
    assert len(pause_lines) == 1, [r.getMessage() for r in pause_lines]
    assert "Retry-After 0.5 s" in pause_lines[0].getMessage()


def test_503_without_retry_after_backs_off_the_destination(tmp_path: Path) -> None:
    busy = UploadResult(
        Kind.RETRY, DimseStatus(Status.OUT_OF_RESOURCES), "HTTP 503", http_status=503
    )
    store, observer = FarStore([busy] * 4, latency=0.0), Recorder()
    manager = _manager(
        tmp_path / "s", store, observer, retry_amount=0,
        concurrency=ConcurrencySettings.fixed(1),
    )
    manager.start()
    try:
        _submit(manager)
        _drained(manager)
    finally:
        manager.stop()
    assert len(store.starts) == 5
    gaps = [b - a for a, b in zip(store.starts, store.starts[1:], strict=False)]
    # Consecutive overloads back off exponentially (0.05, 0.1, 0.2, capped at 0.2; +-10 %).
    assert gaps[0] >= 0.04 and gaps[2] >= 0.17
    assert not list(manager.layout.dead_letter.rglob("*.dcm"))
