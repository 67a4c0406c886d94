"""The C-STORE sink that goes through the spool (and the router).

:class:`SpoolingSink` is an :class:`~import_adapter.store.InstanceSink`: admission control, then
routing, then a durable commit to every destination's queue. With ``--auto_ack_cstore`` it
answers Success right then; otherwise it waits for every destination's upload and answers with
the combined status (bounded by ``sync_timeout``). An instance that matches no destination is
refused, never acknowledged.
"""

from __future__ import annotations

import logging

from common.dicom.part10 import Part10Instance
from common.status import SUCCESS, UPLOAD_NOT_CONFIRMED, DimseStatus
from import_adapter.routing.router import Router
from import_adapter.spool.manager import SpoolManager
from import_adapter.spool.queue import Receipt
from import_adapter.store import StoreRequest

LOG = logging.getLogger(__name__)


class SpoolingSink:
    """Spools each instance for its destinations; answers once durable or once uploaded."""

    def __init__(self, manager: SpoolManager, router: Router) -> None:
        self._manager = manager
        self._router = router
        self._auto_ack = manager.settings.auto_ack
        self._timeout = manager.settings.sync_timeout

    def deliver(self, instance: Part10Instance, request: StoreRequest) -> DimseStatus:
        """Admit, route and spool the instance; raises :class:`~common.errors.AdapterError`."""
        self._manager.admit()
        attributes = self._router.attributes(instance, request.calling_aet)
        destinations = self._router.route(attributes)
        receipt = None if self._auto_ack else Receipt(len(destinations))
        name = self._manager.submit(instance, request, destinations, receipt)
        LOG.debug(
            "spooled %s as %s for %s",
            request.sop_instance_uid, name, ", ".join(str(d) for d in destinations),
        )
        if receipt is None:
            return SUCCESS
        status = receipt.wait(self._timeout)
        if status is None:
            receipt.abandoned = True
            return receipt.last_failure or UPLOAD_NOT_CONFIRMED
        return status
