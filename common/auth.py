"""Credentials for DICOMweb requests: Google ADC, bearer token, HTTP basic, or none.

Each kind implements :class:`Authenticator`: ``headers()`` returns the headers to add to a
request (refreshing credentials when needed, thread-safely) and ``invalidate()`` forces a
refresh after the server answered 401. Secrets come from files or the environment, never from
command-line flags, and never appear in ``repr`` or logs.
"""

from __future__ import annotations

import base64
import os
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from common.errors import AuthError, ConfigError
from common.proxy import ProxySettings, proxy_aware_pool

#: The scope the reference adapter asks for by default.
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


class AuthKind(StrEnum):
    """How DICOMweb requests are authenticated."""

    AUTO = "auto"
    GOOGLE = "google"
    BEARER = "bearer"
    BASIC = "basic"
    NONE = "none"


@dataclass(frozen=True)
class AuthConfig:
    """Authentication settings (from flags and environment).

    Attributes:
        kind: the method; AUTO means Google ADC for ``*.googleapis.com`` and none elsewhere.
        scopes: OAuth scopes for Google credentials.
        bearer_token_file: a file holding the bearer token (re-read when it changes).
        bearer_token: a bearer token taken from the environment.
        basic_user: the HTTP basic user name.
        basic_password_file: a file holding the HTTP basic password.
        basic_password: the HTTP basic password taken from the environment.
        proxy: outbound proxies (google-auth's token requests go through them).
    """

    kind: AuthKind = AuthKind.AUTO
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    bearer_token_file: Path | None = None
    bearer_token: str | None = field(default=None, repr=False)
    basic_user: str | None = None
    basic_password_file: Path | None = None
    basic_password: str | None = field(default=None, repr=False)
    proxy: ProxySettings = field(default_factory=ProxySettings)


class Authenticator(Protocol):
    """Supplies authentication headers for DICOMweb requests."""

    def headers(self) -> dict[str, str]:
        """Headers to add to the next request; raises :class:`AuthError` if impossible."""
        ...

    def invalidate(self) -> None:
        """Forget cached credentials (the server said 401); the next call refreshes."""
        ...


class NoAuth:
    """No authentication."""

    def headers(self) -> dict[str, str]:
        """No headers."""
        return {}

    def invalidate(self) -> None:
        """Nothing to forget."""


class BasicAuth:
    """HTTP basic authentication (RFC 7617)."""

    def __init__(self, user: str, password: str) -> None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._header = {"Authorization": f"Basic {token}"}

    def __repr__(self) -> str:
        return "BasicAuth(<redacted>)"

    def headers(self) -> dict[str, str]:
        """The Authorization header."""
        return dict(self._header)

    def invalidate(self) -> None:
        """Basic credentials do not expire."""


class BearerTokenAuth:
    """A static bearer token, or one read from a file and re-read whenever the file changes.

    Token files are typically projected by a secret manager and rotated in place, so the file's
    modification time and size are checked on each request (one ``stat``) and the token re-read
    when they change.
    """

    def __init__(self, *, token: str | None = None, token_file: Path | None = None) -> None:
        if (token is None) == (token_file is None):
            raise ConfigError("a bearer token needs exactly one of a token or a token file")
        self._token = token
        self._file = token_file
        self._stamp: tuple[float, int] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BearerTokenAuth(file={self._file})"

    def _read_file(self, path: Path) -> str:
        try:
            stat = path.stat()
            stamp = (stat.st_mtime, stat.st_size)
            if stamp != self._stamp or self._token is None:
                token = path.read_text(encoding="utf-8").strip()
                if not token:
                    raise AuthError(f"bearer token file {path} is empty")
                self._token, self._stamp = token, stamp
        except OSError as exc:
            raise AuthError(f"cannot read bearer token file {path}: {exc.strerror}") from exc
        return self._token

    def headers(self) -> dict[str, str]:
        """The Authorization header with the current token."""
        with self._lock:
            token = self._read_file(self._file) if self._file else self._token
        return {"Authorization": f"Bearer {token}"}

    def invalidate(self) -> None:
        """Re-read the token file on the next request."""
        with self._lock:
            self._stamp = None


class GoogleAuth:
    """Google credentials (Application Default Credentials by default), refreshed as needed.

    google-auth refreshes tokens a few minutes before they expire; the lock makes sure many
    associations share one refresh instead of stampeding the token endpoint.
    """

    def __init__(self, credentials: Any, request: Any) -> None:
        self._credentials = credentials
        self._request = request
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, scopes: tuple[str, ...], proxy: ProxySettings) -> GoogleAuth:
        """Load Application Default Credentials.

        Sources, in google-auth's order: ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's user
        credentials, the GKE metadata server (Workload Identity). Token requests go through
        ``proxy`` (the metadata server never does).
        """
        import google.auth
        import google.auth.exceptions
        from google.auth.transport.urllib3 import Request

        try:
            credentials, _project = google.auth.default(scopes=list(scopes))
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise AuthError(f"Google Application Default Credentials not found: {exc}") from exc
        return cls(credentials, Request(proxy_aware_pool(proxy)))  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        return f"GoogleAuth({type(self._credentials).__name__})"

    def headers(self) -> dict[str, str]:
        """The Authorization header with a valid access token."""
        import google.auth.exceptions

        with self._lock:
            try:
                if not self._credentials.valid:
                    self._credentials.refresh(self._request)
            except (google.auth.exceptions.GoogleAuthError, OSError) as exc:
                raise AuthError(f"cannot refresh Google credentials: {exc}") from exc
            headers: dict[str, str] = {}
            self._credentials.apply(headers)
        return headers

    def invalidate(self) -> None:
        """Force a token refresh on the next request."""
        with self._lock:
            self._credentials.token = None
            self._credentials.expiry = None


def is_google_address(url: str) -> bool:
    """Whether a URL points at a Google API host (where ADC is the natural default)."""
    host = urlsplit(url).hostname or ""
    return host == "googleapis.com" or host.endswith(".googleapis.com")


def build_authenticator(config: AuthConfig, address: str) -> Authenticator:
    """Make the authenticator ``config`` asks for, for requests to ``address``."""
    kind = config.kind
    if kind is AuthKind.AUTO:
        if config.bearer_token_file or config.bearer_token:
            kind = AuthKind.BEARER
        elif config.basic_user:
            kind = AuthKind.BASIC
        else:
            kind = AuthKind.GOOGLE if is_google_address(address) else AuthKind.NONE
    if kind is AuthKind.NONE:
        return NoAuth()
    if kind is AuthKind.GOOGLE:
        return GoogleAuth.from_environment(config.scopes, config.proxy)
    if kind is AuthKind.BEARER:
        if config.bearer_token_file:
            return BearerTokenAuth(token_file=config.bearer_token_file)
        if config.bearer_token:
            return BearerTokenAuth(token=config.bearer_token)
        raise ConfigError(
            "bearer auth needs --bearer-token-file or the DICOM_ADAPTER_BEARER_TOKEN variable"
        )
    if not config.basic_user:
        raise ConfigError("basic auth needs --basic-auth-user")
    password = config.basic_password
    if config.basic_password_file:
        try:
            password = config.basic_password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"cannot read basic auth password file {config.basic_password_file}: "
                f"{exc.strerror}"
            ) from exc
    if password is None:
        raise ConfigError(
            "basic auth needs --basic-auth-password-file or the DICOM_ADAPTER_BASIC_PASSWORD "
            "variable"
        )
    return BasicAuth(config.basic_user, password)


def env_secret(name: str) -> str | None:
    """A secret from the environment, or None when unset or empty."""
    value = os.environ.get(name)
    return value or None
