"""A PACS whose answers a test scripts: a pynetdicom Storage SCP on loopback, on a free port.

It listens from construction until :meth:`ScriptedPacs.stop` (or the end of a ``with`` block).
Each C-STORE is answered with what :attr:`ScriptedPacs.statuses` holds for its SOP Instance UID:
one status (answered every time), or a list of statuses answered in turn (Success once it is
used up); Success for an instance not listed. It takes every storage SOP class in every
transfer syntax, or only ``sop_classes`` (any other class then gets no presentation context),
and can reject associations: rejected-permanent (calling AE title not recognized) while
:attr:`ScriptedPacs.refuse_calling` is set, rejected-transient (local limit exceeded) while a
test holds its only association (:meth:`ScriptedPacs.holding_the_only_association`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from common.status import SUCCESS, DimseStatus
from tests.support.ports import free_port

LOCALHOST = "127.0.0.1"


class ScriptedPacs:
    """A Storage SCP whose statuses, SOP classes and association rejections are scripted.

    Attributes:
        statuses: SOP Instance UID -> a status, or the statuses to answer in turn (mutable).
        received: SOP Instance UIDs of every C-STORE, in order (every try counts).
        stored: those answered with success or a warning.
        callers: the calling AE title of the association each C-STORE came on.
        originators: the Move Originator AE title and message ID of each C-STORE-RQ.
        rejected: associations rejected so far.
    """

    def __init__(
        self,
        statuses: Mapping[str, int | Sequence[int]] | None = None,
        *,
        aet: str = "SCRIPTED",
        sop_classes: Sequence[str] | None = None,
    ) -> None:
        self.aet = aet
        self.port = free_port()
        self.statuses: dict[str, int | list[int]] = {
            uid: status if isinstance(status, int) else list(status)
            for uid, status in (statuses or {}).items()
        }
        self.received: list[str] = []
        self.stored: list[str] = []
        self.callers: list[str] = []
        self.originators: list[tuple[str | None, int | None]] = []
        self.rejected = 0
        self._lock = threading.Lock()
        self.ae = AE(ae_title=aet)
        self.ae.maximum_associations = 10
        classes = sop_classes or [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
        for sop_class in classes:
            self.ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        self.ae.add_supported_context(Verification)
        server = self.ae.start_server(
            (LOCALHOST, self.port),
            block=False,
            evt_handlers=[
                (evt.EVT_C_STORE, self._on_store),
                (evt.EVT_REJECTED, self._on_rejected),
            ],
        )
        assert server is not None  # block=False returns the running server
        self._server = server

    # -- scripted behaviour ----------------------------------------------------------------

    @property
    def refuse_calling(self) -> bool:
        """Whether every association is rejected-permanent (calling AE title not recognized)."""
        return bool(self.ae.require_calling_aet)

    @refuse_calling.setter
    def refuse_calling(self, refuse: bool) -> None:
        self.ae.require_calling_aet = ["NOT-YOU"] if refuse else []

    @contextmanager
    def holding_the_only_association(self) -> Iterator[None]:
        """Hold the one association the PACS allows: any other is rejected-transient."""
        self.ae.maximum_associations = 1
        holder = AE(ae_title="HOLDER")
        holder.add_requested_context(Verification)
        assoc = holder.associate(LOCALHOST, self.port, ae_title=self.aet)
        assert assoc.is_established, "the holding association was not accepted"
        try:
            yield
        finally:
            assoc.release()
            self.ae.maximum_associations = 10

    def count(self, uid: str) -> int:
        """C-STOREs received for one instance so far."""
        with self._lock:
            return self.received.count(uid)

    # -- server ------------------------------------------------------------------------------

    def _next_status(self, uid: str) -> int:
        script = self.statuses.get(uid)
        if isinstance(script, int):
            return script
        return script.pop(0) if script else int(SUCCESS.code)

    def _on_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        request = event.request
        originator = request.MoveOriginatorApplicationEntityTitle
        with self._lock:
            self.received.append(uid)
            self.callers.append(str(event.assoc.requestor.ae_title).strip())
            self.originators.append(
                (str(originator).strip() if originator else None, request.MoveOriginatorMessageID)
            )
            status = self._next_status(uid)
            if not DimseStatus(status).is_failure:
                self.stored.append(uid)
        return status

    def _on_rejected(self, event: Any) -> None:
        with self._lock:
            self.rejected += 1

    def stop(self) -> None:
        """Stop listening."""
        self._server.shutdown()

    def __enter__(self) -> ScriptedPacs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
