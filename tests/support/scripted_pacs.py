"""A PACS whose answers a test scripts: a pynetdicom Storage SCP on loopback, on a free port.

It takes CT Image Storage only (any other SOP class gets no presentation context), answers each
C-STORE with the next status scripted for its SOP Instance UID (Success once the script is used
up), and can reject associations: rejected-permanent (calling AE title not recognized) while
:attr:`ScriptedPacs.refuse_calling` is set, rejected-transient (local limit exceeded) while a
test holds its only association (:meth:`ScriptedPacs.holding_the_only_association`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    Verification,
)

from tests.support.ports import free_port

_UNCOMPRESSED = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


class ScriptedPacs:
    """A Storage SCP whose statuses, refused SOP classes and rejections are scripted.

    Attributes:
        attempts: C-STOREs received, by SOP Instance UID (every try counts).
        stored: SOP Instance UIDs answered with success or a warning, in order.
        rejected: associations rejected so far.
    """

    def __init__(
        self, statuses: Mapping[str, Sequence[int]] | None = None, *, ae_title: str = "PACS"
    ) -> None:
        self.ae_title = ae_title
        self.port = free_port()
        self.attempts: Counter[str] = Counter()
        self.stored: list[str] = []
        self.rejected = 0
        self._script = {uid: list(codes) for uid, codes in (statuses or {}).items()}
        self._lock = threading.Lock()
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(CTImageStorage, _UNCOMPRESSED)
        self.ae.add_supported_context(Verification)
        self._server: Any = None

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
        assoc = holder.associate("127.0.0.1", self.port, ae_title=self.ae_title)
        assert assoc.is_established, "the holding association was not accepted"
        try:
            yield
        finally:
            assoc.release()
            self.ae.maximum_associations = 10

    def count(self, uid: str) -> int:
        """C-STOREs received for one instance so far."""
        with self._lock:
            return self.attempts[uid]

    # -- server ------------------------------------------------------------------------------

    def _on_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        with self._lock:
            self.attempts[uid] += 1
            script = self._script.get(uid)
            status = script.pop(0) if script else 0x0000
            if status == 0x0000 or (status & 0xF000) == 0xB000:
                self.stored.append(uid)
        return status

    def _on_rejected(self, event: Any) -> None:
        with self._lock:
            self.rejected += 1

    def __enter__(self) -> ScriptedPacs:
        self.ae.maximum_associations = 10
        self._server = self.ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[
                (evt.EVT_C_STORE, self._on_store),
                (evt.EVT_REJECTED, self._on_rejected),
            ],
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
