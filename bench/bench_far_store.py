"""Far-store benchmark: the import adapter against a store tens of milliseconds away.

Not a test: it asserts nothing about timing, it prints figures. The adapter's users reach their
store (the Cloud Healthcare API) over a WAN, 25-50 ms each way, over HTTPS. This kernel has no
netem, so the far store is Orthanc behind :func:`tests.support.latency_proxy.far_store`:

    TLS:    adapter --HTTPS--> LatencyProxy (RTT/2 each way) --> TlsTerminator --> Orthanc
    plain:  adapter --HTTP---> LatencyProxy (RTT/2 each way) --> Orthanc

so every new TCP connection costs a round trip and every TLS handshake its own (TLS 1.3: one).
The far store runs in a child process (its threads share no GIL with this process; its CPU is
printed). For each corpus (500 small CT/MR instances, 20 of 50 MB), each of plain and TLS, each
round trip (0, 50 and 100 ms), it measures, each phase with a fresh Orthanc (and adapter):

    sync      dcmsend -> adapter (no spool: a C-STORE is answered after its STOW-RS) -> store
    auto-ack  dcmsend -> adapter (--persistent_file_storage_location DIR --auto_ack_cstore
              --spool_min_free_disk_mb 0: answered once durable, uploaded behind) -> store
    naive     sequential STOW-RS, one instance per request, over one keep-alive connection
              through the same far store: what the reference adapter does per association

the adapter modes with 1 and 4 associations (4 dcmsend processes at once, the corpus split
round-robin). It prints instances/s until the sender is done ("SCU": dcmsend's last answer, or
the naive client's last response) and until every instance is in Orthanc ("stored": its
instance count, polled on its own port every 25 ms), each beside its ratio to the same row at
0 ms in the same run (the ceiling: same mode, corpus, associations, TLS and variant); the
adapter's peak RSS (VmHWM) and CPU seconds over the timed part; the far store's CPU seconds;
and what the proxy saw during the timed part: connections opened ("conns": each one TCP and,
with TLS, one TLS handshake) and the most exchanges in flight at once ("peak": requests that
overlapped).

The naive client is a plain ``http.client`` connection (HTTPSConnection with the test CA for
TLS), not the project's transport: a baseline independent of the code under test. It sends
small bodies with their head in one write and large ones memory-mapped, reads each response
whole, and checks each instance's status in the STOW-RS response.

One warm-up instance per phase is sent untimed (it opens the adapter's, or the client's, first
connection to the store, TLS handshake included). Orthanc syncs every instance, so the disk is
synced before each timed part, and the stores of finished Orthancs are deleted only at the end
(see bench/README.md: deleting them between phases slowed later phases; a full run keeps
about 30 GB there until it ends). ``--adapter-arg`` adds a variant of the adapter phases: each
value is one variant (shlex-split, so ``--adapter-arg='--upload_concurrency=32 --verbose'``
is one variant of two flags), run beside the default (no extra flags) in the same run.

Run from the repository root, best in a private network namespace like the tests::

    unshare -n -- bash -c 'ip link set lo up && python -m bench.bench_far_store'
    python -m bench.bench_far_store --small 50 --large 2 --rtts 0,50     # a quick run
    python -m bench.bench_far_store --tls tls --adapter-arg=--upload_concurrency=32
    python -m bench.bench_far_store --small 0 --repeat 3   # large only, medians of 3

``--repeat N`` runs the whole list of phases N times over, interleaved (so a slow minute of a
noisy machine hits every row alike), prints every run, then each row's median with the range of
its per-repetition ratios.

It exits non-zero only when a phase failed to deliver.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import ssl
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.bench_import import (
    DICOM_JSON,
    MB,
    STOW_CONTENT_TYPE,
    Corpus,
    Item,
    build_corpora,
    cpu_seconds,
    send_dimse,
    stow_body,
)
from common.dicomweb.stow import stow_status
from tests.support.adapters import IMPORT_AET, AdapterProcess
from tests.support.dcmtk import dcmsend, dcmsend_summary
from tests.support.latency_proxy import DEFAULT_WINDOW, far_store
from tests.support.orthanc import OrthancServer

MODES = ("sync", "auto-ack", "naive")
POLL = 0.025  # seconds between two looks at Orthanc's instance count
HTTP_TIMEOUT = 600.0
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY")

#: Orthanc's HTTP threads: more than the adapter's connections (--upload_concurrency).
ORTHANC_HTTP_THREADS = 100


# --------------------------------------------------------------------------------- far store


@contextmanager
def on_cpus(cpus: frozenset[int]) -> Iterator[None]:
    """Run this process (and what it starts meanwhile) on ``cpus``; all CPUs if empty."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _far_store_host(conn: Connection, workdir: str) -> None:
    """The child process: one far store at a time, driven by (command, *args) messages."""
    current: ExitStack | None = None
    store = None
    while True:
        command, *args = conn.recv()
        try:
            reply: Any = None
            if command in ("open", "close", "stop") and current is not None:
                current.close()
                current, store = None, None
            if command == "open":
                port, one_way_ms, tls, window = args
                current = ExitStack()
                store = current.enter_context(
                    far_store(port, one_way_ms, tls, window=window, workdir=Path(workdir))
                )
                reply = (store.base_url, str(store.ca_bundle) if store.ca_bundle else None)
            elif command == "stats" and store is not None:
                reply = asdict(store.proxy.stats())
            elif command == "reset" and store is not None:
                store.proxy.reset()
            conn.send(("ok", reply))
        except Exception:
            conn.send(("error", traceback.format_exc()))
        if command == "stop":
            return


class FarStoreHost:
    """A child process serving :func:`far_store` relays on request (spawned, not forked)."""

    def __init__(self, workdir: Path, window: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._window = window
        self.process = context.Process(
            target=_far_store_host, args=(child, str(workdir)), name="far-store", daemon=True
        )
        self.process.start()
        child.close()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def _ask(self, *message: Any) -> Any:
        self._conn.send(message)
        if not self._conn.poll(60):
            raise RuntimeError(f"far store did not answer {message[0]!r}")
        status, reply = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"far store failed {message[0]!r}:\n{reply}")
        return reply

    @contextmanager
    def store(self, upstream_port: int, rtt_ms: float, tls: bool) -> Iterator[tuple[str, str]]:
        """The far store's DICOMweb root and CA file ("" without TLS)."""
        base, ca = self._ask("open", upstream_port, rtt_ms / 2, tls, self._window)
        try:
            yield f"{base}/dicom-web", ca or ""
        finally:
            self._ask("close")

    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = self._ask("stats")
        return stats

    def reset(self) -> None:
        self._ask("reset")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ask("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


# --------------------------------------------------------------------------------- naive client


class NaiveStow:
    """One keep-alive ``http.client`` connection, one instance per STOW-RS request."""

    def __init__(self, dicomweb_root: str, ca_bundle: str) -> None:
        url = urlsplit(dicomweb_root)
        host, port = url.hostname or "127.0.0.1", url.port
        self._connection: http.client.HTTPConnection
        if url.scheme == "https":
            context = ssl.create_default_context(cafile=ca_bundle or None)
            self._connection = http.client.HTTPSConnection(
                host, port, timeout=HTTP_TIMEOUT, context=context
            )
        else:
            self._connection = http.client.HTTPConnection(host, port, timeout=HTTP_TIMEOUT)
        self._path = url.path.rstrip("/") + "/studies"
        self._boundary = "bench-" + uuid.uuid4().hex

    def store(self, item: Item) -> str | None:
        """STOW-RS one instance; None when the store confirmed it, else what went wrong."""
        connection = self._connection
        with stow_body(item, self._boundary) as (body, length):
            connection.putrequest("POST", self._path, skip_accept_encoding=True)
            connection.putheader("Content-Type", STOW_CONTENT_TYPE.format(boundary=self._boundary))
            connection.putheader("Accept", DICOM_JSON)
            connection.putheader("Content-Length", str(length))
            if isinstance(body, bytes):
                connection.endheaders(body)
            else:
                connection.endheaders()
                for part in body:
                    with memoryview(part) as view:
                        connection.send(view)
        response = connection.getresponse()
        data = response.read()
        if not 200 <= response.status < 300:
            return f"HTTP {response.status}: {data[:200]!r}"
        status = stow_status(data, response.getheader("Content-Type", ""), item.sop_instance_uid)
        return None if status.is_success else f"status 0x{status.code:04X} {status.comment}"

    def close(self) -> None:
        self._connection.close()


# --------------------------------------------------------------------------------- results


@dataclass
class Result:
    """One timed phase."""

    corpus: str
    tls: bool
    rtt_ms: float
    mode: str
    streams: int
    variant: int
    sent: int
    nbytes: int
    ok: int = 0
    stored: int = 0
    scu_seconds: float = 0.0
    stored_seconds: float = 0.0
    peak_rss_mb: float | None = None
    adapter_cpu_s: float | None = None
    far_cpu_s: float = 0.0
    proxy: dict[str, int] = field(default_factory=dict)
    error: str = ""
    repetition: int = 0

    @property
    def key(self) -> tuple[str, bool, str, int, int]:
        """What a 0 ms row must share with this one to be its ceiling."""
        return (self.corpus, self.tls, self.mode, self.streams, self.variant)

    def rate(self, seconds: float, count: int) -> float:
        return count / seconds if seconds > 0 else 0.0

    @property
    def scu_rate(self) -> float:
        return self.rate(self.scu_seconds, self.ok)

    @property
    def stored_rate(self) -> float:
        return self.rate(self.stored_seconds, self.stored)

    def as_json(self, ceiling: Result | None) -> dict[str, Any]:
        data = asdict(self)
        data["scu_instances_per_s"] = round(self.scu_rate, 2)
        data["stored_instances_per_s"] = round(self.stored_rate, 2)
        data["stored_mb_per_s"] = round(
            self.nbytes * self.stored / max(self.sent, 1) / MB / self.stored_seconds, 2
        ) if self.stored_seconds else 0.0  # fmt: skip
        if ceiling is not None and ceiling.scu_rate and ceiling.stored_rate:
            data["scu_ratio_to_0ms"] = round(self.scu_rate / ceiling.scu_rate, 3)
            data["stored_ratio_to_0ms"] = round(self.stored_rate / ceiling.stored_rate, 3)
        return data


HEADER = (
    f"{'corpus':<6} {'link':<5} {'RTT':>4} {'mode':<8} {'as':>2} {'var':>3} "
    f"{'ok/sent':>9} {'SCU s':>7} {'inst/s':>7} {'x0ms':>5} {'stored s':>8} {'inst/s':>7} "
    f"{'x0ms':>5} {'MB/s':>6} {'conns':>5} {'peak':>4} {'RSS MB':>6} {'CPU s':>6} {'far s':>6}"
)


def format_row(result: Result, ceiling: Result | None) -> str:
    def ratio(value: float, base: float | None) -> str:
        return f"{value / base:5.2f}" if base else f"{'-':>5}"

    scu_base = ceiling.scu_rate if ceiling else None
    stored_base = ceiling.stored_rate if ceiling else None
    mb_s = (
        result.nbytes * result.stored / max(result.sent, 1) / MB / result.stored_seconds
        if result.stored_seconds
        else 0.0
    )
    rss = f"{result.peak_rss_mb:6.1f}" if result.peak_rss_mb is not None else f"{'-':>6}"
    cpu = f"{result.adapter_cpu_s:6.2f}" if result.adapter_cpu_s is not None else f"{'-':>6}"
    row = (
        f"{result.corpus:<6} {'tls' if result.tls else 'plain':<5} {result.rtt_ms:>4.0f} "
        f"{result.mode:<8} {result.streams:>2} {f'v{result.variant}':>3} "
        f"{f'{result.ok}/{result.sent}':>9} {result.scu_seconds:>7.2f} {result.scu_rate:>7.1f} "
        f"{ratio(result.scu_rate, scu_base)} {result.stored_seconds:>8.2f} "
        f"{result.stored_rate:>7.1f} {ratio(result.stored_rate, stored_base)} {mb_s:>6.1f} "
        f"{result.proxy.get('connections', 0):>5} {result.proxy.get('peak_in_flight', 0):>4} "
        f"{rss} {cpu} {result.far_cpu_s:>6.2f}"
    )
    if result.error:
        row += "  FAILED: " + result.error.strip().splitlines()[0][:120]
    return row


# --------------------------------------------------------------------------------- phases


class Bench:
    """Runs the phases, keeps the results."""

    def __init__(
        self,
        work: Path,
        host: FarStoreHost,
        variants: Sequence[Sequence[str]],
        orthanc_dir: Path | None,
        stall: float,
        store_cpus: frozenset[int] = frozenset(),
    ) -> None:
        self.work = work
        self.store_cpus = store_cpus
        self.host = host
        self.variants = variants
        self.orthanc_dir = orthanc_dir
        self.stall = stall
        self.results: list[Result] = []
        self.spent_stores: list[Path] = []
        self._serial = 0

    def ceiling(self, result: Result) -> Result | None:
        """The same row at 0 ms in this run and repetition, if there is one (not this one)."""
        for other in self.results:
            if (
                other.key == result.key
                and other.repetition == result.repetition
                and other.rtt_ms == 0
                and other is not result
            ):
                return other if not other.error else None
        return None

    def medians(self) -> list[tuple[Result, Result | None, tuple[float, float]]]:
        """Each row's median over its repetitions, its 0 ms median, and its ratios' range.

        The median row takes the median SCU and stored seconds of the repetitions that did not
        fail; the range is the lowest and highest stored ratio of one repetition to the 0 ms
        row of the same repetition.
        """
        rows: dict[tuple[Any, ...], list[Result]] = {}
        for result in self.results:
            if not result.error:
                rows.setdefault((*result.key, result.rtt_ms), []).append(result)
        merged: dict[tuple[Any, ...], Result] = {}
        for row_key, runs in rows.items():
            first = runs[0]
            merged[row_key] = Result(
                first.corpus, first.tls, first.rtt_ms, first.mode, first.streams, first.variant,
                first.sent, first.nbytes, ok=first.ok, stored=first.stored,
                scu_seconds=statistics.median(r.scu_seconds for r in runs),
                stored_seconds=statistics.median(r.stored_seconds for r in runs),
                peak_rss_mb=max((r.peak_rss_mb or 0.0 for r in runs), default=None),
                adapter_cpu_s=statistics.median(r.adapter_cpu_s or 0.0 for r in runs),
                far_cpu_s=statistics.median(r.far_cpu_s for r in runs),
                proxy=first.proxy,
            )  # fmt: skip
        summary = []
        for row_key, median in merged.items():
            ceiling = merged.get((*row_key[:-1], 0.0)) if median.rtt_ms else None
            ratios = [
                r.stored_rate / c.stored_rate
                for r in rows[row_key]
                if (c := self.ceiling(r)) is not None and c.stored_rate
            ]
            spread = (min(ratios), max(ratios)) if ratios else (0.0, 0.0)
            summary.append((median, ceiling, spread))
        return summary

    @contextmanager
    def _orthanc(self) -> Iterator[OrthancServer]:
        """A fresh, empty Orthanc; its store is deleted at the end of the run."""
        base = self.orthanc_dir or self.work
        # A cloud store serves as many connections as it gets; Orthanc keeps one HTTP thread
        # per kept-alive connection (and holds an idle one for about 1 s), so with the tests'
        # 20 threads any request beyond 20 connections waited a second for a thread.
        orthanc = OrthancServer(
            workdir=Path(tempfile.mkdtemp(prefix="orthanc-", dir=base)),
            http_threads=ORTHANC_HTTP_THREADS,
        )
        try:
            with on_cpus(self.store_cpus):
                orthanc.start()
            yield orthanc
        finally:
            orthanc.cleanup()
            self.spent_stores.append(orthanc.workdir)

    def _wait_stored(self, orthanc: OrthancServer, target: int, started: float) -> float:
        """Seconds from ``started`` until Orthanc holds ``target`` instances."""
        last, last_change = -1, time.monotonic()
        while True:
            count = orthanc.count_instances()
            if count >= target:
                return time.perf_counter() - started
            now = time.monotonic()
            if count != last:
                last, last_change = count, now
            elif now - last_change > self.stall:
                raise RuntimeError(
                    f"stalled: {count - 1} of {target - 1} stored, none for {self.stall:.0f} s"
                )
            time.sleep(POLL)

    def run(
        self,
        corpus: Corpus,
        tls: bool,
        rtt: float,
        mode: str,
        streams: int,
        variant: int,
        repetition: int = 0,
    ) -> Result:
        result = Result(
            corpus.name, tls, rtt, mode, streams, variant, corpus.count, corpus.nbytes,
            repetition=repetition,
        )  # fmt: skip
        self._serial += 1
        try:
            with (
                self._orthanc() as orthanc,
                self.host.store(orthanc.http_port, rtt, tls) as store,
            ):
                phase = self._naive if mode == "naive" else self._adapter
                phase(result, corpus, orthanc, *store)
        except Exception as exc:
            result.error = result.error or f"{type(exc).__name__}: {exc}"
        self.results.append(result)
        return result

    def _start_clock(self) -> tuple[float, float]:
        os.sync()  # the previous phase's write-back must not land on this one's clock
        self.host.reset()
        return self.host.cpu_seconds(), time.perf_counter()

    def _stop_clock(self, result: Result, far_cpu: float) -> None:
        result.far_cpu_s = self.host.cpu_seconds() - far_cpu
        result.proxy = self.host.stats()

    def _adapter(
        self, result: Result, corpus: Corpus, orthanc: OrthancServer, root: str, ca: str
    ) -> None:
        spool = self.work / f"spool-{self._serial}"
        args = ["--dicomweb_address", root]
        if ca:
            args += ["--ca_bundle", ca]
        if result.mode == "auto-ack":
            args += [
                "--persistent_file_storage_location", str(spool), "--auto_ack_cstore",
                "--spool_min_free_disk_mb", "0",
            ]  # fmt: skip
        args += self.variants[result.variant]
        log = self.work / f"adapter-{self._serial}.log"
        try:
            with AdapterProcess(args, log_path=log) as adapter:
                assert adapter.process is not None
                pid = adapter.process.pid
                warm = dcmsend("127.0.0.1", adapter.port, [corpus.warm.path], IMPORT_AET)
                if warm.returncode != 0:
                    raise RuntimeError(f"warm-up failed: {dcmsend_summary(warm)}")
                self._wait_stored(orthanc, 1, time.perf_counter())
                adapter_cpu = cpu_seconds(pid)
                far_cpu, started = self._start_clock()
                sent = send_dimse(adapter.port, corpus.groups(result.streams), IMPORT_AET)
                result.scu_seconds = time.perf_counter() - started
                result.ok = sent.ok
                try:
                    result.stored_seconds = self._wait_stored(orthanc, 1 + sent.ok, started)
                finally:
                    result.stored = orthanc.count_instances() - 1
                    result.adapter_cpu_s = cpu_seconds(pid) - adapter_cpu
                    result.peak_rss_mb = adapter.peak_rss_mb()
                    self._stop_clock(result, far_cpu)
                if sent.errors or sent.ok < corpus.count:
                    tail = "\n".join(adapter.log().splitlines()[-5:])
                    result.error = "\n".join([*sent.errors[:2], "adapter log tail:", tail])
        finally:
            shutil.rmtree(spool, ignore_errors=True)

    def _naive(
        self, result: Result, corpus: Corpus, orthanc: OrthancServer, root: str, ca: str
    ) -> None:
        client = NaiveStow(root, ca)
        try:
            error = client.store(corpus.warm)
            if error is not None:
                raise RuntimeError(f"warm-up failed: {error}")
            far_cpu, started = self._start_clock()
            errors: list[str] = []
            for item in corpus.items:
                error = client.store(item)
                if error is None:
                    result.ok += 1
                elif len(errors) < 3:
                    errors.append(error)
            result.scu_seconds = time.perf_counter() - started
            try:
                result.stored_seconds = self._wait_stored(orthanc, 1 + result.ok, started)
            finally:
                result.stored = orthanc.count_instances() - 1
                self._stop_clock(result, far_cpu)
            if errors:
                result.error = "\n".join(errors)
        finally:
            client.close()


# --------------------------------------------------------------------------------- main


def parse_list(text: str, kind: type[float] | type[int]) -> list[Any]:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text}") from exc
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"need one or more numbers >= 0: {text}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_far_store",
        description="Import adapter against a far store (prints figures, asserts nothing).",
    )
    parser.add_argument("--small", type=int, default=500, help="small CT/MR instances (500)")
    parser.add_argument("--large", type=int, default=20, help="large instances (20)")
    parser.add_argument("--large-mb", type=float, default=50, help="size of a large one (50)")
    parser.add_argument(
        "--rtts", type=lambda t: parse_list(t, float), default=[0.0, 50.0, 100.0],
        help="round trips in ms (0,50,100); 0 gives the ceiling of the ratios",
    )  # fmt: skip
    parser.add_argument("--tls", choices=("both", "plain", "tls"), default="both")
    parser.add_argument(
        "--associations", type=lambda t: parse_list(t, int), default=[1, 4],
        help="associations of the adapter phases (1,4)",
    )  # fmt: skip
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)} (all)"
    )
    parser.add_argument(
        "--adapter-arg", action="append", default=[], metavar="FLAGS",
        help="a variant of the adapter phases with these extra flags (shlex-split), beside the "
        "default; repeatable, e.g. --adapter-arg=--upload_concurrency=32",
    )  # fmt: skip
    parser.add_argument(
        "--window-mib", type=float, default=DEFAULT_WINDOW / 2**20,
        help="the proxy's window per connection and direction, MiB (4: 42 MB/s at 100 ms)",
    )  # fmt: skip
    parser.add_argument(
        "--stall", type=float, default=120.0, help="seconds without progress = failed (120)"
    )
    parser.add_argument(
        "--store-cpus", type=lambda t: frozenset(parse_list(t, int)), default=frozenset(),
        help="CPUs for the far store (Orthanc, the WAN model); the adapter and the SCUs get the "
        "others: the store is another machine in the field (default: all share all CPUs)",
    )  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, default=1,
        help="run every phase this many times, interleaved, and print each row's median (1)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--orthanc-dir", type=Path, help="where Orthancs store (the work dir)")
    parser.add_argument("--workdir", type=Path, help="where corpora and servers live (tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not args.modes or set(args.modes) - set(MODES):
        parser.error(f"--modes: a subset of {','.join(MODES)}")
    if min(args.small, args.large) < 0 or args.large_mb <= 0 or args.window_mib <= 0:
        parser.error("counts must be >= 0, --large-mb and --window-mib > 0")
    if min(args.associations) < 1:
        parser.error("--associations: numbers >= 1")
    if args.repeat < 1:
        parser.error("--repeat: a number >= 1")
    cpus = os.sched_getaffinity(0)
    if args.store_cpus and not (args.store_cpus < cpus):
        parser.error(f"--store-cpus: a proper subset of this process's CPUs {sorted(cpus)}")
    args.rtts = sorted(set(args.rtts))  # 0 first: the ceiling is known when later rows print
    return args


def phases(args: argparse.Namespace, variants: int) -> Iterator[tuple[bool, float, str, int, int]]:
    """(tls, rtt, mode, associations, variant) for one corpus, in the order they run."""
    links = {"both": (False, True), "plain": (False,), "tls": (True,)}[args.tls]
    for tls in links:
        for rtt in args.rtts:
            for variant in range(variants):
                for mode in ("sync", "auto-ack"):
                    if mode in args.modes:
                        for streams in args.associations:
                            yield tls, rtt, mode, streams, variant
            if "naive" in args.modes:
                yield tls, rtt, "naive", 1, 0


def environment(args: argparse.Namespace, variants: Sequence[Sequence[str]]) -> dict[str, Any]:
    dcmtk = os.popen("/usr/bin/dcmsend --version 2>/dev/null").read().splitlines()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "dcmtk": dcmtk[0] if dcmtk else "?",
        "window_bytes": int(args.window_mib * 2**20),
        "store_cpus": sorted(args.store_cpus),
        "variants": {f"v{index}": shlex.join(flags) for index, flags in enumerate(variants)},
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for name in PROXY_VARIABLES:  # the far store is on loopback: no proxy of this machine's
        os.environ.pop(name, None)
        os.environ.pop(name.lower(), None)
    variants: list[list[str]] = [[], *(shlex.split(value) for value in args.adapter_arg)]
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-far-", dir=args.workdir))
    with on_cpus(args.store_cpus):
        host = FarStoreHost(work, int(args.window_mib * 2**20))
    if args.store_cpus:  # from here on, what this process starts runs on the other CPUs
        os.sched_setaffinity(0, os.sched_getaffinity(0) - args.store_cpus)
    bench = Bench(work, host, variants, args.orthanc_dir, args.stall, args.store_cpus)
    started = time.monotonic()
    try:
        print(f"building corpora in {work} ...", flush=True)
        corpora = build_corpora(work, args.small, args.large, args.large_mb)
        for index, flags in enumerate(variants):
            print(f"variant v{index}: {shlex.join(flags) or '(default flags)'}")
        for corpus in corpora:
            print(f"\n{corpus.name}: {corpus.describe()}\n{HEADER}", flush=True)
            for repetition in range(args.repeat):  # interleaved: drifts hit every row alike
                for tls, rtt, mode, streams, variant in phases(args, len(variants)):
                    result = bench.run(corpus, tls, rtt, mode, streams, variant, repetition)
                    print(format_row(result, bench.ceiling(result)), flush=True)
        if args.repeat > 1:
            print(
                f"\nmedians over {args.repeat} repetitions (range: the lowest and highest "
                f"stored x0ms of one repetition against its own 0 ms row)\n{HEADER}  range"
            )
            for median, ceiling, (low, high) in bench.medians():
                spread = f"  {low:.2f}-{high:.2f}" if median.rtt_ms else ""
                print(format_row(median, ceiling) + spread)
        env = environment(args, variants)
        print(f"\nenvironment: {json.dumps(env)}")
        print(
            "as = associations (dcmsend processes); x0ms = rate / the same row's at 0 ms; "
            "conns = connections the proxy accepted during the timed part (TLS: handshakes); "
            "peak = most exchanges in flight at once; CPU s = the adapter's, far s = the far "
            "store's (proxy + TLS front), both over the timed part"
        )
        failed = [r for r in bench.results if r.error]
        for result in failed:
            print(f"\nFAILED {format_row(result, None)}\n{result.error}")
        print(f"\ntotal {time.monotonic() - started:.0f} s")
        if args.json is not None:
            report = {
                "environment": env,
                "corpora": {c.name: {"instances": c.count, "bytes": c.nbytes} for c in corpora},
                "results": [r.as_json(bench.ceiling(r)) for r in bench.results],
                "medians": [
                    {**median.as_json(ceiling), "stored_ratio_range": [low, high]}
                    for median, ceiling, (low, high) in bench.medians()
                ],
            }
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        host.close()
        for store in bench.spent_stores:
            shutil.rmtree(store, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if any(result.error for result in bench.results) else 0


if __name__ == "__main__":
    sys.exit(main())
