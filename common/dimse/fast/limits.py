"""What a DIMSE peer may send, and how slowly.

- **Limits** on what is received: a PDU's length by type (:func:`pdu_length_limit`: a P-DATA-TF
  no longer than the Maximum Length Received we announced, control PDUs small), command sets
  (:data:`MAX_COMMAND_SET_LENGTH`), C-STORE datasets (the instance size limit, in
  :class:`~common.dimse.fast.scp.AcceptorPolicy`) and the datasets of other requests, which are
  kept in memory (:data:`MAX_REQUEST_DATASET_LENGTH`).
- **Pace** (:class:`TransferPace`): once the first byte of a PDU, or of a DIMSE message, has
  arrived, the rest must follow at an average of at least ``min_rate`` bytes per second, with
  ``patience`` seconds of slack. A peer that trickles a byte now and then, or a stream of tiny
  PDUs, cannot hold a message open forever; a steady sender above the floor is never cut.
  :class:`common.dimse.fast.transport.PduStream` keeps a :class:`TransferClock` as it parses.

Exceptions::

    TimeoutError
     +-- DeadlineExceededError   a TransferClock's deadline passed
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from common.dimse.fast.constants import (
    MAX_ASSOCIATE_RQ_LENGTH,
    MAX_CONTROL_PDU_LENGTH,
    PduType,
)

#: Largest command set accepted. Real ones are a few hundred bytes; it is kept in memory until
#: its last fragment, so a peer must not be able to grow it without bound.
MAX_COMMAND_SET_LENGTH = 1 << 16
#: Largest dataset of a request other than C-STORE (C-FIND/C-MOVE/C-GET identifiers, the
#: reference list of a Storage Commitment N-ACTION: some 100,000 instances fit), kept in memory;
#: C-STORE datasets go to a spool file and have their own limit.
MAX_REQUEST_DATASET_LENGTH = 1 << 24
#: Longest P-DATA-TF accepted when we announced no Maximum Length Received (0).
MAX_UNLIMITED_PDATA_LENGTH = 1 << 26
#: Default floor of :class:`TransferPace`, bytes per second (see ``--min_receive_rate``).
DEFAULT_MIN_RECEIVE_RATE = 4096

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
