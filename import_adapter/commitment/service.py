"""Storage Commitment requests: validate, answer at once, then check and report in the background.

An N-ACTION (action type 1) names a Transaction UID and the SOP instances (class and instance
UID) to commit. It is answered Success as soon as it is understood; then, in a worker thread:

1. instances still queued in the spool are waited for (at most ``spool_wait`` seconds);
2. each instance is looked up with QIDO-RS in the store (the ``--dicomweb_address`` store):
   found with the same SOP class -> committed; found with another class -> 0x0119; absent ->
   0x0112; the lookup failed -> 0x0110;
3. the requester (its AE title looked up in the AET dictionary) gets an N-EVENT-REPORT on an
   association we open: event 1 when all are committed, else event 2 with FailedSOPSequence.
   An unreachable requester is retried with capped backoff for ``report_retry.budget`` seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from common.dicomweb.client import DicomwebApi
from common.dimse.aet_dictionary import AetDictionary
from common.dimse.sender import PeerAddress
from common.errors import AdapterError, CommitmentRequestError, DimseError
from common.lifecycle import Lifecycle
from common.metrics import NULL_IMPORT_OBSERVER, ImportObserver
from common.retry import RetryPolicy
from common.status import (
    SUCCESS,
    DimseStatus,
    Status,
    commitment_failure_reason,
    commitment_request_status,
)
from import_adapter.commitment.report import (
    EVENT_ALL_COMMITTED,
    EVENT_SOME_FAILED,
    ReportSettings,
    send_report,
)

LOG = logging.getLogger(__name__)

#: The only N-ACTION type of Storage Commitment Push Model: "Request Storage Commitment".
ACTION_REQUEST_COMMITMENT = 1
_SOP_CLASS_TAG = "00080016"
_LOOKUPS_IN_PARALLEL = 4


class PendingInstances(Protocol):
    """Instances received but not yet uploaded (the spool)."""

    def wait_uploaded(self, sop_instance_uids: Iterable[str], timeout: float) -> set[str]:
        """Wait until none is queued; return those still queued at ``timeout``."""
        ...


@dataclass(frozen=True)
class CommitmentSettings:
    """How Storage Commitment is served.

    Attributes:
        spool_wait: seconds to wait for referenced instances still in the spool.
        report_retry: backoff and time budget for reaching an unreachable requester.
        report: how the report association is requested.
        workers: commitment requests processed at once.
    """

    spool_wait: float = 120.0
    report_retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(initial_delay=1.0, max_delay=30.0, budget=3600.0)
    )
    report: ReportSettings = field(default_factory=ReportSettings)
    workers: int = 2


@dataclass(frozen=True)
class InstanceReference:
    """One SOP instance of a commitment request."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class CommitmentRequest:
    """A validated Storage Commitment request."""

    calling_aet: str
    transaction_uid: str
    instances: tuple[InstanceReference, ...]


def parse_request(calling_aet: str, action_type: int | None, info: Dataset) -> CommitmentRequest:
    """Validate an N-ACTION's Action Information.

    Raises:
        CommitmentRequestError: wrong action type, missing Transaction UID or references.
    """
    if action_type != ACTION_REQUEST_COMMITMENT:
        raise CommitmentRequestError(
            f"action type {action_type} is not 1", status=Status.NO_SUCH_ACTION_TYPE
        )
    transaction = str(info.get("TransactionUID", "") or "").strip()
    if not transaction:
        raise CommitmentRequestError("no Transaction UID", status=Status.MISSING_ATTRIBUTE)
    items = info.get("ReferencedSOPSequence")
    if not items:
        raise CommitmentRequestError(
            "no Referenced SOP Sequence", status=Status.MISSING_ATTRIBUTE
        )
    refs = []
    for index, item in enumerate(items):
        sop_class = str(item.get("ReferencedSOPClassUID", "") or "").strip()
        sop_instance = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
        if not sop_class or not sop_instance:
            raise CommitmentRequestError(
                f"Referenced SOP Sequence item {index} lacks a UID",
                status=Status.INVALID_ARGUMENT_VALUE,
            )
        refs.append(InstanceReference(sop_class, sop_instance))
    return CommitmentRequest(calling_aet, transaction, tuple(refs))


def build_report(
    transaction_uid: str,
    committed: list[InstanceReference],
    failed: list[tuple[InstanceReference, int]],
) -> tuple[int, Dataset]:
    """The N-EVENT-REPORT event type and Event Information (PS3.4 J.3.3.1)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    if committed:
        ds.ReferencedSOPSequence = DicomSequence([_item(ref) for ref in committed])
    if failed:
        items = []
        for ref, reason in failed:
            item = _item(ref)
            item.FailureReason = reason
            items.append(item)
        ds.FailedSOPSequence = DicomSequence(items)
    return (EVENT_SOME_FAILED if failed else EVENT_ALL_COMMITTED), ds


def _item(ref: InstanceReference) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_instance_uid
    return item


class CommitmentService:
    """The Storage Commitment SCP's logic, independent of pynetdicom's events."""

    def __init__(
        self,
        client: DicomwebApi,
        requesters: AetDictionary,
        settings: CommitmentSettings,
        lifecycle: Lifecycle,
        pending: PendingInstances | None = None,
        sender: Callable[[PeerAddress, int, Dataset, ReportSettings], DimseStatus] = send_report,
        *,
        observer: ImportObserver = NULL_IMPORT_OBSERVER,
    ) -> None:
        self._observer = observer
        self._client = client
        self._requesters = requesters
        self._settings = settings
        self._lifecycle = lifecycle
        self._pending = pending
        self._send = sender
        self._executor = ThreadPoolExecutor(settings.workers, thread_name_prefix="commitment")
        self._lookups = ThreadPoolExecutor(_LOOKUPS_IN_PARALLEL, thread_name_prefix="commit-qido")
        self._active: set[str] = set()
        self._lock = threading.Lock()

    def request(self, calling_aet: str, action_type: int | None, info: Dataset) -> DimseStatus:
        """Accept (Success) or refuse one N-ACTION; the report follows in the background."""
        try:
            request = parse_request(calling_aet, action_type, info)
            requester = self._requesters.lookup(calling_aet)
            if requester is None:
                raise CommitmentRequestError(
                    f"AE title {calling_aet!r} is not in the AET dictionary",
                    status=Status.PROCESSING_FAILURE,
                )
            with self._lock:
                if request.transaction_uid in self._active:
                    raise CommitmentRequestError(
                        "transaction already in progress", status=Status.DUPLICATE_TRANSACTION_UID
                    )
                self._active.add(request.transaction_uid)
            self._executor.submit(self._process, request, requester)
        except Exception as exc:  # every refusal becomes an N-ACTION status
            status = commitment_request_status(exc)
            LOG.warning(
                "storage commitment request from %s refused: %s", calling_aet, status,
                exc_info=not isinstance(exc, AdapterError),
            )
            return status
        LOG.info(
            "storage commitment transaction %s from %s: %d instances",
            request.transaction_uid, calling_aet, len(request.instances),
        )
        return SUCCESS

    def _process(self, request: CommitmentRequest, requester: PeerAddress) -> None:
        try:
            committed, failed = self.check(request)
            event_type, report = build_report(request.transaction_uid, committed, failed)
            self._deliver(request, requester, event_type, report)
        except Exception:
            LOG.exception("storage commitment transaction %s failed", request.transaction_uid)
        finally:
            with self._lock:
                self._active.discard(request.transaction_uid)

    def check(
        self, request: CommitmentRequest
    ) -> tuple[list[InstanceReference], list[tuple[InstanceReference, int]]]:
        """Which instances the store has (after waiting for those still in the spool)."""
        if self._pending is not None:
            still = self._pending.wait_uploaded(
                (ref.sop_instance_uid for ref in request.instances), self._settings.spool_wait
            )
            if still:
                LOG.warning(
                    "transaction %s: %d instances still in the spool after %.0f s",
                    request.transaction_uid, len(still), self._settings.spool_wait,
                )
        reasons = list(self._lookups.map(self._lookup, request.instances))
        committed = [ref for ref, reason in zip(request.instances, reasons, strict=True)
                     if reason is None]
        failed = [(ref, reason) for ref, reason in zip(request.instances, reasons, strict=True)
                  if reason is not None]
        return committed, failed

    def _lookup(self, ref: InstanceReference) -> int | None:
        """None when the store holds the instance with its class, else the FailureReason."""
        try:
            results = list(self._client.search(
                ("instances",), [("SOPInstanceUID", ref.sop_instance_uid)], page_size=10
            ))
        except AdapterError as exc:
            LOG.warning("QIDO lookup of %s failed: %s", ref.sop_instance_uid, exc)
            return int(commitment_failure_reason(exc))
        if not results:
            return int(commitment_failure_reason(None))
        classes = {_first_value(r, _SOP_CLASS_TAG) for r in results}
        if ref.sop_class_uid in classes or classes == {None}:
            return None
        return int(Status.CLASS_INSTANCE_CONFLICT)

    def _deliver(
        self, request: CommitmentRequest, requester: PeerAddress, event_type: int, report: Dataset
    ) -> None:
        policy = self._settings.report_retry
        delays = iter(policy.delays())
        stop = self._lifecycle.stop_requested
        attempt = 1
        while True:
            try:
                status = self._send(requester, event_type, report, self._settings.report)
            except DimseError as exc:
                delay = next(delays, None)
                if delay is None or stop.is_set():
                    LOG.error(
                        "storage commitment report %s to %s not delivered after %d attempts: %s",
                        request.transaction_uid, requester, attempt, exc,
                    )
                    return
                LOG.warning(
                    "storage commitment report %s to %s failed (attempt %d: %s); "
                    "retrying in %.1f s", request.transaction_uid, requester, attempt, exc, delay,
                )
                if stop.wait(delay):
                    return
                attempt += 1
                continue
            LOG.info(
                "storage commitment report %s (event %d) sent to %s: %s",
                request.transaction_uid, event_type, requester, status,
            )
            failed = len(report.get("FailedSOPSequence", []))
            committed = len(report.get("ReferencedSOPSequence", []))
            self._observer.commitment_done(requester.ae_title, committed + failed, failed)
            return

    def stop(self) -> None:
        """Stop taking work; reports in progress end at their next wait."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._lookups.shutdown(wait=False, cancel_futures=True)


def _first_value(result: dict[str, Any], tag: str) -> str | None:
    element = result.get(tag)
    if isinstance(element, dict):
        value = element.get("Value")
        if isinstance(value, list) and value:
            return str(value[0])
    return None
