"""The one reader of responses to our requests, over a socket pair."""

from __future__ import annotations

import socket

import pytest

from common.dimse.fast.commands import CCancelRq, CEchoRq, CFindRsp, CStoreRsp
from common.dimse.fast.constants import AbortReason, CommandField, Tag
from common.dimse.fast.responses import read_response
from common.dimse.fast.transport import DimseProtocolError, PduStream, message_pdus

CT = "1.2.840.10008.5.1.4.1.1.2"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def _store_rsp(responded_to: int) -> bytes:
    return message_pdus(1, CStoreRsp(responded_to, CT, "1.2.3", 0x0000).encode(), None, 1000)


def test_reads_the_response(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(_store_rsp(7) + _store_rsp(8))
    stream = PduStream(b)
    first = read_response(stream, CommandField.C_STORE_RSP, 7, 5.0)
    assert first.us(Tag.MESSAGE_ID_BEING_RESPONDED_TO) == 7
    second = read_response(stream, CommandField.C_STORE_RSP, 8, 5.0)
    assert CStoreRsp.from_command(second).status == 0x0000


def test_a_dataset_after_the_response_is_dropped(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    # The responses read here carry none; one that does is read to its end all the same.
    command = CFindRsp(3, FIND, 0xFF00, has_identifier=True).encode()
    a.sendall(message_pdus(1, command, b"\x00" * 3000, 1000) + _store_rsp(4))
    stream = PduStream(b)
    assert read_response(stream, CommandField.C_FIND_RSP, 3, 5.0).has_dataset
    assert read_response(stream, CommandField.C_STORE_RSP, 4, 5.0)


def test_a_cancel_goes_to_on_cancel_and_the_wait_goes_on(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    cancels: list[tuple[int, int]] = []
    a.sendall(message_pdus(5, CCancelRq(2).encode(), None, 1000) + _store_rsp(9))
    command = read_response(
        PduStream(b), CommandField.C_STORE_RSP, 9, 5.0,
        on_cancel=lambda cancel, cx: cancels.append((cancel.message_id_being_responded_to, cx)),
    )
    assert command.us(Tag.MESSAGE_ID_BEING_RESPONDED_TO) == 9
    assert cancels == [(2, 5)]


def test_another_command_is_a_protocol_error(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(message_pdus(1, CCancelRq(2).encode(), None, 1000))  # no on_cancel: unexpected
    with pytest.raises(DimseProtocolError) as info:
        read_response(PduStream(b), CommandField.C_STORE_RSP, 2, 5.0)
    assert info.value.reason == AbortReason.UNEXPECTED_PDU
    a.sendall(message_pdus(1, CEchoRq(3).encode(), None, 1000))
    with pytest.raises(DimseProtocolError):
        read_response(PduStream(b), CommandField.C_ECHO_RSP, 3, 5.0)


def test_a_response_to_another_request_is_a_protocol_error(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    a.sendall(_store_rsp(6))
    with pytest.raises(DimseProtocolError) as info:
        read_response(PduStream(b), CommandField.C_STORE_RSP, 5, 5.0)
    assert info.value.reason == AbortReason.INVALID_PDU_PARAMETER_VALUE
