"""What one DIMSE service adds to the listener: presentation contexts and request handlers.

Services (storage, query, retrieve, commitment, association metrics) each describe themselves
as a :class:`DimseService`; the listener (:mod:`import_adapter.server`) accepts their contexts
and routes each request to the one handler for it (:mod:`import_adapter.dispatch`). Handlers
are thin: they unpack the request, call one protocol-free service, and return a status or
yield responses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.dimse.fast.acse import AcceptedContext
from common.dimse.fast.commands import CFindRq, CGetRq, CMoveRq, CStoreRq, NActionRq
from common.dimse.fast.scp import (
    AcceptorAssociation,
    AssociationEvent,
    GetSubOperations,
    QRResponse,
)
from common.status import DimseStatus
from import_adapter.access import Service

#: Handles a C-STORE: see :meth:`common.dimse.fast.scp.AcceptorHandlers.c_store`.
StoreHandler = Callable[
    [AcceptorAssociation, CStoreRq, AcceptedContext, Path, "bytes | None"], DimseStatus
]
#: Serves a C-FIND: see :meth:`common.dimse.fast.scp.AcceptorHandlers.c_find`.
FindHandler = Callable[
    [AcceptorAssociation, CFindRq, AcceptedContext, bytes, Callable[[], bool]],
    Iterator[QRResponse],
]
#: Serves a C-MOVE: see :meth:`common.dimse.fast.scp.AcceptorHandlers.c_move`.
MoveHandler = Callable[
    [AcceptorAssociation, CMoveRq, AcceptedContext, bytes, Callable[[], bool]],
    Iterator[QRResponse],
]
#: Serves a C-GET: see :meth:`common.dimse.fast.scp.AcceptorHandlers.c_get`.
GetHandler = Callable[
    [AcceptorAssociation, CGetRq, AcceptedContext, bytes, Callable[[], bool], GetSubOperations],
    Iterator[QRResponse],
]
#: Answers an N-ACTION: see :meth:`common.dimse.fast.scp.AcceptorHandlers.n_action`.
ActionHandler = Callable[
    [AcceptorAssociation, NActionRq, AcceptedContext, "bytes | None"], DimseStatus
]
#: Hears association lifecycle events (logs, metrics).
Notifier = Callable[[AssociationEvent, AcceptorAssociation], None]


@dataclass(frozen=True)
class SupportedContext:
    """A non-storage SOP class a service serves, and the transfer syntaxes it accepts."""

    abstract_syntax: str
    transfer_syntaxes: Sequence[str]


@dataclass(frozen=True)
class DimseService:
    """What one DIMSE service adds to the listener.

    Attributes:
        name: for logs.
        contexts: the non-storage SOP classes it serves (every storage-like SOP class is
            accepted in the SCU's preferred transfer syntax without an entry here).
        access: the access-policy service its requests belong to (None: not controlled).
        deny_at_negotiation: SOP classes refused at negotiation to requesters the policy
            denies ``access`` (C-MOVE: refused before any request, rather than answered 0x0124).
        c_store / c_find / c_move / c_get / n_action: its request handlers (None: not its).
        notify: hears association lifecycle events.
    """

    name: str
    contexts: Sequence[SupportedContext] = ()
    access: Service | None = None
    deny_at_negotiation: frozenset[str] = frozenset()
    c_store: StoreHandler | None = None
    c_find: FindHandler | None = None
    c_move: MoveHandler | None = None
    c_get: GetHandler | None = None
    n_action: ActionHandler | None = None
    notify: Notifier | None = None
