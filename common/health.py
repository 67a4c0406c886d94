"""The operations HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz`` on one port.

- ``/metrics``: the process's Prometheus registry (text format, or OpenMetrics if asked).
- ``/healthz``: 200 while the process serves HTTP at all (the liveness probe).
- ``/readyz``: 200 when every readiness check passes, else 503; the body is JSON naming each
  check and why it failed. The import adapter checks that its DIMSE listener is up and that
  the DICOMweb store answers an authenticated QIDO-RS (``studies?limit=1``) and is not known
  down (its circuit breaker, :mod:`common.breaker`, open).

Each check's result is cached for :attr:`HealthConfig.cache_seconds`, so probes from kubelet and
scrapes from several Prometheus servers cost at most one QIDO-RS per period; a check that
takes longer than :attr:`HealthConfig.check_timeout` counts as failed (and is not started again
until it returns). *Instant* checks (in-process state, such as "shutting down") are neither
cached nor waited behind: they run first, and when one fails the answer is 503 at once, without
the others. A change of readiness is logged once, with the reason.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from common.breaker import CircuitBreaker
from common.dicomweb.client import DicomwebApi
from common.errors import AuthError, ConfigError, DicomwebError, DicomwebHttpError

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthConfig:
    """The operations endpoint.

    Attributes:
        port: TCP port of ``/metrics``, ``/healthz`` and ``/readyz`` (0 = not served).
        bind_address: the interface to listen on.
        cache_seconds: how long a readiness check's result is reused.
        check_timeout: seconds a readiness check may take before it counts as failed.
    """

    port: int = 0
    bind_address: str = "0.0.0.0"
    cache_seconds: float = 5.0
    check_timeout: float = 5.0

    @property
    def enabled(self) -> bool:
        """Whether the endpoint is served at all."""
        return self.port > 0


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one readiness check: ``detail`` says why (logs-safe, no PHI)."""

    ok: bool
    detail: str


class ReadinessCheck(Protocol):
    """One condition for being ready to take traffic."""

    @property
    def name(self) -> str:
        """A short identifier (``dimse_listener``, ``dicomweb``)."""
        ...

    def check(self) -> CheckResult:
        """Evaluate the condition now; must not raise."""
        ...


@dataclass(frozen=True)
class FunctionCheck:
    """A readiness check from a function returning a :class:`CheckResult`.

    ``instant``: the function is cheap and in-process (a flag, a state), so it is evaluated at
    every probe instead of cached: a change such as the start of a shutdown shows at once.
    """

    name: str
    function: Callable[[], CheckResult]
    instant: bool = False

    def check(self) -> CheckResult:
        """Call the function; an exception is a failed check."""
        try:
            return self.function()
        except Exception as exc:  # a probe must answer, whatever went wrong
            return CheckResult(False, f"check raised {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class AdvisoryCheck:
    """Reports another check's outcome without letting it gate readiness.

    With a durable spool and early acknowledgement, the adapter keeps taking images while the
    store is down (they wait in the spool); turning the pods unready then would make the load
    balancer refuse modalities for no reason. The detail still says what is wrong.
    """

    inner: ReadinessCheck
    why: str

    @property
    def name(self) -> str:
        """The inner check's name."""
        return self.inner.name

    def check(self) -> CheckResult:
        """Always ok; the inner result's detail when it failed."""
        result = self.inner.check()
        if result.ok:
            return result
        return CheckResult(True, f"{result.detail} (not gating readiness: {self.why})")


class DicomwebCheck:
    """Ready when the DICOMweb store answers an authenticated ``QIDO-RS studies?limit=1``.

    Give it a client without retries and with short timeouts: a probe must answer quickly,
    and a store that needs retries is not ready. Give it no circuit breaker either (a slow
    answer to a readiness probe must not make the store "known down" for the C-STOREs), but
    the store's ``breaker``: while it is open the store is not ready, with the breaker's
    account as the reason, and no request is made.
    """

    name = "dicomweb"

    def __init__(self, client: DicomwebApi, breaker: CircuitBreaker | None = None) -> None:
        self._client = client
        self._breaker = breaker

    def check(self) -> CheckResult:
        """One QIDO-RS; the error, classified for the operator, when it fails."""
        if self._breaker is not None and self._breaker.is_open:
            return CheckResult(False, f"DICOMweb store unreachable: {self._breaker.status()}")
        results: Iterator[dict[str, Any]] | None = None
        try:
            results = self._client.search(
                ("studies",), [("includefield", "StudyInstanceUID")], page_size=1
            )
            next(iter(results), None)
        except DicomwebHttpError as exc:
            if exc.status in (401, 403):
                return CheckResult(
                    False,
                    f"DICOMweb store refused our credentials ({exc}); check the service "
                    "account's roles (roles/healthcare.dicomEditor) and OAuth scopes",
                )
            return CheckResult(False, f"DICOMweb store answered an error: {exc}")
        except AuthError as exc:
            return CheckResult(False, f"cannot obtain credentials: {exc}")
        except DicomwebError as exc:
            return CheckResult(False, f"DICOMweb store unreachable: {exc}")
        except Exception as exc:  # a probe must answer, whatever went wrong
            return CheckResult(False, f"QIDO-RS probe failed: {type(exc).__name__}: {exc}")
        finally:
            close = getattr(results, "close", None)
            if callable(close):
                close()
        return CheckResult(True, "QIDO-RS answered")


class CachedCheck:
    """Runs a check at most once per ``cache_seconds``, giving up on it after ``timeout``."""

    def __init__(
        self,
        check: ReadinessCheck,
        *,
        cache_seconds: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = check.name
        self._check = check
        self._cache_seconds = cache_seconds
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._result: CheckResult | None = None
        self._checked_at = float("-inf")
        self._running: threading.Event | None = None

    def check(self) -> CheckResult:
        """The cached result if fresh, else the result of a new run (or a timeout failure)."""
        with self._lock:
            if self._result is not None and self._clock() - self._checked_at < self._cache_seconds:
                return self._result
            done = self._running
            if done is None:
                done = self._running = threading.Event()
                threading.Thread(
                    target=self._run, args=(done,), name=f"readyz-{self.name}", daemon=True
                ).start()
        if not done.wait(self._timeout):
            return CheckResult(False, f"{self.name} check did not answer in {self._timeout:g} s")
        with self._lock:
            assert self._result is not None
            return self._result

    def _run(self, done: threading.Event) -> None:
        result = self._check.check()
        with self._lock:
            self._result = result
            self._checked_at = self._clock()
            self._running = None
        done.set()


class Readiness:
    """All readiness checks of a process; logs when readiness changes."""

    def __init__(self, checks: Sequence[ReadinessCheck]) -> None:
        # Instant checks first (a stable sort keeps the given order otherwise).
        self._checks = sorted(checks, key=lambda check: not _is_instant(check))
        self._lock = threading.Lock()
        self._last: bool | None = None

    def evaluate(self) -> tuple[bool, dict[str, CheckResult]]:
        """Whether every check passes, and the result of each check that was run.

        A failed instant check ends the evaluation: the slower checks are not waited for.
        """
        results: dict[str, CheckResult] = {}
        for check in self._checks:
            result = results[check.name] = check.check()
            if not result.ok and _is_instant(check):
                break
        ready = all(result.ok for result in results.values())
        with self._lock:
            changed, self._last = self._last != ready, ready
        if changed:
            if ready:
                LOG.info("ready: all checks pass")
            else:
                reasons = "; ".join(f"{k}: {v.detail}" for k, v in results.items() if not v.ok)
                LOG.warning("not ready: %s", reasons)
        return ready, results


def _is_instant(check: ReadinessCheck) -> bool:
    return isinstance(check, FunctionCheck) and check.instant


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: probes every few seconds would drown the service's own lines."""

    def do_HEAD(self) -> None:
        self._dispatch(send_body=False)

    def do_GET(self) -> None:
        self._dispatch(send_body=True)

    def _dispatch(self, *, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._reply(200, content_type, encoder(self.server.registry), send_body)
        elif path == "/healthz":
            self._reply(200, "text/plain; charset=utf-8", b"ok\n", send_body)
        elif path == "/readyz":
            ready, results = self.server.readiness.evaluate()
            body = {
                "ready": ready,
                "checks": {k: {"ok": v.ok, "detail": v.detail} for k, v in results.items()},
            }
            payload = (json.dumps(body, sort_keys=True) + "\n").encode()
            self._reply(200 if ready else 503, "application/json", payload, send_body)
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found\n", send_body)

    def _reply(self, status: int, content_type: str, body: bytes, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], registry: CollectorRegistry, readiness: Readiness
    ) -> None:
        self.registry = registry
        self.readiness = readiness
        super().__init__(address, _Handler)


class HealthServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` in a background thread."""

    def __init__(
        self,
        config: HealthConfig,
        registry: CollectorRegistry,
        checks: Sequence[ReadinessCheck] = (),
    ) -> None:
        self._config = config
        self._registry = registry
        self.readiness = Readiness(
            [
                c if isinstance(c, FunctionCheck) and c.instant else CachedCheck(
                    c, cache_seconds=config.cache_seconds, timeout=config.check_timeout
                )
                for c in checks
            ]
        )
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0 in tests)."""
        if self._server is None:
            return self._config.port
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve in a daemon thread.

        Raises:
            ConfigError: the address cannot be bound.
        """
        address = (self._config.bind_address, self._config.port)
        try:
            self._server = _Server(address, self._registry, self.readiness)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {address[0]}:{address[1]}: {exc.strerror or exc}"
            ) from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="health-http",
            daemon=True,
        )
        self._thread.start()
        LOG.info(
            "metrics and health endpoints on http://%s:%d (/metrics, /healthz, /readyz)",
            address[0],
            self.port,
        )

    def stop(self) -> None:
        """Stop serving."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

