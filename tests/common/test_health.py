"""The /metrics, /healthz, /readyz endpoint and its readiness checks (no network but loopback)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from common.errors import (
    AuthError,
    ConfigError,
    DicomwebConnectionError,
    DicomwebHttpError,
)
from common.health import (
    CachedCheck,
    CheckResult,
    DicomwebCheck,
    FunctionCheck,
    HealthConfig,
    HealthServer,
    Readiness,
)
from common.metrics import ImportMetrics
from common.status import DimseStatus, Status


def get(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


class Switch:
    """A readiness check whose answer the test sets."""

    def __init__(self, name: str, ok: bool = True) -> None:
        self.name = name
        self.ok = ok
        self.calls = 0

    def check(self) -> CheckResult:
        self.calls += 1
        return CheckResult(self.ok, "fine" if self.ok else "broken")


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[HealthServer] = []

    def factory(checks: Sequence[Any], registry: CollectorRegistry | None = None,
                cache_seconds: float = 0.0) -> HealthServer:
        config = HealthConfig(port=0, bind_address="127.0.0.1", cache_seconds=cache_seconds,
                              check_timeout=2.0)
        server = HealthServer(config, registry or CollectorRegistry(), checks)
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


def test_healthz_metrics_and_unknown_paths(serve: Any) -> None:
    registry = CollectorRegistry()
    ImportMetrics(registry).cstore_done("MOD", 10, DimseStatus(Status.SUCCESS), 0.1)
    server = serve([], registry)
    assert get(server.port, "/healthz")[::2] == (200, "ok\n")
    status, content_type, body = get(server.port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert 'dicomadapter_import_cstore_requests_total{calling_aet="MOD"} 1.0' in body
    assert get(server.port, "/nothing")[0] == 404
    assert get(server.port, "/healthz", method="HEAD")[::2] == (200, "")


def test_metrics_in_openmetrics_when_asked(serve: Any) -> None:
    server = serve([])
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert response.read().decode().rstrip().endswith("# EOF")


def test_readyz_reflects_every_check(serve: Any) -> None:
    listener, store = Switch("dimse_listener"), Switch("dicomweb")
    server = serve([listener, store])
    status, content_type, body = get(server.port, "/readyz")
    assert status == 200 and content_type == "application/json"
    assert json.loads(body) == {
        "ready": True,
        "checks": {
            "dimse_listener": {"ok": True, "detail": "fine"},
            "dicomweb": {"ok": True, "detail": "fine"},
        },
    }
    store.ok = False
    status, _, body = get(server.port, "/readyz")
    assert status == 503
    assert json.loads(body)["checks"]["dicomweb"] == {"ok": False, "detail": "broken"}
    assert get(server.port, "/healthz")[0] == 200  # liveness is independent of readiness


def test_readiness_is_cached(serve: Any) -> None:
    store = Switch("dicomweb")
    server = serve([store], cache_seconds=60)
    for _ in range(5):
        assert get(server.port, "/readyz")[0] == 200
    assert store.calls == 1


def test_cached_check_expires_and_times_out() -> None:
    now = [0.0]
    switch = Switch("x")
    cached = CachedCheck(switch, cache_seconds=5, timeout=1, clock=lambda: now[0])
    assert cached.check().ok and switch.calls == 1
    now[0] = 4.9
    cached.check()
    assert switch.calls == 1
    now[0] = 5.0
    cached.check()
    assert switch.calls == 2

    release = threading.Event()

    def slow() -> CheckResult:
        release.wait(10)
        return CheckResult(True, "late")

    hanging = CachedCheck(FunctionCheck("slow", slow), cache_seconds=0, timeout=0.2)
    started = time.monotonic()
    result = hanging.check()
    assert not result.ok and "did not answer in 0.2 s" in result.detail
    assert time.monotonic() - started < 2
    assert not hanging.check().ok  # still running: not started twice, still failing
    release.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not hanging.check().ok:
        time.sleep(0.05)
    assert hanging.check().detail == "late"


def test_function_check_turns_exceptions_into_failures() -> None:
    def boom() -> CheckResult:
        raise RuntimeError("kaput")

    result = FunctionCheck("boom", boom).check()
    assert not result.ok and "RuntimeError: kaput" in result.detail


def test_readiness_changes_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    store = Switch("dicomweb")
    readiness = Readiness([store])
    with caplog.at_level(logging.INFO, logger="common.health"):
        readiness.evaluate()
        readiness.evaluate()
        store.ok = False
        readiness.evaluate()
        readiness.evaluate()
        store.ok = True
        readiness.evaluate()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["ready: all checks pass", "not ready: dicomweb: broken",
                        "ready: all checks pass"]


class FakeClient:
    """A DicomwebApi whose search raises or returns what the test says."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.searches: list[tuple[Sequence[str], Any, int]] = []

    def search(self, resource: Sequence[str], query: Any, *, page_size: int = 1000,
               parallel: int = 1) -> Iterator[dict[str, Any]]:
        self.searches.append((resource, list(query), page_size))
        if self.error is not None:
            raise self.error
        yield {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}
        raise AssertionError("the probe must read one result only")

    def store(self, instance: Any) -> Any:
        raise NotImplementedError

    def store_batch(self, instances: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def retrieve(self, resource: Sequence[str], *, accept: str = "") -> Any:
        raise NotImplementedError

    def delete(self, resource: Sequence[str]) -> None:
        raise NotImplementedError


def test_dicomweb_check_makes_one_cheap_qido() -> None:
    client = FakeClient()
    assert DicomwebCheck(client).check() == CheckResult(True, "QIDO-RS answered")
    assert client.searches == [(("studies",), [("includefield", "StudyInstanceUID")], 1)]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DicomwebHttpError(403, reason="Forbidden", body_excerpt="Permission denied"),
         "refused our credentials"),
        (DicomwebHttpError(401, reason="Unauthorized"), "roles/healthcare.dicomEditor"),
        (DicomwebHttpError(404, reason="Not Found"), "answered an error: HTTP 404"),
        (DicomwebConnectionError("connection refused"), "unreachable: connection refused"),
        (AuthError("no default credentials"), "cannot obtain credentials"),
        (ValueError("odd"), "ValueError: odd"),
    ],
)
def test_dicomweb_check_explains_failures(error: Exception, expected: str) -> None:
    result = DicomwebCheck(FakeClient(error)).check()
    assert not result.ok
    assert expected in result.detail


def test_port_in_use_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HealthServer(HealthConfig(port=port, bind_address="127.0.0.1"),
                              CollectorRegistry())
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            server.start()


def test_config_port_zero_means_off() -> None:
    assert not HealthConfig().enabled
    assert HealthConfig(port=9090).enabled


def test_advisory_check_reports_without_gating() -> None:
    from common.health import AdvisoryCheck, CheckResult, FunctionCheck

    failing = FunctionCheck("dicomweb", lambda: CheckResult(False, "store unreachable"))
    advisory = AdvisoryCheck(failing, "durable spool with --auto_ack_cstore")
    result = advisory.check()
    assert result.ok and "store unreachable" in result.detail and advisory.name == "dicomweb"
    passing = AdvisoryCheck(FunctionCheck("x", lambda: CheckResult(True, "fine")), "why")
    assert passing.check() == CheckResult(True, "fine")


def test_an_instant_check_is_not_cached_and_decides_without_the_slow_ones(serve: Any) -> None:
    """Shutdown shows at the next probe: the listener check is read every time, and once it
    fails the answer does not wait for a slow store check."""
    stopping = threading.Event()
    slow_calls = []

    def slow() -> CheckResult:
        slow_calls.append(time.monotonic())
        time.sleep(1.5)
        return CheckResult(True, "QIDO-RS answered")

    def listener() -> CheckResult:
        return CheckResult(not stopping.is_set(), "shutting down" if stopping.is_set() else "up")

    server = serve([FunctionCheck("dicomweb", slow),
                    FunctionCheck("dimse_listener", listener, instant=True)], cache_seconds=60)
    assert get(server.port, "/readyz")[0] == 200  # runs the slow check once, then cached
    stopping.set()
    started = time.monotonic()
    status, _, body = get(server.port, "/readyz")
    assert status == 503 and time.monotonic() - started < 0.5
    assert json.loads(body)["checks"] == {"dimse_listener": {"ok": False,
                                                             "detail": "shutting down"}}
    assert len(slow_calls) == 1
