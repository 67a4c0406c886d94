"""The HTTP transport: one shared, thread-safe urllib3 connection pool with keep-alive.

Every DICOMweb request of a process goes through one :class:`HttpTransport`, so associations
share warm connections (no TCP/TLS handshake per instance). urllib3 exceptions are translated
here into :mod:`common.errors` and never reach callers.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import urllib3
import urllib3.exceptions

from common.errors import (
    DicomwebConnectionError,
    DicomwebError,
    DicomwebHttpError,
    DicomwebTimeoutError,
)

LOG = logging.getLogger(__name__)

USER_AGENT = "dicom-adapter/0.1"
#: How many bytes of an error body are kept for messages.
_ERROR_EXCERPT = 300


@dataclass(frozen=True)
class HttpSettings:
    """Settings of the shared HTTP transport.

    Attributes:
        connect_timeout: seconds to establish a connection.
        read_timeout: seconds to wait for any bytes of a response.
        pool_size: connections kept per host (at least the number of concurrent requests).
        ca_bundle: a PEM file of CA certificates to trust instead of the system store.
        block_size: bytes sent per write when streaming a request body.
    """

    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    pool_size: int = 32
    ca_bundle: str | None = None
    block_size: int = 256 * 1024


class Response(Protocol):
    """The parts of an HTTP response the DICOMweb client uses."""

    @property
    def status(self) -> int:
        """HTTP status code."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Response headers (case-insensitive)."""
        ...

    @property
    def data(self) -> bytes:
        """The whole body of a response requested with ``stream=False``."""
        ...

    def read(self, amt: int | None = None) -> bytes:
        """Read body bytes of a streamed response."""
        ...

    def stream(self, amt: int) -> Iterator[bytes]:
        """Iterate over body chunks."""
        ...

    def release_conn(self) -> None:
        """Return the connection to the pool (only after the body was read)."""
        ...

    def close(self) -> None:
        """Close the connection (when abandoning a body half-read)."""
        ...

    @property
    def url(self) -> str | None:
        """The request URL."""
        ...


Body = bytes | IO[bytes] | Iterable[bytes] | None


def redact_url(url: str) -> str:
    """The URL without user info or query (safe to log)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_status(
    status: int, safe_url: str, reason: str | None, body: bytes, retry_after: str | None
) -> DicomwebHttpError:
    """The error for an HTTP error response (with a short, whitespace-folded body excerpt)."""
    excerpt = " ".join(body[:_ERROR_EXCERPT].decode("utf-8", "replace").split())
    return DicomwebHttpError(
        status,
        url=safe_url,
        reason=reason or "",
        body_excerpt=excerpt,
        retry_after=retry_after_seconds(retry_after),
    )


class Transport(Protocol):
    """Sends HTTP requests; :class:`HttpTransport` (HTTP/1.1) and ``Http2Transport``."""

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
        """Send a request; raise :class:`DicomwebError` subclasses for failures."""
        ...

    def close(self) -> None:
        """Close pooled connections."""
        ...


class HttpTransport:
    """A pooled HTTP/1.1 client for DICOMweb requests (thread-safe)."""

    def __init__(self, settings: HttpSettings = HttpSettings()) -> None:
        self.settings = settings
        self._pool = urllib3.PoolManager(
            num_pools=16,
            maxsize=settings.pool_size,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout),
            ca_certs=settings.ca_bundle,
            cert_reqs="CERT_REQUIRED",
            blocksize=settings.block_size,
            headers={"User-Agent": USER_AGENT},
        )

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
        """Send a request and return the response, raising our errors for failures.

        Args:
            method: HTTP method.
            url: full URL (query included).
            headers: request headers (Content-Length must be set for streamed bodies).
            body: bytes, a readable binary file, an iterable of chunks, or None.
            stream: when True the body is not read; the caller must ``release_conn()``.
            timeout: read timeout override in seconds.

        Raises:
            DicomwebHttpError: for a status >= 400 (the body is read and the connection freed).
            DicomwebConnectionError, DicomwebTimeoutError: transport failures.
        """
        safe_url = redact_url(url)
        options: dict[str, Any] = {}
        if timeout is not None:  # urllib3 takes None as "no timeout at all", so omit it
            options["timeout"] = urllib3.Timeout(
                connect=self.settings.connect_timeout, read=timeout
            )
        try:
            response = self._pool.request(
                method,
                url,
                headers=dict(headers),
                body=body,
                preload_content=not stream,
                redirect=False,
                **options,
            )
        except urllib3.exceptions.TimeoutError as exc:
            raise DicomwebTimeoutError(f"{method} {safe_url} timed out", url=safe_url) from exc
        except urllib3.exceptions.SSLError as exc:
            raise DicomwebConnectionError(
                f"TLS failure talking to {safe_url}: {exc}", url=safe_url
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise DicomwebConnectionError(
                f"{method} {safe_url} failed: {_describe(exc)}", url=safe_url
            ) from exc
        if response.status >= 400:
            raise self._error_from(response, safe_url, stream)
        return response

    @staticmethod
    def _error_from(
        response: urllib3.BaseHTTPResponse, safe_url: str, stream: bool
    ) -> DicomwebError:
        try:
            raw = response.read(64 * 1024) if stream else response.data
        except (urllib3.exceptions.HTTPError, OSError):
            raw = b""
        finally:
            if stream:
                response.drain_conn()
                response.release_conn()
        return error_from_status(
            response.status, safe_url, response.reason, raw, response.headers.get("Retry-After")
        )

    def close(self) -> None:
        """Close all pooled connections."""
        self._pool.clear()


@contextmanager
def translate_stream_errors(url: str) -> Iterator[None]:
    """Translate transport errors raised while reading a streamed response body."""
    safe_url = redact_url(url)
    try:
        yield
    except urllib3.exceptions.TimeoutError as exc:
        raise DicomwebTimeoutError(f"reading {safe_url} timed out", url=safe_url) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise DicomwebConnectionError(
            f"reading {safe_url} failed: {_describe(exc)}", url=safe_url
        ) from exc


def _describe(exc: BaseException) -> str:
    """A short reason for a transport error (the innermost cause, e.g. 'Connection refused')."""
    reason = getattr(exc, "reason", None)
    inner: BaseException = reason if isinstance(reason, BaseException) else exc
    while inner.__context__ is not None and isinstance(inner, urllib3.exceptions.HTTPError):
        inner = inner.__context__
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror
    return str(inner) or type(inner).__name__
