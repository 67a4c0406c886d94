"""A circuit breaker per DICOMweb root: once the store is known down, fail at once.

Without it, every request to a store that cannot be reached waits out the whole retry budget
before failing: a C-STORE is answered only after ``--stow_retry_budget`` seconds (an SCU whose
DIMSE timeout is shorter aborts the association instead of getting a status) and a 500-image
study takes hours to fail. With it:

- After :attr:`BreakerSettings.failure_threshold` connection failures or timeouts **in a row**
  (:class:`~common.errors.DicomwebConnectionError`, :class:`~common.errors.DicomwebTimeoutError`)
  across every client of the root, the store is known down: the breaker *opens*. The request
  whose failure opened it, requests in flight that fail afterwards, and every request made
  while it is open raise :class:`~common.errors.StoreUnavailableError` at once, without
  touching the network; retry loops stop on it (and stop waiting as soon as it opens, see
  :func:`common.retry.call_with_retry`'s ``wake``).
- While open, a background thread probes the store with an authenticated
  ``GET {root}/studies?limit=1`` (:func:`qido_probe`, the readiness check's request) with capped
  exponential backoff (:attr:`BreakerSettings.probe_initial_delay` doubling up to
  :attr:`BreakerSettings.probe_max_delay`). The first probe the store answers *closes* it.
  Only the probe closes it: answers to requests that were in flight when it opened do not.

What counts, and what the probe takes as "reachable":

=============================================  ======================  =========================
outcome                                        requests (closed)       probe (open)
=============================================  ======================  =========================
connection refused/reset, DNS, TLS, timeout    one more in a row       still down
HTTP 2xx, 3xx, 4xx (401/403 included), 500,    resets the count        reachable: closes
501, other 5xx
HTTP 502, 503, 504                             resets the count        still down
credentials cannot be obtained (AuthError)     neither                 neither: probe again
=============================================  ======================  =========================

Any HTTP answer proves that the store's address answers, so it resets the count: a store
that answers 5xx is handled by the retry policy and the failure table, not by the breaker.
The probe is stricter about 502/503/504: those are what a gateway or load balancer answers for
a backend that is still down (the same outage that opened the breaker, seen through a front
end that came back first). A 401/403 closes it: the store is reachable, and the C-STOREs then
get the credential error's own status (0x0124) instead of "unreachable".

One breaker per DICOMweb root, shared by every client of that root in the process: a
:class:`BreakerRegistry` built once in an app's wiring and passed to each
:class:`~common.dicomweb.client.DicomwebClient`. State changes are logged once each (WARNING
when it opens, with the last error; INFO when it closes, with how long it was down and how many
requests were refused), and reported to a :class:`~common.metrics.BreakerObserver`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.auth import Authenticator
from common.dicomweb.address import DicomwebAddress
from common.errors import (
    AuthError,
    DicomwebConnectionError,
    DicomwebError,
    DicomwebHttpError,
    DicomwebTimeoutError,
    StoreUnavailableError,
)
from common.http import Transport, redact_url
from common.metrics import NULL_BREAKER_OBSERVER, BreakerObserver
from common.retry import RetryPolicy

LOG = logging.getLogger(__name__)

#: A probe: returns when the store answered; raises :class:`DicomwebError` (or
#: :class:`AuthError`) otherwise.
Probe = Callable[[], None]

#: Probe answers that do not close the breaker: a front end answering for a backend still down.
GATEWAY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class BreakerSettings:
    """When a DICOMweb store is known down, and how it is probed meanwhile.

    Attributes:
        failure_threshold: connection failures or timeouts in a row (over every request to the
            root) after which the store is known down (``--store_down_after_failures``);
            0 turns the breaker off.
        probe_initial_delay: seconds from opening to the first probe.
        probe_max_delay: the cap on the delay between probes (the delay doubles, +-10 %).
        probe_timeout: seconds a probe waits for the store's answer.
    """

    failure_threshold: int = 3
    probe_initial_delay: float = 0.5
    probe_max_delay: float = 10.0
    probe_timeout: float = 10.0

    @property
    def enabled(self) -> bool:
        """Whether requests go through a breaker at all."""
        return self.failure_threshold > 0


def qido_probe(
    address: DicomwebAddress, transport: Transport, auth: Authenticator, timeout: float
) -> Probe:
    """The probe of one root: an authenticated ``GET {root}/studies?limit=1``.

    It does not go through the breaker (nor retry, nor re-authenticate after a 401: any answer
    will do). Raises what the transport raises, or :class:`AuthError`.
    """
    url = address.url("studies", query=[("limit", "1")])

    def probe() -> None:
        headers = {"Accept": "application/dicom+json", **auth.headers()}
        transport.request("GET", url, headers=headers, timeout=timeout)

    return probe


class CircuitBreaker:
    """The breaker of one DICOMweb root (thread-safe); see the module docstring."""

    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        probe: Probe,
        observer: BreakerObserver = NULL_BREAKER_OBSERVER,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event, float], bool] = threading.Event.wait,
    ) -> None:
        #: The root, without credentials: for logs, error messages and metric labels.
        self.name = name
        self._settings = settings
        self._probe = probe
        self._observer = observer
        self._clock = clock
        self._wait = wait  # (shutdown event, seconds) -> whether shutdown came first
        self._lock = threading.Lock()
        self._failures = 0  # in a row, while closed
        self._opened_at: float | None = None
        self._last_error = ""
        self._refused = 0  # while open
        self._probe_thread: threading.Thread | None = None
        self._shutdown = threading.Event()
        #: Set while open. Retry waits end on it (the next attempt then fails at once).
        self.down = threading.Event()
        observer.store_state(name, True)

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name}, {'open' if self.is_open else 'closed'})"

    @property
    def is_open(self) -> bool:
        """Whether the store is known down."""
        return self.down.is_set()

    def check(self) -> None:
        """Before a request: refuse it while open.

        Raises:
            StoreUnavailableError: the store is known down (counted as a refused request).
        """
        error = self.refusal()
        if error is not None:
            raise error

    def refusal(self) -> StoreUnavailableError | None:
        """While open, count one refused request and return the error to raise; else None."""
        if not self.down.is_set():
            return None
        with self._lock:
            if self._opened_at is None:
                return None
            self._refused += 1
            error = self._unavailable()
        self._observer.store_refused(self.name)
        return error

    def record_answer(self) -> None:
        """The store answered a request (any HTTP status): the failures in a row are over."""
        with self._lock:
            self._failures = 0

    def record_failure(self, error: DicomwebError) -> StoreUnavailableError | None:
        """A request got no answer (connection failure or timeout).

        Returns the error to raise instead of ``error`` when the store is now known down (this
        failure opened the breaker, or it was already open), else None.
        """
        with self._lock:
            if self._opened_at is not None:
                return self._unavailable()
            self._failures += 1
            self._last_error = str(error)
            if self._failures < self._settings.failure_threshold:
                return None
            failures = self._failures
            self._opened_at = self._clock()
            self._refused = 0
            self.down.set()
            if not self._shutdown.is_set():
                self._probe_thread = threading.Thread(
                    target=self._run_probes, name="store-probe", daemon=True
                )
                self._probe_thread.start()
            unavailable = self._unavailable()
        LOG.warning(
            "DICOMweb store %s unreachable (%d failures in a row, last: %s): refusing requests "
            "to it at once until a probe is answered",
            self.name, failures, error,
        )
        self._observer.store_state(self.name, False)
        return unavailable

    def status(self) -> str:
        """A one-line account of the state (for readiness details)."""
        with self._lock:
            if self._opened_at is None:
                return f"{self.name} answers ({self._failures} failures in a row)"
            return (
                f"{self.name} known down for {self._clock() - self._opened_at:.0f} s, requests "
                f"refused at once while probing (last error: {self._last_error})"
            )

    def close(self, timeout: float = 2.0) -> None:
        """Stop probing (at shutdown); waits up to ``timeout`` for a probe in flight."""
        self._shutdown.set()
        with self._lock:
            thread = self._probe_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- internals ----------------------------------------------------------------------------

    def _unavailable(self) -> StoreUnavailableError:
        """The error for a refused request (call with the lock held)."""
        down_for = 0.0 if self._opened_at is None else self._clock() - self._opened_at
        return StoreUnavailableError(
            f"DICOMweb store {self.name} unreachable for {down_for:.0f} s, not tried "
            f"(last error: {self._last_error})",
            url=self.name,
        )

    def _run_probes(self) -> None:
        schedule = RetryPolicy(
            initial_delay=self._settings.probe_initial_delay,
            max_delay=self._settings.probe_max_delay,
        ).backoff()
        for delay in schedule:
            # Jitter: the breakers of several replicas do not probe a store in step.
            if self._wait(self._shutdown, delay * random.uniform(0.9, 1.1)):
                return
            failure = self._probe_once()
            if failure is None:
                self._close_circuit()
                return
            with self._lock:
                self._last_error = failure
            LOG.debug("DICOMweb store %s still unreachable: %s", self.name, failure)

    def _probe_once(self) -> str | None:
        """None when the store answered, else why not."""
        try:
            self._probe()
        except DicomwebHttpError as exc:
            return str(exc) if exc.status in GATEWAY_STATUSES else None
        except (DicomwebConnectionError, DicomwebTimeoutError) as exc:
            return str(exc)
        except AuthError as exc:
            return f"credentials unavailable for the probe: {exc}"
        except Exception as exc:  # a probe must not kill its thread, whatever went wrong
            LOG.debug("probe of %s failed", self.name, exc_info=True)
            return f"probe failed: {type(exc).__name__}: {exc}"
        return None

    def _close_circuit(self) -> None:
        with self._lock:
            opened_at, self._opened_at = self._opened_at, None
            self._failures = 0
            refused, self._refused = self._refused, 0
            self._probe_thread = None
            self.down.clear()
        down_for = 0.0 if opened_at is None else self._clock() - opened_at
        LOG.info(
            "DICOMweb store %s reachable again after %.1f s down; %d requests were refused "
            "meanwhile",
            self.name, down_for, refused,
        )
        self._observer.store_state(self.name, True)


class BreakerRegistry:
    """The breakers of one process, by DICOMweb root (built once in an app's wiring)."""

    def __init__(
        self,
        settings: BreakerSettings | None = None,
        observer: BreakerObserver = NULL_BREAKER_OBSERVER,
    ) -> None:
        self.settings = settings if settings is not None else BreakerSettings()
        self._observer = observer
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._closed = False

    def breaker(self, address: DicomwebAddress, probe: Probe) -> CircuitBreaker | None:
        """The breaker of ``address``'s root, made with ``probe`` if it is the first asked for.

        None when breakers are turned off (:attr:`BreakerSettings.enabled`).
        """
        if not self.settings.enabled:
            return None
        with self._lock:
            breaker = self._breakers.get(address.root)
            if breaker is None:
                breaker = CircuitBreaker(
                    redact_url(address.root), self.settings, probe, self._observer
                )
                if self._closed:
                    breaker.close()
                self._breakers[address.root] = breaker
            return breaker

    def get(self, address: DicomwebAddress) -> CircuitBreaker | None:
        """The breaker of ``address``'s root if a client made one."""
        with self._lock:
            return self._breakers.get(address.root)

    def close(self) -> None:
        """Stop every probe (at shutdown)."""
        with self._lock:
            self._closed = True
            breakers = list(self._breakers.values())
        for breaker in breakers:
            breaker.close()
