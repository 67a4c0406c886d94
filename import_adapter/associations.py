"""Association lifecycle notifications of the import adapter: log lines and metrics."""

from __future__ import annotations

import logging
import threading

from common.dimse.fast.scp import AcceptorAssociation, AssociationEvent
from common.metrics import ImportObserver

LOG = logging.getLogger(__name__)


def log_association(event: AssociationEvent, assoc: AcceptorAssociation) -> None:
    """Log association lifecycle events with AE titles and addresses."""
    if event is AssociationEvent.ESTABLISHED:
        LOG.info("association established: %s", assoc.requestor.label)
    elif event is AssociationEvent.REJECTED:
        LOG.warning("association rejected: %s", assoc.requestor.label)
    elif event is AssociationEvent.RELEASED:
        LOG.info("association released: %s", assoc.requestor.label)
    elif event is AssociationEvent.ABORTED:
        LOG.warning("association aborted: %s", assoc.requestor.label)


class AssociationMetrics:
    """Reports associations opened, closed and rejected to an observer.

    An association counts as closed when its connection closes (after a release, an abort or
    a dropped connection), exactly once, and only if it had been established.
    """

    def __init__(self, observer: ImportObserver) -> None:
        self._observer = observer
        self._lock = threading.Lock()
        self._established: dict[int, str] = {}

    def __call__(self, event: AssociationEvent, assoc: AcceptorAssociation) -> None:
        """Count one lifecycle event."""
        calling = assoc.requestor.ae_title
        if event is AssociationEvent.ESTABLISHED:
            with self._lock:
                self._established[id(assoc)] = calling
            self._observer.association_opened(calling)
        elif event is AssociationEvent.REJECTED:
            self._observer.association_rejected(calling)
        elif event is AssociationEvent.CONN_CLOSE:
            with self._lock:
                opened = self._established.pop(id(assoc), None)
            if opened is not None:
                self._observer.association_closed(opened)
