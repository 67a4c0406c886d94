"""Hostile input on the DIMSE port of a real adapter process, while dcmsend keeps working.

Random bytes, a first PDU claiming 4 GB, an oversized P-DATA-TF after association, a connection
that never sends, a request trickled byte by byte (slow loris) and 2,000 quick connects; after
each the adapter still stores instances, and its peak memory stays bounded.

Then the same inside associations, whatever they proposed (storage only, or storage beside
Storage Commitment): one engine serves both (checked through the Implementation Class UID of
the A-ASSOCIATE-AC). A P-DATA-TF claiming 4 GB and streamed, a P-DATA-TF header then silence, a
C-STORE trickled byte by byte or as tiny PDUs: each is aborted while it arrives, while a steady
64 KB/s sender with pauses is served. A C-STORE over the instance size limit is read and dropped
and answered 0xA700; one that goes on past twice the limit is aborted.
"""

from __future__ import annotations

import random
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import
    StorageCommitmentPushModel,
    Verification,
)

from common.dicom.part10 import IMPLEMENTATION_CLASS_UID
from common.dimse.fast.acse import ProposedContext, encode_associate_rq
from common.dimse.fast.commands import CEchoRq, CStoreRq, decode_command_set
from common.dimse.fast.constants import PduType, PdvControl, Tag
from common.dimse.fast.transport import pdata_pdus, release_pdu
from tests.support import dcmtk
from tests.support.adapters import IMPORT_AET, AdapterProcess
from tests.support.http_fault_server import HttpFaultServer
from tests.support.raw_pdu import read_pdu
from tests.support.samples import (
    MULTIFRAME_GRAYSCALE_WORD_SC,
    SampleInstance,
    make_corpus,
    make_large_instance,
)

LOCALHOST = "127.0.0.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
#: Peak RSS allowed (MiB): an adapter idles near 100 MiB; buffering a claimed 4 GB PDU or a
#: thread per flood connection without bound would blow far past this.
MAX_RSS_MB = 400
#: The adapter's --dimse_timeout: the slack of the pace rule once a PDU or message started.
DIMSE_TIMEOUT = 2.0
#: The adapter's --max_instance_size_mb.
MAX_INSTANCE_MB = 1
#: The adapter's --min_receive_rate (bytes/s; the default).
MIN_RECEIVE_RATE = 4096


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
         "--max_pdu_size", "16384", "--max_pending_connections", "64",
         "--dimse_timeout", str(DIMSE_TIMEOUT), "--max_instance_size_mb", str(MAX_INSTANCE_MB),
         "--min_receive_rate", str(MIN_RECEIVE_RATE)],
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


# -- inside associations, whatever they proposed ----------------------------------------------

#: Storage and verification beside Storage Commitment: a mixed association.
MIXED_CONTEXTS = [
    ProposedContext(1, CT_STORAGE, (EXPLICIT_LE,)),
    ProposedContext(3, MULTIFRAME_GRAYSCALE_WORD_SC, (EXPLICIT_LE,)),
    ProposedContext(5, VERIFICATION, (IMPLICIT_LE,)),
    ProposedContext(7, STORAGE_COMMITMENT, (IMPLICIT_LE,)),
]
#: Storage and verification only.
STORAGE_CONTEXTS = MIXED_CONTEXTS[:3]
PROPOSALS = ["mixed", "storage"]


def _associate(adapter: AdapterProcess, proposal: str) -> socket.socket:
    """A connection with an established association proposing ``proposal``'s contexts."""
    contexts = MIXED_CONTEXTS if proposal == "mixed" else STORAGE_CONTEXTS
    sock = socket.create_connection((LOCALHOST, adapter.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(encode_associate_rq("HOSTILE", IMPORT_AET, contexts, 16384))
    accept = read_pdu(sock)
    assert accept[:1] == bytes([PduType.ASSOCIATE_AC]), accept[:10]
    assert IMPLEMENTATION_CLASS_UID.encode() in accept  # our engine, whatever was proposed
    return sock


def _store_command(message_id: int = 1, sop_class: str = CT_STORAGE, context_id: int = 1,
                   sop_instance: str = "1.2.3.4") -> bytes:
    command = CStoreRq(message_id, sop_class, sop_instance).encode()
    return b"".join(pdata_pdus(context_id, command, True, 16000))


def _pdata(data: bytes, control: int, context_id: int = 1) -> bytes:
    item = (len(data) + 2).to_bytes(4, "big") + bytes([context_id, control]) + data
    return bytes([PduType.P_DATA_TF, 0]) + len(item).to_bytes(4, "big") + item


def _aborted_within(sock: socket.socket, seconds: float) -> bytes:
    answer = _closed_within(sock, seconds)
    assert answer[-10:-9] == bytes([PduType.ABORT]), answer[:20]
    return answer


def _stream_until_answered(
    sock: socket.socket, head: bytes, chunk: bytes, max_bytes: int, seconds: float
) -> int:
    """Send ``head``, then ``chunk`` after ``chunk`` until the adapter answers or closes.

    Returns the bytes sent (what the adapter may have had to read).
    """
    sock.settimeout(1.0)
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        sock.sendall(head)
        while sent < max_bytes and time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    return sent


def _adapter_log_since(adapter: AdapterProcess, offset: int) -> str:
    return adapter.log()[offset:]


@pytest.mark.parametrize("proposal", PROPOSALS)
def test_pdata_claiming_4gb_streamed_is_aborted_at_its_header(
    adapter: AdapterProcess, files: list[SampleInstance], proposal: str
) -> None:
    """Refused at its header: nothing of the claimed length is read into memory."""
    log_start = len(adapter.log())
    sock = _associate(adapter, proposal)
    started = time.monotonic()
    head = bytes([PduType.P_DATA_TF, 0]) + (0xFFFFFFF0).to_bytes(4, "big")
    sent = _stream_until_answered(sock, head, b"\0" * 65536, 512 << 20, 20)
    _aborted_within(sock, 5)
    sock.close()
    assert time.monotonic() - started < 5
    assert sent < 64 << 20, f"the adapter kept reading ({sent} bytes)"
    log = _adapter_log_since(adapter, log_start)  # one line, identifiers only
    assert re.search(r"HOSTILE@127\.0\.0\.1:\d+\): protocol error \(PDU of 4294967280 bytes "
                     r"exceeds the limit\); aborting", log), log
    assert "Traceback" not in log, log
    assert adapter.peak_rss_mb() < MAX_RSS_MB, adapter.peak_rss_mb()
    _dcmsend_works(adapter, files)


@pytest.mark.parametrize("proposal", PROPOSALS)
def test_pdata_header_then_silence_is_dropped_after_the_deadline(
    adapter: AdapterProcess, files: list[SampleInstance], proposal: str
) -> None:
    sock = _associate(adapter, proposal)
    sock.sendall(_pdata(b"\0" * 994, PdvControl.COMMAND)[:16])  # a valid start, then nothing
    started = time.monotonic()
    _aborted_within(sock, DIMSE_TIMEOUT + 5)
    sock.close()
    elapsed = time.monotonic() - started
    assert DIMSE_TIMEOUT - 0.5 < elapsed < DIMSE_TIMEOUT + 2, elapsed
    _dcmsend_works(adapter, files)


@pytest.mark.parametrize("proposal", PROPOSALS)
@pytest.mark.parametrize("style", ["bytes", "tiny PDUs"])
def test_slow_loris_inside_a_message_is_dropped(
    adapter: AdapterProcess, files: list[SampleInstance], proposal: str, style: str
) -> None:
    """Every byte (or PDU) well within any per-read timeout, the message never complete."""
    sock = _associate(adapter, proposal)
    gap = DIMSE_TIMEOUT / 4
    if style == "bytes":
        pieces = [bytes([b]) for b in _store_command() + _pdata(b"\0" * 200, 0)]
    else:
        sock.sendall(_store_command())
        pieces = [_pdata(b"\0", 0) for _ in range(200)]
    started = time.monotonic()
    closed = False
    for piece in pieces:
        try:
            sock.sendall(piece)
        except OSError:
            closed = True
            break
        if select.select([sock], [], [], gap)[0]:
            break  # the adapter answered (A-ABORT) or closed
        if time.monotonic() - started > 4 * DIMSE_TIMEOUT:
            break
    if not closed:
        _aborted_within(sock, 5)
    sock.close()
    elapsed = time.monotonic() - started
    assert elapsed < 2 * DIMSE_TIMEOUT + 1, f"a trickled message held the association {elapsed}s"
    _dcmsend_works(adapter, files)


@pytest.mark.parametrize("proposal", PROPOSALS)
def test_too_large_cstore_is_drained_and_answered_out_of_resources(
    adapter: AdapterProcess, sink: HttpFaultServer, files: list[SampleInstance], proposal: str
) -> None:
    """One behaviour for --max_instance_size_mb, whatever else was proposed: a dataset over the
    limit is read and dropped and answered 0xA700; the association goes on."""
    log_start = len(adapter.log())
    uploads_before = len(sink.requests)
    sock = _associate(adapter, proposal)
    limit = MAX_INSTANCE_MB << 20
    chunk = 16000
    pieces = [_pdata(b"\0" * chunk, 0) for _ in range(limit * 3 // 2 // chunk)]
    sock.sendall(_store_command() + b"".join(pieces) + _pdata(b"\0" * 10, PdvControl.LAST_FRAGMENT))
    assert _response_status(sock) == 0xA700
    sock.sendall(b"".join(pdata_pdus(5, CEchoRq(2).encode(), True, 16000)))
    assert _response_status(sock) == 0
    sock.sendall(release_pdu(PduType.RELEASE_RQ))
    assert read_pdu(sock)[:1] == bytes([PduType.RELEASE_RP])
    sock.close()
    assert len(sink.requests) == uploads_before
    assert re.search(rf"C-STORE of 1\.2\.3\.4 refused: dataset larger than {limit} bytes",
                     _adapter_log_since(adapter, log_start))
    _dcmsend_works(adapter, files)


@pytest.mark.parametrize("proposal", PROPOSALS)
def test_endless_cstore_is_aborted_past_twice_the_limit(
    adapter: AdapterProcess, sink: HttpFaultServer, files: list[SampleInstance], proposal: str
) -> None:
    """A dataset that never ends is not drained forever: past twice the limit, A-ABORT."""
    uploads_before = len(sink.requests)
    sock = _associate(adapter, proposal)
    limit = MAX_INSTANCE_MB << 20
    sent = _stream_until_answered(sock, _store_command(), _pdata(b"\0" * 16000, 0),
                                  64 * limit, 30)
    answer = _aborted_within(sock, 5)
    sock.close()
    assert len(answer) == 10, "expected only an A-ABORT"
    assert 2 * limit <= sent < 16 * limit, sent
    assert len(sink.requests) == uploads_before
    _dcmsend_works(adapter, files)


def _dataset_bytes(path: Path) -> bytes:
    """A Part 10 file's dataset (after its file meta), as a C-STORE carries it."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    return data[meta_end:]


def _response_status(sock: socket.socket) -> int:
    """The status of the response that comes next."""
    command = b""
    while True:
        pdu = read_pdu(sock)
        assert pdu[:1] == bytes([PduType.P_DATA_TF]), pdu[:10]
        command += pdu[12:]
        if pdu[11] & PdvControl.LAST_FRAGMENT:
            return decode_command_set(command).us(Tag.STATUS)


@pytest.mark.parametrize("proposal", PROPOSALS)
def test_a_steady_64kb_per_second_sender_with_pauses_is_served(
    adapter: AdapterProcess, tmp_path: Path, proposal: str
) -> None:
    """64 KiB bursts every second (pauses near the deadline's slack) are never cut."""
    instance = make_large_instance(tmp_path, 0.25, rows=256, columns=256)
    dataset = _dataset_bytes(instance.path)
    sock = _associate(adapter, proposal)
    sock.sendall(b"".join(pdata_pdus(5, CEchoRq(1).encode(), True, 16000)))
    assert _response_status(sock) == 0
    pdus = pdata_pdus(3, dataset, False, 16384 - 6)
    sock.sendall(_store_command(2, MULTIFRAME_GRAYSCALE_WORD_SC, 3, instance.sop_instance_uid))
    started = time.monotonic()
    for start in range(0, len(pdus), 4):  # 4 PDUs of 16 KiB per second
        sock.sendall(b"".join(pdus[start : start + 4]))
        time.sleep(1.0)
    assert _response_status(sock) == 0
    assert time.monotonic() - started > len(dataset) / (80 << 10)  # it was slow indeed
    sock.sendall(release_pdu(PduType.RELEASE_RQ))
    assert read_pdu(sock)[:1] == bytes([PduType.RELEASE_RP])
    sock.close()


def test_legit_mixed_association_still_works(
    adapter: AdapterProcess, files: list[SampleInstance]
) -> None:
    """pynetdicom as SCU on a mixed association: echo, store under the limit, release."""
    ae = AE(ae_title="LEGIT")
    ae.add_requested_context(Verification)
    ae.add_requested_context(StorageCommitmentPushModel)
    ae.add_requested_context(CT_STORAGE, EXPLICIT_LE)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4", EXPLICIT_LE)
    assoc = ae.associate(LOCALHOST, adapter.port, ae_title=IMPORT_AET)
    assert assoc.is_established
    try:
        assert assoc.acceptor.implementation_class_uid == IMPLEMENTATION_CLASS_UID
        assert assoc.send_c_echo().Status == 0
        for sample in files:
            status = assoc.send_c_store(pydicom.dcmread(sample.path))
            assert status.Status == 0
    finally:
        assoc.release()


def test_peak_memory_after_all_of_it(adapter: AdapterProcess) -> None:
    assert adapter.peak_rss_mb() < MAX_RSS_MB
