"""The listener's pynetdicom AE, whose title can differ for one thread's outbound work.

pynetdicom's C-MOVE SCP takes two AE titles from ``AE.ae_title``, the listener's, where the
standard and the reference adapter want others:

- it opens the association to the move destination itself, with ``AE.associate(host, port,
  **kwargs)`` (``kwargs``: what the EVT_C_MOVE handler yielded with the destination), calling as
  ``AE.ae_title``; ``--dimse_cmove_aet`` names another calling AE title. :meth:`associate`
  takes one more keyword, ``calling_ae_title``, for that.
- it names ``AE.ae_title`` as the Move Originator AE Title of each C-STORE sub-operation, where
  PS3.7 9.1.1.1.9 wants the AE that requested the C-MOVE. :meth:`acting_as` covers that.

Both work by answering :attr:`ae_title` with another title in the calling thread only, for a
bounded stretch: pynetdicom runs the C-MOVE handler, ``associate`` (which reads the title once,
before it starts the association's own thread) and the sub-operations in the thread serving the
requesting association; every other thread, and every other moment, sees the listener's title.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association

#: The keyword a C-MOVE handler adds to the destination options to call as another AE title.
CALLING_AE_TITLE = "calling_ae_title"


class ListenerAE(AE):
    """A pynetdicom AE whose :meth:`associate` takes an optional ``calling_ae_title``."""

    def __init__(self, ae_title: str) -> None:
        self._override = threading.local()
        super().__init__(ae_title=ae_title)

    @property
    def ae_title(self) -> str:
        """The AE title: ours, or the calling title of the ``associate`` call in progress."""
        override: str | None = getattr(self._override, "title", None)
        return override if override is not None else str(self._ae_title)

    @ae_title.setter
    def ae_title(self, value: str) -> None:
        AE.ae_title.fset(self, value)  # type: ignore[attr-defined]

    def associate(
        self, addr: Any, port: int, *args: Any, calling_ae_title: str | None = None, **kwargs: Any
    ) -> Association:
        """As :meth:`pynetdicom.AE.associate`, calling as ``calling_ae_title`` when given."""
        if not calling_ae_title:
            return super().associate(addr, port, *args, **kwargs)
        with self.acting_as(calling_ae_title):
            return super().associate(addr, port, *args, **kwargs)

    @contextmanager
    def acting_as(self, title: str) -> Iterator[None]:
        """:attr:`ae_title` is ``title`` in this thread for the duration of the block."""
        previous: str | None = getattr(self._override, "title", None)
        self._override.title = title
        try:
            yield
        finally:
            self._override.title = previous
