"""A far network in user space for tests and benchmarks: latency, bandwidth and window caps.

This kernel has no ``netem``, so the wide-area network between the adapter and a cloud store is
modelled by TCP relays on loopback:

- :class:`LatencyProxy` listens on ``127.0.0.1`` (a free port) and relays each connection to an
  upstream ``host:port``, delaying the bytes of each direction by a one-way latency.
- :class:`TlsTerminator` listens with TLS (a server certificate for ``localhost`` and
  ``127.0.0.1`` from a test CA, :mod:`tests.support.tls_certs`) and relays plaintext to an
  upstream: the HTTPS front of a plain-HTTP store such as Orthanc.
- :func:`far_store` chains them like a cloud store, ``client --TLS--> LatencyProxy -->
  TlsTerminator --> store`` (TLS handshakes pay the latency), or ``client --> LatencyProxy -->
  store`` without TLS, and yields the URL base, the CA file to trust and the proxy.

The model, per connection (one-way latency ``L``, round trip ``RTT = 2 L``):

- Each direction is a FIFO: byte order is kept, and a chunk read at ``t`` is written on at
  ``t + L`` (later if a bandwidth cap has to serialise it first or the receiver is not reading).
- Connecting costs a round trip: the upstream connection is opened ``L`` after the accept (the
  SYN's trip), and the client's bytes leave no earlier than ``2 L`` after the accept (when the
  SYN-ACK would be back), so they arrive at ``3 L`` at the earliest. A new connection costs one
  RTT before its first request, and a TLS handshake through it costs its own round trips (one
  for TLS 1.3, two for 1.2). The client's ``connect()`` itself returns at once (the kernel
  accepts it): only its bytes wait.
- Bandwidth (bytes/s per direction, optional): each direction sends one chunk at a time, so a
  chunk arrives ``len / bandwidth + L`` after it started, and not before the previous one is out.
- Window (bytes, default 4 MiB): at most ``window`` bytes of a direction are read and not yet
  acknowledged, and a chunk is acknowledged ``L`` after it was delivered (the ACK's trip back).
  At the cap the relay stops reading that socket, so the sender's buffers fill as behind a
  closed TCP window, and one connection moves at most ``window / RTT`` (4 MiB at 100 ms:
  42 MB/s), as a real TCP connection with that window would.
- An end of stream travels like data, half-closes included; a reset is relayed as an end of
  stream.

Counters (:meth:`LatencyProxy.stats`, reset by :meth:`LatencyProxy.reset`): connections
accepted, bytes delivered upstream and back, and exchanges in flight. A connection is busy from
the moment the proxy reads client->server bytes until it delivers server->client bytes back, so
``peak_in_flight`` tells how many requests (uploads) overlapped at most.

Each relay runs one asyncio event loop in a background thread; ``stop()`` closes every
connection and joins the thread. Measured on this 2-CPU machine (Python 3.11, sender and
receiver in other processes on the same CPUs; 1.6 GB/s without a relay): 2 GiB uploaded on one
connection through a ``LatencyProxy`` at 0 ms went at 0.9 GB/s (64 connections at once: 0.8
GB/s in total; at 1 ms: 0.6 GB/s), the proxy using about 1 CPU-second per GB; through a
``TlsTerminator`` (TLS 1.3) at 370 MB/s, about 2.7 CPU-seconds per GB. Both in one process
(:func:`far_store` with TLS) share one GIL: about 200 MB/s in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
import threading
from collections import deque
from collections.abc import Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from tests.support.ports import free_port
from tests.support.tls_certs import make_pki

__all__ = [
    "DEFAULT_WINDOW",
    "FarStore",
    "LatencyProxy",
    "RelayStats",
    "TlsTerminator",
    "far_store",
]

DEFAULT_WINDOW = 4 * 1024 * 1024
"""Bytes per connection and direction in the delay line (about Linux's default maximum)."""

_CHUNK = 256 * 1024  # the most read from a socket at once
_BACKLOG = 1024
_STOP_TIMEOUT = 10.0
_T = TypeVar("_T")


@dataclass(frozen=True)
class RelayStats:
    """A snapshot of a relay's counters (since it started or since :meth:`reset`)."""

    connections: int
    """Connections accepted."""
    open_connections: int
    """Connections open now."""
    in_flight: int
    """Connections busy with an exchange now (client bytes read, no answer delivered yet)."""
    peak_in_flight: int
    """The most connections busy at once."""
    bytes_up: int
    """Bytes delivered to the upstream."""
    bytes_down: int
    """Bytes delivered back to the clients."""


class _Pipe:
    """One direction of a relayed connection: a delay line with a window and a bandwidth."""

    def __init__(self, link: _Link, *, upward: bool, open_at: float) -> None:
        relay = link.relay
        self.link = link
        self.upward = upward
        self.loop = relay.loop
        self.latency = relay.latency
        self.bandwidth = relay.bandwidth
        self.window = relay.window
        self.resume_room = max(1, min(_CHUNK, relay.window) // 4)
        self.open_at = open_at  # no byte leaves before (the connection's handshake)
        self.link_free = 0.0  # when the previous chunk has been sent (bandwidth)
        self.queue: deque[tuple[float, memoryview | None]] = deque()  # (due, data); None = EOF
        self.held = 0  # bytes read and not yet acknowledged
        self.source: asyncio.Transport | None = None
        self.target: asyncio.Transport | None = None
        self.writable = True
        self.reading_paused = False
        self.eof_queued = False
        self.finished = False  # the end was delivered, or the target is gone
        self.timer: asyncio.TimerHandle | None = None

    def room(self) -> int:
        return self.window - self.held

    def _departure(self, size: int) -> float:
        start = max(self.loop.time(), self.open_at, self.link_free)
        if self.bandwidth:
            start += size / self.bandwidth
        self.link_free = start
        return start + self.latency

    def push(self, data: memoryview) -> None:
        """Bytes read from the source: deliver them later."""
        if self.finished:
            return  # nobody to deliver to
        if self.upward:
            self.link.exchange_started()
        self.queue.append((self._departure(len(data)), data))
        self.held += len(data)
        if self.held >= self.window and not self.reading_paused and self.source is not None:
            self.reading_paused = True
            self.source.pause_reading()
        self.kick()

    def push_eof(self) -> None:
        """The source ended: end the target later, after the bytes before it."""
        if self.eof_queued or self.finished:
            return
        self.eof_queued = True
        self.queue.append((self._departure(0), None))
        self.kick()

    def kick(self) -> None:
        """Deliver what is due, or set a timer for the next chunk."""
        if self.timer is not None or not self.queue or not self.writable or self.target is None:
            return
        due = self.queue[0][0]
        if due <= self.loop.time():
            self._flush()
        else:
            self.timer = self.loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self._flush()

    def _flush(self) -> None:
        target = self.target
        now = self.loop.time()
        while self.queue and self.writable and target is not None and not self.finished:
            due, data = self.queue[0]
            if due > now:
                break
            self.queue.popleft()
            if data is None:
                self._deliver_eof(target)
                return
            # counted before the write: the receiver may look at the counters once it has them
            self.link.relay.delivered(len(data), upward=self.upward)
            if not self.upward:
                self.link.exchange_ended()
            target.write(data)
            if self.latency:
                self.loop.call_later(self.latency, self._acknowledge, len(data))
            else:
                self._acknowledge(len(data))
        self.kick()

    def _acknowledge(self, size: int) -> None:
        self.held -= size
        if (
            self.reading_paused
            and self.room() >= self.resume_room
            and self.source is not None
            and not self.source.is_closing()
        ):
            self.reading_paused = False
            self.source.resume_reading()

    def _deliver_eof(self, target: asyncio.Transport) -> None:
        self.finished = True
        if target.can_write_eof() and not target.is_closing():
            target.write_eof()
        else:
            target.close()
        self.link.check_done()

    def discard(self) -> None:
        """The target is gone: drop what was not delivered."""
        self.finished = True
        self.queue.clear()
        self.held = 0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Side(asyncio.BufferedProtocol):
    """One socket of a relayed connection: the accepted one or the upstream one."""

    def __init__(self, link: _Link, *, outgoing: _Pipe, incoming: _Pipe) -> None:
        self.link = link
        self.outgoing = outgoing  # what this socket reads goes here
        self.incoming = incoming  # what this socket writes comes from here
        self.transport: asyncio.Transport | None = None
        self.uses_tls = False
        self.closed = False
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.uses_tls = transport.get_extra_info("sslcontext") is not None
        self.outgoing.source = transport
        self.incoming.target = transport
        if self is self.link.downstream:
            self.link.accepted()
        self.incoming.kick()

    def get_buffer(self, sizehint: int) -> memoryview:
        room = self.outgoing.room()
        self._buffer = bytearray(min(_CHUNK, room) if room > 0 else self.outgoing.resume_room)
        # A view, not the bytearray: CPython 3.11's SSL transport fills the buffer in several
        # reads into ``buf[offset:]``, which for a bytearray is a copy (the bytes are lost and
        # zeros relayed instead); a memoryview slice writes in place.
        return memoryview(self._buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self.outgoing.push(memoryview(self._buffer)[:nbytes])

    def eof_received(self) -> bool:
        self.outgoing.push_eof()
        return not self.uses_tls  # keep a plain TCP socket half-open; TLS cannot be

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.outgoing.push_eof()
        self.incoming.discard()
        self.link.check_done()

    def pause_writing(self) -> None:
        self.incoming.writable = False

    def resume_writing(self) -> None:
        self.incoming.writable = True
        self.incoming.kick()


class _Link:
    """One relayed connection: the accepted socket, the upstream one and a pipe each way."""

    def __init__(self, relay: _Relay) -> None:
        self.relay = relay
        now = relay.loop.time()
        self.up = _Pipe(self, upward=True, open_at=now + 2 * relay.latency)
        self.down = _Pipe(self, upward=False, open_at=now)
        self.downstream = _Side(self, outgoing=self.up, incoming=self.down)
        self.upstream = _Side(self, outgoing=self.down, incoming=self.up)
        self.busy = False
        self.done = False
        self.connect_task: asyncio.Task[None] | None = None

    def accepted(self) -> None:
        self.relay.opened(self)
        self.connect_task = self.relay.loop.create_task(self._connect())

    async def _connect(self) -> None:
        relay = self.relay
        if relay.latency:
            await asyncio.sleep(relay.latency)  # the SYN's trip
        if self.done:
            return
        try:
            await relay.loop.create_connection(
                lambda: self.upstream, relay.upstream_host, relay.upstream_port
            )
        except OSError:
            self.up.discard()
            self.down.push_eof()  # the client sees the connection end
        if self.done and self.upstream.transport is not None:
            self.upstream.transport.close()

    def exchange_started(self) -> None:
        if not self.busy:
            self.busy = True
            self.relay.exchange(+1)

    def exchange_ended(self) -> None:
        if self.busy:
            self.busy = False
            self.relay.exchange(-1)

    def check_done(self) -> None:
        """Close both sockets once each direction has ended."""
        if self.done or not (self.up.finished and self.down.finished):
            return
        self.done = True
        self.exchange_ended()
        for side in (self.downstream, self.upstream):
            if side.transport is not None and not side.transport.is_closing():
                side.transport.close()
        self.relay.closed(self)

    def abort(self) -> None:
        """Drop both sockets at once (the relay stops)."""
        for pipe in (self.up, self.down):
            pipe.discard()
        for side in (self.downstream, self.upstream):
            if side.transport is not None:
                side.transport.abort()
        if self.connect_task is not None:
            self.connect_task.cancel()
        self.check_done()


class _Relay:
    """A TCP relay from ``127.0.0.1:port`` to an upstream, run by an event loop in a thread."""

    def __init__(
        self,
        upstream_port: int,
        *,
        upstream_host: str,
        one_way_ms: float,
        bandwidth: float | None,
        window: int,
        server_tls: ssl.SSLContext | None,
        name: str,
    ) -> None:
        if one_way_ms < 0 or window < 1 or (bandwidth is not None and bandwidth <= 0):
            raise ValueError("one_way_ms must be >= 0, window >= 1, bandwidth > 0 or None")
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.latency = one_way_ms / 1000
        self.bandwidth = bandwidth
        self.window = window
        self.port = 0
        self._server_tls = server_tls
        self._name = name
        self.loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._connections = 0
        self._in_flight = 0
        self._peak = 0
        self._bytes_up = 0
        self._bytes_down = 0

    # -- lifecycle

    def start(self) -> Self:
        """Listen on a free port of ``127.0.0.1`` and serve in a background thread."""
        if self._thread is not None:
            return self
        if self.loop.is_closed():
            self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=self._name, daemon=True)
        self._thread.start()
        port = free_port()
        try:
            self._server = self._call(self._listen(port))
        except BaseException:
            self.stop()
            raise
        self.port = port
        return self

    async def _listen(self, port: int) -> asyncio.Server:
        return await self.loop.create_server(
            lambda: _Link(self).downstream,
            "127.0.0.1",
            port,
            ssl=self._server_tls,
            backlog=_BACKLOG,
            reuse_address=True,
        )

    def stop(self) -> None:
        """Close the listener and every connection, and join the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        thread.join(_STOP_TIMEOUT)
        if not thread.is_alive():
            self.loop.close()

    async def _shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for link in list(self._links):
            link.abort()
        tasks = [t for t in asyncio.all_tasks(self.loop) if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        for _ in range(3):  # the aborted transports' connection_lost callbacks
            await asyncio.sleep(0)
        await self.loop.shutdown_default_executor()

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(_STOP_TIMEOUT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- counters (updated on the loop's thread, read from any)

    def opened(self, link: _Link) -> None:
        self._links.add(link)
        with self._lock:
            self._connections += 1

    def closed(self, link: _Link) -> None:
        self._links.discard(link)

    def exchange(self, change: int) -> None:
        with self._lock:
            self._in_flight += change
            self._peak = max(self._peak, self._in_flight)

    def delivered(self, size: int, *, upward: bool) -> None:
        with self._lock:
            if upward:
                self._bytes_up += size
            else:
                self._bytes_down += size

    def stats(self) -> RelayStats:
        """The counters now."""
        with self._lock:
            return RelayStats(
                connections=self._connections,
                open_connections=len(self._links),
                in_flight=self._in_flight,
                peak_in_flight=self._peak,
                bytes_up=self._bytes_up,
                bytes_down=self._bytes_down,
            )

    def reset(self) -> None:
        """Zero the counters; the peak restarts from the exchanges in flight now."""
        with self._lock:
            self._connections = 0
            self._peak = self._in_flight
            self._bytes_up = 0
            self._bytes_down = 0

    @property
    def connections_accepted(self) -> int:
        """Connections accepted since the start (or the last :meth:`reset`)."""
        return self.stats().connections

    @property
    def peak_in_flight(self) -> int:
        """The most exchanges in flight at once since the start (or the last :meth:`reset`)."""
        return self.stats().peak_in_flight

    @property
    def bytes_up(self) -> int:
        """Bytes delivered to the upstream since the start (or the last :meth:`reset`)."""
        return self.stats().bytes_up

    @property
    def bytes_down(self) -> int:
        """Bytes delivered back to clients since the start (or the last :meth:`reset`)."""
        return self.stats().bytes_down


class LatencyProxy(_Relay):
    """A TCP proxy adding ``one_way_ms`` each way (see the module docstring for the model).

    ``bandwidth`` caps each direction of each connection (bytes/s, None: no cap); ``window``
    caps the bytes of a direction in the delay line (read, not yet acknowledged), so one
    connection cannot move more than ``window / RTT``. Use as a context manager, or
    :meth:`start`/:meth:`stop`; :attr:`port` is known once started.
    """

    def __init__(
        self,
        upstream_port: int,
        *,
        one_way_ms: float,
        upstream_host: str = "127.0.0.1",
        bandwidth: float | None = None,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        super().__init__(
            upstream_port,
            upstream_host=upstream_host,
            one_way_ms=one_way_ms,
            bandwidth=bandwidth,
            window=window,
            server_tls=None,
            name=f"latency-proxy-{upstream_port}",
        )


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context with ``cert``/``key`` offering HTTP/1.1 by ALPN."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


class TlsTerminator(_Relay):
    """A TLS listener on ``127.0.0.1`` relaying the plaintext to an upstream at once.

    ``cert``/``key`` are the server's PEM files (e.g. :func:`tests.support.tls_certs.make_pki`'s
    server certificate, valid for ``localhost`` and ``127.0.0.1``).
    """

    def __init__(
        self, upstream_port: int, *, cert: Path, key: Path, upstream_host: str = "127.0.0.1"
    ) -> None:
        super().__init__(
            upstream_port,
            upstream_host=upstream_host,
            one_way_ms=0.0,
            bandwidth=None,
            window=DEFAULT_WINDOW,
            server_tls=server_tls_context(cert, key),
            name=f"tls-terminator-{upstream_port}",
        )

    @property
    def url(self) -> str:
        """``https://localhost:PORT``."""
        return f"https://localhost:{self.port}"


@dataclass(frozen=True)
class FarStore:
    """What :func:`far_store` yields."""

    base_url: str
    """``https://localhost:PORT`` (TLS) or ``http://127.0.0.1:PORT``: the store, far away."""
    ca_bundle: Path | None
    """The CA file to trust for ``base_url`` (None without TLS)."""
    proxy: LatencyProxy
    """The latency proxy, for its counters."""
    terminator: TlsTerminator | None
    """The TLS front behind the proxy (None without TLS)."""

    def url(self, path: str) -> str:
        """``base_url`` + ``path``, e.g. ``store.url("/dicom-web")`` for Orthanc's DICOMweb root."""
        return self.base_url + path


@contextmanager
def far_store(
    upstream_port: int,
    one_way_ms: float,
    tls: bool,
    *,
    upstream_host: str = "127.0.0.1",
    bandwidth: float | None = None,
    window: int = DEFAULT_WINDOW,
    workdir: Path | None = None,
) -> Iterator[FarStore]:
    """A store on ``upstream_host:upstream_port`` (plain HTTP) made ``one_way_ms`` far away.

    With ``tls``, a fresh test CA and server certificate are written (under ``workdir``, else
    a temporary directory) and the chain is ``client --TLS--> LatencyProxy --> TlsTerminator
    --> store``, so every TLS handshake pays its round trips; without, ``client -->
    LatencyProxy --> store``. For Orthanc the DICOMweb root is ``store.url("/dicom-web")``;
    the adapter trusts the CA with ``--ca_bundle store.ca_bundle``.
    """
    with ExitStack() as stack:
        target_port, ca_bundle, terminator = upstream_port, None, None
        if tls:
            if workdir is None:
                directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pki-")))
            else:
                directory = Path(tempfile.mkdtemp(prefix="far-store-pki-", dir=workdir))
            pki = make_pki(directory)
            terminator = stack.enter_context(
                TlsTerminator(
                    upstream_port,
                    cert=pki.server_cert,
                    key=pki.server_key,
                    upstream_host=upstream_host,
                )
            )
            target_port, ca_bundle = terminator.port, pki.ca
        proxy = stack.enter_context(
            LatencyProxy(target_port, one_way_ms=one_way_ms, bandwidth=bandwidth, window=window)
        )
        base_url = f"https://localhost:{proxy.port}" if tls else f"http://127.0.0.1:{proxy.port}"
        yield FarStore(base_url, ca_bundle, proxy, terminator)
