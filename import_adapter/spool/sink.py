"""The C-STORE sink that goes through the spool (and the router).

:class:`SpoolingSink` is an :class:`~common.sinks.InstanceSink`: admission control, then
routing, then a durable commit to every destination's queue. With ``--auto_ack_cstore`` it
answers Success right then; otherwise it waits for every destination's upload and answers with
the combined status (bounded by ``sync_timeout``). An instance that matches no destination is
refused, never acknowledged.

A DICOMweb destination known down (its circuit breaker open, :mod:`common.breaker`):

- with ``--auto_ack_cstore``, changes nothing here: instances keep being accepted into the
  spool (admission control bounds the disk) and go out once the store answers again;
- without it, a C-STORE routed to it is refused at once with
  :class:`~common.errors.StoreUnavailableError` (0xA700), before anything is spooled; and an
  SCU already waiting for its uploads gets 0xA700 as soon as the breaker opens (the instance
  is withdrawn, as after ``sync_timeout``), not after the whole ``sync_timeout``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from common.breaker import BreakerRegistry, CircuitBreaker
from common.dicom.part10 import Part10Instance
from common.sinks import Origin
from common.status import SUCCESS, UPLOAD_NOT_CONFIRMED, DimseStatus
from import_adapter.routing.destinations import Destination, DicomwebDestination
from import_adapter.routing.router import Router
from import_adapter.spool.manager import SpoolManager
from import_adapter.spool.queue import Receipt

LOG = logging.getLogger(__name__)

#: While an SCU waits for its uploads, how often its destinations' breakers are looked at.
_BREAKER_POLL = 0.1


class SpoolingSink:
    """Spools each instance for its destinations; answers once durable or once uploaded."""

    def __init__(
        self, manager: SpoolManager, router: Router, breakers: BreakerRegistry | None = None
    ) -> None:
        self._manager = manager
        self._router = router
        self._breakers = breakers
        self._auto_ack = manager.settings.auto_ack
        self._timeout = manager.settings.sync_timeout

    def describe(self) -> str:
        """The spool and the destinations it feeds."""
        names = ", ".join(str(d) for d in self._router.destinations)
        return f"spool {self._manager.layout.root} for {names}"

    def close(self) -> None:
        """Nothing to release: the spool manager is stopped by its owner (after draining)."""

    def deliver(self, instance: Part10Instance, origin: Origin) -> DimseStatus:
        """Admit, route and spool the instance; raises :class:`~common.errors.AdapterError`.

        Raises:
            StoreUnavailableError: without auto-ack, a destination is known down.
        """
        self._manager.admit()
        attributes = self._router.attributes(instance, origin.source_aet)
        destinations = self._router.route(attributes)
        breakers = [] if self._auto_ack else self._breakers_of(destinations)
        for breaker in breakers:
            breaker.check()  # the SCU waits for the upload: no point spooling it
        receipt = None if self._auto_ack else Receipt(len(destinations))
        name = self._manager.submit(instance, origin, destinations, receipt)
        LOG.debug(
            "spooled %s as %s for %s",
            instance.sop_instance_uid, name, ", ".join(str(d) for d in destinations),
        )
        if receipt is None:
            return SUCCESS
        return self._wait(receipt, breakers)

    def _breakers_of(self, destinations: Sequence[Destination]) -> list[CircuitBreaker]:
        if self._breakers is None:
            return []
        found = (
            self._breakers.get(d.address)
            for d in destinations
            if isinstance(d, DicomwebDestination)
        )
        return [breaker for breaker in found if breaker is not None]

    def _wait(self, receipt: Receipt, breakers: Sequence[CircuitBreaker]) -> DimseStatus:
        """The uploads' combined status; gives up at ``sync_timeout`` or once a store is down.

        Raises:
            StoreUnavailableError: a destination's breaker opened meanwhile.
        """
        deadline = time.monotonic() + self._timeout
        while True:
            remaining = deadline - time.monotonic()
            slice_ = min(remaining, _BREAKER_POLL) if breakers else remaining
            status = receipt.wait(max(0.0, slice_))
            if status is not None:
                return status
            for breaker in breakers:
                error = breaker.refusal()
                if error is not None:
                    receipt.abandoned = True
                    raise error
            if remaining <= slice_:
                receipt.abandoned = True
                return receipt.last_failure or UPLOAD_NOT_CONFIRMED
