"""Unit tests of the authenticators (network-free parts)."""

from __future__ import annotations

import base64
import datetime
import os
import time
from pathlib import Path

import pytest

from common.auth import (
    AuthConfig,
    AuthKind,
    BasicAuth,
    BearerTokenAuth,
    GoogleAuth,
    NoAuth,
    build_authenticator,
)
from common.errors import AuthError, ConfigError


def test_basic() -> None:
    header = BasicAuth("user", "pa:ss").headers()["Authorization"]
    assert base64.b64decode(header.split()[1]) == b"user:pa:ss"
    assert "pa:ss" not in repr(BasicAuth("user", "pa:ss"))


def test_bearer_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    auth = BearerTokenAuth(token_file=token)
    assert auth.headers() == {"Authorization": "Bearer first"}
    token.write_text("second-token\n")
    later = time.time() + 5
    os.utime(token, (later, later))
    assert auth.headers() == {"Authorization": "Bearer second-token"}


def test_bearer_file_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(AuthError):
        BearerTokenAuth(token_file=tmp_path / "absent").headers()
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(AuthError):
        BearerTokenAuth(token_file=empty).headers()


class FakeCredentials:
    def __init__(self) -> None:
        self.token: str | None = None
        self.expiry: datetime.datetime | None = None
        self.refreshes = 0

    @property
    def valid(self) -> bool:
        return self.token is not None

    def refresh(self, request: object) -> None:
        self.refreshes += 1
        self.token = f"tok{self.refreshes}"

    def apply(self, headers: dict[str, str]) -> None:
        headers["authorization"] = f"Bearer {self.token}"


def test_google_refreshes_only_when_needed_and_after_invalidate() -> None:
    creds = FakeCredentials()
    auth = GoogleAuth(creds, request=object())
    assert auth.headers() == {"authorization": "Bearer tok1"}
    assert auth.headers() == {"authorization": "Bearer tok1"}
    auth.invalidate()
    assert auth.headers() == {"authorization": "Bearer tok2"}
    assert creds.refreshes == 2


def test_auto_picks_none_for_plain_servers() -> None:
    assert isinstance(build_authenticator(AuthConfig(), "http://127.0.0.1/dicom-web"), NoAuth)


def test_basic_needs_a_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        build_authenticator(AuthConfig(kind=AuthKind.BASIC, basic_user="u"), "http://x")
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    auth = build_authenticator(
        AuthConfig(kind=AuthKind.BASIC, basic_user="u", basic_password_file=secret), "http://x"
    )
    assert isinstance(auth, BasicAuth)


def test_google_without_credentials_is_an_auth_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(AuthError):
        build_authenticator(AuthConfig(kind=AuthKind.GOOGLE), "https://healthcare.googleapis.com/v1")
