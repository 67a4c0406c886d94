"""PDU framing on a blocking socket: reading PDUs and PDVs, writing P-DATA-TF messages.

Every PDU is a 6-byte header (type, reserved, big endian length) and a body (PS3.8 9.3). A
DIMSE message travels as PDV items inside P-DATA-TF PDUs: first the command set, then the
dataset, each cut into fragments that fit the peer's Maximum Length Received, the last fragment
of each flagged (PS3.8 E.2). The caller owns the socket's timeout: it sets the ACSE, DIMSE or
idle timeout before each wait, so a stalled peer surfaces as :class:`TimeoutError`. Limits and
the pace of a PDU or message once started are :mod:`common.dimse.fast.limits`'s.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import time
from collections.abc import Callable
from io import BufferedIOBase, RawIOBase
from pathlib import Path
from typing import TypeVar

from common.dimse.fast.constants import (
    PDU_HEADER_LENGTH,
    PDV_HEADER_LENGTH,
    AbortReason,
    AbortSource,
    PduType,
    PdvControl,
)
from common.dimse.fast.limits import (
    MAX_COMMAND_SET_LENGTH,
    DeadlineExceededError,
    TransferClock,
    TransferPace,
    pdu_length_limit,
)

_PDU_HEADER = struct.Struct(">BBI")
_PDV_HEADER = struct.Struct(">IBB")
_PDU_AND_PDV_HEADER = struct.Struct(">BBIIBB")
_ABORT = struct.Struct(">BBIBBBB")
_RELEASE = struct.Struct(">BBII")
_A = TypeVar("_A")
_R = TypeVar("_R")
#: How much to ask the kernel for at once when reading.
_RECV_SIZE = 1 << 18
#: A PDU body this much larger than what is buffered is received straight into its own buffer.
_DIRECT_READ = 1 << 16
#: Fragment size when the peer set no limit (Maximum Length Received 0).
UNLIMITED_PDV_DATA = (1 << 20) - PDV_HEADER_LENGTH
#: How many bytes of fragments to gather into one ``sendall`` while streaming a file.
_SEND_BATCH = 1 << 18


def pending_bytes(sock: object) -> int:
    """Bytes a TLS socket has already decrypted (or had put back) that ``select`` cannot see."""
    if isinstance(sock, ssl.SSLSocket):
        return int(sock.pending())
    return 0


class ConnectionClosedError(ConnectionError):
    """The peer closed the connection (mid-PDU or between PDUs)."""


class DimseProtocolError(Exception):
    """The peer broke the protocol; the association must be aborted with ``reason``."""

    def __init__(self, message: str, reason: AbortReason) -> None:
        super().__init__(message)
        self.reason = reason


class PeerAbortedError(ConnectionError):
    """The peer sent an A-ABORT.

    Attributes:
        source / reason: the A-ABORT's source and reason/diagnostic fields.
    """

    def __init__(self, source: int, reason: int) -> None:
        super().__init__(f"peer aborted the association (source {source}, reason {reason})")
        self.source = source
        self.reason = reason


class ReleaseRequestedError(Exception):
    """The peer sent an A-RELEASE-RQ where a DIMSE message was expected (the normal end)."""


def max_pdv_data(peer_max_length: int) -> int:
    """The most dataset or command bytes one PDV may carry for a peer's Maximum Length Received.

    The limit covers the PDU's variable field, i.e. the PDV item with its 6-byte header.
    """
    if peer_max_length <= 0:
        return UNLIMITED_PDV_DATA
    return max(peer_max_length - PDV_HEADER_LENGTH, 1)


def abort_pdu(source: AbortSource, reason: AbortReason = AbortReason.NOT_SPECIFIED) -> bytes:
    """An A-ABORT PDU (PS3.8 9.3.8)."""
    return _ABORT.pack(PduType.ABORT, 0, 4, 0, 0, source, reason)


def acceptor_abort_pdu(reason: AbortReason) -> bytes:
    """The A-ABORT we send as an acceptor.

    From the service provider with a protocol ``reason``; from the service user when the reason
    is ``NOT_SPECIFIED`` (timeouts, limits, shutdown: the reason field is then not significant).
    """
    source = (
        AbortSource.SERVICE_USER
        if reason == AbortReason.NOT_SPECIFIED
        else AbortSource.SERVICE_PROVIDER
    )
    return abort_pdu(source, reason)


def release_pdu(pdu_type: PduType) -> bytes:
    """An A-RELEASE-RQ or A-RELEASE-RP PDU (PS3.8 9.3.6-7)."""
    return _RELEASE.pack(pdu_type, 0, 4, 0)


def pdata_pdus(context_id: int, data: bytes, command: bool, fragment: int) -> list[bytes]:
    """``data`` as P-DATA-TF PDUs of one PDV each, the last fragment flagged."""
    base = PdvControl.COMMAND if command else 0
    pdus: list[bytes] = []
    total = len(data)
    start = 0
    while True:
        end = min(start + fragment, total)
        control = base | (PdvControl.LAST_FRAGMENT if end == total else 0)
        length = end - start
        pdus.append(
            _PDU_AND_PDV_HEADER.pack(
                PduType.P_DATA_TF, 0, length + PDV_HEADER_LENGTH, length + 2, context_id, control
            )
            + data[start:end]
        )
        if end == total:
            return pdus
        start = end


def message_pdus(context_id: int, command: bytes, dataset: bytes | None, fragment: int) -> bytes:
    """A whole DIMSE message as P-DATA-TF PDUs: the command set, then the dataset if any.

    Each is cut into fragments of at most ``fragment`` bytes (:func:`max_pdv_data`), its last
    fragment flagged. The one way a message held in memory is framed, whichever end sends it.
    """
    pdus = pdata_pdus(context_id, command, True, fragment)
    if dataset is not None:
        pdus += pdata_pdus(context_id, dataset, False, fragment)
    return b"".join(pdus)


class PduStream:
    """Reads and writes PDUs on one connected, blocking socket (one thread only).

    Attributes:
        max_receive: the Maximum Length Received we announced (0 = none): a longer P-DATA-TF
            PDU breaks the agreement (PS3.8 D.1) and is refused as a protocol error.
        deadline: a :func:`time.monotonic` time by which the current read must be complete
            (None: only the socket timeout applies). It bounds the whole read, so a peer that
            trickles one byte per timeout period (slow loris) is still dropped.
        clock: the pace (:class:`~common.dimse.fast.limits.TransferPace`) a PDU, and a DIMSE
            message from :meth:`read_command` to :meth:`end_message`, must keep once their
            first byte arrived; each read waits at most until its deadline.
    """

    def __init__(
        self, sock: socket.socket, max_receive: int = 0, pace: TransferPace | None = None
    ) -> None:
        self.sock = sock
        self.max_receive = max_receive
        self.deadline: float | None = None
        self.clock = TransferClock(pace or TransferPace(None))
        self._in_message = False
        self._buffer = bytearray()
        self._pos = 0
        # The P-DATA-TF body being walked PDV by PDV, and the offset of the next PDV.
        self._pdata = memoryview(b"")
        self._pdata_pos = 0

    # -- reading ------------------------------------------------------------------------------

    def _read_exact(self, count: int) -> bytes | bytearray:
        available = len(self._buffer) - self._pos
        if count - available >= _DIRECT_READ:
            return self._read_direct(count, available)
        while available < count:
            if self._pos:
                # Drop what has been consumed before growing the buffer.
                del self._buffer[: self._pos]
                self._pos = 0
            chunk = self._within_deadlines(self.sock.recv, max(_RECV_SIZE, count - available))
            if not chunk:
                raise ConnectionClosedError("peer closed the connection")
            self.clock.received(len(chunk), time.monotonic())
            self._buffer += chunk
            available += len(chunk)
        start = self._pos
        self._pos += count
        return bytes(self._buffer[start : self._pos])

    def _read_direct(self, count: int, available: int) -> bytearray:
        """Read a large PDU body straight into its own buffer (one copy, not four).

        What is buffered already goes first; the rest is received into place, never past the
        end (the next PDU's header is read the usual way).
        """
        out = bytearray(count)
        view = memoryview(out)
        view[:available] = self._buffer[self._pos :]
        del self._buffer[:]
        self._pos = 0
        filled = available
        while filled < count:
            received = self._within_deadlines(self.sock.recv_into, view[filled:])
            if not received:
                raise ConnectionClosedError("peer closed the connection")
            self.clock.received(received, time.monotonic())
            filled += received
        return out

    def _within_deadlines(self, read: Callable[[_A], _R], argument: _A) -> _R:
        """``read(argument)`` on the socket, waiting no longer than the deadlines allow.

        Raises:
            DeadlineExceededError: the socket timeout was the clock's deadline.
        """
        self._apply_deadlines()
        try:
            return read(argument)
        except TimeoutError:
            if self.clock.running:
                raise DeadlineExceededError("PDU or message not complete in time") from None
            raise

    def _apply_deadlines(self) -> None:
        """Lower the socket timeout to what the deadline and the clock leave."""
        now = time.monotonic()
        remaining = self.clock.remaining(now)
        if self.deadline is not None:
            left = self.deadline - now
            remaining = left if remaining is None else min(remaining, left)
        if remaining is None:
            return
        if remaining <= 0:
            raise DeadlineExceededError("PDU or message not complete in time")
        timeout = self.sock.gettimeout()
        if timeout is None or timeout > remaining:
            self.sock.settimeout(remaining)

    def end_message(self) -> None:
        """The DIMSE message is complete: its clock stops (the next byte starts a new one)."""
        self._in_message = False
        self.clock.stop()

    def read_pdu(self) -> tuple[int, bytes | bytearray]:
        """The next PDU's type and body.

        Raises:
            ConnectionClosedError: the peer closed the connection.
            DimseProtocolError: an unknown PDU type, or an implausible length.
            TimeoutError: the socket timeout expired (:class:`DeadlineExceededError`: the
                deadline, or the pace's, of a PDU or message in progress).
        """
        pdu_type, _reserved, length = _PDU_HEADER.unpack(self._read_exact(PDU_HEADER_LENGTH))
        limit = pdu_length_limit(pdu_type, self.max_receive)
        if limit is None:
            raise DimseProtocolError(
                f"unrecognised PDU type 0x{pdu_type:02X}", AbortReason.UNRECOGNIZED_PDU
            )
        if length > limit:
            raise DimseProtocolError(
                f"PDU of {length} bytes exceeds the limit", AbortReason.INVALID_PDU_PARAMETER_VALUE
            )
        body = self._read_exact(length)
        if not self._in_message:
            self.clock.stop()
        return pdu_type, body

    def next_pdv(self) -> tuple[int, int, memoryview]:
        """The next PDV: presentation context ID, control header and data.

        Reads P-DATA-TF PDUs as needed. The data view stays valid after later calls.

        Raises:
            ReleaseRequestedError: an A-RELEASE-RQ arrived instead.
            PeerAbortedError: an A-ABORT arrived instead.
            DimseProtocolError: any other PDU, or a malformed PDV item.
            ConnectionClosedError / TimeoutError: as :meth:`read_pdu`.
        """
        while self._pdata_pos >= len(self._pdata):
            pdu_type, body = self.read_pdu()
            if pdu_type == PduType.P_DATA_TF:
                self._pdata = memoryview(body)
                self._pdata_pos = 0
                if not body:
                    raise DimseProtocolError(
                        "empty P-DATA-TF", AbortReason.INVALID_PDU_PARAMETER_VALUE
                    )
                continue
            raise_for_control_pdu(pdu_type, body)
        pos = self._pdata_pos
        if len(self._pdata) - pos < PDV_HEADER_LENGTH:
            raise DimseProtocolError(
                "truncated PDV item", AbortReason.INVALID_PDU_PARAMETER_VALUE
            )
        item_length, context_id, control = _PDV_HEADER.unpack_from(self._pdata, pos)
        end = pos + 4 + item_length
        if item_length < 2 or end > len(self._pdata):
            raise DimseProtocolError(
                "PDV item length does not fit its PDU", AbortReason.INVALID_PDU_PARAMETER_VALUE
            )
        self._pdata_pos = end
        return context_id, control, self._pdata[pos + PDV_HEADER_LENGTH : end]

    def has_input(self) -> bool:
        """Whether a read would find data without waiting (buffered, decrypted or on the wire)."""
        if self._pdata_pos < len(self._pdata) or self._pos < len(self._buffer):
            return True
        if pending_bytes(self.sock):
            return True
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)

    def read_command(self) -> tuple[int, bytes]:
        """The next command set: its presentation context ID and bytes.

        A new DIMSE message starts: its clock runs from its first byte until
        :meth:`end_message` (which :meth:`read_dataset` calls at the dataset's end; call it
        for a command without a dataset).

        Raises:
            DimseProtocolError: a dataset fragment came first, fragments switched context, or
                the command set is implausibly long.
            (and whatever :meth:`next_pdv` raises)
        """
        self.end_message()
        self._in_message = True
        parts: list[memoryview] = []
        size = 0
        context: int | None = None
        while True:
            context_id, control, data = self.next_pdv()
            if not control & PdvControl.COMMAND:
                raise DimseProtocolError(
                    "dataset fragment where a command was expected", AbortReason.UNEXPECTED_PDU
                )
            if context is not None and context_id != context:
                raise DimseProtocolError(
                    "command fragments on different contexts",
                    AbortReason.INVALID_PDU_PARAMETER_VALUE,
                )
            context = context_id
            size += len(data)
            if size > MAX_COMMAND_SET_LENGTH:
                raise DimseProtocolError(
                    "command set too long", AbortReason.INVALID_PDU_PARAMETER_VALUE
                )
            parts.append(data)
            if control & PdvControl.LAST_FRAGMENT:
                return context_id, b"".join(parts)

    def read_dataset(self, context_id: int, write: Callable[[memoryview], object]) -> int:
        """Pass each fragment of the dataset that follows a command to ``write``.

        The message ends (:meth:`end_message`) with its last fragment.

        Returns:
            The number of dataset bytes.

        Raises:
            DimseProtocolError: a command fragment or another context ID came instead.
            (and whatever :meth:`next_pdv` raises)
        """
        total = 0
        while True:
            pdv_context, control, data = self.next_pdv()
            if control & PdvControl.COMMAND:
                raise DimseProtocolError(
                    "command fragment inside a dataset", AbortReason.UNEXPECTED_PDU
                )
            if pdv_context != context_id:
                raise DimseProtocolError(
                    "dataset fragment on another context", AbortReason.INVALID_PDU_PARAMETER_VALUE
                )
            if data:
                write(data)
                total += len(data)
            if control & PdvControl.LAST_FRAGMENT:
                self.end_message()
                return total

    # -- writing ------------------------------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Write bytes (whole PDUs) to the socket."""
        self.sock.sendall(data)

    def send_file_dataset(
        self, context_id: int, command: bytes, path: Path, dataset_offset: int, fragment: int
    ) -> None:
        """Send a command set and the dataset of a Part 10 file (its bytes after the meta).

        Raises:
            ConnectionClosedError: the file ended early (it changed under us).
            OSError: the file or the socket failed.
        """
        with path.open("rb") as fp:
            size = fp.seek(0, 2)
            fp.seek(dataset_offset)
            self.send_message_from_file(context_id, command, fp, size - dataset_offset, fragment)

    def send_message_from_file(
        self,
        context_id: int,
        command: bytes,
        source: BufferedIOBase | RawIOBase,
        length: int,
        fragment: int,
    ) -> None:
        """Send a command set and ``length`` dataset bytes read from ``source``.

        The dataset is read in batches straight into a buffer that already has room for each
        fragment's headers, so each batch costs one read and one ``sendall``; the command goes
        out with the first batch (one system call for a small instance).

        Raises:
            ConnectionClosedError: the file ended early (it changed under us).
            OSError: the socket failed.
        """
        head = message_pdus(context_id, command, None, fragment)
        per_batch = max(1, _SEND_BATCH // fragment)
        remaining = length
        first = True
        while remaining > 0 or first:
            count = min(remaining, per_batch * fragment)
            out = bytearray(head if first else b"")
            first = False
            while count > 0:
                size = min(fragment, count)
                control = PdvControl.LAST_FRAGMENT if size == remaining else 0
                start = len(out)
                out += _PDU_AND_PDV_HEADER.pack(
                    PduType.P_DATA_TF, 0, size + PDV_HEADER_LENGTH, size + 2, context_id, control
                )
                out += b"\x00" * size
                view = memoryview(out)[start + _PDU_AND_PDV_HEADER.size :]
                got = source.readinto(view)
                view.release()
                if got != size:
                    raise ConnectionClosedError("the file ended before its dataset did")
                count -= size
                remaining -= size
            self.send(out)
            if length == 0:
                # An empty dataset is still one (last) fragment.
                self.send(pdata_pdus(context_id, b"", False, fragment)[0])
                return


def raise_for_control_pdu(pdu_type: int, body: bytes | bytearray) -> None:
    """Raise the exception that a non-P-DATA PDU means where a DIMSE message was expected."""
    if pdu_type == PduType.RELEASE_RQ:
        raise ReleaseRequestedError("peer requested release")
    if pdu_type == PduType.ABORT:
        source = body[2] if len(body) > 2 else 0
        reason = body[3] if len(body) > 3 else 0
        raise PeerAbortedError(source, reason)
    raise DimseProtocolError(f"unexpected PDU type 0x{pdu_type:02X}", AbortReason.UNEXPECTED_PDU)
