"""pynetdicom event handlers of the import adapter: unpack the event, call one service, return.

Handlers run in the association's thread. They hold no logic of their own, so everything they
call is testable without a network.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt

from common.metrics import ImportObserver
from common.status import Status
from import_adapter.store import StoreRequest, StoreService

LOG = logging.getLogger(__name__)

Handler = tuple[Any, Callable[..., Any]]


def _peer(event: Any) -> str:
    requestor = event.assoc.requestor
    return f"{requestor.ae_title}@{requestor.address}:{requestor.port}"


def store_handlers(service: StoreService) -> list[Handler]:
    """The EVT_C_STORE handler bound to ``service``."""

    def on_c_store(event: Any) -> Dataset | int:
        request = event.request
        store_request = StoreRequest(
            calling_aet=event.assoc.requestor.ae_title,
            called_aet=event.assoc.acceptor.ae_title,
            message_id=int(request.MessageID),
            sop_class_uid=str(request.AffectedSOPClassUID),
            sop_instance_uid=str(request.AffectedSOPInstanceUID),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            spool_path=event.dataset_path,  # a Path from either engine
            # Our engine hands over a small file's bytes too; pynetdicom's events have none.
            content=getattr(event, "dataset_content", None),
        )
        status = service.handle(store_request)
        # A bare code when there is nothing else to say (pynetdicom takes either form).
        return status.as_dataset() if status.comment else int(status.code)

    return [(evt.EVT_C_STORE, on_c_store)]


def echo_handlers() -> list[Handler]:
    """The EVT_C_ECHO handler (always Success while the process serves)."""

    def on_c_echo(event: Any) -> int:
        LOG.debug("C-ECHO from %s", _peer(event))
        return int(Status.SUCCESS)

    return [(evt.EVT_C_ECHO, on_c_echo)]


def association_log_handlers() -> list[Handler]:
    """Log association lifecycle events with AE titles and addresses."""

    def on_established(event: Any) -> None:
        LOG.info("association established: %s", _peer(event))

    def on_rejected(event: Any) -> None:
        LOG.warning("association rejected: %s", _peer(event))

    def on_released(event: Any) -> None:
        LOG.info("association released: %s", _peer(event))

    def on_aborted(event: Any) -> None:
        LOG.warning("association aborted: %s", _peer(event))

    return [
        (evt.EVT_ESTABLISHED, on_established),
        (evt.EVT_REJECTED, on_rejected),
        (evt.EVT_RELEASED, on_released),
        (evt.EVT_ABORTED, on_aborted),
    ]


def association_metrics_handlers(observer: ImportObserver) -> list[Handler]:
    """Report associations opened, closed and rejected to ``observer``.

    An association counts as closed when its connection closes (after a release, an abort or
    a dropped connection), exactly once, and only if it had been established.
    """
    lock = threading.Lock()
    established: dict[int, str] = {}

    def on_established(event: Any) -> None:
        calling = event.assoc.requestor.ae_title
        with lock:
            established[id(event.assoc)] = calling
        observer.association_opened(calling)

    def on_rejected(event: Any) -> None:
        observer.association_rejected(event.assoc.requestor.ae_title)

    def on_closed(event: Any) -> None:
        with lock:
            calling = established.pop(id(event.assoc), None)
        if calling is not None:
            observer.association_closed(calling)

    return [
        (evt.EVT_ESTABLISHED, on_established),
        (evt.EVT_REJECTED, on_rejected),
        (evt.EVT_CONN_CLOSE, on_closed),
    ]
