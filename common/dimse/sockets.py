"""``TCP_NODELAY`` for associations pynetdicom opens (the commitment report, until it moves).

pynetdicom leaves Nagle's algorithm on; with the small PDUs of a DIMSE exchange that costs a
delayed-ACK round (~40-90 ms) per message. Binding :data:`SOCKET_HANDLERS` to an association
sets ``TCP_NODELAY`` on its socket when it opens.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from pynetdicom import evt

LOG = logging.getLogger(__name__)


def set_tcp_nodelay(event: Any) -> None:
    """Turn off Nagle's algorithm on the association's socket."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # e.g. the peer already closed the connection
        LOG.debug("cannot set TCP_NODELAY: %s", exc)


#: Event handlers to bind to every association pynetdicom requests for us.
SOCKET_HANDLERS: list[tuple[Any, Any]] = [(evt.EVT_CONN_OPEN, set_tcp_nodelay)]
