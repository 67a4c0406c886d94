"""Outbound HTTP proxies, from the environment variables every HTTP client honours.

Hospital networks often reach the internet only through a proxy. ``HTTPS_PROXY`` names the proxy
for ``https://`` URLs, ``HTTP_PROXY`` for ``http://`` ones (either variable in lower case too;
the lower-case one wins, as in curl and Python's ``urllib``), and ``NO_PROXY`` lists the hosts
reached directly. They are read once, into :class:`ProxySettings`, which every HTTP client of
the adapters is given: our DICOMweb transport (:mod:`common.http`, a CONNECT tunnel for both
schemes) and google-auth's token requests (:func:`proxy_aware_pool`). The HTTP/2 transport
(httpx) and gRPC (Pub/Sub) read the same variables themselves.

Only ``http://`` proxies are supported (the usual kind: the tunnel to the store is TLS itself).
The GKE metadata server is never proxied: a proxy cannot reach a pod's link-local address.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from common.errors import ConfigError

#: Hosts never sent through a proxy: the metadata server that GKE's Workload Identity and
#: Compute Engine credentials come from is link-local to the pod.
ALWAYS_DIRECT = ("metadata.google.internal", "169.254.169.254")


@dataclass(frozen=True)
class ProxyUrl:
    """An ``http://`` proxy: where it listens and, if it has them, the credentials to send."""

    host: str
    port: int
    #: ``Proxy-Authorization`` header value (HTTP basic), or None.
    authorization: str | None = None

    @property
    def display(self) -> str:
        """The proxy URL without its credentials (they are in :attr:`authorization`).

        For log lines, errors, and clients that take the credentials as a header.
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_proxy_url(value: str, *, name: str = "proxy") -> ProxyUrl:
    """Parse ``http://[user:password@]host[:port]`` (a bare ``host:port`` means ``http://``).

    Raises:
        ConfigError: another scheme, no host, a bad port, or a path.
    """
    text = value.strip()
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    if parts.scheme.lower() != "http":
        raise ConfigError(
            f"{name}: only http:// proxies are supported, got {parts.scheme}:// "
            "(the connection to the store through it is TLS all the same)"
        )
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise ConfigError(f"{name}: bad port in the proxy URL") from exc
    if not parts.hostname:
        raise ConfigError(f"{name}: the proxy URL has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"{name}: a proxy URL has no path, query or fragment")
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")
    return ProxyUrl(parts.hostname, port, authorization)


def _host_matches(entry: str, host: str, port: int) -> bool:
    """Whether one ``NO_PROXY`` entry covers ``host:port``."""
    entry = entry.strip().lower()
    if not entry:
        return False
    if entry == "*":
        return True
    entry_host, entry_port = entry, None
    if entry.startswith("["):  # [IPv6]:port
        closing = entry.find("]")
        entry_host, rest = entry[1:closing], entry[closing + 1 :]
        entry_port = rest[1:] if rest.startswith(":") else None
    elif entry.count(":") == 1:
        entry_host, entry_port = entry.split(":")
    if entry_port is not None and entry_port != str(port):
        return False
    try:
        network = ipaddress.ip_network(entry_host, strict=False)
    except ValueError:
        network = None
    if network is not None:
        try:
            return ipaddress.ip_address(host) in network
        except ValueError:
            return False
    domain = entry_host.lstrip(".")
    return host == domain or host.endswith("." + domain)


@dataclass(frozen=True)
class ProxySettings:
    """Which proxy each URL goes through (none by default).

    Attributes:
        https: the proxy for ``https://`` URLs, or None.
        http: the proxy for ``http://`` URLs, or None.
        no_proxy: ``NO_PROXY`` entries: ``*``, host names (with their subdomains, a leading dot
            optional), IP addresses or CIDR networks, each optionally with ``:port``.
    """

    https: ProxyUrl | None = None
    http: ProxyUrl | None = None
    no_proxy: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        """Whether any URL goes through a proxy."""
        return self.https is not None or self.http is not None

    def for_url(self, scheme: str, host: str, port: int) -> ProxyUrl | None:
        """The proxy for a request to ``scheme://host:port``, or None to connect directly."""
        proxy = self.https if scheme == "https" else self.http if scheme == "http" else None
        if proxy is None:
            return None
        host = host.lower().strip("[]")
        if host in ALWAYS_DIRECT or any(_host_matches(e, host, port) for e in self.no_proxy):
            return None
        return proxy

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> ProxySettings:
        """Read ``HTTPS_PROXY``, ``HTTP_PROXY`` and ``NO_PROXY`` (either case).

        Raises:
            ConfigError: a proxy variable holds an unusable URL.
        """

        def variable(name: str) -> tuple[str, str] | None:
            for key in (name.lower(), name.upper()):
                value = environ.get(key, "").strip()
                if value:
                    return key, value
            return None

        proxies: dict[str, ProxyUrl | None] = {}
        for scheme in ("https", "http"):
            found = variable(f"{scheme}_proxy")
            proxies[scheme] = parse_proxy_url(found[1], name=found[0]) if found else None
        no_proxy = variable("no_proxy")
        entries = tuple(e.strip() for e in no_proxy[1].split(",") if e.strip()) if no_proxy else ()
        return cls(https=proxies["https"], http=proxies["http"], no_proxy=entries)


class _ProxyRouter:
    """A urllib3 pool manager look-alike that sends each request directly or via a proxy."""

    def __init__(self, settings: ProxySettings, num_pools: int, maxsize: int) -> None:
        import urllib3

        self._settings = settings
        self._direct = urllib3.PoolManager(num_pools=num_pools, maxsize=maxsize)
        self._proxied: dict[ProxyUrl, Any] = {}
        for proxy in {p for p in (settings.https, settings.http) if p is not None}:
            headers = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else None
            self._proxied[proxy] = urllib3.ProxyManager(
                proxy.display, num_pools=num_pools, maxsize=maxsize, proxy_headers=headers
            )

    def manager_for(self, url: str) -> Any:
        """The pool manager a request to ``url`` goes through."""
        import urllib3

        parts = urllib3.util.parse_url(url)
        scheme = (parts.scheme or "http").lower()
        port = parts.port or (443 if scheme == "https" else 80)
        proxy = self._settings.for_url(scheme, parts.host or "", port)
        return self._direct if proxy is None else self._proxied[proxy]

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        """``urllib3.PoolManager.request`` through the right manager (google-auth calls it)."""
        return self.manager_for(url).request(method, url, **kwargs)


def proxy_aware_pool(settings: ProxySettings, *, num_pools: int = 2, maxsize: int = 2) -> Any:
    """A urllib3 pool manager (for google-auth's token requests) that honours ``settings``."""
    import urllib3

    if not settings.enabled:
        return urllib3.PoolManager(num_pools=num_pools, maxsize=maxsize)
    return _ProxyRouter(settings, num_pools, maxsize)
