"""What a peer may send and how slowly: PDU length limits and the transfer pace rule."""

from __future__ import annotations

import pytest

from common.dimse.fast.constants import MAX_ASSOCIATE_RQ_LENGTH, MAX_CONTROL_PDU_LENGTH, PduType
from common.dimse.fast.limits import (
    MAX_UNLIMITED_PDATA_LENGTH,
    DeadlineExceededError,
    TransferClock,
    TransferPace,
    pdu_length_limit,
)


def test_pdu_length_limits_by_type() -> None:
    assert pdu_length_limit(PduType.P_DATA_TF, 16384) == 16384
    assert pdu_length_limit(PduType.P_DATA_TF, 0) == MAX_UNLIMITED_PDATA_LENGTH
    assert pdu_length_limit(PduType.ASSOCIATE_RQ, 16384) == MAX_ASSOCIATE_RQ_LENGTH
    for control in (PduType.ASSOCIATE_AC, PduType.RELEASE_RQ, PduType.ABORT):
        assert pdu_length_limit(control, 16384) == MAX_CONTROL_PDU_LENGTH
    assert pdu_length_limit(0x08, 16384) is None


def test_pace_rule() -> None:
    pace = TransferPace(10.0, 100.0)
    assert pace.first(5.0) == 15.0
    assert pace.extend(15.0, 100, 6.0) == 16.0  # 100 bytes at 100 B/s: one more second
    assert pace.extend(15.0, 10_000, 6.0) == 16.0  # never beyond now + patience
    assert TransferPace(10.0, 0.0).extend(12.0, 1, 6.0) == 16.0  # no floor: per read only
    assert TransferPace(None).first(1.0) is None
    assert TransferPace(None).extend(None, 5, 1.0) is None


def test_clock_starts_with_the_first_byte_and_stops() -> None:
    clock = TransferClock(TransferPace(10.0, 100.0))
    assert clock.remaining(0.0) is None
    clock.received(0, 0.0)
    assert not clock.running
    clock.received(1, 100.0)
    assert clock.remaining(100.0) == 10.0
    with pytest.raises(DeadlineExceededError):
        clock.received(1, 110.5)
    clock.stop()
    clock.received(1, 200.0)
    assert clock.remaining(201.0) == 9.0
