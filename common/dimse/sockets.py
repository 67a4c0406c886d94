"""Socket options and read guards for DIMSE connections.

pynetdicom leaves Nagle's algorithm on; with the small PDUs of a C-STORE response that costs a
delayed-ACK round (~40-90 ms) per message. ``EVT_CONN_OPEN`` fires for connections we accept and
connections we open, so binding :data:`SOCKET_HANDLERS` to every AE and association sets
``TCP_NODELAY`` everywhere.

pynetdicom reads a PDU by its header's length, 4 KiB at a time, into memory, with no timeout once
the PDU started. On connections handed to it, a :class:`ReadGuard` sees every byte its reads
return (through :class:`GuardedSocket`, or the same hook in
:class:`common.dimse.tls.ReplayableSSLSocket`), applies a :class:`~common.dimse.pdu_guard.PduGuard`
and, when the peer breaks a limit or a deadline, sends an A-ABORT, shuts the connection down and
makes the read fail: pynetdicom then ends the association (transport connection closed). The
guard is a socket subclass rather than a wrapper because pynetdicom hands the socket to
``select`` and, for TLS, checks ``isinstance(sock, ssl.SSLSocket)`` and ``pending()``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, NoReturn

from pynetdicom import evt

from common.dimse.fast.transport import acceptor_abort_pdu
from common.dimse.pdu_guard import PduGuard, PduViolation
from common.errors import ReportedError

LOG = logging.getLogger(__name__)

#: Seconds the A-ABORT of a guarded connection may take to go out before the connection is cut.
_ABORT_SEND_TIMEOUT = 1.0


def set_tcp_nodelay(event: Any) -> None:
    """Turn off Nagle's algorithm on the association's socket."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # e.g. the peer already closed the connection
        LOG.debug("cannot set TCP_NODELAY: %s", exc)


#: Event handlers to bind to every AE (server) and every association we request.
SOCKET_HANDLERS: list[tuple[Any, Any]] = [(evt.EVT_CONN_OPEN, set_tcp_nodelay)]


class PduGuardAbortError(ConnectionAbortedError, ReportedError):
    """A guarded connection was aborted because its peer broke a limit or a deadline.

    Logged once, as a warning naming the peer and the rule (:meth:`ReadGuard._abort`).
    """


class ReadGuard:
    """Applies a :class:`~common.dimse.pdu_guard.PduGuard` to the reads of one connection.

    Each read waits at most until the deadline of the PDU or message in progress (between
    PDUs: the guard's patience, which matters only for TLS, whose records may arrive in part);
    afterwards the socket's timeout goes back to ``resting_timeout``, which bounds sends.

    Args:
        guard: the state machine, fresh for this connection.
        peer: how logs name the peer (``AET@host:port``: identifiers only).
        resting_timeout: the socket timeout outside guarded reads (None: blocking).
        clock: :func:`time.monotonic` (tests may pass another).
        head: what the reads return instead of the first ``len(head)`` bytes of the stream,
            which must be as long as them: the A-ASSOCIATE-RQ the listener has already read,
            made canonical (:func:`common.dimse.fast.acse.canonical_associate_rq`), so that
            pynetdicom reads the same request as the adapter's engine would.
    """

    def __init__(
        self,
        guard: PduGuard,
        peer: str,
        *,
        resting_timeout: float | None,
        clock: Callable[[], float] = time.monotonic,
        head: bytes = b"",
    ) -> None:
        self._guard = guard
        self._peer = peer
        self._resting = resting_timeout
        self._clock = clock
        self._head = head
        self._position = 0  # bytes read so far, counted while within the head

    def recv(self, sock: socket.socket, read: Callable[[], bytes]) -> bytes:
        """Run one read of ``sock`` (``read``) under the guard.

        Raises:
            PduGuardAbortError: the peer broke a rule; the A-ABORT has been sent and the
                connection shut down (every later read raises it too).
            OSError: the read itself failed.
        """
        guard = self._guard
        if guard.failure is not None:
            raise PduGuardAbortError(str(guard.failure))
        left = guard.time_left(self._clock())
        if left is None:
            left = guard.clock.pace.patience
        if left is not None and left <= 0:
            self._abort(sock, guard.expired())
        try:
            sock.settimeout(left)
            data = read()
        except TimeoutError:
            self._abort(sock, guard.expired())
        finally:
            with contextlib.suppress(OSError):  # closed meanwhile
                sock.settimeout(self._resting)
        if self._position < len(self._head):
            data = self._replace_head(data)
        try:
            guard.feed(data, self._clock())
        except PduViolation as violation:
            self._abort(sock, violation)
        return data

    def _replace_head(self, data: bytes) -> bytes:
        start = self._position
        self._position += len(data)
        count = min(len(data), len(self._head) - start)
        return self._head[start : start + count] + data[count:]

    def _abort(self, sock: socket.socket, violation: PduViolation) -> NoReturn:
        LOG.warning("association from %s aborted: %s", self._peer, violation)
        with contextlib.suppress(OSError):  # the peer may be gone already
            sock.settimeout(_ABORT_SEND_TIMEOUT)
            sock.sendall(acceptor_abort_pdu(violation.reason))
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        # No chained traceback; pynetdicom's own log records of it are dropped (common.logs).
        raise PduGuardAbortError(str(violation)) from None


def guarded_recv_into(
    recv: Callable[[int], bytes], buffer: Any, nbytes: int | None
) -> int:
    """``recv_into`` through a guarded ``recv`` (the guard must see the bytes it returns)."""
    view = memoryview(buffer).cast("B")
    data = recv(min(nbytes or len(view), len(view)))
    view[: len(data)] = data
    return len(data)


class GuardedSocket(socket.socket):
    """A plain TCP socket whose reads pass a :class:`ReadGuard` (when one is set)."""

    read_guard: ReadGuard | None = None

    @classmethod
    def adopt(cls, sock: socket.socket, guard: ReadGuard) -> GuardedSocket:
        """Take over ``sock``'s connection (``sock`` is detached: do not use it afterwards).

        Socket options (``TCP_NODELAY``...) belong to the connection and carry over.
        """
        timeout = sock.gettimeout()
        adopted = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        adopted.settimeout(timeout)
        adopted.read_guard = guard
        return adopted

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        """As :meth:`socket.socket.recv`, under the guard (peeks bypass it)."""
        guard = self.read_guard
        if guard is None or flags:
            return super().recv(bufsize, flags)
        return guard.recv(self, functools.partial(socket.socket.recv, self, bufsize))

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0, /) -> int:
        """As :meth:`socket.socket.recv_into`, under the guard (peeks bypass it)."""
        if self.read_guard is None or flags:
            return super().recv_into(buffer, nbytes, flags)
        return guarded_recv_into(self.recv, buffer, nbytes)
