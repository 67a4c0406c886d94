"""DICOM TLS (PS3.15 B.1 secure transport): the one place SSL contexts are built.

Every association that may travel over TLS - the import listener, C-MOVE sub-associations,
Storage Commitment reports, export and routing C-STOREs - gets its :class:`ssl.SSLContext`
from here, built from a frozen :class:`TlsSettings`. Contexts allow TLS 1.2 and later only
(BCP 195), and client contexts always verify the server's certificate chain (against ``ca`` or
the system store) and, unless told otherwise, its host name: there is no way to turn
verification off.

The AET dictionary and DIMSE destination configs carry optional per-peer settings in the
reference JSON format, extended with ``tls``, ``ca``, ``cert``, ``key`` and
``verify_hostname`` keys (:func:`tls_from_entry`).
"""

from __future__ import annotations

import contextlib
import functools
import select
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError

#: Keys of an AET dictionary / destination entry that describe TLS to that peer.
TLS_ENTRY_KEYS = frozenset({"tls", "ca", "cert", "key", "verify_hostname"})


@dataclass(frozen=True)
class TlsSettings:
    """TLS for one side of DIMSE associations.

    Attributes:
        cert: PEM certificate (chain) we present; required for a server, optional for a client
            (a client certificate, for servers that require one).
        key: PEM private key of ``cert`` (unencrypted; protect it with file permissions).
        ca: PEM CA certificates to verify the peer with. Server: clients must then present a
            certificate signed by one of them (without it, no client certificate is asked
            for). Client: trusted instead of the system store.
        verify_hostname: client only: the server certificate must name the host we connect to.
    """

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    verify_hostname: bool = True

    def describe(self) -> dict[str, Any]:
        """The JSON form used in configs (file paths only: no key material)."""
        out: dict[str, Any] = {"tls": True}
        for name in ("ca", "cert", "key"):
            value = getattr(self, name)
            if value is not None:
                out[name] = str(value)
        if not self.verify_hostname:
            out["verify_hostname"] = False
        return out


def _base_context(purpose: int) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    # BCP 195 / PS3.15 B.9: nothing older than TLS 1.2.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _load_chain(context: ssl.SSLContext, settings: TlsSettings, who: str) -> None:
    if settings.cert is None:
        return
    try:
        context.load_cert_chain(str(settings.cert), str(settings.key) if settings.key else None)
    except (OSError, ssl.SSLError) as exc:
        # The message names files, never their contents.
        raise ConfigError(
            f"{who}: cannot load certificate {settings.cert} / key {settings.key}: "
            f"{getattr(exc, 'strerror', None) or exc}"
        ) from exc


def _load_ca(context: ssl.SSLContext, ca: Path, who: str) -> None:
    try:
        context.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{who}: cannot load CA certificates {ca}: {getattr(exc, 'strerror', None) or exc}"
        ) from exc


@functools.lru_cache(maxsize=64)
def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """The context of a TLS listener (cached per settings: contexts are thread-safe).

    Raises:
        ConfigError: no certificate or key, or a file cannot be loaded.
    """
    if settings.cert is None or settings.key is None:
        raise ConfigError("TLS listener needs both --tls_cert and --tls_key")
    context = _base_context(ssl.PROTOCOL_TLS_SERVER)
    _load_chain(context, settings, "TLS listener")
    if settings.ca is not None:
        _load_ca(context, settings.ca, "TLS listener")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@functools.lru_cache(maxsize=64)
def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """The context for associations we request (cached per settings).

    Raises:
        ConfigError: a file cannot be loaded, or a key was given without a certificate.
    """
    if settings.key is not None and settings.cert is None:
        raise ConfigError("a TLS client key needs its certificate")
    context = _base_context(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    context.check_hostname = settings.verify_hostname
    if settings.ca is not None:
        _load_ca(context, settings.ca, "TLS client")
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    _load_chain(context, settings, "TLS client")
    return context


def server_handshake(sock: socket.socket, context: ssl.SSLContext, timeout: float | None) -> Any:
    """Wrap an accepted connection and complete the TLS handshake within ``timeout`` in total.

    The handshake runs non-blocking under one deadline, so a client that trickles its
    ClientHello cannot hold the connection's thread beyond the ACSE timeout.

    Raises:
        TimeoutError: the handshake did not complete in time.
        OSError: it failed (``ssl.SSLError``: bad certificate, wrong protocol...).
    """
    wrapped = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    deadline = None if timeout is None else time.monotonic() + timeout
    wrapped.setblocking(False)
    try:
        while True:
            try:
                wrapped.do_handshake()
                break
            except ssl.SSLWantReadError:
                wait: tuple[list[Any], list[Any]] = ([wrapped], [])
            except ssl.SSLWantWriteError:
                wait = ([], [wrapped])
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("TLS handshake not complete in time")
            readable, writable, _ = select.select(wait[0], wait[1], [], remaining)
            if not readable and not writable:
                raise TimeoutError("TLS handshake not complete in time")
    except BaseException:
        with contextlib.suppress(OSError):
            wrapped.close()
        raise
    wrapped.setblocking(True)
    return wrapped


def _optional_path(entry: Mapping[str, Any], name: str, where: str) -> Path | None:
    value = entry.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {name} must be a file path")
    return Path(value.strip())


def tls_from_entry(entry: Mapping[str, Any], where: str) -> TlsSettings | None:
    """The TLS settings of an AET dictionary / destination entry, or None for plain TCP.

    ``"tls": true`` turns TLS on; ``ca``, ``cert``, ``key`` and ``verify_hostname`` refine it
    and need ``"tls": true`` (a CA alone must not silently mean "plain TCP").

    Raises:
        ConfigError: a key has the wrong type, or TLS details come without ``"tls": true``.
    """
    enabled = entry.get("tls", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: tls must be true or false")
    details = sorted(k for k in TLS_ENTRY_KEYS - {"tls"} if k in entry)
    if not enabled:
        if details:
            raise ConfigError(f"{where}: {', '.join(details)} given without \"tls\": true")
        return None
    verify = entry.get("verify_hostname", True)
    if not isinstance(verify, bool):
        raise ConfigError(f"{where}: verify_hostname must be true or false")
    cert = _optional_path(entry, "cert", where)
    key = _optional_path(entry, "key", where)
    if (cert is None) != (key is None):
        raise ConfigError(f"{where}: a client certificate needs both cert and key")
    return TlsSettings(
        cert=cert, key=key, ca=_optional_path(entry, "ca", where), verify_hostname=verify
    )
