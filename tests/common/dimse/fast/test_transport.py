"""P-DATA-TF framing and PDV fragmentation, against pynetdicom's own message encoder."""

from __future__ import annotations

import io
import socket
import threading
import time

import pytest
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF

from common.dimse.fast.commands import CEchoRq, CStoreRq, decode_command_set
from common.dimse.fast.constants import AbortReason, PduType, PdvControl
from common.dimse.fast.limits import DeadlineExceededError, TransferPace
from common.dimse.fast.transport import (
    ConnectionClosedError,
    DimseProtocolError,
    PduStream,
    PeerAbortedError,
    ReleaseRequestedError,
    abort_pdu,
    max_pdv_data,
    message_pdus,
    pdata_pdus,
    release_pdu,
)

CT = "1.2.840.10008.5.1.4.1.1.2"


def _pynetdicom_pdus(dataset: bytes, max_pdu: int) -> list[bytes]:
    primitive = C_STORE()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = "1.2.3"
    primitive.Priority = 0
    primitive.DataSet = io.BytesIO(dataset)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    out = []
    for p_data in message.encode_msg(3, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(p_data)
        out.append(bytes(pdu.encode()))
    return out


@pytest.mark.parametrize("max_pdu", [16384, 4096, 1000, 0])
# No empty dataset: pynetdicom (the oracle) sends no dataset PDV at all for one.
@pytest.mark.parametrize("size", [1, 2, 999, 4090, 40000, 300_001])
def test_file_stream_matches_pynetdicom(
    pair: tuple[socket.socket, socket.socket], max_pdu: int, size: int
) -> None:
    dataset = bytes(range(256)) * (size // 256) + bytes(size % 256)
    a, b = pair
    received = bytearray()

    def reader() -> None:
        while True:
            chunk = b.recv(1 << 20)
            if not chunk:
                return
            received.extend(chunk)

    thread = threading.Thread(target=reader)
    thread.start()
    command = CStoreRq(1, CT, "1.2.3").encode()
    PduStream(a).send_message_from_file(3, command, io.BytesIO(dataset), size,
                                        max_pdv_data(max_pdu))
    a.shutdown(socket.SHUT_WR)
    thread.join(5)
    # pynetdicom needs a finite PDU size; 0 means "ours", i.e. 1 MiB fragments.
    expected = b"".join(_pynetdicom_pdus(dataset, max_pdu or (1 << 20)))
    assert bytes(received) == expected


@pytest.mark.parametrize("max_pdu", [16384, 1000])
@pytest.mark.parametrize("size", [1, 999, 40000])
def test_message_matches_pynetdicom(max_pdu: int, size: int) -> None:
    dataset = bytes(range(256)) * (size // 256) + bytes(size % 256)
    command = CStoreRq(1, CT, "1.2.3").encode()
    message = message_pdus(3, command, dataset, max_pdv_data(max_pdu))
    assert message == b"".join(_pynetdicom_pdus(dataset, max_pdu))


def test_message_without_dataset_is_its_command_alone() -> None:
    command = CEchoRq(4).encode()
    assert message_pdus(1, command, None, 10) == b"".join(pdata_pdus(1, command, True, 10))


def test_reader_reassembles_fragments_across_pdus(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    dataset = b"xy" * 10_000
    command = CStoreRq(5, CT, "1.2.3").encode()
    # Command in tiny fragments, dataset in another size; all in one write.
    a.sendall(b"".join(pdata_pdus(7, command, True, 10) + pdata_pdus(7, dataset, False, 777)))
    stream = PduStream(b)
    context_id, raw = stream.read_command()
    assert context_id == 7
    assert decode_command_set(raw).us(0x00000110) == 5
    parts: list[bytes] = []
    assert stream.read_dataset(7, lambda data: parts.append(bytes(data))) == len(dataset)
    assert b"".join(parts) == dataset


def test_reader_reports_control_pdus_and_garbage(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    stream = PduStream(b)
    a.sendall(release_pdu(PduType.RELEASE_RQ))
    with pytest.raises(ReleaseRequestedError):
        stream.read_command()
    a.sendall(abort_pdu(0, AbortReason.NOT_SPECIFIED))  # type: ignore[arg-type]
    with pytest.raises(PeerAbortedError):
        stream.read_command()
    a.sendall(b"\x99\x00\x00\x00\x00\x04abcd")
    with pytest.raises(DimseProtocolError) as info:
        stream.read_command()
    assert info.value.reason == AbortReason.UNRECOGNIZED_PDU


def test_dataset_before_command_is_a_protocol_error(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    a.sendall(pdata_pdus(1, b"data", False, 100)[0])
    with pytest.raises(DimseProtocolError) as info:
        PduStream(b).read_command()
    assert info.value.reason == AbortReason.UNEXPECTED_PDU


def test_pdv_longer_than_its_pdu_is_a_protocol_error(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    pdu = bytearray(pdata_pdus(1, b"abcd", True, 100)[0])
    pdu[9] = 0xFF  # item length beyond the PDU
    a.sendall(bytes(pdu))
    with pytest.raises(DimseProtocolError):
        PduStream(b).read_command()


def test_oversized_pdu_is_refused(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(b"\x04\x00" + (10_000_000).to_bytes(4, "big"))
    with pytest.raises(DimseProtocolError) as info:
        PduStream(b, max_receive=16384).read_pdu()
    assert info.value.reason == AbortReason.INVALID_PDU_PARAMETER_VALUE


def test_max_pdv_data() -> None:
    assert max_pdv_data(16384) == 16378
    assert max_pdv_data(0) > 16384


# -- the pace rule (common.dimse.fast.limits) on the fast engine ---------------------------------


def _trickle(sock: socket.socket, pieces: list[bytes], gap: float) -> threading.Thread:
    def run() -> None:
        for piece in pieces:
            try:
                sock.sendall(piece)
            except OSError:
                return
            time.sleep(gap)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_tiny_pdus_trickled_inside_a_message_hit_the_deadline(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    """Each PDU well within the per-read timeout, the message never complete: cut all the same."""
    a, b = pair
    b.settimeout(1.0)  # the per-read timeout: never reached by the trickle
    stream = PduStream(b, pace=TransferPace(0.6, 1000.0))
    a.sendall(b"".join(pdata_pdus(1, CStoreRq(1, CT, "1.2.3").encode(), True, 1000)))
    stream.read_command()
    not_last = pdata_pdus(1, b"xx", False, 1)[0]  # a 1-byte fragment, not the last
    _trickle(a, [not_last] * 100, 0.1)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        stream.read_dataset(1, lambda _data: None)
    assert time.monotonic() - started < 1.5


def test_a_pdu_header_then_silence_hits_the_deadline(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    b.settimeout(30.0)
    stream = PduStream(b, pace=TransferPace(0.3, 1000.0))
    a.sendall(b"\x04\x00\x00\x00\x01\x00")
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        stream.read_pdu()
    assert time.monotonic() - started < 1.5


def test_the_clock_stops_between_messages(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    b.settimeout(5.0)
    stream = PduStream(b, pace=TransferPace(0.2, 1000.0))
    echo = b"".join(pdata_pdus(1, CEchoRq(1).encode(), True, 1000))
    a.sendall(echo)
    stream.read_command()
    stream.end_message()
    assert not stream.clock.running
    time.sleep(0.4)  # idle longer than the pace's patience: the idle timeout's business
    a.sendall(echo)
    stream.read_command()


def test_a_steady_sender_is_not_cut(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    b.settimeout(5.0)
    stream = PduStream(b, pace=TransferPace(0.3, 10_000.0))
    a.sendall(b"".join(pdata_pdus(1, CStoreRq(1, CT, "1.2.3").encode(), True, 1000)))
    stream.read_command()
    pdus = pdata_pdus(1, b"x" * 40_000, False, 994)  # 1000-byte PDUs at ~20,000 bytes/s
    _trickle(a, pdus, 0.05)
    assert stream.read_dataset(1, lambda _data: None) == 40_000
    assert not stream.clock.running


def test_command_set_that_never_ends_is_refused(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    fragment = pdata_pdus(1, b"\0" * 16000, True, 16000)[0]
    fragment = fragment[:11] + bytes([PdvControl.COMMAND]) + fragment[12:]  # never the last
    _trickle(a, [fragment] * 10, 0)
    b.settimeout(5.0)
    with pytest.raises(DimseProtocolError, match="command set too long"):
        PduStream(b).read_command()


# -- large PDU bodies are received straight into their own buffer ------------------------------


@pytest.mark.parametrize("piece", [4099, 70_000, 1 << 20])
def test_large_pdus_in_any_pieces_are_reassembled_and_nothing_is_overread(
    pair: tuple[socket.socket, socket.socket], piece: int
) -> None:
    """1 MiB PDUs arriving in pieces of any size, with the next message right behind them."""
    a, b = pair
    dataset = bytes(range(256)) * 12_000  # 3 MB: three 1 MiB PDUs
    wire = b"".join(
        pdata_pdus(3, CStoreRq(1, CT, "1.2.3").encode(), True, 1 << 20)
        + pdata_pdus(3, dataset, False, 1 << 20)
        + pdata_pdus(3, CEchoRq(2).encode(), True, 1 << 20)
    )
    sender = _trickle(a, [wire[i : i + piece] for i in range(0, len(wire), piece)], 0)
    stream = PduStream(b, max_receive=(1 << 20) + 6)
    stream.read_command()
    parts: list[bytes] = []
    assert stream.read_dataset(3, lambda data: parts.append(bytes(data))) == len(dataset)
    assert b"".join(parts) == dataset
    assert decode_command_set(stream.read_command()[1]).us(0x00000110) == 2  # the C-ECHO-RQ
    sender.join(30)


def test_a_peer_leaving_inside_a_large_pdu_is_a_closed_connection(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    pdu = pdata_pdus(3, b"x" * 500_000, False, 1 << 20)[0]

    def send_part_and_leave() -> None:
        a.sendall(pdu[:300_000])  # more than a socket buffer holds: sent while read
        a.close()

    sender = threading.Thread(target=send_part_and_leave, daemon=True)
    sender.start()
    with pytest.raises(ConnectionClosedError):
        PduStream(b, max_receive=1 << 20).read_pdu()
    sender.join(10)


def test_a_large_pdu_stalling_halfway_hits_the_deadline(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    b.settimeout(30.0)
    stream = PduStream(b, max_receive=1 << 20, pace=TransferPace(0.3, 1000.0))
    _trickle(a, [pdata_pdus(3, b"x" * 500_000, False, 1 << 20)[0][:200_000]], 0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        stream.read_pdu()
    assert time.monotonic() - started < 1.5
