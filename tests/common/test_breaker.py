"""Unit tests of the per-root circuit breaker, and of the client, retry and statuses around it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from common.auth import NoAuth
from common.breaker import BreakerRegistry, BreakerSettings, CircuitBreaker, qido_probe
from common.dicomweb.address import parse_dicomweb_address
from common.dicomweb.client import DicomwebClient
from common.errors import (
    AuthError,
    DicomwebConnectionError,
    DicomwebError,
    DicomwebHttpError,
    DicomwebTimeoutError,
    StoreUnavailableError,
)
from common.health import DicomwebCheck
from common.http import Body
from common.metrics import ExportMetrics, ImportMetrics
from common.retry import NO_RETRY, RetryPolicy, call_with_retry
from common.status import (
    STORE_DOWN,
    Status,
    find_status_for_error,
    retrieve_status_for_error,
    rule_for_error,
    store_status_for_error,
)

ROOT = "http://store.test:8042/dicom-web"
ADDRESS = parse_dicomweb_address(ROOT)
FAST = BreakerSettings(failure_threshold=3, probe_initial_delay=0.01, probe_max_delay=0.02)
REFUSED = DicomwebConnectionError("connection refused")


class _Observer:
    def __init__(self) -> None:
        self.states: list[tuple[str, bool]] = []
        self.refused: list[str] = []
        self._lock = threading.Lock()

    def store_state(self, destination: str, up: bool) -> None:
        with self._lock:
            self.states.append((destination, up))

    def store_refused(self, destination: str) -> None:
        with self._lock:
            self.refused.append(destination)


class _Probe:
    """A probe that fails with the scripted errors, then answers."""

    def __init__(
        self,
        *errors: Exception,
        forever: Exception | None = None,
        gate: threading.Event | None = None,
    ) -> None:
        self.errors = list(errors)
        self.forever = forever
        self.gate = gate  # set: probes may run (a test's own steps come first, under load too)
        self.calls = 0

    def __call__(self) -> None:
        if self.gate is not None:
            self.gate.wait(10)
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        if self.forever is not None:
            raise self.forever


def _breaker(probe: Callable[[], None], observer: _Observer | None = None,
             settings: BreakerSettings = FAST) -> CircuitBreaker:
    return CircuitBreaker(ROOT, settings, probe, observer or _Observer())


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# -- thresholds ------------------------------------------------------------------------------


def test_opens_after_the_threshold_of_failures_in_a_row() -> None:
    observer = _Observer()
    breaker = _breaker(_Probe(forever=REFUSED), observer)
    try:
        assert breaker.record_failure(REFUSED) is None
        assert breaker.record_failure(DicomwebTimeoutError("read timed out")) is None
        breaker.check()  # still closed
        opened = breaker.record_failure(REFUSED)
        assert isinstance(opened, StoreUnavailableError) and rule_for_error(opened) is STORE_DOWN
        assert breaker.is_open and breaker.down.is_set()
        assert ROOT in str(opened) and "connection refused" in str(opened)
        with pytest.raises(StoreUnavailableError):
            breaker.check()
        # A request in flight when it opened fails as "known down" too.
        assert isinstance(breaker.record_failure(REFUSED), StoreUnavailableError)
        assert observer.states == [(ROOT, True), (ROOT, False)]
        assert observer.refused == [ROOT]  # the request in flight was sent, not refused
    finally:
        breaker.close()


@pytest.mark.parametrize("status", [200, 401, 404, 500, 503])
def test_any_http_answer_resets_the_count(status: int) -> None:
    breaker = _breaker(_Probe(forever=REFUSED))
    try:
        for _ in range(5):
            assert breaker.record_failure(REFUSED) is None
            assert breaker.record_failure(REFUSED) is None
            breaker.record_answer()  # what the client does for any HTTP status
        assert not breaker.is_open
    finally:
        breaker.close()


def test_threshold_zero_turns_breakers_off() -> None:
    registry = BreakerRegistry(BreakerSettings(failure_threshold=0))
    assert registry.breaker(ADDRESS, _Probe()) is None
    assert registry.get(ADDRESS) is None


def test_one_breaker_per_root_in_a_registry() -> None:
    registry = BreakerRegistry(FAST)
    first = registry.breaker(ADDRESS, _Probe())
    again = registry.breaker(parse_dicomweb_address(ROOT + "/"), _Probe())
    other = registry.breaker(parse_dicomweb_address("http://other.test/dicom-web"), _Probe())
    assert first is not None and first is again and first is not other
    assert registry.get(ADDRESS) is first
    registry.close()


# -- probing ---------------------------------------------------------------------------------


def test_probe_closes_it_once_the_store_answers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="common.breaker")
    gate = threading.Event()
    probe = _Probe(REFUSED, DicomwebTimeoutError("timed out"), gate=gate)
    observer = _Observer()
    breaker = _breaker(probe, observer)
    try:
        for _ in range(3):
            breaker.record_failure(REFUSED)
        for _ in range(4):
            with pytest.raises(StoreUnavailableError):
                breaker.check()
        gate.set()
        _wait_for(lambda: not breaker.is_open)
        assert probe.calls == 3
        breaker.check()
        assert observer.states == [(ROOT, True), (ROOT, False), (ROOT, True)]
        # One line per state change, none per refused request.
        lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "common.breaker"]
        assert len(lines) == 2
        assert lines[0][0] == logging.WARNING and "unreachable" in lines[0][1]
        assert ROOT in lines[0][1] and "connection refused" in lines[0][1]
        assert lines[1][0] == logging.INFO and "reachable again" in lines[1][1]
        assert "4 requests were refused" in lines[1][1]
        # Closed again: the count starts from zero.
        assert breaker.record_failure(REFUSED) is None
        assert breaker.record_failure(REFUSED) is None
        assert breaker.record_failure(REFUSED) is not None
    finally:
        breaker.close()


@pytest.mark.parametrize(
    ("answer", "closes"),
    [
        (DicomwebHttpError(401), True),
        (DicomwebHttpError(403), True),
        (DicomwebHttpError(404), True),
        (DicomwebHttpError(500), True),
        (DicomwebHttpError(501), True),
        (DicomwebHttpError(502), False),
        (DicomwebHttpError(503), False),
        (DicomwebHttpError(504), False),
        (AuthError("no token"), False),
        (DicomwebConnectionError("refused"), False),
        (DicomwebTimeoutError("timed out"), False),
        (RuntimeError("a bug"), False),
    ],
)
def test_what_the_probe_takes_as_reachable(answer: Exception, closes: bool) -> None:
    probe = _Probe(forever=answer)
    breaker = _breaker(probe)
    try:
        for _ in range(3):
            breaker.record_failure(REFUSED)
        if closes:
            _wait_for(lambda: not breaker.is_open)
            assert probe.calls == 1
        else:
            _wait_for(lambda: probe.calls >= 3)
            assert breaker.is_open
            assert str(answer) in breaker.status()
    finally:
        breaker.close()


def test_probe_backoff_doubles_and_is_capped() -> None:
    waits: list[float] = []
    done = threading.Event()

    def wait(shutdown: threading.Event, seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) >= 6:
            done.set()
            return True  # as if shut down: the probe thread ends
        return False

    settings = BreakerSettings(probe_initial_delay=0.05, probe_max_delay=0.2)
    breaker = CircuitBreaker(ROOT, settings, _Probe(forever=REFUSED), _Observer(), wait=wait)
    try:
        for _ in range(3):
            breaker.record_failure(REFUSED)
        assert done.wait(5)
    finally:
        breaker.close()
    nominal = [0.05, 0.1, 0.2, 0.2, 0.2, 0.2]  # doubling, capped; each within +-10 % jitter
    assert all(0.9 * n <= w <= 1.1 * n for w, n in zip(waits, nominal, strict=True))


def _raise(error: Exception) -> None:
    raise error


def test_close_stops_the_probe_thread() -> None:
    probe = _Probe(forever=REFUSED)
    breaker = _breaker(probe, settings=BreakerSettings(probe_initial_delay=0.01,
                                                       probe_max_delay=60.0))
    for _ in range(3):
        breaker.record_failure(REFUSED)
    _wait_for(lambda: probe.calls >= 2)
    threads = [t for t in threading.enumerate() if t.name == "store-probe"]
    assert threads
    breaker.close()
    for thread in threads:
        thread.join(2)
        assert not thread.is_alive()
    assert breaker.is_open  # still refusing: the process is stopping


def test_a_registry_closed_first_starts_no_probe() -> None:
    registry = BreakerRegistry(FAST)
    registry.close()
    probe = _Probe()
    breaker = registry.breaker(ADDRESS, probe)
    assert breaker is not None
    for _ in range(3):
        breaker.record_failure(REFUSED)
    time.sleep(0.1)
    assert probe.calls == 0 and breaker.is_open


# -- thread safety ---------------------------------------------------------------------------


def test_concurrent_failures_open_it_once_and_refusals_are_all_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="common.breaker")
    observer = _Observer()
    breaker = _breaker(_Probe(forever=REFUSED), observer,
                       BreakerSettings(failure_threshold=50, probe_initial_delay=60))
    start = threading.Barrier(16)
    unavailable: list[int] = []
    lock = threading.Lock()

    def hammer() -> None:
        start.wait()
        count = 0
        for _ in range(200):
            if breaker.record_failure(REFUSED) is not None:
                count += 1
            try:
                breaker.check()
            except StoreUnavailableError:
                count += 1
        with lock:
            unavailable.append(count)

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    breaker.close()
    assert breaker.is_open
    assert observer.states == [(ROOT, True), (ROOT, False)]
    assert len([r for r in caplog.records if r.name == "common.breaker"]) == 1
    # 49 failures were counted while closed, every later one came back "unavailable"; every
    # check() that raised was counted as refused, once.
    assert sum(unavailable) == (16 * 200 - 49) + len(observer.refused)
    assert 0 < len(observer.refused) <= 16 * 200


# -- the client, the retry loop, readiness ---------------------------------------------------


@dataclass
class _Reply:
    status: int
    data: bytes = b"[]"
    headers: Mapping[str, str] = field(default_factory=dict)


class _Transport:
    """Refuses connections while ``down``; else answers 200 ``[]``."""

    def __init__(self) -> None:
        self.down = True
        self.requests: list[tuple[str, str, float | None]] = []
        self._lock = threading.Lock()

    def request(self, method: str, url: str, *, headers: Mapping[str, str],
                body: Body = None, stream: bool = False, timeout: float | None = None) -> Any:
        with self._lock:
            self.requests.append((method, url, timeout))
        if self.down:
            raise DicomwebConnectionError(f"{method} {url} failed: connection refused", url=url)
        return _Reply(200)

    def close(self) -> None:
        pass


_QUICK_RETRY = RetryPolicy(initial_delay=0.01, max_delay=0.02, budget=5)


def _client(transport: _Transport, registry: BreakerRegistry,
            retry: RetryPolicy = _QUICK_RETRY) -> DicomwebClient:
    return DicomwebClient(ADDRESS, transport, NoAuth(), retry, breakers=registry)


def test_client_fails_fast_once_the_store_is_known_down() -> None:
    transport = _Transport()
    registry = BreakerRegistry(BreakerSettings(probe_initial_delay=0.05, probe_max_delay=0.05))
    client = _client(transport, registry)
    other = _client(transport, registry, NO_RETRY)  # another client of the same root
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as caught:
            list(client.search(["studies"], []))
        # Three attempts, then the retry loop ends (its budget was 5 s).
        assert time.monotonic() - started < 1.0
        assert len(transport.requests) == 3
        assert isinstance(caught.value.__cause__, DicomwebConnectionError)
        assert store_status_for_error(caught.value).code == Status.OUT_OF_RESOURCES
        sent = [r for r in transport.requests if "limit=1" not in r[1]]
        for _ in range(20):
            with pytest.raises(StoreUnavailableError):
                other.delete(["studies", "1.2.3"])
        assert [r for r in transport.requests if "limit=1" not in r[1]] == sent
        transport.down = False
        _wait_for(lambda: not registry.get(ADDRESS).is_open)  # type: ignore[union-attr]
        assert list(client.search(["studies"], [])) == []
        probes = [r for r in transport.requests if r[1].endswith("/studies?limit=1")]
        assert probes and all(timeout == BreakerSettings().probe_timeout for *_, timeout in probes)
    finally:
        registry.close()


def test_a_retry_wait_ends_when_the_breaker_opens() -> None:
    transport = _Transport()
    registry = BreakerRegistry(BreakerSettings(failure_threshold=2, probe_initial_delay=60))
    waiting = threading.Event()
    slow = DicomwebClient(ADDRESS, transport, NoAuth(),
                          RetryPolicy(initial_delay=3, max_delay=3, budget=30),
                          on_retry=lambda _: waiting.set(), breakers=registry)
    fast = _client(transport, registry, NO_RETRY)
    try:
        done = threading.Event()
        outcome: list[BaseException] = []

        def store() -> None:
            try:
                slow.delete(["studies", "1"])
            except DicomwebError as exc:
                outcome.append(exc)
            done.set()

        threading.Thread(target=store).start()
        assert waiting.wait(2)  # the slow one failed once and waits 3 s now
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            fast.delete(["studies", "2"])  # the second failure in a row opens it
        assert done.wait(2)
        assert time.monotonic() - started < 1.0
        assert isinstance(outcome[0], StoreUnavailableError)
        assert len(transport.requests) == 2
    finally:
        registry.close()


def test_call_with_retry_does_not_retry_a_store_known_down() -> None:
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise StoreUnavailableError("known down")

    with pytest.raises(StoreUnavailableError):
        call_with_retry(down, RetryPolicy(initial_delay=0.01, budget=10), describe="x")
    assert calls == [1]


def test_stop_still_ends_a_wait_that_the_breaker_may_end() -> None:
    stop, wake = threading.Event(), threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(DicomwebConnectionError):
        call_with_retry(_raising(REFUSED), RetryPolicy(initial_delay=5, budget=60),
                        describe="x", stop=stop, wake=wake)
    assert time.monotonic() - started < 1.0


def _raising(error: Exception) -> Callable[[], None]:
    return lambda: _raise(error)


def test_http_errors_through_the_client_keep_it_closed() -> None:
    class _Flaky(_Transport):
        def request(self, method: str, url: str, **kwargs: Any) -> Any:
            self.requests.append((method, url, None))
            if len(self.requests) % 2:
                raise DicomwebConnectionError("refused")
            raise DicomwebHttpError(500)

    registry = BreakerRegistry(FAST)
    client = _client(_Flaky(), registry, NO_RETRY)
    try:
        for _ in range(10):
            with pytest.raises(DicomwebError) as caught:
                client.delete(["studies", "1"])
            assert not isinstance(caught.value, StoreUnavailableError)
        assert not registry.get(ADDRESS).is_open  # type: ignore[union-attr]
    finally:
        registry.close()


def test_auth_errors_do_not_count() -> None:
    class _NoToken(NoAuth):
        def headers(self) -> dict[str, str]:
            raise AuthError("metadata server unreachable")

    registry = BreakerRegistry(FAST)
    client = DicomwebClient(ADDRESS, _Transport(), _NoToken(), NO_RETRY, breakers=registry)
    try:
        for _ in range(5):
            with pytest.raises(AuthError):
                client.delete(["studies", "1"])
        assert not registry.get(ADDRESS).is_open  # type: ignore[union-attr]
    finally:
        registry.close()


def test_qido_probe_is_an_authenticated_limit_1_search() -> None:
    transport = _Transport()
    transport.down = False
    qido_probe(ADDRESS, transport, NoAuth(), 7.0)()
    assert transport.requests == [("GET", f"{ROOT}/studies?limit=1", 7.0)]


def test_readiness_reports_the_breaker_open_without_a_request() -> None:
    transport = _Transport()
    registry = BreakerRegistry(BreakerSettings(probe_initial_delay=60))
    breaker = registry.breaker(ADDRESS, _Probe())
    assert breaker is not None
    check = DicomwebCheck(DicomwebClient(ADDRESS, transport, NoAuth(), NO_RETRY), breaker)
    try:
        transport.down = False
        assert check.check().ok
        for _ in range(3):
            breaker.record_failure(REFUSED)
        sent = len(transport.requests)
        result = check.check()
        assert not result.ok and len(transport.requests) == sent
        assert result.detail.startswith("DICOMweb store unreachable: ")
        assert "known down" in result.detail and "connection refused" in result.detail
    finally:
        registry.close()


# -- statuses and metrics --------------------------------------------------------------------


def test_statuses_of_a_store_known_down() -> None:
    error = StoreUnavailableError("DICOMweb store http://x unreachable for 3 s, not tried")
    store = store_status_for_error(error)
    assert store.code == Status.OUT_OF_RESOURCES and store.code == 0xA700
    assert "unreachable" in store.comment and len(store.comment) <= 64
    find = find_status_for_error(error)
    assert find.code == Status.OUT_OF_RESOURCES and len(find.comment) <= 64
    assert retrieve_status_for_error(error).code == Status.OUT_OF_RESOURCES_MATCHES
    # One connection failure (not yet "known down") is still 0x0110 / 0xC000.
    assert store_status_for_error(REFUSED).code == Status.PROCESSING_FAILURE
    assert find_status_for_error(REFUSED).code == Status.UNABLE_TO_PROCESS


@pytest.mark.parametrize(("metrics", "prefix"), [(ImportMetrics, "import"),
                                                 (ExportMetrics, "export")])
def test_metrics_follow_the_breaker(metrics: Any, prefix: str) -> None:
    registry = CollectorRegistry()
    observer = metrics(registry)
    breaker = CircuitBreaker(ROOT, BreakerSettings(probe_initial_delay=60), _Probe(), observer)
    gauge = f"dicomadapter_{prefix}_dicomweb_store_up"
    refused = f"dicomadapter_{prefix}_dicomweb_store_refused_total"
    labels = {"destination": ROOT}
    try:
        assert registry.get_sample_value(gauge, labels) == 1
        for _ in range(3):
            breaker.record_failure(REFUSED)
        assert registry.get_sample_value(gauge, labels) == 0
        for _ in range(2):
            with pytest.raises(StoreUnavailableError):
                breaker.check()
        assert registry.get_sample_value(refused, labels) == 2
    finally:
        breaker.close()
