"""click options shared by both adapters' commands (flag spellings, auth)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from common.auth import DEFAULT_SCOPES, AuthConfig, AuthKind, env_secret
from common.cli.params import env_name, spellings
from common.dicomweb.address import DicomwebAddress, address_from_deprecated
from common.errors import ConfigError
from common.proxy import ProxySettings

F = TypeVar("F", bound=Callable[..., Any])

BEARER_TOKEN_ENV = "DICOM_ADAPTER_BEARER_TOKEN"
BASIC_PASSWORD_ENV = "DICOM_ADAPTER_BASIC_PASSWORD"


def option(name: str, *, aliases: tuple[str, ...] = (), **kwargs: Any) -> Callable[[F], F]:
    """A flag under its reference spelling and its dashed spelling, with an env variable.

    ``aliases`` are further accepted spellings, e.g. a name an older reference adapter release
    used for the same flag.
    """
    names = dict.fromkeys(
        [*spellings(name), *(spelling for alias in aliases for spelling in spellings(alias))]
    )
    return click.option(*names, name, envvar=env_name(name), show_envvar=True, **kwargs)


def auth_options(func: F) -> F:
    """Options choosing how DICOMweb requests are authenticated (shared by both adapters)."""
    decorators = [
        option(
            "oauth_scopes",
            default=",".join(DEFAULT_SCOPES),
            show_default=True,
            help="Comma-separated OAuth scopes for Google credentials.",
        ),
        option(
            "auth",
            type=click.Choice([k.value for k in AuthKind]),
            default=AuthKind.AUTO.value,
            show_default=True,
            help="DICOMweb authentication: auto = Google ADC for *.googleapis.com, else none.",
        ),
        option(
            "bearer_token_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help=f"File holding a bearer token, re-read when it changes (or ${BEARER_TOKEN_ENV}).",
        ),
        option("basic_auth_user", help="HTTP basic user name."),
        option(
            "basic_auth_password_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help=f"File holding the HTTP basic password (or ${BASIC_PASSWORD_ENV}).",
        ),
        option(
            "ca_bundle",
            type=click.Path(exists=True, dir_okay=False),
            help="PEM file of CA certificates to trust for HTTPS (default: system store).",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def proxy_settings() -> ProxySettings:
    """Outbound proxies from ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``.

    Raises:
        click.UsageError: a proxy variable holds an unusable URL.
    """
    try:
        return ProxySettings.from_environment(os.environ)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def auth_config(params: dict[str, Any], proxy: ProxySettings) -> AuthConfig:
    """The :class:`AuthConfig` from parsed auth options and the environment."""
    scopes = tuple(s.strip() for s in params["oauth_scopes"].split(",") if s.strip())
    return AuthConfig(
        kind=AuthKind(params["auth"]),
        scopes=scopes or DEFAULT_SCOPES,
        bearer_token_file=params["bearer_token_file"],
        bearer_token=env_secret(BEARER_TOKEN_ENV),
        basic_user=params["basic_auth_user"],
        basic_password_file=params["basic_auth_password_file"],
        basic_password=env_secret(BASIC_PASSWORD_ENV),
        proxy=proxy,
    )


def resolve_dicomweb_address(
    address: DicomwebAddress | None,
    deprecated_addr: str | None,
    stow_path: str | None,
    *,
    prefix: str = "",
) -> DicomwebAddress:
    """A DICOMweb root from an address flag or the reference adapter's deprecated pair.

    The flags are ``--{prefix}dicomweb_address``, or ``--{prefix}dicomweb_addr`` with
    ``--{prefix}dicomweb_stow_path``.

    Raises:
        click.UsageError: both forms, half of the pair, neither, or a bad combined address.
    """
    flag, addr_flag, path_flag = (
        f"--{prefix}dicomweb_address", f"--{prefix}dicomweb_addr", f"--{prefix}dicomweb_stow_path"
    )
    if address is not None:
        if deprecated_addr or stow_path:
            raise click.UsageError(
                f"give {flag}, or the deprecated {addr_flag} with {path_flag}, not both"
            )
        return address
    if deprecated_addr and stow_path:
        try:
            return address_from_deprecated(deprecated_addr, stow_path)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
    if deprecated_addr or stow_path:
        raise click.UsageError(f"{addr_flag} and {path_flag} go together")
    raise click.UsageError(f"missing {flag} (the DICOMweb root of the store)")
