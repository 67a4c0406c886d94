"""Prometheus metrics of both adapters, behind small observer interfaces.

Services never touch Prometheus: they call an observer (:class:`ImportObserver`,
:class:`ExportObserver`) passed to their constructor, e.g.
``observer.cstore_done(calling_aet, size, status, seconds)``. The Prometheus implementations
(:class:`ImportMetrics`, :class:`ExportMetrics`) register their collectors on a
:class:`~prometheus_client.CollectorRegistry` that is also passed in (one per process, built in
the app's wiring), never on prometheus_client's global default registry; the ``NULL_*``
observers do nothing and are the defaults, so services and tests need no metrics at all.

Metric names follow the events the reference adapter reports to Cloud Monitoring
(``custom.googleapis.com/dicomadapter/import/cstore_requests`` becomes
``dicomadapter_import_cstore_requests_total``). Labels are the calling AE title and the
destination (a C-MOVE destination AE title, an export peer) only: never patient data, never
UIDs. The number of distinct values of a label is capped (:data:`MAX_LABEL_VALUES`) so that
peers inventing AE titles cannot grow the registry without bound; the excess is counted under
``other``.

Wiring status (what calls which observer method):

- import C-STORE: :class:`import_adapter.store.StoreService` -> ``cstore_done``; associations:
  :class:`import_adapter.associations.AssociationMetrics`; DICOMweb retries: the client's
  ``on_retry`` (all wired in ``import_adapter/app.py``).
- import C-FIND: :class:`import_adapter.query.service.FindService` -> ``cfind_done`` once per
  request (final status; Cancel after a C-CANCEL; an unreadable request too).
- import C-MOVE/C-GET: :class:`import_adapter.retrieve.service.RetrieveService` -> ``cmove_done``
  once per request (destination = the move destination AE, or the calling AE for C-GET) and
  ``cmove_sub_cstore`` per sub-operation, counted by
  :class:`import_adapter.retrieve.tally.SubOperationTally`.
- export: :class:`export_adapter.exporter.Exporter` -> ``export_done``/``retry``/
  ``dead_lettered`` (next to ``ExportCounters``); ``export_adapter/app.py`` builds
  ``ExportMetrics(new_registry("export", version))`` and serves it with
  :class:`common.health.HealthServer` on ``--metrics_port`` (readiness: the streaming pull runs
  and the source answers); the chart's ``export.metrics.enabled`` (on by default) sets the port,
  probes and scrape annotations.
- storage commitment: :class:`import_adapter.commitment.service.CommitmentService` ->
  ``commitment_done`` once a report is delivered.
- spool: :class:`import_adapter.spool.manager.SpoolManager` -> ``spool_state(depth,
  oldest_age)`` from its periodic rescan of the queues.
- DICOMweb store up/down: :class:`common.breaker.CircuitBreaker` -> ``store_state``/
  ``store_refused`` (:class:`BreakerObserver`, implemented by both :class:`ImportMetrics` and
  :class:`ExportMetrics`; the registry of breakers is built in each app's wiring).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from common.status import DimseStatus, Status

NAMESPACE = "dicomadapter"
#: Distinct values a label may take before further values are folded into ``other``.
MAX_LABEL_VALUES = 200
OVERFLOW_LABEL = "other"
UNKNOWN_LABEL = "unknown"
#: Latency buckets (seconds) for C-STORE -> STOW-RS and exports: 5 ms to 5 minutes.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)


class LabelLimiter:
    """Caps the distinct values one label may take (thread-safe)."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        """The label value to use for ``value`` (trimmed; ``other`` past the cap)."""
        text = (value or "").strip() or UNKNOWN_LABEL
        with self._lock:
            if text in self._seen:
                return text
            if len(self._seen) >= self._limit:
                return OVERFLOW_LABEL
            self._seen.add(text)
            return text


# -- DICOMweb stores known down (circuit breakers) ------------------------------------------------


class BreakerObserver(Protocol):
    """What a :class:`common.breaker.CircuitBreaker` reports (both adapters' metrics)."""

    def store_state(self, destination: str, up: bool) -> None:
        """The DICOMweb store ``destination`` (a root URL) is up (breaker closed) or down."""
        ...

    def store_refused(self, destination: str) -> None:
        """A request to ``destination`` was refused at once: the store is known down."""
        ...


class NullBreakerObserver:
    """A :class:`BreakerObserver` that records nothing (the default)."""

    def store_state(self, destination: str, up: bool) -> None:
        """Ignored."""

    def store_refused(self, destination: str) -> None:
        """Ignored."""


NULL_BREAKER_OBSERVER = NullBreakerObserver()


class _StoreMetrics:
    """``dicomweb_store_up`` and ``dicomweb_store_refused`` of one adapter (by destination)."""

    def __init__(self, registry: CollectorRegistry, subsystem: str, label_limit: int) -> None:
        self._destination = LabelLimiter(label_limit)
        self.up = Gauge(
            "dicomweb_store_up",
            "1 while the DICOMweb store answers, 0 while it is known down (circuit breaker "
            "open: requests to it are refused at once).",
            ("destination",),
            namespace=NAMESPACE,
            subsystem=subsystem,
            registry=registry,
        )
        self.refused = Counter(
            "dicomweb_store_refused",
            "Requests refused at once because their DICOMweb store was known down.",
            ("destination",),
            namespace=NAMESPACE,
            subsystem=subsystem,
            registry=registry,
        )

    def store_state(self, destination: str, up: bool) -> None:
        """Set the gauge of ``destination``."""
        self.up.labels(self._destination(destination)).set(1 if up else 0)

    def store_refused(self, destination: str) -> None:
        """Count one refused request to ``destination``."""
        self.refused.labels(self._destination(destination)).inc()


# -- import adapter --------------------------------------------------------------------------------


class ImportObserver(Protocol):
    """What the import adapter's services report (implemented by :class:`ImportMetrics`)."""

    def cstore_done(
        self, calling_aet: str, size: int, status: DimseStatus, seconds: float
    ) -> None:
        """One C-STORE answered: ``size`` dataset bytes, ``seconds`` from receipt to answer."""
        ...

    def cfind_done(
        self, calling_aet: str, status: DimseStatus, matches: int, seconds: float
    ) -> None:
        """One C-FIND finished (final status) after returning ``matches`` results."""
        ...

    def cmove_done(
        self,
        calling_aet: str,
        destination: str,
        status: DimseStatus,
        completed: int,
        failed: int,
        warning: int,
        seconds: float,
    ) -> None:
        """One C-MOVE (or C-GET) finished with its sub-operation counts."""
        ...

    def cmove_sub_cstore(self, destination: str, size: int, ok: bool) -> None:
        """One C-STORE sub-operation of a C-MOVE/C-GET sent ``size`` bytes."""
        ...

    def commitment_done(self, calling_aet: str, instances: int, failed: int) -> None:
        """One storage commitment request answered (N-EVENT-REPORT sent)."""
        ...

    def dicomweb_retry(self, error: BaseException) -> None:
        """A transient DICOMweb failure is about to be retried."""
        ...

    def association_opened(self, calling_aet: str) -> None:
        """An association was established."""
        ...

    def association_closed(self, calling_aet: str) -> None:
        """An established association ended (released, aborted or dropped)."""
        ...

    def association_rejected(self, calling_aet: str) -> None:
        """An association request was rejected."""
        ...

    def spool_state(self, depth: int, oldest_age_seconds: float) -> None:
        """The durable spool holds ``depth`` items, the oldest received that long ago."""
        ...

    def upload_concurrency(self, destination: str, limit: int) -> None:
        """A spool destination may now have ``limit`` uploads in flight."""
        ...

    def upload_paused(self, destination: str, seconds: float) -> None:
        """A spool destination said it is overloaded (429/503): paused for ``seconds``."""
        ...


class NullImportObserver:
    """An :class:`ImportObserver` that records nothing (the default)."""

    def cstore_done(
        self, calling_aet: str, size: int, status: DimseStatus, seconds: float
    ) -> None:
        """Ignored."""

    def cfind_done(
        self, calling_aet: str, status: DimseStatus, matches: int, seconds: float
    ) -> None:
        """Ignored."""

    def cmove_done(
        self,
        calling_aet: str,
        destination: str,
        status: DimseStatus,
        completed: int,
        failed: int,
        warning: int,
        seconds: float,
    ) -> None:
        """Ignored."""

    def cmove_sub_cstore(self, destination: str, size: int, ok: bool) -> None:
        """Ignored."""

    def commitment_done(self, calling_aet: str, instances: int, failed: int) -> None:
        """Ignored."""

    def dicomweb_retry(self, error: BaseException) -> None:
        """Ignored."""

    def association_opened(self, calling_aet: str) -> None:
        """Ignored."""

    def association_closed(self, calling_aet: str) -> None:
        """Ignored."""

    def association_rejected(self, calling_aet: str) -> None:
        """Ignored."""

    def spool_state(self, depth: int, oldest_age_seconds: float) -> None:
        """Ignored."""

    def upload_concurrency(self, destination: str, limit: int) -> None:
        """Ignored."""

    def upload_paused(self, destination: str, seconds: float) -> None:
        """Ignored."""


NULL_IMPORT_OBSERVER = NullImportObserver()


def _is_error(status: DimseStatus) -> bool:
    return status.is_failure


class ImportMetrics:
    """The import adapter's Prometheus metrics, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry, *, label_limit: int = MAX_LABEL_VALUES):
        self._aet = LabelLimiter(label_limit)
        self._destination = LabelLimiter(label_limit)
        # The C-STORE metrics' children by calling AE (bounded by the label limiter).
        self._cstore_children: dict[str, tuple[Any, Any, Any]] = {}
        aet = ("calling_aet",)
        aet_dest = ("calling_aet", "destination")
        dest = ("destination",)

        def counter(name: str, doc: str, labels: Iterable[str] = aet) -> Counter:
            return Counter(
                name, doc, labels, namespace=NAMESPACE, subsystem="import", registry=registry
            )

        self.cstore_requests = counter("cstore_requests", "C-STORE requests answered.")
        self.cstore_errors = counter(
            "cstore_errors", "C-STORE requests answered with a failure status."
        )
        self.cstore_bytes = counter(
            "cstore_bytes", "Dataset bytes received by C-STORE (without file meta)."
        )
        self.cstore_seconds = Histogram(
            "cstore_stow_seconds",
            "Seconds from a C-STORE dataset received to its answer (check + STOW-RS done).",
            aet,
            namespace=NAMESPACE,
            subsystem="import",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.cfind_requests = counter("cfind_requests", "C-FIND requests finished.")
        self.cfind_errors = counter("cfind_errors", "C-FIND requests ending in a failure.")
        self.cfind_cancels = counter("cfind_cancels", "C-FIND requests cancelled by the SCU.")
        self.cfind_matches = counter("cfind_matches", "C-FIND results returned.")
        self.cfind_seconds = Histogram(
            "cfind_seconds",
            "Seconds a C-FIND took, from request to final response.",
            aet,
            namespace=NAMESPACE,
            subsystem="import",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.cmove_requests = counter(
            "cmove_requests", "C-MOVE/C-GET requests finished.", aet_dest
        )
        self.cmove_errors = counter(
            "cmove_errors", "C-MOVE/C-GET requests ending in a failure.", aet_dest
        )
        self.cmove_cancels = counter(
            "cmove_cancels", "C-MOVE/C-GET requests cancelled by the SCU.", aet_dest
        )
        self.cmove_warnings = counter(
            "cmove_warnings",
            "C-MOVE/C-GET requests completed with some failed sub-operations.",
            aet_dest,
        )
        self.cmove_sub_cstore_requests = counter(
            "cmove_sub_cstore_requests", "C-STORE sub-operations of C-MOVE/C-GET sent.", dest
        )
        self.cmove_sub_cstore_errors = counter(
            "cmove_sub_cstore_errors", "C-STORE sub-operations of C-MOVE/C-GET failed.", dest
        )
        self.cmove_sub_cstore_bytes = counter(
            "cmove_sub_cstore_bytes", "Bytes sent by C-STORE sub-operations.", dest
        )
        self.commitment_requests = counter(
            "commitment_requests", "Storage commitment requests answered."
        )
        self.commitment_errors = counter(
            "commitment_errors", "Storage commitment requests with failed instances."
        )
        self.associations = counter("associations", "Associations established.")
        self.associations_rejected = counter(
            "associations_rejected", "Association requests rejected."
        )
        self.open_associations = Gauge(
            "open_associations",
            "Associations currently established.",
            aet,
            namespace=NAMESPACE,
            subsystem="import",
            registry=registry,
        )
        self.dicomweb_retries = Counter(
            "dicomweb_retries",
            "Transient DICOMweb failures retried.",
            namespace=NAMESPACE,
            subsystem="import",
            registry=registry,
        )
        self.spool_depth = Gauge(
            "spool_depth",
            "Instances held in the durable spool, not yet delivered.",
            namespace=NAMESPACE,
            subsystem="import",
            registry=registry,
        )
        self.spool_oldest_age = Gauge(
            "spool_oldest_age_seconds",
            "Age of the oldest instance in the durable spool (0 when empty).",
            namespace=NAMESPACE,
            subsystem="import",
            registry=registry,
        )
        self._stores = _StoreMetrics(registry, "import", label_limit)
        self.upload_limit = Gauge(
            "upload_concurrency",
            "Uploads a spool destination may have in flight now (adaptive).",
            ["destination"],
            namespace=NAMESPACE,
            subsystem="import",
            registry=registry,
        )
        self.upload_pauses = counter(
            "upload_pauses",
            "Times a spool destination answered 429/503 and all its uploads were paused.",
            dest,
        )
        self.upload_paused_seconds = counter(
            "upload_paused_seconds",
            "Seconds of pause asked of spool destinations by 429/503 answers.",
            dest,
        )

    def cstore_done(
        self, calling_aet: str, size: int, status: DimseStatus, seconds: float
    ) -> None:
        """Count one C-STORE, its bytes, its latency, and whether it failed."""
        aet = self._aet(calling_aet)
        children = self._cstore_children.get(aet)
        if children is None:  # labels() takes a lock and checks its arguments on every call
            children = (
                self.cstore_requests.labels(aet),
                self.cstore_bytes.labels(aet),
                self.cstore_seconds.labels(aet),
            )
            self._cstore_children[aet] = children
        requests, received, seconds_histogram = children
        requests.inc()
        received.inc(max(size, 0))
        seconds_histogram.observe(max(seconds, 0.0))
        if _is_error(status):
            self.cstore_errors.labels(aet).inc()

    def cfind_done(
        self, calling_aet: str, status: DimseStatus, matches: int, seconds: float
    ) -> None:
        """Count one C-FIND, its results and latency; failures and cancels separately."""
        aet = self._aet(calling_aet)
        self.cfind_requests.labels(aet).inc()
        self.cfind_matches.labels(aet).inc(max(matches, 0))
        self.cfind_seconds.labels(aet).observe(max(seconds, 0.0))
        if status.code == Status.CANCEL:
            self.cfind_cancels.labels(aet).inc()
        elif _is_error(status):
            self.cfind_errors.labels(aet).inc()

    def cmove_done(
        self,
        calling_aet: str,
        destination: str,
        status: DimseStatus,
        completed: int,
        failed: int,
        warning: int,
        seconds: float,
    ) -> None:
        """Count one C-MOVE/C-GET by outcome (sub-operations are counted one by one)."""
        labels = (self._aet(calling_aet), self._destination(destination))
        self.cmove_requests.labels(*labels).inc()
        if status.code == Status.CANCEL:
            self.cmove_cancels.labels(*labels).inc()
        elif _is_error(status):
            self.cmove_errors.labels(*labels).inc()
        elif failed or warning or status.is_warning:
            self.cmove_warnings.labels(*labels).inc()

    def cmove_sub_cstore(self, destination: str, size: int, ok: bool) -> None:
        """Count one C-STORE sub-operation."""
        dest = self._destination(destination)
        self.cmove_sub_cstore_requests.labels(dest).inc()
        self.cmove_sub_cstore_bytes.labels(dest).inc(max(size, 0))
        if not ok:
            self.cmove_sub_cstore_errors.labels(dest).inc()

    def commitment_done(self, calling_aet: str, instances: int, failed: int) -> None:
        """Count one storage commitment request (an error when any instance failed)."""
        aet = self._aet(calling_aet)
        self.commitment_requests.labels(aet).inc()
        if failed:
            self.commitment_errors.labels(aet).inc()

    def dicomweb_retry(self, error: BaseException) -> None:
        """Count one retried DICOMweb request."""
        self.dicomweb_retries.inc()

    def association_opened(self, calling_aet: str) -> None:
        """One more open association."""
        aet = self._aet(calling_aet)
        self.associations.labels(aet).inc()
        self.open_associations.labels(aet).inc()

    def association_closed(self, calling_aet: str) -> None:
        """One fewer open association."""
        self.open_associations.labels(self._aet(calling_aet)).dec()

    def association_rejected(self, calling_aet: str) -> None:
        """Count one rejected association request."""
        self.associations_rejected.labels(self._aet(calling_aet)).inc()

    def spool_state(self, depth: int, oldest_age_seconds: float) -> None:
        """Set the spool gauges."""
        self.spool_depth.set(max(depth, 0))
        self.spool_oldest_age.set(max(oldest_age_seconds, 0.0))

    def store_state(self, destination: str, up: bool) -> None:
        """Set ``dicomadapter_import_dicomweb_store_up{destination}``."""
        self._stores.store_state(destination, up)

    def store_refused(self, destination: str) -> None:
        """Count one request refused because the store was known down."""
        self._stores.store_refused(destination)

    def upload_concurrency(self, destination: str, limit: int) -> None:
        """Set a destination's upload concurrency gauge."""
        self.upload_limit.labels(self._destination(destination)).set(limit)

    def upload_paused(self, destination: str, seconds: float) -> None:
        """Count one overload pause of a destination."""
        label = self._destination(destination)
        self.upload_pauses.labels(label).inc()
        self.upload_paused_seconds.labels(label).inc(max(seconds, 0.0))


# -- export adapter --------------------------------------------------------------------------------


class ExportObserver(Protocol):
    """What the export adapter reports (implemented by :class:`ExportMetrics`)."""

    def export_done(self, destination: str, size: int, ok: bool, seconds: float) -> None:
        """One notification handled: ``size`` bytes sent, ``ok`` when the peer accepted it."""
        ...

    def retry(self, destination: str) -> None:
        """A transient failure: the message is nacked for redelivery (or retried)."""
        ...

    def dead_lettered(self, destination: str) -> None:
        """A message that can never succeed was sent to the dead-letter topic (or dropped)."""
        ...


class NullExportObserver:
    """An :class:`ExportObserver` that records nothing (the default)."""

    def export_done(self, destination: str, size: int, ok: bool, seconds: float) -> None:
        """Ignored."""

    def retry(self, destination: str) -> None:
        """Ignored."""

    def dead_lettered(self, destination: str) -> None:
        """Ignored."""


NULL_EXPORT_OBSERVER = NullExportObserver()


class ExportMetrics:
    """The export adapter's Prometheus metrics (``total_*`` as the reference adapter)."""

    def __init__(self, registry: CollectorRegistry, *, label_limit: int = MAX_LABEL_VALUES):
        self._destination = LabelLimiter(label_limit)
        dest = ("destination",)

        def counter(name: str, doc: str) -> Counter:
            return Counter(
                name, doc, dest, namespace=NAMESPACE, subsystem="export", registry=registry
            )

        self.total_requests = counter("total_requests", "Instances exported or attempted.")
        self.total_errors = counter("total_errors", "Exports that failed.")
        self.total_bytes = counter("total_bytes", "Bytes sent to the peer.")
        self.retries = counter("retries", "Transient failures (message nacked or retried).")
        self.dead_letters = counter(
            "dead_letters", "Messages that can never succeed, sent to the dead-letter topic."
        )
        self.export_seconds = Histogram(
            "export_seconds",
            "Seconds from a notification received to the peer's answer.",
            dest,
            namespace=NAMESPACE,
            subsystem="export",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._stores = _StoreMetrics(registry, "export", label_limit)

    def export_done(self, destination: str, size: int, ok: bool, seconds: float) -> None:
        """Count one export and its bytes and latency."""
        dest = self._destination(destination)
        self.total_requests.labels(dest).inc()
        self.total_bytes.labels(dest).inc(max(size, 0))
        self.export_seconds.labels(dest).observe(max(seconds, 0.0))
        if not ok:
            self.total_errors.labels(dest).inc()

    def retry(self, destination: str) -> None:
        """Count one transient failure."""
        self.retries.labels(self._destination(destination)).inc()

    def dead_lettered(self, destination: str) -> None:
        """Count one dead-lettered message."""
        self.dead_letters.labels(self._destination(destination)).inc()

    def store_state(self, destination: str, up: bool) -> None:
        """Set ``dicomadapter_export_dicomweb_store_up{destination}`` (source or peer)."""
        self._stores.store_state(destination, up)

    def store_refused(self, destination: str) -> None:
        """Count one request refused because the store was known down."""
        self._stores.store_refused(destination)


# -- process ---------------------------------------------------------------------------------------


def new_registry(service: str, version: str) -> CollectorRegistry:
    """A fresh registry with process/platform collectors and ``dicomadapter_info``.

    Args:
        service: ``import`` or ``export`` (a label of the info metric).
        version: the package version.
    """
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    info = Gauge(
        "info",
        "Always 1; labels say which service and version this process runs.",
        ("service", "version"),
        namespace=NAMESPACE,
        registry=registry,
    )
    info.labels(service, version).set(1)
    return registry
