"""The PDU guard as a pure state machine: limits, PDV tracking and the pace rule."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.dimse.fast.acse import ProposedContext, encode_associate_rq
from common.dimse.fast.commands import CEchoRq, CFindRq, CStoreRq, encode_elements
from common.dimse.fast.constants import (
    MAX_ASSOCIATE_RQ_LENGTH,
    MAX_CONTROL_PDU_LENGTH,
    AbortReason,
    AbortSource,
    PduType,
    PdvControl,
    Tag,
)
from common.dimse.fast.transport import abort_pdu, pdata_pdus, release_pdu
from common.dimse.pdu_guard import (
    MAX_COMMAND_SET_LENGTH,
    MAX_UNLIMITED_PDATA_LENGTH,
    DeadlineExceededError,
    PduGuard,
    PduLimits,
    PduViolation,
    TransferClock,
    TransferPace,
    pdu_length_limit,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENCE = 10.0
RATE = 1000.0


def _guard(max_receive: int = 16384, **limits: int) -> PduGuard:
    return PduGuard(PduLimits(max_receive, **limits), TransferPace(PATIENCE, RATE))


def _header(pdu_type: int, length: int) -> bytes:
    return bytes([pdu_type, 0]) + length.to_bytes(4, "big")


def _pdv_pdu(data: bytes, control: int, context_id: int = 1, item_length: int | None = None) -> bytes:
    item = (len(data) + 2 if item_length is None else item_length).to_bytes(4, "big")
    body = item + bytes([context_id, control]) + data
    return _header(PduType.P_DATA_TF, len(body)) + body


def _message(command: bytes, dataset: bytes | None, fragment: int = 4000) -> bytes:
    out = b"".join(pdata_pdus(1, command, True, fragment))
    if dataset is not None:
        out += b"".join(pdata_pdus(1, dataset, False, fragment))
    return out


def _session(dataset_size: int = 20_000) -> bytes:
    """A whole association as a requestor sends it: request, echo, store, find, release."""
    rq = encode_associate_rq("SCU", "SCP", [ProposedContext(1, CT, ("1.2.840.10008.1.2",))], 16384)
    return (
        rq
        + _message(CEchoRq(1).encode(), None)
        + _message(CStoreRq(2, CT, "1.2.3").encode(), bytes(dataset_size))
        + _message(CFindRq(3, STUDY_FIND).encode(), bytes(100))
        + release_pdu(PduType.RELEASE_RQ)
    )


def _violation(guard: PduGuard, data: bytes, now: float = 0.0) -> PduViolation:
    with pytest.raises(PduViolation) as caught:
        guard.feed(data, now)
    return caught.value


# -- the whole stream, however it is cut ------------------------------------------------------


def test_a_legitimate_session_passes_and_ends_idle() -> None:
    guard = _guard()
    guard.feed(_session(), 0.0)
    assert not guard.busy
    assert guard.time_left(0.0) is None


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_chunking_gives_the_same_result(data: st.DataObject) -> None:
    stream = _session(dataset_size=data.draw(st.integers(0, 9000)))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=40)))
    guard = _guard()
    start = 0
    for cut in [*cuts, len(stream)]:
        guard.feed(stream[start:cut], 0.0)
        start = cut
    assert not guard.busy


def test_byte_by_byte() -> None:
    guard = _guard()
    for byte in _session(3000):
        guard.feed(bytes([byte]), 0.0)
    assert not guard.busy


# -- PDU limits -------------------------------------------------------------------------------


def test_pdu_length_limits_by_type() -> None:
    assert pdu_length_limit(PduType.P_DATA_TF, 16384) == 16384
    assert pdu_length_limit(PduType.P_DATA_TF, 0) == MAX_UNLIMITED_PDATA_LENGTH
    assert pdu_length_limit(PduType.ASSOCIATE_RQ, 16384) == MAX_ASSOCIATE_RQ_LENGTH
    for control in (PduType.ASSOCIATE_AC, PduType.RELEASE_RQ, PduType.ABORT):
        assert pdu_length_limit(control, 16384) == MAX_CONTROL_PDU_LENGTH
    assert pdu_length_limit(0x08, 16384) is None


def test_pdata_over_the_announced_maximum_is_refused_at_its_header() -> None:
    guard = _guard(16384)
    header = _header(PduType.P_DATA_TF, 0xFFFFFFF0)
    guard.feed(header[:3], 0.0)  # a split header is fine so far
    violation = _violation(guard, header[3:])
    assert violation.reason == AbortReason.INVALID_PDU_PARAMETER_VALUE
    assert "4294967280" in str(violation)


def test_pdata_exactly_at_the_maximum_passes() -> None:
    guard = _guard(1000)
    guard.feed(_message(CStoreRq(1, CT, "1.2.3").encode(), None), 0.0)
    pdu = _pdv_pdu(b"\0" * (1000 - 6), PdvControl.LAST_FRAGMENT)
    assert len(pdu) == 6 + 1000
    guard.feed(pdu, 0.0)
    assert not guard.busy


def test_unlimited_maximum_still_has_a_ceiling() -> None:
    guard = _guard(0)
    guard.feed(_header(PduType.P_DATA_TF, MAX_UNLIMITED_PDATA_LENGTH), 0.0)
    guard = _guard(0)
    assert _violation(guard, _header(PduType.P_DATA_TF, MAX_UNLIMITED_PDATA_LENGTH + 1)).reason == (
        AbortReason.INVALID_PDU_PARAMETER_VALUE
    )


@pytest.mark.parametrize("pdu_type", [PduType.ASSOCIATE_RQ, PduType.RELEASE_RQ, PduType.ABORT,
                                      PduType.ASSOCIATE_AC, PduType.RELEASE_RP])
def test_control_pdus_claiming_a_huge_length(pdu_type: PduType) -> None:
    violation = _violation(_guard(), _header(pdu_type, 0xFFFFFFFF))
    assert violation.reason == AbortReason.INVALID_PDU_PARAMETER_VALUE


@pytest.mark.parametrize("pdu_type", [0x00, 0x08, 0x7F, 0xFF])
def test_unknown_pdu_types(pdu_type: int) -> None:
    violation = _violation(_guard(), _header(pdu_type, 4))
    assert violation.reason == AbortReason.UNRECOGNIZED_PDU


def test_release_and_abort_pdus_pass() -> None:
    guard = _guard()
    guard.feed(release_pdu(PduType.RELEASE_RQ) + abort_pdu(AbortSource.SERVICE_USER), 0.0)
    assert not guard.busy


def test_a_violation_sticks() -> None:
    guard = _guard()
    first = _violation(guard, _header(0x09, 0))
    assert _violation(guard, release_pdu(PduType.RELEASE_RQ)) is first
    assert guard.failure is first


# -- PDV items and DIMSE messages -------------------------------------------------------------


def test_pdv_item_longer_than_its_pdu() -> None:
    pdu = _pdv_pdu(b"\0" * 10, PdvControl.COMMAND, item_length=100)
    assert _violation(_guard(), pdu).reason == AbortReason.INVALID_PDU_PARAMETER_VALUE


def test_pdv_item_length_under_two() -> None:
    pdu = _pdv_pdu(b"", PdvControl.COMMAND, item_length=1)
    assert _violation(_guard(), pdu).reason == AbortReason.INVALID_PDU_PARAMETER_VALUE


def test_pdata_ending_inside_a_pdv_header() -> None:
    assert _violation(_guard(), _header(PduType.P_DATA_TF, 3) + b"\0\0\0").reason == (
        AbortReason.INVALID_PDU_PARAMETER_VALUE
    )


def test_dataset_fragment_without_a_command() -> None:
    violation = _violation(_guard(), _pdv_pdu(b"\0" * 8, PdvControl.LAST_FRAGMENT))
    assert violation.reason == AbortReason.UNEXPECTED_PDU


def test_command_fragment_inside_a_dataset() -> None:
    guard = _guard()
    guard.feed(_message(CStoreRq(1, CT, "1.2.3").encode(), None), 0.0)
    guard.feed(_pdv_pdu(b"\0" * 8, 0), 0.0)
    violation = _violation(guard, _pdv_pdu(CEchoRq(2).encode(), 3))
    assert violation.reason == AbortReason.UNEXPECTED_PDU
    assert "C-STORE-RQ dataset" in str(violation)


def test_dataset_fragment_inside_a_command_set() -> None:
    guard = _guard()
    guard.feed(_pdv_pdu(b"\0" * 8, PdvControl.COMMAND), 0.0)
    assert _violation(guard, _pdv_pdu(b"\0" * 8, 0)).reason == AbortReason.UNEXPECTED_PDU


def test_command_set_that_never_ends_is_bounded() -> None:
    guard = _guard()
    chunk = _pdv_pdu(b"\0" * 8000, PdvControl.COMMAND)
    with pytest.raises(PduViolation) as caught:
        for _ in range(MAX_COMMAND_SET_LENGTH // 8000 + 2):
            guard.feed(chunk, 0.0)
    assert "command set" in str(caught.value)


def test_store_dataset_is_limited_to_the_instance_size() -> None:
    guard = _guard(max_instance_size=10_000)
    guard.feed(_message(CStoreRq(1, CT, "1.2.3").encode(), bytes(10_000)), 0.0)  # at the limit
    assert not guard.busy
    stream = _message(CStoreRq(2, CT, "1.2.4").encode(), bytes(10_001))
    violation = _violation(guard, stream)
    assert violation.reason == AbortReason.NOT_SPECIFIED
    assert "instance size limit of 10000" in str(violation)


def test_store_dataset_is_checked_while_streaming() -> None:
    """The violation comes with the fragment that crosses the limit, not the last one."""
    guard = _guard(max_instance_size=10_000)
    guard.feed(_message(CStoreRq(1, CT, "1.2.3").encode(), None), 0.0)
    for _ in range(2):
        guard.feed(_pdv_pdu(bytes(4000), 0), 0.0)
    with pytest.raises(PduViolation):
        guard.feed(_pdv_pdu(bytes(4000), 0), 0.0)  # 12,000: not the last fragment yet


def test_no_instance_limit_means_none() -> None:
    guard = _guard(max_instance_size=0)
    guard.feed(_message(CStoreRq(1, CT, "1.2.3").encode(), bytes(200_000)), 0.0)
    assert not guard.busy


def test_other_request_datasets_have_their_own_limit() -> None:
    guard = _guard(max_instance_size=0, max_request_dataset=1000)
    guard.feed(_message(CFindRq(1, STUDY_FIND).encode(), bytes(1000)), 0.0)
    violation = _violation(guard, _message(CFindRq(2, STUDY_FIND).encode(), bytes(1001)))
    assert violation.reason == AbortReason.INVALID_PDU_PARAMETER_VALUE
    assert "C-FIND-RQ dataset" in str(violation)


def test_unreadable_command_set_announces_no_dataset() -> None:
    guard = _guard()
    guard.feed(_pdv_pdu(b"\x08\x00\x00\x00", PdvControl.COMMAND | PdvControl.LAST_FRAGMENT), 0.0)
    assert not guard.busy


def test_command_without_data_set_type_announces_no_dataset() -> None:
    command = encode_elements([(Tag.COMMAND_FIELD, (0x0030).to_bytes(2, "little"))])
    guard = _guard()
    guard.feed(_message(command, None), 0.0)
    assert not guard.busy


# -- the pace rule ----------------------------------------------------------------------------


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


def test_a_pdu_header_then_silence_expires() -> None:
    guard = _guard()
    assert guard.time_left(0.0) is None
    guard.feed(_header(PduType.P_DATA_TF, 1000), 100.0)
    assert guard.time_left(100.0) == PATIENCE
    assert guard.time_left(105.0) == PATIENCE - 5
    violation = _violation(guard, b"\0", 100.0 + PATIENCE + 0.1)
    assert violation.reason == AbortReason.NOT_SPECIFIED
    assert "P-DATA-TF PDU not complete in time" in str(violation)


def test_expired_names_what_was_in_progress() -> None:
    guard = _guard()
    guard.feed(_message(CStoreRq(1, CT, "1.2.3").encode(), None), 0.0)
    guard.feed(_pdv_pdu(bytes(100), 0), 0.0)
    violation = guard.expired()
    assert "C-STORE-RQ dataset (100 bytes so far)" in str(violation)
    assert guard.failure is violation


def test_byte_trickle_is_cut_after_about_the_patience() -> None:
    """One byte per (patience - epsilon): each read within a per-read timeout, still cut."""
    guard = _guard()
    stream = _message(CStoreRq(1, CT, "1.2.3").encode(), bytes(1000))
    now = 0.0
    with pytest.raises(PduViolation):
        for byte in stream:
            guard.feed(bytes([byte]), now)
            now += PATIENCE - 0.5
    assert now <= 2 * PATIENCE


def test_tiny_pdus_cannot_hold_a_message_open() -> None:
    """Complete PDUs of one dataset byte each, every few seconds: the message clock runs on."""
    guard = _guard()
    guard.feed(_message(CStoreRq(1, CT, "1.2.3").encode(), None), 0.0)
    now = 0.0
    with pytest.raises(PduViolation) as caught:
        for _ in range(1000):
            now += 3.0
            guard.feed(_pdv_pdu(b"\0", 0), now)
    assert "C-STORE-RQ dataset" in str(caught.value)
    assert now < 30


def test_a_steady_sender_above_the_floor_is_never_cut() -> None:
    """2x the floor, in uneven bursts with pauses below the patience, for a long time."""
    rng = random.Random(3)
    guard = _guard(max_receive=0)
    command = _message(CStoreRq(1, CT, "1.2.3").encode(), None)
    guard.feed(command, 0.0)
    now, sent = 0.0, 0
    for _ in range(2000):
        size = rng.randint(1, 8000)
        guard.feed(_pdv_pdu(bytes(size), 0), now)
        sent += size + 12
        now += (size + 12) / (2 * RATE)
    assert guard.busy and now > 100 * PATIENCE


def test_a_sender_just_below_the_floor_is_cut_eventually() -> None:
    guard = _guard(max_receive=0)
    guard.feed(_message(CStoreRq(1, CT, "1.2.3").encode(), None), 0.0)
    now = 0.0
    with pytest.raises(PduViolation):
        for _ in range(100_000):
            guard.feed(_pdv_pdu(bytes(988), 0), now)  # 1000 bytes
            now += 1000 / (0.9 * RATE)
    assert now < PATIENCE / (1 - 0.9) + 2


def test_a_fast_start_banks_no_credit() -> None:
    guard = _guard(max_receive=0)
    guard.feed(_message(CStoreRq(1, CT, "1.2.3").encode(), None), 0.0)
    guard.feed(_pdv_pdu(bytes(1_000_000), 0), 0.0)  # 1000 s worth of credit at the floor
    assert guard.time_left(0.0) == PATIENCE
    with pytest.raises(PduViolation):
        guard.feed(_pdv_pdu(b"\0", 0), PATIENCE + 1)


def test_between_messages_no_clock_runs() -> None:
    guard = _guard()
    guard.feed(_message(CEchoRq(1).encode(), None), 0.0)
    assert guard.time_left(0.0) is None
    guard.feed(_message(CEchoRq(2).encode(), None), 1000.0)  # an idle hour is not ours to judge
    assert not guard.busy


def test_the_message_clock_spans_pdus() -> None:
    guard = _guard()
    guard.feed(_message(CStoreRq(1, CT, "1.2.3").encode(), None), 0.0)
    assert guard.busy  # the dataset is still to come
    assert guard.time_left(1.0) == PATIENCE - 1


def test_no_patience_means_no_deadline() -> None:
    guard = PduGuard(PduLimits(16384), TransferPace(None))
    guard.feed(_header(PduType.P_DATA_TF, 100), 0.0)
    assert guard.time_left(1e9) is None
    guard.feed(b"\0" * 4, 1e9)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(1, 500), max_size=20), st.booleans())
def test_garbage_raises_only_violations(data: bytes, cuts: list[int], valid_start: bool) -> None:
    """Whatever the peer sends, the guard answers with a PduViolation or nothing, never a crash."""
    stream = (_session()[:200] if valid_start else b"") + data
    guard = _guard(max_receive=1000, max_instance_size=500, max_request_dataset=300)
    pos = 0
    try:
        for size in [*cuts, len(stream)]:
            guard.feed(stream[pos : pos + size], pos / 1000)
            pos += size
    except PduViolation as violation:
        assert isinstance(violation.reason, AbortReason)
