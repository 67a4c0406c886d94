"""Prometheus metrics behind the observer interfaces: values, labels, no global registry."""

from __future__ import annotations

import threading

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from common.metrics import (
    NULL_EXPORT_OBSERVER,
    NULL_IMPORT_OBSERVER,
    OVERFLOW_LABEL,
    ExportMetrics,
    ExportObserver,
    ImportMetrics,
    ImportObserver,
    LabelLimiter,
    new_registry,
)
from common.status import DimseStatus, Status

OK = DimseStatus(Status.SUCCESS)
WARN = DimseStatus(Status.COERCION_OF_DATA_ELEMENTS)
FAIL = DimseStatus(Status.PROCESSING_FAILURE, "HTTP 500")
CANCEL = DimseStatus(Status.CANCEL)
ALLOWED_LABELS = {"calling_aet", "destination", "le", "quantile"}


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    sample = registry.get_sample_value(name, labels)
    return 0.0 if sample is None else sample


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_cstore_counts_requests_errors_bytes_and_latency(registry: CollectorRegistry) -> None:
    metrics = ImportMetrics(registry)
    metrics.cstore_done("MODALITY", 1000, OK, 0.02)
    metrics.cstore_done("MODALITY", 500, WARN, 0.03)
    metrics.cstore_done("MODALITY", 0, FAIL, 1.5)
    metrics.cstore_done("OTHER ", 10, OK, 0.01)  # AE titles are trimmed
    aet = {"calling_aet": "MODALITY"}
    assert value(registry, "dicomadapter_import_cstore_requests_total", **aet) == 3
    assert value(registry, "dicomadapter_import_cstore_errors_total", **aet) == 1
    assert value(registry, "dicomadapter_import_cstore_bytes_total", **aet) == 1500
    assert value(registry, "dicomadapter_import_cstore_stow_seconds_count", **aet) == 3
    assert value(registry, "dicomadapter_import_cstore_stow_seconds_sum", **aet) == pytest.approx(
        1.55
    )
    assert value(
        registry, "dicomadapter_import_cstore_stow_seconds_bucket", le="0.025", **aet
    ) == 1
    assert value(registry, "dicomadapter_import_cstore_requests_total", calling_aet="OTHER") == 1


def test_cfind_and_cmove_outcomes(registry: CollectorRegistry) -> None:
    metrics = ImportMetrics(registry)
    metrics.cfind_done("WS", OK, 12, 0.2)
    metrics.cfind_done("WS", CANCEL, 3, 0.1)
    metrics.cfind_done("WS", DimseStatus(Status.UNABLE_TO_PROCESS), 0, 0.1)
    ws = {"calling_aet": "WS"}
    assert value(registry, "dicomadapter_import_cfind_requests_total", **ws) == 3
    assert value(registry, "dicomadapter_import_cfind_matches_total", **ws) == 15
    assert value(registry, "dicomadapter_import_cfind_cancels_total", **ws) == 1
    assert value(registry, "dicomadapter_import_cfind_errors_total", **ws) == 1

    move = {"calling_aet": "WS", "destination": "PACS"}
    metrics.cmove_done("WS", "PACS", OK, 10, 0, 0, 1.0)
    metrics.cmove_done("WS", "PACS", DimseStatus(Status.SUB_OPERATIONS_COMPLETE_WITH_FAILURES),
                       8, 2, 0, 1.0)
    metrics.cmove_done("WS", "PACS", DimseStatus(Status.MOVE_DESTINATION_UNKNOWN), 0, 0, 0, 0.1)
    metrics.cmove_done("WS", "PACS", CANCEL, 1, 0, 0, 0.1)
    assert value(registry, "dicomadapter_import_cmove_requests_total", **move) == 4
    assert value(registry, "dicomadapter_import_cmove_warnings_total", **move) == 1
    assert value(registry, "dicomadapter_import_cmove_errors_total", **move) == 1
    assert value(registry, "dicomadapter_import_cmove_cancels_total", **move) == 1

    metrics.cmove_sub_cstore("PACS", 100, True)
    metrics.cmove_sub_cstore("PACS", 50, False)
    pacs = {"destination": "PACS"}
    assert value(registry, "dicomadapter_import_cmove_sub_cstore_requests_total", **pacs) == 2
    assert value(registry, "dicomadapter_import_cmove_sub_cstore_errors_total", **pacs) == 1
    assert value(registry, "dicomadapter_import_cmove_sub_cstore_bytes_total", **pacs) == 150


def test_commitment_associations_retries_and_spool(registry: CollectorRegistry) -> None:
    metrics = ImportMetrics(registry)
    metrics.commitment_done("MOD", 5, 0)
    metrics.commitment_done("MOD", 5, 2)
    assert value(registry, "dicomadapter_import_commitment_requests_total", calling_aet="MOD") == 2
    assert value(registry, "dicomadapter_import_commitment_errors_total", calling_aet="MOD") == 1

    metrics.association_opened("MOD")
    metrics.association_opened("MOD")
    metrics.association_closed("MOD")
    metrics.association_rejected("STRANGER")
    assert value(registry, "dicomadapter_import_open_associations", calling_aet="MOD") == 1
    assert value(registry, "dicomadapter_import_associations_total", calling_aet="MOD") == 2
    assert value(
        registry, "dicomadapter_import_associations_rejected_total", calling_aet="STRANGER"
    ) == 1

    metrics.dicomweb_retry(RuntimeError("503"))
    assert value(registry, "dicomadapter_import_dicomweb_retries_total") == 1

    metrics.spool_state(7, 42.5)
    assert value(registry, "dicomadapter_import_spool_depth") == 7
    assert value(registry, "dicomadapter_import_spool_oldest_age_seconds") == 42.5


def test_export_metrics(registry: CollectorRegistry) -> None:
    metrics = ExportMetrics(registry)
    metrics.export_done("PACS", 2048, True, 0.5)
    metrics.export_done("PACS", 0, False, 0.1)
    metrics.retry("PACS")
    metrics.dead_lettered("PACS")
    pacs = {"destination": "PACS"}
    assert value(registry, "dicomadapter_export_total_requests_total", **pacs) == 2
    assert value(registry, "dicomadapter_export_total_errors_total", **pacs) == 1
    assert value(registry, "dicomadapter_export_total_bytes_total", **pacs) == 2048
    assert value(registry, "dicomadapter_export_retries_total", **pacs) == 1
    assert value(registry, "dicomadapter_export_dead_letters_total", **pacs) == 1
    assert value(registry, "dicomadapter_export_export_seconds_count", **pacs) == 2


def test_registries_are_independent_and_the_global_one_is_untouched() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    ImportMetrics(first).cstore_done("A", 1, OK, 0.1)
    ImportMetrics(second)  # registering the same names twice works: no global state
    assert value(first, "dicomadapter_import_cstore_requests_total", calling_aet="A") == 1
    assert value(second, "dicomadapter_import_cstore_requests_total", calling_aet="A") == 0
    assert prometheus_client.REGISTRY.get_sample_value(
        "dicomadapter_import_cstore_requests_total", {"calling_aet": "A"}
    ) is None


def test_labels_are_only_ae_titles_and_destinations(registry: CollectorRegistry) -> None:
    imports, exports = ImportMetrics(registry), ExportMetrics(registry)
    imports.cstore_done("A", 1, OK, 0.1)
    imports.cfind_done("A", OK, 1, 0.1)
    imports.cmove_done("A", "B", OK, 1, 0, 0, 0.1)
    imports.cmove_sub_cstore("B", 1, True)
    imports.commitment_done("A", 1, 0)
    imports.association_opened("A")
    imports.association_rejected("A")
    exports.export_done("B", 1, True, 0.1)
    exports.retry("B")
    exports.dead_lettered("B")
    for family in registry.collect():
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, (sample.name, sample.labels)


def test_label_values_are_capped() -> None:
    limiter = LabelLimiter(limit=3)
    assert [limiter(x) for x in ("A", "B", "C", "D", "A", " ")] == [
        "A", "B", "C", OVERFLOW_LABEL, "A", OVERFLOW_LABEL
    ]
    registry = CollectorRegistry()
    metrics = ImportMetrics(registry, label_limit=2)
    for aet in ("A", "B", "C", "D"):
        metrics.cstore_done(aet, 1, OK, 0.1)
    assert value(
        registry, "dicomadapter_import_cstore_requests_total", calling_aet=OVERFLOW_LABEL
    ) == 2


def test_label_limiter_is_thread_safe() -> None:
    limiter = LabelLimiter(limit=50)
    results: list[str] = []
    lock = threading.Lock()

    def work(start: int) -> None:
        for i in range(start, start + 100):
            got = limiter(f"AE{i}")
            with lock:
                results.append(got)

    threads = [threading.Thread(target=work, args=(n * 100,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r for r in results if r != OVERFLOW_LABEL}) == 50


def test_new_registry_has_info_and_process_metrics() -> None:
    registry = new_registry("import", "1.2.3")
    assert value(registry, "dicomadapter_info", service="import", version="1.2.3") == 1
    text = prometheus_client.generate_latest(registry).decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert "process_cpu_seconds" in names or "process_resident_memory_bytes" in names


def test_null_observers_accept_every_call() -> None:
    imports: ImportObserver = NULL_IMPORT_OBSERVER
    exports: ExportObserver = NULL_EXPORT_OBSERVER
    imports.cstore_done("A", 1, OK, 0.1)
    imports.cfind_done("A", OK, 1, 0.1)
    imports.cmove_done("A", "B", OK, 1, 0, 0, 0.1)
    imports.cmove_sub_cstore("B", 1, True)
    imports.commitment_done("A", 1, 0)
    imports.dicomweb_retry(RuntimeError())
    imports.association_opened("A")
    imports.association_closed("A")
    imports.association_rejected("A")
    imports.spool_state(0, 0.0)
    exports.export_done("B", 1, True, 0.1)
    exports.retry("B")
    exports.dead_lettered("B")
    # The Prometheus implementations satisfy the same interfaces (checked by mypy too).
    registry = CollectorRegistry()
    implementations: list[ImportObserver] = [ImportMetrics(registry)]
    assert implementations
