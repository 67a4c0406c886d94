"""Routes each request of an association to the one handler for it, under the access policy.

:class:`Dispatcher` is what our DIMSE engine calls (`common.dimse.fast.scp.AcceptorHandlers`).
Per request, a service the requester may not use is answered 0x0124 Not Authorized (C-MOVE's
contexts are refused at negotiation already: :mod:`import_adapter.admission`), judged on the
association's :class:`~import_adapter.access.Requester`, made at its first request and kept
while the association lives; a handler that raises still gets its request a final answer, and
the exception is logged.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from common.dimse.fast.acse import AcceptedContext, AssociateRequest
from common.dimse.fast.commands import CEchoRq, CFindRq, CGetRq, CMoveRq, CStoreRq, NActionRq
from common.dimse.fast.scp import (
    AcceptorAssociation,
    Admission,
    AssociationEvent,
    GetSubOperations,
    QRResponse,
)
from common.status import (
    NOT_SERVED,
    SUCCESS,
    DimseStatus,
    Status,
    commitment_request_status,
    find_status_for_error,
    retrieve_status_for_error,
    store_status_for_error,
)
from import_adapter.access import AccessPolicy, Requester
from import_adapter.dimse_service import DimseService

LOG = logging.getLogger(__name__)

_H = TypeVar("_H")


def _first(services: Sequence[DimseService], pick: Callable[[DimseService], _H | None]) -> (
    tuple[DimseService, _H] | None
):
    for service in services:
        handler = pick(service)
        if handler is not None:
            return service, handler
    return None


class Dispatcher:
    """Implements :class:`~common.dimse.fast.scp.AcceptorHandlers` for the services."""

    def __init__(
        self,
        services: Sequence[DimseService],
        access: AccessPolicy,
        admit: Callable[[AcceptorAssociation, AssociateRequest], Admission],
    ) -> None:
        self._access = access
        self._admit = admit
        # Each association's requester, so its address is not parsed again for every request;
        # an entry goes with its association.
        self._requesters: weakref.WeakKeyDictionary[AcceptorAssociation, Requester] = (
            weakref.WeakKeyDictionary()
        )
        self._requesters_lock = threading.Lock()
        self._notifiers = [service.notify for service in services if service.notify is not None]
        self._store = _first(services, lambda s: s.c_store)
        self._find = _first(services, lambda s: s.c_find)
        self._move = _first(services, lambda s: s.c_move)
        self._get = _first(services, lambda s: s.c_get)
        self._action = _first(services, lambda s: s.n_action)

    def _requester(self, assoc: AcceptorAssociation) -> Requester:
        with self._requesters_lock:
            requester = self._requesters.get(assoc)
            if requester is None:
                requester = Requester.of(assoc.requestor.ae_title, assoc.requestor.address)
                self._requesters[assoc] = requester
            return requester

    def _refusal(self, service: DimseService, assoc: AcceptorAssociation) -> DimseStatus | None:
        if service.access is None:
            return None
        status = self._access.refusal(service.access, self._requester(assoc))
        if status is not None:
            calling, host = assoc.requestor.ae_title, assoc.requestor.address
            LOG.warning("%s from %s@%s refused: %s", service.access.label, calling or "-", host,
                        status)
        return status

    def admit(self, assoc: AcceptorAssociation, request: AssociateRequest) -> Admission:
        """The listener's admission decision (limits, policy)."""
        return self._admit(assoc, request)

    def notify(self, event: AssociationEvent, assoc: AcceptorAssociation) -> None:
        """Run every service's notifier (one that raises is logged and skipped)."""
        for notifier in self._notifiers:
            try:
                notifier(event, assoc)
            except Exception:
                LOG.exception("exception in the %s notification", event.value)

    def c_echo(self, assoc: AcceptorAssociation, request: CEchoRq) -> DimseStatus:
        """C-ECHO: Success while the process serves (open to every accepted association)."""
        LOG.debug("C-ECHO from %s@%s", assoc.requestor.ae_title or "-", assoc.requestor.address)
        return SUCCESS

    def c_store(
        self,
        assoc: AcceptorAssociation,
        request: CStoreRq,
        context: AcceptedContext,
        spool_path: Path,
        content: bytes | None = None,
    ) -> DimseStatus:
        """C-STORE: the storage service's answer, 0x0124 when refused."""
        if self._store is None:
            return NOT_SERVED
        service, handler = self._store
        refusal = self._refusal(service, assoc)
        if refusal is not None:
            return refusal
        try:
            return handler(assoc, request, context, spool_path, content)
        except Exception as exc:  # a C-STORE always gets an answer
            LOG.exception("exception in the C-STORE handler")
            return store_status_for_error(exc)

    def n_action(
        self,
        assoc: AcceptorAssociation,
        request: NActionRq,
        context: AcceptedContext,
        information: bytes | None,
    ) -> DimseStatus:
        """N-ACTION: the commitment service's answer, 0x0124 when refused."""
        if self._action is None:
            return NOT_SERVED
        service, handler = self._action
        refusal = self._refusal(service, assoc)
        if refusal is not None:
            return refusal
        try:
            return handler(assoc, request, context, information)
        except Exception as exc:  # an N-ACTION always gets an answer
            LOG.exception("exception in the N-ACTION handler")
            return commitment_request_status(exc)

    def c_find(
        self,
        assoc: AcceptorAssociation,
        request: CFindRq,
        context: AcceptedContext,
        identifier: bytes,
        is_cancelled: Callable[[], bool],
    ) -> Iterator[QRResponse]:
        """C-FIND: the query service's responses."""
        if self._find is None:
            return _answered("C-FIND", find_status_for_error, None)
        service, handler = self._find
        return _answered(
            "C-FIND",
            find_status_for_error,
            self._refusal(service, assoc)
            or (lambda: handler(assoc, request, context, identifier, is_cancelled)),
        )

    def c_move(
        self,
        assoc: AcceptorAssociation,
        request: CMoveRq,
        context: AcceptedContext,
        identifier: bytes,
        is_cancelled: Callable[[], bool],
    ) -> Iterator[QRResponse]:
        """C-MOVE: the retrieve service's responses."""
        if self._move is None:
            return _answered("C-MOVE", retrieve_status_for_error, None)
        service, handler = self._move
        return _answered(
            "C-MOVE",
            retrieve_status_for_error,
            self._refusal(service, assoc)
            or (lambda: handler(assoc, request, context, identifier, is_cancelled)),
        )

    def c_get(
        self,
        assoc: AcceptorAssociation,
        request: CGetRq,
        context: AcceptedContext,
        identifier: bytes,
        is_cancelled: Callable[[], bool],
        sub_operations: GetSubOperations,
    ) -> Iterator[QRResponse]:
        """C-GET: the retrieve service's responses."""
        if self._get is None:
            return _answered("C-GET", retrieve_status_for_error, None)
        service, handler = self._get
        return _answered(
            "C-GET",
            retrieve_status_for_error,
            self._refusal(service, assoc)
            or (lambda: handler(
                assoc, request, context, identifier, is_cancelled, sub_operations
            )),
        )


def _answered(
    name: str,
    on_error: Callable[[BaseException], DimseStatus],
    source: DimseStatus | Callable[[], Iterator[QRResponse]] | None,
) -> Iterator[QRResponse]:
    """The responses of ``source``, always ending with a final one.

    ``source``: a refusal status (the only response), the handler's responses, or None (no
    service handles the request). A handler that fails before its final response is
    answered with ``on_error``'s status for the exception (the one failure mapping of
    :mod:`common.status`).
    """
    if source is None:
        yield QRResponse(NOT_SERVED)
        return
    if isinstance(source, DimseStatus):
        yield QRResponse(source)
        return
    final = False
    responses: Iterator[QRResponse] | None = None
    try:
        responses = source()
        for response in responses:
            final = response.status.code not in (Status.PENDING, Status.PENDING_WITH_WARNINGS)
            yield response
    except Exception as exc:  # a request always gets a final answer
        LOG.exception("exception in the %s handler", name)
        if not final:
            yield QRResponse(on_error(exc))
    finally:
        close = getattr(responses, "close", None)
        if close is not None:
            close()
