"""The far-network model of tests and benchmarks (:mod:`tests.support.latency_proxy`), on real
loopback sockets: an exchange through :class:`LatencyProxy` costs two one-way latencies (and a
new connection one round trip more), bytes keep their order, the window and bandwidth caps
bound the throughput, the in-flight counter sees overlapping exchanges, :class:`TlsTerminator`
and :func:`far_store` serve HTTPS with the test CA, and stopping leaves no thread behind.

Timing checks use lower bounds (which the model guarantees) and generous upper bounds only.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import socket
import socketserver
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.latency_proxy import LatencyProxy, TlsTerminator, far_store
from tests.support.ports import wait_until
from tests.support.tls_certs import Pki, make_pki

SLACK = 1.0  # seconds of scheduling noise allowed above a modelled time (2 shared CPUs)


# --------------------------------------------------------------------------------- upstreams


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(1 << 16):
            self.request.sendall(data)


class _Sink(socketserver.BaseRequestHandler):
    """Reads to the end, then answers with the byte count and the SHA-256 of what it read."""

    def handle(self) -> None:
        digest, count = hashlib.sha256(), 0
        while data := self.request.recv(1 << 18):
            digest.update(data)
            count += len(data)
        self.request.sendall(f"{count} {digest.hexdigest()}".encode())


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = f"hello {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        """Answers with the SHA-256 of the body."""
        size = int(self.headers["Content-Length"])
        digest = hashlib.sha256()
        while size:
            chunk = self.rfile.read(min(1 << 16, size))
            digest.update(chunk)
            size -= len(chunk)
        body = digest.hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _HttpServer(ThreadingHTTPServer):
    request_queue_size = 256


def _serve(server: socketserver.TCPServer) -> Iterator[int]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    yield from _serve(_Server(("127.0.0.1", 0), _Echo))


@pytest.fixture(scope="module")
def sink_port() -> Iterator[int]:
    yield from _serve(_Server(("127.0.0.1", 0), _Sink))


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    yield from _serve(_HttpServer(("127.0.0.1", 0), _Hello))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode()


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 16))
        assert chunk, f"connection closed with {left} bytes missing"
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _upload(port: int, data: bytes, pieces: int = 1) -> tuple[str, float]:
    """Send ``data`` to the sink through ``port`` in ``pieces`` writes; its answer and the
    seconds from connecting to the answer."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        step = max(1, len(data) // pieces)
        for offset in range(0, len(data), step):
            sock.sendall(data[offset : offset + step])
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer.decode(), time.monotonic() - started


# --------------------------------------------------------------------------------- latency


def test_an_exchange_costs_two_latencies_and_a_new_connection_one_round_trip_more(
    echo_port: int,
) -> None:
    one_way = 0.05
    with LatencyProxy(echo_port, one_way_ms=one_way * 1000) as proxy:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            sock.sendall(b"ping")
            assert _recv_exactly(sock, 4) == b"ping"
            first = time.monotonic() - started
            later = []
            for index in range(3):
                started = time.monotonic()
                sock.sendall(b"x" * (index + 1))
                assert _recv_exactly(sock, index + 1) == b"x" * (index + 1)
                later.append(time.monotonic() - started)
        assert proxy.connections_accepted == 1
    # connect (1 RTT) + the exchange (1 RTT)
    assert 4 * one_way <= first < 4 * one_way + SLACK
    for seconds in later:
        assert 2 * one_way <= seconds < 2 * one_way + SLACK


def test_http_through_the_proxy_pays_the_round_trips(http_port: int) -> None:
    one_way = 0.04
    with LatencyProxy(http_port, one_way_ms=one_way * 1000) as proxy:
        connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        try:
            times = []
            for path in ("/a", "/b", "/c"):
                started = time.monotonic()
                connection.request("GET", path)
                response = connection.getresponse()
                assert response.read() == f"hello {path}".encode()
                times.append(time.monotonic() - started)
        finally:
            connection.close()
        stats = proxy.stats()
    assert stats.connections == 1  # kept alive
    assert 4 * one_way <= times[0] < 4 * one_way + SLACK  # connect + request
    assert all(2 * one_way <= t < 2 * one_way + SLACK for t in times[1:])
    assert stats.bytes_up > 0 and stats.bytes_down > 0


def test_zero_latency_relays_at_once_and_counts_bytes(sink_port: int) -> None:
    data = os.urandom(3 << 20)
    with LatencyProxy(sink_port, one_way_ms=0) as proxy:
        answer, seconds = _upload(proxy.port, data)
        stats = proxy.stats()
    assert answer == f"{len(data)} {hashlib.sha256(data).hexdigest()}"
    assert seconds < SLACK
    assert stats.bytes_up == len(data)
    assert stats.bytes_down == len(answer)


# --------------------------------------------------------------------------------- order


def test_bytes_keep_their_order_over_many_chunks(echo_port: int, sink_port: int) -> None:
    rng = random.Random(14)
    data = rng.randbytes(8 << 20)
    with LatencyProxy(sink_port, one_way_ms=5, window=512 * 1024) as proxy:
        answer, _ = _upload(proxy.port, data, pieces=3000)
    assert answer == f"{len(data)} {hashlib.sha256(data).hexdigest()}"

    # both directions at once, through an echo server, in writes of random sizes
    echoed = bytearray()
    with (
        LatencyProxy(echo_port, one_way_ms=3, window=256 * 1024) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port)) as sock,
    ):

        def read() -> None:
            while len(echoed) < len(data) and (chunk := sock.recv(1 << 16)):
                echoed.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        offset = 0
        while offset < len(data):
            size = rng.randrange(1, 100_000)
            sock.sendall(data[offset : offset + size])
            offset += size
        reader.join(60)
    assert bytes(echoed) == data


# --------------------------------------------------------------------------------- caps


def test_the_window_bounds_one_connection_to_about_window_per_round_trip(sink_port: int) -> None:
    one_way, window, size = 0.05, 256 * 1024, 2 << 20
    with LatencyProxy(sink_port, one_way_ms=one_way * 1000, window=window) as proxy:
        answer, seconds = _upload(proxy.port, os.urandom(size))
    assert answer.startswith(f"{size} ")
    rounds = size // window  # 8 windows: the last one leaves 7 round trips after the first
    lower = 3 * one_way + (rounds - 1) * 2 * one_way  # connect, then one window per RTT
    assert lower <= seconds < lower + 4 * 2 * one_way + SLACK
    assert size / seconds <= window / (2 * one_way) * 1.2


def test_the_bandwidth_cap_paces_each_connection(sink_port: int) -> None:
    bandwidth, size = 4_000_000, 2_000_000
    with LatencyProxy(sink_port, one_way_ms=0, bandwidth=bandwidth) as proxy:
        answer, seconds = _upload(proxy.port, os.urandom(size))
    assert answer.startswith(f"{size} ")
    assert size / bandwidth <= seconds < size / bandwidth + SLACK


def test_a_large_window_lets_a_connection_run_fast(sink_port: int) -> None:
    """The default window (4 MiB) at a 10 ms round trip allows ~400 MB/s: 32 MB in < 2 s."""
    size = 32 << 20
    with LatencyProxy(sink_port, one_way_ms=5) as proxy:
        answer, seconds = _upload(proxy.port, os.urandom(size))
    assert answer.startswith(f"{size} ")
    assert seconds < 2 + SLACK


# --------------------------------------------------------------------------------- counters


def test_peak_in_flight_counts_overlapping_exchanges(http_port: int) -> None:
    clients = 64
    with LatencyProxy(http_port, one_way_ms=100) as proxy:
        # one after the other: never more than one in flight
        connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        for _ in range(3):
            connection.request("POST", "/one", body=b"x" * 1000)
            assert connection.getresponse().read() == _sha256(b"x" * 1000)
        connection.close()
        assert proxy.peak_in_flight == 1
        proxy.reset()
        assert proxy.stats().peak_in_flight == 0 and proxy.connections_accepted == 0

        # 64 at once, each on its own connection
        barrier = threading.Barrier(clients)
        failures: list[BaseException] = []

        def post(index: int) -> None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
                barrier.wait(10)
                body = os.urandom(50_000)
                conn.request("POST", f"/{index}", body=body)
                assert conn.getresponse().read() == _sha256(body)
                conn.close()
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        stats = proxy.stats()
    assert not failures, failures[:3]
    assert stats.connections == clients
    # every exchange lasts >= 3 one-way latencies (300 ms) after its first byte was read
    assert stats.peak_in_flight == clients
    assert stats.in_flight == 0


# --------------------------------------------------------------------------------- TLS


def test_tls_terminator_serves_https_with_the_test_ca(http_port: int, pki: Pki) -> None:
    with TlsTerminator(http_port, cert=pki.server_cert, key=pki.server_key) as front:
        context = ssl.create_default_context(cafile=str(pki.ca))
        with urllib.request.urlopen(f"{front.url}/tls", context=context, timeout=10) as answer:
            assert answer.read() == b"hello /tls"
        with urllib.request.urlopen(
            f"https://127.0.0.1:{front.port}/by-ip", context=context, timeout=10
        ) as answer:
            assert answer.read() == b"hello /by-ip"
        # large bodies arrive intact (TLS records split the reads differently)
        connection = http.client.HTTPSConnection("localhost", front.port, context=context)
        for size in (1, 70_000, 3 << 20):
            body = os.urandom(size)
            connection.request("POST", "/upload", body=body)
            assert connection.getresponse().read() == _sha256(body)
        connection.close()
        # a client that does not trust the test CA refuses the certificate
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(
                f"{front.url}/x", context=ssl.create_default_context(), timeout=10
            )
        assert front.connections_accepted >= 2


def test_far_store_with_tls_pays_the_handshake_round_trips(http_port: int, tmp_path: Path) -> None:
    one_way = 0.04
    with far_store(http_port, one_way * 1000, tls=True, workdir=tmp_path) as store:
        assert store.base_url.startswith("https://localhost:")
        assert store.ca_bundle is not None and store.terminator is not None
        context = ssl.create_default_context(cafile=str(store.ca_bundle))
        connection = http.client.HTTPSConnection(
            "localhost", store.proxy.port, context=context, timeout=10
        )
        try:
            times = []
            for path in ("/first", "/second"):
                started = time.monotonic()
                connection.request("GET", path)
                assert connection.getresponse().read() == f"hello {path}".encode()
                times.append(time.monotonic() - started)
            body = os.urandom(5 << 20)
            connection.request("POST", "/upload", body=body)
            assert connection.getresponse().read() == _sha256(body)
            version = connection.sock.version()
        finally:
            connection.close()
        assert store.proxy.connections_accepted == 1
        assert store.terminator.connections_accepted == 1
    # TCP connect (1 RTT) + TLS 1.3 handshake (1 RTT) + the request (1 RTT)
    assert version == "TLSv1.3"
    assert 6 * one_way <= times[0] < 6 * one_way + SLACK
    assert 2 * one_way <= times[1] < 2 * one_way + SLACK


def test_far_store_without_tls(http_port: int) -> None:
    with far_store(http_port, 0, tls=False) as store:
        assert store.base_url == f"http://127.0.0.1:{store.proxy.port}"
        assert store.ca_bundle is None and store.terminator is None
        with urllib.request.urlopen(store.url("/plain"), timeout=10) as answer:
            assert answer.read() == b"hello /plain"


# --------------------------------------------------------------------------------- lifecycle


def test_stop_closes_connections_and_leaves_no_threads(echo_port: int, pki: Pki) -> None:
    before = set(threading.enumerate())
    proxy = LatencyProxy(echo_port, one_way_ms=20).start()
    front = TlsTerminator(echo_port, cert=pki.server_cert, key=pki.server_key).start()
    idle = socket.create_connection(("127.0.0.1", proxy.port))
    idle.sendall(b"hi")
    assert _recv_exactly(idle, 2) == b"hi"
    busy = socket.create_connection(("127.0.0.1", proxy.port))
    busy.sendall(b"data in the delay line")
    proxy.stop()
    front.stop()
    # The echo server's handler threads end once the relay has closed their connections.
    deadline = time.monotonic() + 5
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert set(threading.enumerate()) - before == set()
    for sock in (idle, busy):
        assert _reads_as_closed(sock)
        sock.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    proxy.stop()  # twice is fine


def _reads_as_closed(sock: socket.socket) -> bool:
    """True if the peer closed or reset the connection (a read gets no data)."""
    sock.settimeout(5)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_an_unreachable_upstream_closes_the_client(echo_port: int) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_port = unused.getsockname()[1]  # bound, not listening: refused
        with LatencyProxy(dead_port, one_way_ms=10) as proxy:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
                sock.sendall(b"anyone?")
                assert sock.recv(10) == b""
            wait_until(lambda: proxy.stats().open_connections == 0, timeout=5)
