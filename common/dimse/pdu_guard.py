"""What a DIMSE peer may send, and how slowly: one rule for both engines, and a stream guard.

Two things are defined here, for every association we accept:

- **Limits** on what is received: a PDU's length by type (:func:`pdu_length_limit`: a P-DATA-TF
  no longer than the Maximum Length Received we announced, control PDUs small), command sets
  (:data:`MAX_COMMAND_SET_LENGTH`), C-STORE datasets (the instance size limit) and the datasets
  of other requests, which are kept in memory (:data:`MAX_REQUEST_DATASET_LENGTH`).
- **Pace** (:class:`TransferPace`): once the first byte of a PDU, or of a DIMSE message, has
  arrived, the rest must follow at an average of at least ``min_rate`` bytes per second, with
  ``patience`` seconds of slack. A peer that trickles a byte now and then, or a stream of tiny
  PDUs, cannot hold a message open forever; a steady sender above the floor is never cut.

The fast engine (:class:`common.dimse.fast.transport.PduStream`) parses PDUs itself and applies
the same limits and a :class:`TransferClock`. Associations handed to pynetdicom are watched by
a :class:`PduGuard`: a pure state machine fed with every chunk the socket's reads return, which
follows PDU headers, PDV items and their control bits (command or dataset, last fragment) and
raises :class:`PduViolation` when the peer breaks a limit or a deadline. It never touches a
socket; :mod:`common.dimse.sockets` applies it to one.

Exceptions::

    PduViolation            a limit or deadline broken; carries the A-ABORT reason
    TimeoutError
     +-- DeadlineExceededError   a TransferClock's deadline passed
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass

from common.dimse.fast.commands import CommandSetError, decode_command_set
from common.dimse.fast.constants import (
    MAX_ASSOCIATE_RQ_LENGTH,
    MAX_CONTROL_PDU_LENGTH,
    PDU_HEADER_LENGTH,
    PDV_HEADER_LENGTH,
    AbortReason,
    CommandField,
    PduType,
    PdvControl,
)

#: Largest command set accepted. Real ones are a few hundred bytes; both engines keep it in
#: memory until its last fragment, so a peer must not be able to grow it without bound.
MAX_COMMAND_SET_LENGTH = 1 << 16
#: Largest dataset of a request other than C-STORE (C-FIND/C-MOVE/C-GET identifiers, the
#: reference list of a Storage Commitment N-ACTION: some 100,000 instances fit). pynetdicom keeps
#: these in memory; C-STORE datasets go to a spool file and have their own limit.
MAX_REQUEST_DATASET_LENGTH = 1 << 24
#: Longest P-DATA-TF accepted when we announced no Maximum Length Received (0).
MAX_UNLIMITED_PDATA_LENGTH = 1 << 26
#: Default floor of :class:`TransferPace`, bytes per second (see ``--min_receive_rate``).
DEFAULT_MIN_RECEIVE_RATE = 4096

_PDU_HEADER = struct.Struct(">BBI")
_PDV_HEADER = struct.Struct(">IBB")
_KNOWN_PDU_TYPES = frozenset(int(t) for t in PduType)


def pdu_length_limit(pdu_type: int, max_receive: int) -> int | None:
    """The longest body a PDU of ``pdu_type`` may have (None: not a PDU type at all).

    Args:
        pdu_type: the PDU's first byte.
        max_receive: the Maximum Length Received we announced (0 = none announced).
    """
    if pdu_type == PduType.P_DATA_TF:
        return max_receive if max_receive > 0 else MAX_UNLIMITED_PDATA_LENGTH
    if pdu_type == PduType.ASSOCIATE_RQ:
        return MAX_ASSOCIATE_RQ_LENGTH
    if pdu_type in _KNOWN_PDU_TYPES:
        return MAX_CONTROL_PDU_LENGTH
    return None


class DeadlineExceededError(TimeoutError):
    """The rest of a PDU or DIMSE message did not arrive in time."""


class PduViolation(Exception):
    """The peer broke a limit or a deadline; the association must be aborted.

    Attributes:
        reason: the A-ABORT reason to send (``NOT_SPECIFIED`` for deadlines and size policy).
    """

    def __init__(self, message: str, reason: AbortReason) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TransferPace:
    """How long the rest of a PDU or DIMSE message may take once its first byte arrived.

    The rule: the deadline starts ``patience`` seconds after the first byte; every byte
    received moves it ``1 / min_rate`` seconds later, but never beyond ``patience`` seconds from
    now (a fast start banks no credit for a trickle later). So:

    - a pause of up to ``patience`` is tolerated anywhere (as a per-read timeout would);
    - a sender averaging ``min_rate`` bytes per second or more is never cut;
    - one averaging ``r < min_rate`` is cut after at most ``patience / (1 - r / min_rate)``
      seconds: a byte every ``patience - epsilon`` seconds lasts about ``patience``.

    Attributes:
        patience: seconds (None: no deadline at all).
        min_rate: bytes per second (0: no floor; only ``patience`` per read applies).
    """

    patience: float | None
    min_rate: float = float(DEFAULT_MIN_RECEIVE_RATE)

    def first(self, now: float) -> float | None:
        """The deadline once a first byte arrived at ``now`` (None: none)."""
        return None if self.patience is None else now + self.patience

    def extend(self, deadline: float | None, count: int, now: float) -> float | None:
        """The deadline after ``count`` more bytes arrived at ``now``."""
        if deadline is None or self.patience is None:
            return None
        credit = count / self.min_rate if self.min_rate > 0 else math.inf
        return min(deadline + credit, now + self.patience)


class TransferClock:
    """One deadline under a :class:`TransferPace`, started by the first byte (one thread only)."""

    def __init__(self, pace: TransferPace) -> None:
        self.pace = pace
        self._running = False
        self._deadline: float | None = None

    @property
    def running(self) -> bool:
        """Whether a PDU or message is in progress (bytes of it arrived, not all)."""
        return self._running

    def received(self, count: int, now: float) -> None:
        """Account for ``count`` bytes that arrived at ``now``; the first ones start the clock.

        Raises:
            DeadlineExceededError: they arrived after the deadline.
        """
        if not count:
            return
        if not self._running:
            self._running = True
            self._deadline = self.pace.first(now)
        elif self._deadline is not None and now > self._deadline:
            raise DeadlineExceededError("the rest did not arrive in time")
        self._deadline = self.pace.extend(self._deadline, count, now)

    def remaining(self, now: float) -> float | None:
        """Seconds left for the next bytes (None: not running, or no deadline; may be <= 0)."""
        if not self._running or self._deadline is None:
            return None
        return self._deadline - now

    def stop(self) -> None:
        """The PDU or message is complete: the next byte starts a new deadline."""
        self._running = False
        self._deadline = None


@dataclass(frozen=True)
class PduLimits:
    """What one association may send.

    Attributes:
        max_receive: the Maximum Length Received we announced (0 = none: see
            :data:`MAX_UNLIMITED_PDATA_LENGTH`).
        max_instance_size: the largest C-STORE dataset, in bytes (0 = unlimited).
        max_command_set: the largest command set.
        max_request_dataset: the largest dataset of any other request.
    """

    max_receive: int
    max_instance_size: int = 0
    max_command_set: int = MAX_COMMAND_SET_LENGTH
    max_request_dataset: int = MAX_REQUEST_DATASET_LENGTH


class _Phase(enum.Enum):
    """Where the current DIMSE message stands."""

    IDLE = "between messages"
    COMMAND = "command set"
    DATASET = "dataset"


class PduGuard:
    """Follows the byte stream a peer sends on one association and enforces the limits and pace.

    Feed it, in order, every chunk read from the connection (however the reads split the
    stream): :meth:`feed` raises :class:`PduViolation` at the first chunk that breaks a rule,
    and keeps raising it afterwards. :meth:`time_left` says how long the next read may wait.
    The clock runs from the first byte of a PDU until that PDU is complete, and from the first
    byte of a DIMSE message (its first command fragment) until its last fragment (that of the
    dataset, if the command announces one).

    Pure: no socket, no clock of its own (``now`` comes from the caller), no logging.
    """

    def __init__(self, limits: PduLimits, pace: TransferPace) -> None:
        self.limits = limits
        self.clock = TransferClock(pace)
        self.failure: PduViolation | None = None
        # The PDU being read: header bytes so far, then type and body bytes still to come.
        self._header = bytearray()
        self._pdu_type: int | None = None
        self._pdu_left = 0
        # Inside a P-DATA-TF: PDV header bytes so far, then the PDV's control and data to come.
        self._pdv_header = bytearray()
        self._pdv_control: int | None = None
        self._pdv_left = 0
        # The DIMSE message being received.
        self._phase = _Phase.IDLE
        self._command = bytearray()
        self._command_name = ""
        self._dataset_size = 0
        self._dataset_limit: int | None = None

    # -- what callers ask ---------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a PDU or a DIMSE message has started and is not complete."""
        return self._pdu_type is not None or bool(self._header) or self._phase is not _Phase.IDLE

    def time_left(self, now: float) -> float | None:
        """Seconds the next read may wait (None: nothing in progress, or no deadline)."""
        return self.clock.remaining(now) if self.busy else None

    def expired(self) -> PduViolation:
        """The violation for a read that waited until :meth:`time_left` ran out (recorded)."""
        self.failure = self.failure or PduViolation(
            f"{self._where()} not complete in time (under "
            f"{self.clock.pace.min_rate:.0f} bytes/s, or silent for "
            f"{self.clock.pace.patience}s)",
            AbortReason.NOT_SPECIFIED,
        )
        return self.failure

    # -- feeding ------------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Check the next bytes the peer sent (received at ``now``).

        Raises:
            PduViolation: they break a limit, the stream is malformed where this guard must
                understand it (PDU and PDV headers, control bits), or they came too late.
        """
        if self.failure is not None:
            raise self.failure
        if not data:
            return
        try:
            try:
                self.clock.received(len(data), now)
            except DeadlineExceededError:
                raise self.expired() from None
            self._consume(memoryview(data).cast("B"))
        except PduViolation as violation:
            self.failure = violation
            raise
        if not self.busy:
            self.clock.stop()

    def _consume(self, view: memoryview) -> None:
        pos, end = 0, len(view)
        while pos < end:
            if self._pdu_type is None:
                take = min(PDU_HEADER_LENGTH - len(self._header), end - pos)
                self._header += view[pos : pos + take]
                pos += take
                if len(self._header) == PDU_HEADER_LENGTH:
                    self._begin_pdu()
            elif self._pdu_type != PduType.P_DATA_TF:
                take = min(self._pdu_left, end - pos)
                pos += take
                self._pdu_left -= take
                if not self._pdu_left:
                    self._end_pdu()
            elif self._pdv_control is None:
                take = min(PDV_HEADER_LENGTH - len(self._pdv_header), end - pos)
                self._pdv_header += view[pos : pos + take]
                pos += take
                self._pdu_left -= take
                if len(self._pdv_header) == PDV_HEADER_LENGTH:
                    self._begin_pdv()
            else:
                take = min(self._pdv_left, end - pos)
                self._fragment_data(view[pos : pos + take])
                pos += take
                self._pdv_left -= take
                self._pdu_left -= take
                if not self._pdv_left:
                    self._end_pdv()

    # -- PDUs ---------------------------------------------------------------------------------

    def _begin_pdu(self) -> None:
        pdu_type, _reserved, length = _PDU_HEADER.unpack(self._header)
        self._header.clear()
        limit = pdu_length_limit(pdu_type, self.limits.max_receive)
        if limit is None:
            raise PduViolation(f"unrecognised PDU type 0x{pdu_type:02X}",
                               AbortReason.UNRECOGNIZED_PDU)
        if length > limit:
            raise PduViolation(
                f"{_pdu_name(pdu_type)} of {length} bytes, over the limit of {limit}",
                AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )
        self._pdu_type, self._pdu_left = pdu_type, length
        if not length:
            self._end_pdu()
        elif pdu_type == PduType.P_DATA_TF:
            self._expect_pdv()

    def _end_pdu(self) -> None:
        self._pdu_type = None
        self._pdu_left = 0

    # -- PDV items of a P-DATA-TF -------------------------------------------------------------

    def _expect_pdv(self) -> None:
        """The next PDV item starts here (the P-DATA-TF has bytes left)."""
        if self._pdu_left < PDV_HEADER_LENGTH:
            raise PduViolation("P-DATA-TF ends inside a PDV item header",
                               AbortReason.INVALID_PDU_PARAMETER_VALUE)

    def _begin_pdv(self) -> None:
        item_length, _context, control = _PDV_HEADER.unpack(self._pdv_header)
        self._pdv_header.clear()
        data_length = item_length - 2  # the item length counts context ID and control header
        if data_length < 0 or data_length > self._pdu_left:
            raise PduViolation("PDV item length does not fit its P-DATA-TF",
                               AbortReason.INVALID_PDU_PARAMETER_VALUE)
        self._pdv_control, self._pdv_left = control, data_length
        self._begin_fragment(control)
        if not data_length:
            self._end_pdv()

    def _end_pdv(self) -> None:
        control = self._pdv_control
        self._pdv_control = None
        if control is not None and control & PdvControl.LAST_FRAGMENT:
            self._end_part()
        if not self._pdu_left:
            self._end_pdu()
        else:
            self._expect_pdv()

    # -- DIMSE messages -----------------------------------------------------------------------

    def _begin_fragment(self, control: int) -> None:
        command = bool(control & PdvControl.COMMAND)
        if self._phase is _Phase.IDLE:
            if not command:
                raise PduViolation("dataset fragment where a command was expected",
                                   AbortReason.UNEXPECTED_PDU)
            self._phase = _Phase.COMMAND
            self._command.clear()
        elif self._phase is _Phase.COMMAND and not command:
            raise PduViolation("dataset fragment inside a command set",
                               AbortReason.UNEXPECTED_PDU)
        elif self._phase is _Phase.DATASET and command:
            raise PduViolation(f"command fragment inside a {self._command_name} dataset",
                               AbortReason.UNEXPECTED_PDU)

    def _fragment_data(self, data: memoryview) -> None:
        if self._phase is _Phase.COMMAND:
            if len(self._command) + len(data) > self.limits.max_command_set:
                raise PduViolation(
                    f"command set over {self.limits.max_command_set} bytes",
                    AbortReason.INVALID_PDU_PARAMETER_VALUE,
                )
            self._command += data
            return
        self._dataset_size += len(data)
        limit = self._dataset_limit
        if limit is not None and self._dataset_size > limit:
            if self._command_name == "C-STORE-RQ":
                raise PduViolation(
                    f"C-STORE dataset over the instance size limit of {limit} bytes",
                    AbortReason.NOT_SPECIFIED,
                )
            raise PduViolation(
                f"{self._command_name} dataset over {limit} bytes",
                AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )

    def _end_part(self) -> None:
        """The last fragment of the command set or of the dataset has arrived."""
        if self._phase is not _Phase.COMMAND:
            self._phase = _Phase.IDLE
            return
        field, has_dataset = _command_summary(self._command)
        self._command.clear()
        if not has_dataset:
            self._phase = _Phase.IDLE
            return
        self._phase = _Phase.DATASET
        self._dataset_size = 0
        if field == CommandField.C_STORE_RQ:
            self._command_name = "C-STORE-RQ"
            self._dataset_limit = self.limits.max_instance_size or None
        else:
            self._command_name = _command_name(field)
            self._dataset_limit = self.limits.max_request_dataset

    def _where(self) -> str:
        if self._phase is _Phase.DATASET:
            return f"{self._command_name} dataset ({self._dataset_size} bytes so far)"
        if self._phase is _Phase.COMMAND:
            return "DIMSE command set"
        if self._pdu_type is not None:
            return _pdu_name(self._pdu_type)
        return "PDU header"


_PDU_NAMES: dict[int, str] = {
    PduType.ASSOCIATE_RQ: "A-ASSOCIATE-RQ",
    PduType.ASSOCIATE_AC: "A-ASSOCIATE-AC",
    PduType.ASSOCIATE_RJ: "A-ASSOCIATE-RJ",
    PduType.P_DATA_TF: "P-DATA-TF",
    PduType.RELEASE_RQ: "A-RELEASE-RQ",
    PduType.RELEASE_RP: "A-RELEASE-RP",
    PduType.ABORT: "A-ABORT",
}


def _pdu_name(pdu_type: int) -> str:
    name = _PDU_NAMES.get(pdu_type)
    return f"{name} PDU" if name else f"PDU type 0x{pdu_type:02X}"


def _command_name(field: int | None) -> str:
    if field is None:
        return "request"
    try:
        return CommandField(field).name.replace("_", "-")
    except ValueError:
        return f"command 0x{field:04X}"


def _command_summary(raw: bytes | bytearray) -> tuple[int | None, bool]:
    """(0000,0100) Command Field (None: unreadable) and whether a dataset follows.

    A command set this cannot read is the engine's to refuse; here it announces no dataset.
    """
    try:
        command = decode_command_set(raw)
        field = command.command_field
    except CommandSetError:
        return None, False
    try:
        return field, command.has_dataset
    except CommandSetError:
        return field, False
