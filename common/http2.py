"""An HTTP/2 transport for STOW-RS (the reference adapter's ``--stow_http2``), built on httpx.

It offers the same ``request()`` as :class:`common.http.HttpTransport` and returns responses of
the same :class:`common.http.Response` shape, so the DICOMweb client does not know which one it
uses. Over https the protocol is negotiated with ALPN (HTTP/2 when the server offers it);
over plain http HTTP/2 is spoken with prior knowledge. httpx errors are translated here.
"""

from __future__ import annotations

import io
import ssl
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from common.errors import ConfigError, DicomwebConnectionError, DicomwebTimeoutError
from common.http import USER_AGENT, Body, HttpSettings, Response, error_from_status, redact_url


class _Http2Response:
    """An httpx response seen through the :class:`common.http.Response` protocol."""

    def __init__(self, response: Any, stream: bool) -> None:
        self._response = response
        self._stream = stream

    @property
    def status(self) -> int:
        return int(self._response.status_code)

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers  # type: ignore[no-any-return]

    @property
    def data(self) -> bytes:
        return self._response.content  # type: ignore[no-any-return]

    @property
    def url(self) -> str | None:
        return str(self._response.url)

    @property
    def http_version(self) -> str:
        """The protocol used, e.g. ``HTTP/2``."""
        return str(self._response.http_version)

    def read(self, amt: int | None = None) -> bytes:
        return self._response.read()  # type: ignore[no-any-return]

    def stream(self, amt: int) -> Iterator[bytes]:
        yield from self._response.iter_bytes(amt)

    def release_conn(self) -> None:
        self._response.close()

    def close(self) -> None:
        self._response.close()


def _chunks(body: Body, block_size: int) -> bytes | Iterator[bytes] | None:
    """Fixed-size chunks of a body (httpx would iterate a file object by lines)."""
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, io.IOBase) or hasattr(body, "read"):
        reader: Any = body

        def read_blocks() -> Iterator[bytes]:
            while chunk := reader.read(block_size):
                yield chunk

        return read_blocks()
    return iter(body)


class Http2Transport:
    """A pooled HTTP/2 client (thread-safe: httpx multiplexes streams on one connection)."""

    def __init__(self, settings: HttpSettings) -> None:
        try:
            import h2  # noqa: F401  (httpx needs it for HTTP/2)
        except ImportError as exc:
            raise ConfigError(
                "--stow_http2 needs the h2 package: pip install 'httpx[http2]'"
            ) from exc
        self._httpx = httpx
        self.settings = settings
        self._clients: dict[str, Any] = {}

    def _client(self, scheme: str) -> Any:
        client = self._clients.get(scheme)
        if client is None:
            httpx = self._httpx
            client = httpx.Client(
                http2=True,
                # Plain http has no ALPN: speak HTTP/2 with prior knowledge (RFC 9113 3.3).
                http1=scheme == "https",
                verify=ssl.create_default_context(cafile=self.settings.ca_bundle),
                timeout=httpx.Timeout(
                    self.settings.read_timeout, connect=self.settings.connect_timeout
                ),
                limits=httpx.Limits(max_connections=self.settings.pool_size),
                headers={"User-Agent": USER_AGENT},
                follow_redirects=False,
            )
            self._clients[scheme] = client
        return client

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: Body = None,
        stream: bool = False,
        timeout: float | None = None,
    ) -> Response:
        """Send a request over HTTP/2; same contract as :meth:`HttpTransport.request`."""
        httpx = self._httpx
        safe_url = redact_url(url)
        client = self._client(urlsplit(url).scheme)
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = httpx.Timeout(timeout, connect=self.settings.connect_timeout)
        try:
            request = client.build_request(
                method,
                url,
                headers=dict(headers),
                content=_chunks(body, self.settings.block_size),
                **extra,
            )
            raw = client.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise DicomwebTimeoutError(f"{method} {safe_url} timed out", url=safe_url) from exc
        except (httpx.HTTPError, OSError) as exc:
            raise DicomwebConnectionError(
                f"{method} {safe_url} failed: {exc or type(exc).__name__}", url=safe_url
            ) from exc
        response = _Http2Response(raw, stream)
        if response.status >= 400:
            excerpt = raw.read()[:64 * 1024] if stream else raw.content
            raw.close()
            raise error_from_status(
                response.status, safe_url, raw.reason_phrase, excerpt,
                raw.headers.get("Retry-After"),
            )
        return response

    def close(self) -> None:
        """Close all connections."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
