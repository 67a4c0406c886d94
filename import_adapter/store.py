"""C-STORE: check a received, spooled dataset and hand it to a sink.

Protocol-free: :class:`StoreService` takes a :class:`StoreRequest` (what the C-STORE handler,
:mod:`import_adapter.store_handler`, read off the request) and returns a
:class:`~common.status.DimseStatus`. The sink is an :class:`~common.sinks.InstanceSink` (STOW-RS,
the spool, or a transformation before either). Every error becomes a status through
:func:`common.status.store_status_for_error`; nothing escapes to the DIMSE engine.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from common.dicom.part10 import IN_MEMORY_LIMIT, Part10Instance, dataset_offset, meta_end
from common.dicom.scan import scan_buffer, scan_dataset
from common.dimse.after_response import defer
from common.errors import AdapterError, MalformedDatasetError, UidMismatchError
from common.lifecycle import Lifecycle
from common.metrics import NULL_IMPORT_OBSERVER, ImportObserver
from common.sinks import InstanceSink, Origin
from common.status import DimseStatus, store_status_for_error
from import_adapter.commitment.known_studies import KnownStudies

LOG = logging.getLogger(__name__)

#: The bytes of a Part 10 file that hold its preamble and file meta group length.
_META_HEAD = 144


@dataclass(frozen=True)
class StoreRequest:
    """One received C-STORE request whose dataset has been spooled to a file.

    Attributes:
        calling_aet / called_aet: the association's AE titles.
        message_id: the request's Message ID.
        sop_class_uid / sop_instance_uid: the Affected SOP Class/Instance UIDs of the command.
        transfer_syntax_uid: the presentation context's transfer syntax.
        spool_path: a Part 10 file holding the dataset exactly as received; when ``content``
            is set, it only names where that file would go, and may not exist.
        content: the Part 10 file's bytes when the receiver kept them (small files: our engine
            then writes no file at all); None: read ``spool_path``.
    """

    calling_aet: str
    called_aet: str
    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    spool_path: Path
    content: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def origin(self) -> Origin:
        """What the sink is told besides the instance: the calling AE title, the received file.

        A dataset kept in memory (``content``) has no file on disk.
        """
        return Origin(self.calling_aet, self.spool_path if self.content is None else None)


def check_instance(request: StoreRequest) -> Part10Instance:
    """Validate the spooled dataset against the command set and describe it as Part 10.

    Raises:
        MalformedDatasetError: the dataset is truncated or cannot be parsed.
        UidMismatchError: the dataset's SOP Class/Instance UID differ from the command's.
    """
    loaded: bytes | None = None
    data = request.content
    if data is None and os.path.getsize(request.spool_path) <= IN_MEMORY_LIMIT:
        # One read serves the check and the upload (no second open, no mmap).
        data = request.spool_path.read_bytes()
    if data is not None:
        offset = meta_end(data[:_META_HEAD])
        loaded = data[offset:]
        if not loaded:
            raise MalformedDatasetError("C-STORE request carried an empty dataset")
        summary = scan_buffer(data, offset, len(data), request.transfer_syntax_uid)
    else:
        offset = dataset_offset(request.spool_path)
        length = os.path.getsize(request.spool_path) - offset
        if length <= 0:
            raise MalformedDatasetError("C-STORE request carried an empty dataset")
        with request.spool_path.open("rb") as fp:
            fp.seek(offset)
            summary = scan_dataset(fp, length, request.transfer_syntax_uid)
    if not summary.sop_instance_uid or not summary.sop_class_uid:
        raise MalformedDatasetError("dataset has no SOP Class UID or SOP Instance UID")
    if summary.sop_class_uid != request.sop_class_uid:
        raise UidMismatchError(
            "SOP Class UID in dataset differs from Affected SOP Class UID", sop_class=True
        )
    if summary.sop_instance_uid != request.sop_instance_uid:
        raise UidMismatchError(
            "SOP Instance UID in dataset differs from Affected SOP Instance UID",
            sop_class=False,
        )
    return Part10Instance.from_spooled(
        request.spool_path,
        sop_class_uid=request.sop_class_uid,
        sop_instance_uid=request.sop_instance_uid,
        transfer_syntax_uid=request.transfer_syntax_uid,
        source_aet=request.calling_aet,
        offset=offset,
        loaded=loaded,
        study_instance_uid=summary.study_instance_uid,
    )


def log_fields(
    request: StoreRequest, size: int, status: DimseStatus, seconds: float
) -> dict[str, object]:
    """Structured fields of a C-STORE log line (for ``--log_format json``): no patient data."""
    return {
        "event": "c-store",
        "calling_aet": request.calling_aet,
        "called_aet": request.called_aet,
        "message_id": request.message_id,
        "sop_class_uid": request.sop_class_uid,
        "sop_instance_uid": request.sop_instance_uid,
        "bytes": size,
        "status": f"0x{status.code:04X}",
        "duration_ms": round(seconds * 1000, 1),
    }


class StoreService:
    """The C-STORE SCP's logic, independent of the protocol."""

    def __init__(
        self,
        sink: InstanceSink,
        lifecycle: Lifecycle,
        metrics: ImportObserver = NULL_IMPORT_OBSERVER,
        *,
        known_studies: KnownStudies | None = None,
    ) -> None:
        """Deliver to ``sink``; record each received instance's study in ``known_studies``.

        ``known_studies`` serves Storage Commitment's lookups (None: nothing is recorded).
        """
        self._sink = sink
        self._lifecycle = lifecycle
        self._metrics = metrics
        self._known_studies = known_studies

    def handle(self, request: StoreRequest) -> DimseStatus:
        """Check and deliver one instance; always returns a status.

        The log line and the metrics are deferred until the C-STORE-RSP is sent (see
        :mod:`common.dimse.after_response`): they are not on the SCU's critical path.
        """
        started = time.perf_counter()
        size = received = 0
        try:
            with self._lifecycle.operation():
                instance = check_instance(request)
                size, received = instance.size, instance.dataset_length
                if self._known_studies is not None:
                    # Before delivery: its answer, then the requester's N-ACTION, may follow
                    # at once. A failed delivery leaves a hint that costs a lookup, no more.
                    self._known_studies.record(
                        instance.sop_instance_uid, instance.study_instance_uid
                    )
                status = self._sink.deliver(instance, request.origin)
        except Exception as exc:  # every failure must become a C-STORE status
            status = store_status_for_error(exc)
            defer(partial(
                self._failed, request, size, received, status, exc, time.perf_counter() - started
            ))  # fmt: skip
            return status
        defer(partial(
            self._stored, request, size, received, status, time.perf_counter() - started
        ))  # fmt: skip
        return status

    def _stored(
        self,
        request: StoreRequest,
        size: int,
        received: int,
        status: DimseStatus,
        seconds: float,
    ) -> None:
        """Log and count a C-STORE the sink answered."""
        self._metrics.cstore_done(request.calling_aet, received, status, seconds)
        LOG.info(
            "C-STORE calling=%s sop_instance=%s msg_id=%d bytes=%d status=%s ms=%.1f",
            request.calling_aet,
            request.sop_instance_uid,
            request.message_id,
            size,
            status,
            seconds * 1000,
            # Built only by the JSON formatter: the text format does not use them.
            extra={"fields": partial(log_fields, request, size, status, seconds)},
        )

    def _failed(
        self,
        request: StoreRequest,
        size: int,
        received: int,
        status: DimseStatus,
        exc: Exception,
        seconds: float,
    ) -> None:
        """Log and count a C-STORE that failed with ``exc``."""
        self._metrics.cstore_done(request.calling_aet, received, status, seconds)
        LOG.log(
            logging.WARNING if status.code else logging.INFO,
            "C-STORE failed: calling=%s sop_instance=%s msg_id=%d status=0x%04X error=%s",
            request.calling_aet,
            request.sop_instance_uid,
            request.message_id,
            status.code,
            exc,
            # A traceback only for our bugs (the exception object: this may run after the
            # handler has returned, when there is no exception being handled any more).
            exc_info=None if isinstance(exc, AdapterError) else exc,
            extra={"fields": partial(log_fields, request, size, status, seconds)},
        )
