"""Hostile input on the DIMSE port of a real adapter process, while dcmsend keeps working.

Random bytes, a first PDU claiming 4 GB, an oversized P-DATA-TF after association, a connection
that never sends, a request trickled byte by byte (slow loris) and 2,000 quick connects; after
each the adapter still stores instances, and its peak memory stays bounded.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from common.dimse.fast.acse import ProposedContext, encode_associate_rq
from common.dimse.fast.constants import PduType
from tests.support import dcmtk
from tests.support.adapters import IMPORT_AET, AdapterProcess
from tests.support.http_fault_server import HttpFaultServer
from tests.support.samples import SampleInstance, make_corpus

LOCALHOST = "127.0.0.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Peak RSS allowed (MiB): an adapter idles near 100 MiB; buffering a claimed 4 GB PDU or a
#: thread per flood connection without bound would blow far past this.
MAX_RSS_MB = 400


@pytest.fixture(scope="module")
def sink() -> Iterator[HttpFaultServer]:
    server = HttpFaultServer(None).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def adapter(sink: HttpFaultServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdapterProcess]:
    log = tmp_path_factory.mktemp("hostile") / "adapter.log"
    process = AdapterProcess(
        ["--dicomweb_address", sink.url, "--auth", "none", "--acse_timeout", "1",
         "--max_pdu_size", "16384", "--max_pending_connections", "64"],
        log_path=log,
    )
    with process:
        yield process


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[SampleInstance]:
    return make_corpus(tmp_path_factory.mktemp("files"), 2, studies=1)


def _dcmsend_works(adapter: AdapterProcess, files: list[SampleInstance]) -> None:
    result = dcmtk.dcmsend(LOCALHOST, adapter.port, [f.path for f in files], IMPORT_AET,
                           timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr + adapter.log()[-3000:]


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    """Everything the adapter sends until it closes the connection (fails if it does not)."""
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"connection still open after {seconds}s")
    except ConnectionResetError:
        pass
    return data


def _rq() -> bytes:
    return encode_associate_rq("HOSTILE", IMPORT_AET,
                               [ProposedContext(1, CT_STORAGE, ("1.2.840.10008.1.2.1",))], 16384)


def test_random_bytes_are_aborted(adapter: AdapterProcess, files: list[SampleInstance]) -> None:
    rng = random.Random(8)
    for _ in range(20):
        with socket.create_connection((LOCALHOST, adapter.port), timeout=5) as sock:
            sock.sendall(rng.randbytes(rng.randint(1, 4096)))
            _closed_within(sock, 5)
    _dcmsend_works(adapter, files)


def test_pdu_claiming_a_huge_length(adapter: AdapterProcess, files: list[SampleInstance]) -> None:
    with socket.create_connection((LOCALHOST, adapter.port), timeout=5) as sock:
        sock.sendall(bytes([PduType.ASSOCIATE_RQ, 0]) + (0xFFFFFFFF).to_bytes(4, "big"))
        answer = _closed_within(sock, 5)
    assert answer[:1] == bytes([PduType.ABORT])
    # After association: a P-DATA-TF longer than the 16 KiB we announced is aborted at once.
    with socket.create_connection((LOCALHOST, adapter.port), timeout=5) as sock:
        sock.sendall(_rq())
        accept = sock.recv(65536)
        assert accept[:1] == bytes([PduType.ASSOCIATE_AC])
        sock.sendall(bytes([PduType.P_DATA_TF, 0]) + (0xFFFFFFF0).to_bytes(4, "big") + b"\0" * 64)
        answer = _closed_within(sock, 5)
    assert answer[:1] == bytes([PduType.ABORT])
    _dcmsend_works(adapter, files)


def test_silent_and_slow_loris_connections_are_dropped(
    adapter: AdapterProcess, files: list[SampleInstance]
) -> None:
    started = time.monotonic()
    with socket.create_connection((LOCALHOST, adapter.port), timeout=5) as sock:
        _closed_within(sock, 5)  # --acse_timeout 1
    assert time.monotonic() - started < 4
    request = _rq()
    started = time.monotonic()
    with socket.create_connection((LOCALHOST, adapter.port), timeout=5) as sock:
        closed = False
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.1)  # each byte well within any per-read timeout
            if time.monotonic() - started > 6:
                break
        if not closed:
            _closed_within(sock, 5)
    assert time.monotonic() - started < 8, "a trickled request kept the connection"
    _dcmsend_works(adapter, files)


def test_connect_flood_while_dcmsend_keeps_working(
    adapter: AdapterProcess, files: list[SampleInstance]
) -> None:
    total, workers = 2000, 16
    errors: list[BaseException] = []

    def flood(count: int) -> None:
        for _ in range(count):
            try:
                with socket.create_connection((LOCALHOST, adapter.port), timeout=5):
                    pass
            except OSError as exc:  # a refused connect is fine; record only the unexpected
                if not isinstance(exc, ConnectionRefusedError | ConnectionResetError):
                    errors.append(exc)

    threads = [threading.Thread(target=flood, args=(total // workers,)) for _ in range(workers)]
    for thread in threads:
        thread.start()
    # Legitimate traffic during the flood.
    _dcmsend_works(adapter, files)
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]
    _dcmsend_works(adapter, files)
    assert adapter.process is not None and adapter.process.poll() is None
    assert adapter.peak_rss_mb() < MAX_RSS_MB, adapter.peak_rss_mb()


def test_peak_memory_after_all_of_it(adapter: AdapterProcess) -> None:
    assert adapter.peak_rss_mb() < MAX_RSS_MB
