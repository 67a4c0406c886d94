"""Import adapter benchmark: C-STORE -> STOW-RS throughput and memory, against baselines.

Not a test: it asserts nothing about timing, it prints figures. In one run, on one corpus of small
CT/MR instances and then on one of large instances, it measures (instances/s, MB/s, CPU):

    (d)  dcmsend -> DCMTK storescp writing files          the native DIMSE ceiling
    (c)  dcmsend -> import adapter -> discarding sink     the adapter's own ceiling
    sink urllib3 STOW-RS -> the same sink                 shows the sink is not the bottleneck
    (b)  urllib3 STOW-RS -> Orthanc, one instance/request what the store itself can take
    (a)  dcmsend -> import adapter -> Orthanc             the real job

each with one association (one client) and with ``--parallel`` at once (the corpus split
round-robin, one dcmsend process or client thread per share), plus the adapter's peak RSS
(VmHWM), and prints the ratios (a)/(b) and (c)/(d). Every Orthanc phase gets a fresh, empty
Orthanc, so no instance is ever a duplicate. Each phase first sends one warm-up instance (not
timed, not counted) so that start-up costs (imports, first connections, Orthanc's database)
stay out of the figures. A dcmsend phase ends when the last dcmsend returns: the adapter
answers each C-STORE only after the store accepted the instance. A STOW-RS phase ends when
the last response has been read. The counts are checked afterwards, outside the clock. Each
phase runs ``--repeat`` times (fresh servers each time) and the median run is shown, with the
instances/s of every run at the end of its row. Orthanc syncs every instance to disk, so its
speed drifts with the disk's state: the disk is synced before every Orthanc phase, and the runs
of (a) and (b) are interleaved, alternating which goes first. Finished Orthancs' stores are
deleted only at the end: deleting them between phases slowed the later ones (discards).
``--profile-dir`` adds (c) runs under py-spy and prints the top of their profiles.

Run it from the repository root, preferably in a private network namespace like the tests::

    unshare -n -- bash -c 'ip link set lo up && python -m bench.bench_import'
    python -m bench.bench_import --small 50 --large 2        # a quick run

storescp gets DCMTK's largest PDU (``-pdu 131072``, the adapter announces 1 MiB) and ``--fork``
for several associations. The sink is an asyncio HTTP/1.1 server in its own process that reads
Content-Length bytes and answers 200 with a ReferencedSOPSequence naming the uploaded instance.

MB means 10**6 bytes of Part 10 files as stored on disk. CPU is in % of one core over the timed
part (user + system, children included), measured from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import mmap
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import urllib3

from common.dicomweb.stow import stow_status
from tests.support.adapters import IMPORT_AET, AdapterProcess
from tests.support.dcmtk import StoreSCP, dcmsend, dcmsend_summary
from tests.support.http_fault_server import dicom_file_meta_uids, stow_response
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port, wait_for_port
from tests.support.samples import SampleInstance, make_corpus, make_large_instance

MB = 1_000_000
DIMSE_TIMEOUT = 1800.0
HTTP_TIMEOUT = urllib3.Timeout(connect=10.0, read=600.0)
INLINE_LIMIT = 1 << 20
STORESCP_MAX_PDU = "131072"  # DCMTK's largest; the adapter announces 1 MiB
STOW_CONTENT_TYPE = 'multipart/related; type="application/dicom"; boundary={boundary}'
DICOM_JSON = "application/dicom+json"

PHASE_TITLES = {
    "d": "(d) dcmsend -> storescp",
    "c": "(c) dcmsend -> adapter -> sink",
    "sink": "    urllib3 STOW -> sink",
    "b": "(b) urllib3 STOW -> Orthanc",
    "a": "(a) dcmsend -> adapter -> Orthanc",
}
PHASE_ORDER = ("d", "c", "sink", "b", "a")


# --------------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Item:
    """One file to send."""

    path: Path
    size: int
    sop_instance_uid: str

    @classmethod
    def of(cls, sample: SampleInstance) -> Item:
        return cls(sample.path, sample.size, sample.sop_instance_uid)


@dataclass
class Corpus:
    """The files every phase sends, plus one warm-up file sent untimed before each phase."""

    name: str
    items: list[Item]
    warm: Item

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def nbytes(self) -> int:
        return sum(item.size for item in self.items)

    def groups(self, streams: int) -> list[list[Item]]:
        """The corpus split round-robin into ``streams`` non-empty shares."""
        shares = [self.items[index::streams] for index in range(streams)]
        return [share for share in shares if share]

    def describe(self) -> str:
        sizes = sorted(item.size for item in self.items)
        return (
            f"{self.count} instances, {self.nbytes / MB:.1f} MB "
            f"(sizes {sizes[0] / MB:.3f}..{sizes[-1] / MB:.3f} MB, "
            f"mean {self.nbytes / self.count / MB:.3f} MB)"
        )


def build_corpora(work: Path, small: int, large: int, large_mb: float) -> list[Corpus]:
    warm = Item.of(make_corpus(work / "warm", 1)[0])
    corpora: list[Corpus] = []
    if small:
        samples = make_corpus(work / "small", small)
        corpora.append(Corpus("small", [Item.of(s) for s in samples], warm))
    if large:
        samples = [make_large_instance(work / "large", large_mb) for _ in range(large)]
        corpora.append(Corpus("large", [Item.of(s) for s in samples], warm))
    for corpus in corpora:  # into the page cache, so no phase pays for the first read
        for item in [corpus.warm, *corpus.items]:
            with item.path.open("rb") as stream:
                while stream.read(1 << 22):
                    pass
    return corpora


# --------------------------------------------------------------------------------- results


@dataclass
class Result:
    """One timed phase."""

    corpus: str
    phase: str
    streams: int
    sent: int
    ok: int
    nbytes: int
    seconds: float
    stored: int | None = None
    peak_rss_mb: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    error: str = ""
    runs: list[float] = field(default_factory=list)  # instances/s of every repetition

    @property
    def instances_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        done = self.nbytes * self.ok / self.sent if self.sent else 0
        return done / MB / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "corpus": self.corpus,
            "phase": self.phase,
            "title": PHASE_TITLES[self.phase].strip(),
            "streams": self.streams,
            "sent": self.sent,
            "ok": self.ok,
            "stored": self.stored,
            "bytes": self.nbytes,
            "seconds": round(self.seconds, 4),
            "instances_per_s": round(self.instances_per_s, 2),
            "mb_per_s": round(self.mb_per_s, 2),
            "peak_rss_mb": None if self.peak_rss_mb is None else round(self.peak_rss_mb, 1),
            "cpu_percent": {name: round(value) for name, value in self.cpu.items()},
            "runs_instances_per_s": self.runs,
            "error": self.error,
        }


def failed(corpus: Corpus, phase: str, streams: int, error: str) -> Result:
    return Result(corpus.name, phase, streams, corpus.count, 0, corpus.nbytes, 0.0, error=error)


# --------------------------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children, from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def child_pid(marker: str) -> int | None:
    """The pid of a child of this process whose command line contains ``marker``."""
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ppid == me and marker in cmdline:
            return int(entry.name)
    return None


class CpuMeter:
    """CPU use of named processes over an interval, in % of one core.

    ``"client"`` is this process (threads) when ``client_is_self``, otherwise the children
    reaped during the interval (the dcmsend processes).
    """

    def __init__(self, pids: dict[str, int | None], *, client_is_self: bool) -> None:
        self._pids = {name: pid for name, pid in pids.items() if pid}
        self._who = resource.RUSAGE_SELF if client_is_self else resource.RUSAGE_CHILDREN
        self._start: dict[str, float] = {}
        self._t0 = 0.0

    def _sample(self) -> dict[str, float]:
        usage = resource.getrusage(self._who)
        sample = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        sample["client"] = usage.ru_utime + usage.ru_stime
        return sample

    def start(self) -> None:
        self._start = self._sample()
        self._t0 = time.perf_counter()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._t0
        end = self._sample()
        return {name: 100 * (end[name] - self._start[name]) / wall for name in end}


# --------------------------------------------------------------------------------- senders


@dataclass
class Sent:
    seconds: float
    ok: int
    errors: list[str]


def send_dimse(port: int, groups: Sequence[Sequence[Item]], called_aet: str) -> Sent:
    """One dcmsend process (one association) per group, all at once; wall time to the last."""

    def one(group: Sequence[Item]) -> subprocess.CompletedProcess[str]:
        return dcmsend(
            "127.0.0.1", port, [item.path for item in group], called_aet, timeout=DIMSE_TIMEOUT
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(len(groups)) as pool:
        results = list(pool.map(one, groups))
    seconds = time.perf_counter() - started
    ok = sum(dcmsend_summary(result).get("with status SUCCESS", 0) for result in results)
    errors = [
        "\n".join((result.stdout + result.stderr).splitlines()[-8:])
        for result in results
        if result.returncode
    ]
    return Sent(seconds, ok, errors)


@contextmanager
def stow_body(item: Item, boundary: str) -> Iterator[tuple[bytes | list[Any], int]]:
    """A one-part multipart/related body and its length.

    Small files are read into one buffer (one send); large ones are memory-mapped and sent as
    [head, file, tail] without a user-space copy, so the client costs as little as it can.
    """
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
    tail = f"\r\n--{boundary}--\r\n".encode("ascii")
    length = len(head) + item.size + len(tail)
    with item.path.open("rb") as stream:
        if item.size <= INLINE_LIMIT:
            yield b"".join((head, stream.read(), tail)), length
            return
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield [head, mapped, tail], length


class StowClient:
    """A keep-alive urllib3 pool POSTing one instance per request to ``{root}/studies``."""

    def __init__(self, dicomweb_root: str, connections: int) -> None:
        url = urllib3.util.parse_url(dicomweb_root)
        self._pool = urllib3.HTTPConnectionPool(
            url.host or "127.0.0.1", url.port, maxsize=connections, block=True, retries=False,
            timeout=HTTP_TIMEOUT,
        )  # fmt: skip
        self._path = (url.path or "").rstrip("/") + "/studies"
        self._boundary = "bench-" + uuid.uuid4().hex
        self._headers = {
            "Content-Type": STOW_CONTENT_TYPE.format(boundary=self._boundary),
            "Accept": DICOM_JSON,
        }

    def store(self, item: Item) -> str | None:
        """STOW-RS one instance; None when the store confirmed it, else what went wrong."""
        with stow_body(item, self._boundary) as (body, length):
            response = self._pool.urlopen(
                "POST", self._path, body=body,
                headers={**self._headers, "Content-Length": str(length)}, preload_content=True,
            )  # fmt: skip
        if not 200 <= response.status < 300:
            return f"HTTP {response.status}: {response.data[:200]!r}"
        status = stow_status(
            response.data, response.headers.get("Content-Type", ""), item.sop_instance_uid
        )
        return None if status.is_success else f"status 0x{status.code:04X} {status.comment}"

    def send(self, groups: Sequence[Sequence[Item]]) -> Sent:
        """One thread per group, each sending its instances one after the other."""

        def one(group: Sequence[Item]) -> tuple[int, list[str]]:
            ok, errors = 0, list[str]()
            for item in group:
                error = self.store(item)
                if error is None:
                    ok += 1
                elif len(errors) < 3:
                    errors.append(error)
            return ok, errors

        started = time.perf_counter()
        with ThreadPoolExecutor(len(groups)) as pool:
            results = list(pool.map(one, groups))
        seconds = time.perf_counter() - started
        return Sent(seconds, sum(ok for ok, _ in results), [e for _, es in results for e in es])

    def close(self) -> None:
        self._pool.close()


# --------------------------------------------------------------------------------- the sink


_SINK_HEADER_LIMIT = 64 * 1024
_SINK_BODY_HEAD = 8 * 1024  # the part headers and file meta are in the first few hundred bytes


class _SinkStats:
    def __init__(self) -> None:
        self.requests = 0
        self.confirmed = 0
        self.bytes = 0


class _SinkProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive; POST .../studies is counted and answered 200 with a STOW-RS body
    referencing the SOP instance read from the part's file meta; GET /stats gives counts."""

    def __init__(self, stats: _SinkStats) -> None:
        self._stats = stats
        self._transport: asyncio.Transport | None = None
        self._header = bytearray()
        self._request: tuple[str, str, bool] | None = None  # method, target, close after
        self._remaining = 0
        self._body_head = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._request is None:
                self._header += view
                end = self._header.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._header) > _SINK_HEADER_LIMIT:
                        self._reply("431 Request Header Fields Too Large", b"", close=True)
                    return
                rest = bytes(self._header[end + 4 :])
                head = bytes(self._header[:end])
                self._header.clear()
                if not self._begin(head):
                    return
                view = memoryview(rest)
                if self._remaining == 0:
                    self._finish()
                continue
            take = min(self._remaining, len(view))
            room = _SINK_BODY_HEAD - len(self._body_head)
            if room > 0:
                self._body_head += view[: min(room, take)]
            self._remaining -= take
            self._stats.bytes += take
            view = view[take:]
            if self._remaining == 0:
                self._finish()

    def _begin(self, head: bytes) -> bool:
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, http_version = lines[0].split(" ", 2)
        except ValueError:
            self._reply("400 Bad Request", b"", close=True)
            return False
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._reply("411 Length Required", b"", close=True)
            return False
        close = headers.get("connection", "").lower() == "close" or http_version == "HTTP/1.0"
        self._request = (method, target, close)
        self._remaining = int(headers.get("content-length", "0") or 0)
        self._body_head.clear()
        return True

    def _finish(self) -> None:
        assert self._request is not None
        method, target, close = self._request
        self._request = None
        if method == "POST" and target.rstrip("/").endswith("/studies"):
            self._stats.requests += 1
            head = bytes(self._body_head)
            split = head.find(b"\r\n\r\n")
            uids = dicom_file_meta_uids(head[split + 4 :]) if split >= 0 else None
            body = b""
            if uids is not None:
                self._stats.confirmed += 1
                body = json.dumps(stow_response([uids])).encode()
            self._reply("200 OK", body, close=close)
        elif method == "GET" and target == "/stats":
            stats = {
                "requests": self._stats.requests,
                "confirmed": self._stats.confirmed,
                "bytes": self._stats.bytes,
            }
            self._reply("200 OK", json.dumps(stats).encode(), close=close, json_type=True)
        else:
            self._reply("404 Not Found", b"", close=close)

    def _reply(self, status: str, body: bytes, *, close: bool, json_type: bool = False) -> None:
        assert self._transport is not None
        content_type = "application/json" if json_type else DICOM_JSON
        connection = "Connection: close\r\n" if close else ""
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{connection}\r\n"
        ).encode("latin-1")
        self._transport.write(head + body)
        if close:
            self._transport.close()


async def _serve_sink(port: int) -> None:
    loop = asyncio.get_running_loop()
    stats = _SinkStats()
    server = await loop.create_server(
        lambda: _SinkProtocol(stats), "127.0.0.1", port, backlog=256, reuse_address=True
    )
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    async with server:
        await stopped.wait()


class SinkProcess:
    """The discarding DICOMweb sink in its own process (``--serve-sink PORT``)."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def __enter__(self) -> SinkProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.bench_import", "--serve-sink", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for_port("127.0.0.1", self.port, timeout=15, process=self.process)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stats(self) -> dict[str, int]:
        with urllib3.PoolManager() as http:
            response = http.request("GET", f"http://127.0.0.1:{self.port}/stats", timeout=10)
        return json.loads(response.data)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------- profiling


@dataclass(frozen=True)
class Profile:
    """One py-spy recording of the adapter.

    ``cpu``: only samples holding the GIL, native frames included: where the Python work goes.
    ``wall``: every thread, idle or not, Python frames only (py-spy cannot take native frames
    without pausing the process, which slows it down a lot): where each thread's time goes.
    """

    corpus: str
    mode: str
    output: Path

    def flags(self) -> list[str]:
        if self.mode == "cpu":
            return ["--native", "--gil"]
        return ["--nonblocking", "--idle", "--threads"]


@contextmanager
def profiled(pid: int, profile: Profile | None) -> Iterator[None]:
    """``py-spy record`` on ``pid`` while the block runs (no-op without a profile)."""
    if profile is None:
        yield
        return
    spy = shutil.which("py-spy")
    if spy is None:
        print("  (py-spy not installed: no profile)", flush=True)
        yield
        return
    log_path = profile.output.with_suffix(".log")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [spy, "record", "--rate", "250", "--format", "raw", *profile.flags(),
             "--output", str(profile.output), "--pid", str(pid)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 10
    while b"Sampling" not in log_path.read_bytes():  # attached
        if time.monotonic() > deadline or process.poll() is not None:
            break
        time.sleep(0.02)
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_FRAME = re.compile(r"^(?P<name>.*) \((?P<where>[^()]*?)(?::(?P<line>\d+))?\)$")
_BORING = re.compile(
    r"^(\? |thread_run |Thread\._bootstrap|Thread\.run |_run_module_as_main |_run_code "
    r"|<module> |pymain_|Py_RunMain|Py_BytesMain|__libc_start|_start |clone|start_thread)"
)


def _frame_label(frame: str, *, line: bool = False) -> str:
    """``func (pkg/file.py)``, with ``:line`` if asked; unresolved addresses merged per library."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    if match["name"].startswith("0x"):
        return f"? ({match['where']})"
    where = "/".join(Path(match["where"]).parts[-2:])
    if line and match["line"]:
        where += f":{match['line']}"
    return f"{match['name']} ({where})"


def _thread_kind(frames: Sequence[str]) -> str:
    """The thread's target (the frame under ``Thread.run``), or ``main``."""
    for index, frame in enumerate(frames):
        if frame.startswith("Thread.run (") and index + 1 < len(frames):
            return _frame_label(frames[index + 1])
    return "main thread"


Stack = tuple[list[str], int]


def _read_stacks(path: Path) -> dict[str, list[Stack]]:
    """Thread -> [(raw frames root first, samples)] from a raw py-spy file."""
    threads: dict[str, list[Stack]] = {}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, frames = "", []
        for frame in stack.split(";"):
            if frame.startswith("thread ("):  # added by --threads
                thread = frame
            elif frame:
                frames.append(frame)
        if frames:
            threads.setdefault(thread, []).append((frames, int(count)))
    return threads


def _top(stacks: Sequence[Stack], top: int, self_top: int) -> list[str]:
    total = sum(count for _, count in stacks)
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        self_time[_frame_label(frames[-1], line=True)] += count
        for label in {_frame_label(frame) for frame in frames}:
            if not _BORING.match(label):
                inclusive[label] += count
    lines = ["    self (leaf):"]
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in self_time.most_common(self_top)]
    lines.append("    inclusive:")
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return lines


def summarize_profile(profile: Profile, top: int = 22) -> str:
    """The top of a profile: for ``cpu`` self and inclusive shares of the GIL-holding samples;
    for ``wall`` the same per kind of thread, leaving out threads that only waited."""
    path = profile.output
    if not path.exists():
        return f"  (no profile written: see {path.with_suffix('.log')})"
    threads = _read_stacks(path)
    every = [stack for stacks in threads.values() for stack in stacks]
    total = sum(count for _, count in every)
    if not total:
        return "  (empty profile)"
    if profile.mode == "cpu":
        return "\n".join([f"  {total} samples holding the GIL", *_top(every, top, 15)])
    kinds: dict[str, list[Stack]] = {}
    skipped = 0
    for stacks in threads.values():
        samples = sum(count for _, count in stacks)
        leaves = Counter[str]()
        for frames, count in stacks:
            leaves[frames[-1]] += count
        if leaves.most_common(1)[0][1] >= 0.95 * samples:  # parked at one place all along
            skipped += 1
            continue
        targets = Counter[str]()
        for frames, count in stacks:
            targets[_thread_kind(frames)] += count
        kinds.setdefault(targets.most_common(1)[0][0], []).extend(stacks)
    lines = [
        f"  {total} samples of {len(threads)} threads, idle included; {skipped} threads "
        "parked in one place left out; % of the samples of that kind of thread:"
    ]
    for name, stacks in sorted(kinds.items(), key=lambda item: -sum(c for _, c in item[1])):
        lines.append(f"  == thread {name}: {sum(count for _, count in stacks)} samples")
        lines += _top(stacks, 14, 8)
    return "\n".join(lines)


# --------------------------------------------------------------------------------- phases


class Bench:
    """Runs the phases of one corpus and collects :class:`Result` rows."""

    def __init__(
        self,
        work: Path,
        storescp_dir: Path,
        parallel: int,
        repeat: int,
        profile_dir: Path | None,
        adapter_args: Sequence[str] = (),
        orthanc_dir: Path | None = None,
    ) -> None:
        self.work = work
        self.orthanc_dir = orthanc_dir
        self.adapter_args = list(adapter_args)
        self.storescp_dir = storescp_dir
        self._runs = itertools.count(1)
        self.parallel = parallel
        self.repeat = repeat
        self.profile_dir = profile_dir
        self.results: list[Result] = []
        self.profiles: list[Profile] = []
        self.versions: dict[str, str] = {}
        #: Stores of finished Orthanc phases, deleted only when the whole run is over.
        self.spent_stores: list[Path] = []

    def streams(self) -> list[int]:
        return [1] if self.parallel <= 1 else [1, self.parallel]

    def record(self, result: Result) -> None:
        self.results.append(result)
        print(format_row(result), flush=True)
        if result.error:  # the end of it: the full text is in --json
            print(indent("\n".join(result.error.splitlines()[-12:])), flush=True)

    def guarded(self, corpus: Corpus, phase: str, streams: int, run: Callable[[], Result]) -> None:
        """Run a phase ``repeat`` times and record the median run (by instances/s)."""
        results = [self._attempt(corpus, phase, streams, run) for _ in range(self.repeat)]
        self._record_median(results)

    def guarded_pair(
        self, corpus: Corpus, streams: int, runs: Sequence[tuple[str, Callable[[], Result]]]
    ) -> None:
        """Run two phases ``repeat`` times each, interleaved, alternating which goes first.

        (a) and (b) both store into Orthanc, whose speed drifts with the state of the disk
        (it syncs every instance): interleaving gives both the same conditions, where running
        all of one and then all of the other favoured whichever came first.
        """
        results: dict[str, list[Result]] = {phase: [] for phase, _ in runs}
        for index in range(self.repeat):
            order = runs if index % 2 == 0 else list(reversed(runs))
            for phase, run in order:
                results[phase].append(self._attempt(corpus, phase, streams, run))
        for phase, _ in runs:
            self._record_median(results[phase])

    @staticmethod
    def _attempt(corpus: Corpus, phase: str, streams: int, run: Callable[[], Result]) -> Result:
        try:
            return run()
        except Exception as exc:  # a broken phase must not hide the others
            trace = traceback.format_exc(limit=4)
            return failed(corpus, phase, streams, f"{exc!r}\n{trace}")

    def _record_median(self, results: list[Result]) -> None:
        good = sorted((r for r in results if not r.error), key=lambda r: r.instances_per_s)
        chosen = good[(len(good) - 1) // 2] if good else results[-1]
        chosen.runs = [round(r.instances_per_s, 1) for r in results]
        if good and len(good) < len(results):
            chosen.error = "\n".join(r.error for r in results if r.error)
        self.record(chosen)

    def run(self, corpus: Corpus, phases: str) -> None:
        runners: dict[str, Callable[[Corpus, int], Result]] = {
            "d": self.storescp,
            "c": self.adapter_to_sink,
            "sink": self.sink_alone,
            "b": self.stow_to_orthanc,
            "a": self.adapter_to_orthanc,
        }
        for phase in PHASE_ORDER:
            if phase[0] not in phases or (phase == "a" and "b" in phases):
                continue  # (a) runs with (b), interleaved
            for streams in self.streams():
                if phase == "b" and "a" in phases:
                    self.guarded_pair(corpus, streams, [
                        ("b", partial(runners["b"], corpus, streams)),
                        ("a", partial(runners["a"], corpus, streams)),
                    ])  # fmt: skip
                else:
                    self.guarded(corpus, phase, streams, partial(runners[phase], corpus, streams))

    def profile(self, corpus: Corpus) -> None:
        """Extra (c) runs, one association, under py-spy; their figures are not in the ratios."""
        assert self.profile_dir is not None
        for mode in ("cpu", "wall"):
            profile = Profile(corpus.name, mode, self.profile_dir / f"c-{corpus.name}-{mode}.txt")
            try:
                result = self.adapter_to_sink(corpus, 1, profile=profile)
                print(f"  py-spy {mode:<4} {format_row(result).strip()}", flush=True)
            except Exception as exc:
                print(f"  py-spy {mode} run failed: {exc!r}", flush=True)
            self.profiles.append(profile)

    # -- (d)

    def storescp(self, corpus: Corpus, streams: int) -> Result:
        out = Path(tempfile.mkdtemp(prefix=f"storescp-{corpus.name}-", dir=self.storescp_dir))
        extra = ["-pdu", STORESCP_MAX_PDU, *(["--fork"] if streams > 1 else [])]
        try:
            with StoreSCP(out / "files", aet="STORESCP", extra_args=extra) as scp:
                warm = send_dimse(scp.port, [[corpus.warm]], "STORESCP")
                if warm.ok != 1:
                    raise RuntimeError(f"warm-up failed: {warm.errors}\n{scp.log_tail()}")
                meter = CpuMeter({"server": child_pid(str(out / "files"))}, client_is_self=False)
                os.sync()
                meter.start()
                sent = send_dimse(scp.port, corpus.groups(streams), "STORESCP")
                cpu = meter.stop()
                stored = len(scp.wait_for_files(sent.ok + 1, timeout=60)) - 1
        finally:
            shutil.rmtree(out, ignore_errors=True)
        return Result(
            corpus.name, "d", streams, corpus.count, sent.ok, corpus.nbytes, sent.seconds,
            stored=stored, cpu=cpu, error="\n".join(sent.errors),
        )  # fmt: skip

    # -- (c) and (a)

    def _through_adapter(
        self,
        corpus: Corpus,
        phase: str,
        streams: int,
        dicomweb_url: str,
        server_pid: int | None,
        profile: Profile | None = None,
    ) -> tuple[Sent, dict[str, float], float]:
        log = self.work / f"adapter-{phase}-{corpus.name}-{streams}-{next(self._runs)}.log"
        adapter = AdapterProcess(
            ["--dicomweb_address", dicomweb_url, *self.adapter_args], log_path=log
        )
        with adapter:
            assert adapter.process is not None
            warm = send_dimse(adapter.port, [[corpus.warm]], IMPORT_AET)
            if warm.ok != 1:
                raise RuntimeError(f"warm-up failed: {warm.errors}\n{adapter.log()[-3000:]}")
            meter = CpuMeter(
                {"adapter": adapter.process.pid, "server": server_pid}, client_is_self=False
            )
            os.sync()
            with profiled(adapter.process.pid, profile):
                meter.start()
                sent = send_dimse(adapter.port, corpus.groups(streams), IMPORT_AET)
                cpu = meter.stop()
            rss = adapter.peak_rss_mb()
            code = adapter.terminate()
            if code != 0:
                sent.errors.append(f"adapter exited with {code}:\n{adapter.log()[-2000:]}")
        if sent.errors:
            sent.errors.append("adapter log tail:\n" + "\n".join(adapter.log().splitlines()[-5:]))
        return sent, cpu, rss

    def adapter_to_sink(
        self, corpus: Corpus, streams: int, profile: Profile | None = None
    ) -> Result:
        with SinkProcess(self.work / "sink.log") as sink:
            assert sink.process is not None
            sent, cpu, rss = self._through_adapter(
                corpus, "c", streams, sink.dicomweb_url, sink.process.pid, profile
            )
            stored = sink.stats()["confirmed"] - 1
        return Result(
            corpus.name, "c", streams, corpus.count, sent.ok, corpus.nbytes, sent.seconds,
            stored=stored, peak_rss_mb=rss, cpu=cpu, error="\n".join(sent.errors),
        )  # fmt: skip

    def adapter_to_orthanc(self, corpus: Corpus, streams: int) -> Result:
        with self._orthanc() as (orthanc, pid):
            sent, cpu, rss = self._through_adapter(corpus, "a", streams, orthanc.dicomweb_url, pid)
            stored = orthanc.count_instances() - 1
        return Result(
            corpus.name, "a", streams, corpus.count, sent.ok, corpus.nbytes, sent.seconds,
            stored=stored, peak_rss_mb=rss, cpu=cpu, error="\n".join(sent.errors),
        )  # fmt: skip

    # -- (b) and the sink alone

    def _stow(
        self, corpus: Corpus, streams: int, dicomweb_url: str, server_pid: int | None
    ) -> tuple[Sent, dict[str, float]]:
        client = StowClient(dicomweb_url, streams)
        try:
            error = client.store(corpus.warm)
            if error is not None:
                raise RuntimeError(f"warm-up failed: {error}")
            meter = CpuMeter({"server": server_pid}, client_is_self=True)
            os.sync()
            meter.start()
            sent = client.send(corpus.groups(streams))
            return sent, meter.stop()
        finally:
            client.close()

    def sink_alone(self, corpus: Corpus, streams: int) -> Result:
        with SinkProcess(self.work / "sink.log") as sink:
            assert sink.process is not None
            sent, cpu = self._stow(corpus, streams, sink.dicomweb_url, sink.process.pid)
            stored = sink.stats()["confirmed"] - 1
        return Result(
            corpus.name, "sink", streams, corpus.count, sent.ok, corpus.nbytes, sent.seconds,
            stored=stored, cpu=cpu, error="\n".join(sent.errors),
        )  # fmt: skip

    def stow_to_orthanc(self, corpus: Corpus, streams: int) -> Result:
        with self._orthanc() as (orthanc, pid):
            sent, cpu = self._stow(corpus, streams, orthanc.dicomweb_url, pid)
            stored = orthanc.count_instances() - 1
        return Result(
            corpus.name, "b", streams, corpus.count, sent.ok, corpus.nbytes, sent.seconds,
            stored=stored, cpu=cpu, error="\n".join(sent.errors),
        )  # fmt: skip

    @contextmanager
    def _orthanc(self) -> Iterator[tuple[OrthancServer, int | None]]:
        """A fresh, empty Orthanc in the work directory, deleted afterwards."""
        base = self.orthanc_dir or self.work
        orthanc = OrthancServer(workdir=Path(tempfile.mkdtemp(prefix="orthanc-", dir=base)))
        try:
            orthanc.start()
            self.versions.setdefault("orthanc", str(orthanc.system().get("Version")))
            # Orthanc syncs every instance it stores: the write-back of the previous phase's
            # files (and of its deleted store) must not land on this phase's clock. Without
            # this, whichever of (a)/(b) runs second paid for the first one's disk writes.
            os.sync()
            yield orthanc, child_pid(str(orthanc.config_path))
        finally:
            orthanc.cleanup()
            # Not deleted now: on this machine's disk (ext4 mounted with `discard`), the
            # deletion's discards slowed the later phases' fsyncs, so Orthanc lost speed run
            # after run (e.g. 405 -> 254 instances/s over five (b) runs; 421 +- 5 % kept).
            self.spent_stores.append(orthanc.workdir)


# --------------------------------------------------------------------------------- output


HEADER = (
    f"{'phase':<36} {'streams':>7} {'ok/sent':>9} {'stored':>6} {'seconds':>8} "
    f"{'inst/s':>8} {'MB/s':>8} {'peak RSS':>9}  CPU% adapter/server/client"
)


def indent(text: str) -> str:
    return "\n".join("      " + line for line in text.splitlines())


def format_row(result: Result) -> str:
    rss = f"{result.peak_rss_mb:6.1f} MB" if result.peak_rss_mb is not None else "-"
    cpu = "/".join(
        f"{result.cpu[name]:.0f}" if name in result.cpu else "-"
        for name in ("adapter", "server", "client")
    )
    stored = "-" if result.stored is None else str(result.stored)
    return (
        f"{PHASE_TITLES[result.phase]:<36} {result.streams:>7} "
        f"{f'{result.ok}/{result.sent}':>9} {stored:>6} {result.seconds:>8.2f} "
        f"{result.instances_per_s:>8.1f} {result.mb_per_s:>8.1f} {rss:>9}  {cpu}"
        + ("  FAILED" if result.error and not result.ok else "")
        + (
            f"  runs {'/'.join(f'{run:.0f}' for run in result.runs)}"
            if len(result.runs) > 1
            else ""
        )
    )


def serial_bound(stow_rate: float, dimse_rate: float) -> float:
    """(a)/(b) with one association for an adapter whose DIMSE side costs what storescp does.

    With one association every step is serial: dcmsend waits for each C-STORE-RSP, which waits
    for the STOW-RS. Such an adapter spends, per instance, the time of a (d) round trip plus
    that of a (b) request, so (a)/(b) = (1/b) / (1/b + 1/d) = d / (b + d). It shows how much of
    the target a run leaves to the adapter: dcmsend's own cost per instance is in (a), not (b).
    """
    return dimse_rate / (stow_rate + dimse_rate)


def compute_ratios(results: Sequence[Result]) -> list[dict[str, Any]]:
    by_key = {(r.corpus, r.phase, r.streams): r for r in results if r.ok}
    targets = {("a", "b"): 0.8, ("c", "d"): 0.4}
    ratios = []
    for corpus in dict.fromkeys(r.corpus for r in results):
        for (top, bottom), target in targets.items():
            for streams in sorted({r.streams for r in results}):
                numerator = by_key.get((corpus, top, streams))
                denominator = by_key.get((corpus, bottom, streams))
                if numerator is None or denominator is None:
                    continue
                ratio: dict[str, Any] = {
                    "corpus": corpus,
                    "ratio": f"({top})/({bottom})",
                    "streams": streams,
                    "value": round(numerator.instances_per_s / denominator.instances_per_s, 3),
                    "target": target,
                }
                if top == "a" and len(numerator.runs) == len(denominator.runs):
                    # (a) and (b) ran in back-to-back pairs: each pair's ratio shows the spread
                    # under the same disk conditions (the headline is the ratio of medians).
                    pairs = zip(numerator.runs, denominator.runs, strict=True)
                    ratio["pairs"] = [round(a / b, 2) for a, b in pairs if b]
                native = by_key.get((corpus, "d", 1))
                if top == "a" and streams == 1 and native is not None:
                    ratio["storescp_speed_bound"] = round(
                        serial_bound(denominator.instances_per_s, native.instances_per_s), 3
                    )
                ratios.append(ratio)
    return ratios


def print_summary(bench: Bench, corpora: Sequence[Corpus]) -> list[dict[str, Any]]:
    print("\n" + "=" * len(HEADER))
    for corpus in corpora:
        print(f"\n{corpus.name}: {corpus.describe()}")
        print(HEADER)
        for result in bench.results:
            if result.corpus == corpus.name:
                print(format_row(result))
    ratios = compute_ratios(bench.results)
    print("\nratios (instances/s, same corpus, same run):")
    for ratio in ratios:
        print(
            f"  {ratio['corpus']:<6} {ratio['ratio']} with {ratio['streams']} stream(s): "
            f"{ratio['value']:.2f}   (target >= {ratio['target']}"
            f"{', higher with several' if ratio['ratio'] == '(a)/(b)' else ''})"
            + (f"   run pairs {'/'.join(map(str, ratio['pairs']))}" if ratio.get("pairs") else "")
        )
        if "storescp_speed_bound" in ratio:
            print(
                f"         an adapter as fast as storescp would get "
                f"{ratio['storescp_speed_bound']:.2f} here (d/(b+d): dcmsend's own time is in (a))"
            )
    adapter_rss = [r for r in bench.results if r.peak_rss_mb is not None]
    for corpus in corpora:
        peaks = [r.peak_rss_mb for r in adapter_rss if r.corpus == corpus.name and r.peak_rss_mb]
        if peaks:
            target = "  (target < 150 MB)" if corpus.name == "large" else ""
            print(f"  {corpus.name:<6} adapter peak RSS: max {max(peaks):.1f} MB{target}")
    sinks = {(r.corpus, r.streams): r for r in bench.results if r.phase == "sink" and r.ok}
    for result in bench.results:
        sink = sinks.get((result.corpus, result.streams))
        if result.phase == "c" and result.ok and sink:
            print(
                f"  {result.corpus:<6} sink alone / (c) with {result.streams} stream(s): "
                f"{sink.instances_per_s / result.instances_per_s:.1f}x"
            )
    for profile in bench.profiles:
        print(
            f"\npy-spy {profile.mode} profile of the adapter during (c), {profile.corpus} corpus, "
            f"1 association ({profile.output}):"
        )
        print(summarize_profile(profile))
    return ratios


def environment(bench: Bench) -> dict[str, Any]:
    import pydicom
    import pynetdicom

    dcmtk = subprocess.run(
        ["/usr/bin/dcmsend", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pynetdicom": pynetdicom.__version__,
        "pydicom": pydicom.__version__,
        "urllib3": version("urllib3"),
        "dcmtk": dcmtk[0] if dcmtk else "?",
        **bench.versions,
        "storescp_max_pdu": int(STORESCP_MAX_PDU),
    }


# --------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_import",
        description="Import adapter throughput/RSS benchmark (prints figures, asserts nothing).",
    )
    parser.add_argument("--small", type=int, default=500, help="small CT/MR instances (500)")
    parser.add_argument("--large", type=int, default=20, help="large instances (20)")
    parser.add_argument("--large-mb", type=float, default=50, help="size of a large one (50)")
    parser.add_argument("--parallel", type=int, default=4, help="associations/clients (4)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per phase, median kept (3)")
    parser.add_argument("--phases", default="abcds", help="subset of a,b,c,d,s(ink) (all)")
    parser.add_argument(
        "--adapter-args", default="", help="extra adapter flags, e.g. '--spool_dir /dev/shm/x'"
    )
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--profile-dir", type=Path, help="py-spy an extra (c) run, keep it here")
    parser.add_argument(
        "--storescp-dir", type=Path, help="where (d) writes (/dev/shm if it has room, else tmp)"
    )
    parser.add_argument("--orthanc-dir", type=Path, help="where Orthancs store (the work dir)")
    parser.add_argument("--workdir", type=Path, help="where corpora and servers live (tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--serve-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if (
        min(args.small, args.large) < 0
        or args.parallel < 1
        or args.repeat < 1
        or args.large_mb <= 0
    ):
        parser.error("counts must be >= 0, --parallel and --repeat >= 1, --large-mb > 0")
    return args


def default_storescp_dir(work: Path, args: argparse.Namespace) -> Path:
    """tmpfs when it has room: the adapter keeps small datasets in memory and deletes its
    spool files after each STOW, so they rarely reach the disk; storescp's files would, and (d)
    would then measure the disk."""
    shm = Path("/dev/shm")
    need = 2 * (args.small * 50_000 + args.large * args.large_mb * 1.1 * 2**20)
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > need:
        return shm
    return work


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_sink is not None:
        asyncio.run(_serve_sink(args.serve_sink))
        return 0
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-import-", dir=args.workdir))
    if args.profile_dir is not None:
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    storescp_dir = args.storescp_dir or default_storescp_dir(work, args)
    bench = Bench(
        work, storescp_dir, args.parallel, args.repeat, args.profile_dir,
        shlex.split(args.adapter_args), args.orthanc_dir,
    )  # fmt: skip
    started = time.monotonic()
    try:
        print(f"building corpora in {work} ...", flush=True)
        corpora = build_corpora(work, args.small, args.large, args.large_mb)
        for corpus in corpora:
            print(f"\n{corpus.name}: {corpus.describe()}\n{HEADER}", flush=True)
            bench.run(corpus, args.phases)
            if args.profile_dir is not None:
                bench.profile(corpus)
        env = {
            **environment(bench),
            "storescp_dir": str(storescp_dir),
            "adapter_args": args.adapter_args,
            "orthanc_dir": str(args.orthanc_dir or work),
        }
        print(f"\nenvironment: {json.dumps(env)}")
        ratios = print_summary(bench, corpora)
        print(f"\ntotal {time.monotonic() - started:.0f} s")
        if args.json is not None:
            report = {
                "environment": env,
                "corpora": {c.name: {"instances": c.count, "bytes": c.nbytes} for c in corpora},
                "results": [result.as_json() for result in bench.results],
                "ratios": ratios,
            }
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        for store in bench.spent_stores:
            shutil.rmtree(store, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if any(result.error for result in bench.results) else 0


if __name__ == "__main__":
    sys.exit(main())
