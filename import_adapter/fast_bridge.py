"""Runs the listener's pynetdicom event handlers for associations served by the fast engine.

The services register pynetdicom handlers (``EVT_C_STORE``, ``EVT_C_ECHO``, association
notifications). Associations served by :mod:`common.dimse.fast` call those same functions with
a small event object that carries the attributes they read (``assoc.requestor``/``acceptor``,
``request``, ``context``, ``dataset_path``), so the C-STORE logic stays one handler shared by
both engines. C-MOVE and C-FIND go to the handlers the retrieve and query services supply for
this engine (:data:`import_adapter.server.FastQRHandler`).
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom import config
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.presentation import PresentationContextTuple

from common.dimse.fast.acse import AcceptedContext
from common.dimse.fast.commands import CEchoRq, CFindRq, CMoveRq, CStoreRq
from common.dimse.fast.scp import AcceptorAssociation, AssociationEvent, QRResponse
from common.status import SUCCESS, DimseStatus, Status, store_status_for_error

LOG = logging.getLogger(__name__)


def _uid(value: str) -> UID:
    """A UID from the wire for a handler, as pynetdicom types it, without re-validating it.

    pydicom checks every new UID against a pattern; on the C-STORE hot path that check cost
    more than encoding the response, and the store check compares these UIDs with the dataset.
    """
    return UID(value, validation_mode=config.IGNORE)


#: :func:`_uid` for the UIDs that recur (SOP classes, transfer syntaxes): few exist.
_recurring_uid = functools.lru_cache(maxsize=1024)(_uid)


@functools.lru_cache(maxsize=256)
def _context(
    context_id: int, abstract_syntax: str, transfer_syntax: str
) -> PresentationContextTuple:
    """A presentation context as pynetdicom hands it to handlers (few exist: cached)."""
    return PresentationContextTuple(
        context_id, _recurring_uid(abstract_syntax), _recurring_uid(transfer_syntax)
    )

_NOTIFICATIONS: dict[AssociationEvent, Any] = {
    AssociationEvent.CONN_OPEN: evt.EVT_CONN_OPEN,
    AssociationEvent.ESTABLISHED: evt.EVT_ESTABLISHED,
    AssociationEvent.REJECTED: evt.EVT_REJECTED,
    AssociationEvent.RELEASED: evt.EVT_RELEASED,
    AssociationEvent.ABORTED: evt.EVT_ABORTED,
    AssociationEvent.CONN_CLOSE: evt.EVT_CONN_CLOSE,
}


@dataclass
class RequestView:
    """The attributes of pynetdicom's C-STORE/C-ECHO primitive that handlers read."""

    MessageID: int
    AffectedSOPClassUID: UID
    AffectedSOPInstanceUID: UID | None = None
    Priority: int = 0
    MoveOriginatorApplicationEntityTitle: str | None = None
    MoveOriginatorMessageID: int | None = None


@dataclass
class FastEvent:
    """What a pynetdicom handler gets from an association served by the fast engine."""

    assoc: AcceptorAssociation
    event: Any
    request: RequestView | None = None
    context: PresentationContextTuple | None = None
    dataset_path: Path | None = None
    #: The Part 10 file's bytes when our engine kept a small one in memory only (then no file
    #: ``dataset_path`` exists); pynetdicom's events never have them.
    dataset_content: bytes | None = None
    timestamp: datetime = field(default_factory=datetime.now)

    @property
    def dataset(self) -> Dataset:
        """The received dataset, decoded (slow; handlers here use ``dataset_path``)."""
        from pydicom import dcmread

        if self.dataset_content is not None:
            return dcmread(io.BytesIO(self.dataset_content))
        if self.dataset_path is None:
            raise AttributeError("this event carries no dataset")
        return dcmread(self.dataset_path)


def _status_from_handler(result: Any) -> DimseStatus:
    """A handler's return value (an int, or a status Dataset) as a :class:`DimseStatus`."""
    if isinstance(result, Dataset):
        return DimseStatus(int(result.Status), str(result.get("ErrorComment", "") or ""))
    return DimseStatus(int(result))


class PynetdicomHandlerBridge:
    """Calls pynetdicom-style handlers for the fast engine (implements ``AcceptorHandlers``)."""

    def __init__(
        self,
        handlers: Sequence[tuple[Any, ...]],
        move: Callable[..., Iterator[QRResponse]] | None = None,
        find: Callable[..., Iterator[QRResponse]] | None = None,
    ) -> None:
        self._move = move
        self._find = find
        self._notify: dict[Any, list[tuple[Callable[..., Any], list[Any]]]] = {}
        self._intervene: dict[Any, tuple[Callable[..., Any], list[Any]]] = {}
        for event, handler, *rest in handlers:
            args = list(rest[0]) if rest and rest[0] else []
            if event.is_intervention:
                self._intervene[event] = (handler, args)  # as pynetdicom: the last one wins
            else:
                self._notify.setdefault(event, []).append((handler, args))

    def notify(self, event: AssociationEvent, assoc: AcceptorAssociation) -> None:
        """Run the notification handlers bound to the matching pynetdicom event."""
        pyn_event = _NOTIFICATIONS[event]
        for handler, args in self._notify.get(pyn_event, []):
            try:
                handler(FastEvent(assoc, pyn_event), *args)
            except Exception:  # pynetdicom logs and carries on too
                LOG.exception("exception in the %s handler", pyn_event.name)

    def c_echo(self, assoc: AcceptorAssociation, request: CEchoRq) -> DimseStatus:
        """Run the EVT_C_ECHO handler (Success when none is bound, as pynetdicom)."""
        bound = self._intervene.get(evt.EVT_C_ECHO)
        if bound is None:
            return SUCCESS
        handler, args = bound
        event = FastEvent(
            assoc,
            evt.EVT_C_ECHO,
            request=RequestView(request.message_id, _uid(request.sop_class_uid)),
        )
        try:
            return _status_from_handler(handler(event, *args))
        except Exception as exc:
            LOG.exception("exception in the EVT_C_ECHO handler")
            return store_status_for_error(exc)

    def c_store(
        self,
        assoc: AcceptorAssociation,
        request: CStoreRq,
        context: AcceptedContext,
        spool_path: Path,
        content: bytes | None = None,
    ) -> DimseStatus:
        """Run the EVT_C_STORE handler on the received dataset.

        ``content``: the Part 10 file's bytes when it was kept in memory only (see
        :meth:`AcceptorHandlers.c_store`).
        """
        bound = self._intervene.get(evt.EVT_C_STORE)
        if bound is None:
            return store_status_for_error(RuntimeError("no C-STORE handler bound"))
        handler, args = bound
        event = FastEvent(
            assoc,
            evt.EVT_C_STORE,
            request=RequestView(
                MessageID=request.message_id,
                AffectedSOPClassUID=_recurring_uid(request.sop_class_uid),
                AffectedSOPInstanceUID=_uid(request.sop_instance_uid),
                Priority=request.priority,
                MoveOriginatorApplicationEntityTitle=request.move_originator_aet,
                MoveOriginatorMessageID=request.move_originator_message_id,
            ),
            context=_context(context.context_id, context.abstract_syntax, context.transfer_syntax),
            dataset_path=spool_path,
            dataset_content=content,
        )
        try:
            return _status_from_handler(handler(event, *args))
        except Exception as exc:  # a C-STORE always gets an answer
            LOG.exception("exception in the EVT_C_STORE handler")
            return store_status_for_error(exc)

    def c_move(
        self,
        assoc: AcceptorAssociation,
        request: CMoveRq,
        context: AcceptedContext,
        identifier: bytes,
        is_cancelled: Callable[[], bool],
    ) -> Iterator[QRResponse]:
        """Run the fast C-MOVE handler."""
        return _guarded("C-MOVE", self._move, assoc, request, context, identifier, is_cancelled)

    def c_find(
        self,
        assoc: AcceptorAssociation,
        request: CFindRq,
        context: AcceptedContext,
        identifier: bytes,
        is_cancelled: Callable[[], bool],
    ) -> Iterator[QRResponse]:
        """Run the fast C-FIND handler."""
        return _guarded("C-FIND", self._find, assoc, request, context, identifier, is_cancelled)


def _guarded(
    name: str, handler: Callable[..., Iterator[QRResponse]] | None, *args: Any
) -> Iterator[QRResponse]:
    """``handler``'s responses; 0xC000 when there is none, or it fails before its final one."""
    if handler is None:
        yield QRResponse(DimseStatus(Status.UNABLE_TO_PROCESS, f"{name} not served"))
        return
    responses = handler(*args)
    final = False
    try:
        for response in responses:
            final = response.status.code not in (Status.PENDING, Status.PENDING_WITH_WARNINGS)
            yield response
    except Exception:  # a request always gets a final answer
        LOG.exception("exception in the fast %s handler", name)
        if not final:
            yield QRResponse(DimseStatus(Status.UNABLE_TO_PROCESS))
    finally:
        close = getattr(responses, "close", None)
        if close is not None:
            close()
