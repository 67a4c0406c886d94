"""The read guard on real sockets: plain TCP (GuardedSocket) and TLS (ReplayableSSLSocket)."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest

from common.dimse.fast.acse import ProposedContext, canonical_associate_rq, encode_associate_rq
from common.dimse.fast.commands import CEchoRq
from common.dimse.fast.constants import AbortReason, AbortSource, PduType
from common.dimse.fast.transport import abort_pdu, pdata_pdus, release_pdu
from common.dimse.pdu_guard import PduGuard, PduLimits, TransferPace
from common.dimse.sockets import GuardedSocket, PduGuardAbortError, ReadGuard
from common.dimse.tls import ReplayableSSLSocket, TlsSettings, client_context, server_context
from tests.support.tls_certs import Pki, make_pki

CT = "1.2.840.10008.5.1.4.1.1.2"
RESTING = 7.0


def _read_guard(patience: float = 5.0, head: bytes = b"") -> ReadGuard:
    return ReadGuard(
        PduGuard(PduLimits(16384), TransferPace(patience, 1000.0)),
        "TEST@127.0.0.1:1",
        resting_timeout=RESTING,
        head=head,
    )


def _session() -> bytes:
    rq = encode_associate_rq("SCU", "SCP", [ProposedContext(1, CT, ("1.2.840.10008.1.2",))], 16384)
    echo = b"".join(pdata_pdus(1, CEchoRq(1).encode(), True, 16000))
    return rq + echo + release_pdu(PduType.RELEASE_RQ)


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    yield client, server
    client.close()
    server.close()


def _read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_bytes_pass_unchanged_and_the_resting_timeout_comes_back(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    guarded = GuardedSocket.adopt(server, _read_guard())
    assert server.fileno() == -1  # detached: the guarded socket owns the connection
    assert guarded.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    session = _session()
    client.sendall(session)
    received = _recv_exactly(guarded, len(session))
    assert received == session
    assert guarded.gettimeout() == RESTING
    buffer = bytearray(10)
    client.sendall(abort_pdu(AbortSource.SERVICE_USER))
    assert guarded.recv_into(buffer) == 10
    assert bytes(buffer) == abort_pdu(AbortSource.SERVICE_USER)
    guarded.close()


def test_reads_return_the_canonical_request_in_place_of_what_was_sent(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    """pynetdicom reads the request the listener made canonical, whatever the read sizes."""
    client, server = tcp_pair
    session = _session()
    sent = session[:10] + b"SCP\0\0\0\0\0\0\0\0\0\0\0\0\0" + session[26:]
    length = 6 + int.from_bytes(session[2:6], "big")
    canonical = canonical_associate_rq(sent[:length])
    assert canonical != sent[:length] and canonical == session[:length]
    guarded = GuardedSocket.adopt(server, _read_guard(head=canonical))
    client.sendall(sent)
    received = b"".join(_recv_exactly(guarded, size) for size in (3, 7, 20, 1, 100))
    received += _recv_exactly(guarded, len(session) - len(received))
    assert received == session
    guarded.close()


def test_a_huge_pdu_is_aborted_at_its_header(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = tcp_pair
    guarded = GuardedSocket.adopt(server, _read_guard())
    client.sendall(_session()[:-10])  # request and echo: fine
    client.sendall(bytes([PduType.P_DATA_TF, 0]) + (0xFFFFFFF0).to_bytes(4, "big") + bytes(64))
    with pytest.raises(PduGuardAbortError, match="over the limit of 16384"):
        while True:
            _recv_exactly(guarded, 4096)
    answer = _read_until_closed(client)
    assert answer == abort_pdu(AbortSource.SERVICE_PROVIDER,
                               AbortReason.INVALID_PDU_PARAMETER_VALUE)
    with pytest.raises(PduGuardAbortError):  # and it stays failed
        guarded.recv(6)
    guarded.close()


def test_a_header_then_silence_is_dropped_after_the_patience(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    guarded = GuardedSocket.adopt(server, _read_guard(patience=0.3))
    client.sendall(bytes([PduType.P_DATA_TF, 0]) + (1000).to_bytes(4, "big"))
    assert guarded.recv(6)
    started = time.monotonic()
    with pytest.raises(PduGuardAbortError, match="not complete in time"):
        guarded.recv(1000)
    assert time.monotonic() - started < 2
    assert _read_until_closed(client) == abort_pdu(AbortSource.SERVICE_USER)
    guarded.close()


def test_peeks_and_unguarded_sockets_are_untouched(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    guarded = GuardedSocket.adopt(server, _read_guard())
    client.sendall(b"\xff" * 6)  # an unknown PDU type: only a real read sees it
    time.sleep(0.1)
    assert guarded.recv(6, socket.MSG_PEEK) == b"\xff" * 6
    guarded.read_guard = None
    assert guarded.recv(6) == b"\xff" * 6
    guarded.close()


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_pair(
    pki: Pki, tcp_pair: tuple[socket.socket, socket.socket]
) -> Iterator[tuple[ssl.SSLSocket, ReplayableSSLSocket]]:
    client_raw, server_raw = tcp_pair
    server_ctx = server_context(TlsSettings(cert=pki.server_cert, key=pki.server_key))
    client_ctx = client_context(TlsSettings(ca=pki.ca))
    wrapped: list[ssl.SSLSocket] = []
    handshake = threading.Thread(
        target=lambda: wrapped.append(client_ctx.wrap_socket(client_raw,
                                                             server_hostname="127.0.0.1"))
    )
    handshake.start()
    server = server_ctx.wrap_socket(server_raw, server_side=True)
    handshake.join(5)
    assert isinstance(server, ReplayableSSLSocket)
    yield wrapped[0], server
    for sock in (wrapped[0], server):
        sock.close()


def test_tls_reads_pass_the_guard_put_back_bytes_included(
    tls_pair: tuple[ssl.SSLSocket, ReplayableSSLSocket],
) -> None:
    client, server = tls_pair
    session = _session()
    request_length = 6 + int.from_bytes(session[2:6], "big")
    client.sendall(session)
    # The listener reads the request to choose an engine, then puts it back.
    request = _recv_exactly(server, request_length)
    server.unread(request)
    server.read_guard = _read_guard()
    assert server.pending() >= request_length
    buffer = bytearray(request_length)
    assert server.recv_into(buffer) == request_length  # the guard sees the put-back request
    assert _recv_exactly(server, len(session) - request_length) == session[request_length:]
    assert server.gettimeout() == RESTING
    client.sendall(b"\x42" + bytes(5))  # an unknown PDU type
    with pytest.raises(PduGuardAbortError, match="unrecognised PDU type 0x42"):
        server.recv(6)
    answer = _read_until_closed(client)
    assert answer == abort_pdu(AbortSource.SERVICE_PROVIDER, AbortReason.UNRECOGNIZED_PDU)


def test_tls_reads_return_the_canonical_request_in_place_of_what_was_sent(
    tls_pair: tuple[ssl.SSLSocket, ReplayableSSLSocket],
) -> None:
    client, server = tls_pair
    session = _session()
    sent = session[:26] + b"SCU\0\0\0\0\0\0\0\0\0\0\0\0\0" + session[42:]
    length = 6 + int.from_bytes(session[2:6], "big")
    client.sendall(sent)
    request = _recv_exactly(server, length)  # as the listener reads it, then puts it back
    server.unread(request)
    server.read_guard = _read_guard(head=canonical_associate_rq(request))
    buffer = bytearray(10)
    assert server.recv_into(buffer) == 10
    received = bytes(buffer) + _recv_exactly(server, len(session) - 10)
    assert received == session


def test_tls_partial_record_cannot_hang_a_read(
    tls_pair: tuple[ssl.SSLSocket, ReplayableSSLSocket],
) -> None:
    """``select`` says readable, the TLS record is incomplete: the read still ends in time."""
    client, server = tls_pair
    server.read_guard = _read_guard(patience=0.3)
    with socket.socket(fileno=os.dup(client.fileno())) as raw_client:
        raw_client.sendall(b"\x17\x03\x03\x00\x40" + bytes(8))  # a record promising 64 bytes
        started = time.monotonic()
        with pytest.raises(PduGuardAbortError, match="not complete in time"):
            server.recv(6)
        assert time.monotonic() - started < 2
