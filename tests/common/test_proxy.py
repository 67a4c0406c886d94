"""Outbound proxies: the environment variables, NO_PROXY matching, and HttpTransport's CONNECT
tunnel through a real loopback proxy (plain http, TLS, credentials, refusal, bypass)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import AuthError, ConfigError, DicomwebConnectionError
from common.http import HttpSettings, HttpTransport
from common.proxy import ProxySettings, ProxyUrl, parse_proxy_url, proxy_aware_pool
from tests.common.test_http import _tls_setup, echo
from tests.support.http_proxy import HttpProxy
from tests.support.raw_http_server import RawHttpServer


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://proxy.example:3128", ProxyUrl("proxy.example", 3128)),
        ("http://proxy.example", ProxyUrl("proxy.example", 80)),
        ("proxy.example:8080", ProxyUrl("proxy.example", 8080)),
        ("HTTP://Proxy.Example:8080/", ProxyUrl("proxy.example", 8080)),
        ("http://[::1]:3128", ProxyUrl("::1", 3128)),
        ("http://u%40h:p%3Ass@proxy:1", ProxyUrl("proxy", 1, "Basic dUBoOnA6c3M=")),
    ],
)
def test_proxy_urls(value: str, expected: ProxyUrl) -> None:
    assert parse_proxy_url(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("https://proxy:3128", "only http:// proxies"),
        ("socks5://proxy:1080", "only http:// proxies"),
        ("http://proxy:notaport", "bad port"),
        ("http://:3128", "no host"),
        ("http://proxy:3128/path", "no path"),
    ],
)
def test_unusable_proxy_urls(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_proxy_url(value, name="HTTPS_PROXY")


def test_credentials_never_show_in_the_display_form() -> None:
    proxy = parse_proxy_url("http://user:secret@proxy:3128")
    assert proxy.display == "http://proxy:3128" and "secret" not in repr(proxy.display)


def test_settings_from_the_environment() -> None:
    settings = ProxySettings.from_environment({
        "HTTPS_PROXY": "http://upper:1",
        "https_proxy": "http://lower:2",  # the lower-case one wins, as in curl and urllib
        "HTTP_PROXY": "http://plain:3",
        "NO_PROXY": " .internal, 10.0.0.0/8 ,,localhost:8042",
    })  # fmt: skip
    assert settings.https == ProxyUrl("lower", 2)
    assert settings.http == ProxyUrl("plain", 3)
    assert settings.no_proxy == (".internal", "10.0.0.0/8", "localhost:8042")
    assert ProxySettings.from_environment({}) == ProxySettings()
    assert not ProxySettings().enabled
    with pytest.raises(ConfigError, match="https_proxy"):
        ProxySettings.from_environment({"https_proxy": "ftp://x"})


@pytest.mark.parametrize(
    ("scheme", "host", "port", "proxied"),
    [
        ("https", "healthcare.googleapis.com", 443, True),
        ("http", "pacs.example", 80, False),  # no HTTP_PROXY
        ("https", "store.internal", 443, False),  # .internal
        ("https", "internal", 443, False),  # the domain itself
        ("https", "notinternal", 443, True),  # not a subdomain
        ("https", "10.1.2.3", 443, False),  # 10.0.0.0/8
        ("https", "11.1.2.3", 443, True),
        ("https", "localhost", 8042, False),  # localhost:8042
        ("https", "localhost", 8043, True),
        ("https", "metadata.google.internal", 80, False),  # never proxied
        ("https", "169.254.169.254", 80, False),
        ("ftp", "anything", 21, False),
    ],
)
def test_which_urls_go_through_the_proxy(scheme: str, host: str, port: int, proxied: bool) -> None:
    settings = ProxySettings(
        https=ProxyUrl("proxy", 3128), no_proxy=("internal", "10.0.0.0/8", "localhost:8042")
    )
    assert (settings.for_url(scheme, host, port) is not None) is proxied


def test_no_proxy_star_and_ipv6() -> None:
    proxy = ProxyUrl("proxy", 3128)
    assert ProxySettings(https=proxy, no_proxy=("*",)).for_url("https", "any", 443) is None
    v6 = ProxySettings(https=proxy, no_proxy=("[::1]:8042", "fd00::/8"))
    assert v6.for_url("https", "::1", 8042) is None
    assert v6.for_url("https", "::1", 8043) is proxy
    assert v6.for_url("https", "[fd00::5]", 443) is None


def test_google_auth_pool_routes_per_host() -> None:
    import urllib3

    assert isinstance(proxy_aware_pool(ProxySettings()), urllib3.PoolManager)
    router = proxy_aware_pool(
        ProxySettings(https=ProxyUrl("proxy", 3128), http=ProxyUrl("proxy", 3128))
    )
    assert isinstance(router.manager_for("https://oauth2.googleapis.com/token"), urllib3.ProxyManager)
    direct = router.manager_for("http://metadata.google.internal/computeMetadata/v1/")
    assert not isinstance(direct, urllib3.ProxyManager)


# -- HttpTransport through a real proxy


def _transport(
    proxy: str, *, no_proxy: tuple[str, ...] = (), ca_bundle: str | None = None
) -> HttpTransport:
    url = parse_proxy_url(proxy)
    return HttpTransport(
        HttpSettings(
            connect_timeout=5,
            read_timeout=10,
            ca_bundle=ca_bundle,
            proxy=ProxySettings(https=url, http=url, no_proxy=no_proxy),
        )
    )


def test_plain_http_goes_through_a_connect_tunnel_kept_alive() -> None:
    with HttpProxy() as proxy, RawHttpServer(echo) as server:
        transport = _transport(proxy.url)
        try:
            for index in range(5):
                url = f"{server.url}/dicom-web/studies?i={index}"
                response = transport.request("POST", url, headers={}, body=b"x" * 100)
                assert response.data == f"POST /dicom-web/studies?i={index} 100".encode()
        finally:
            transport.close()
        assert proxy.targets("CONNECT") == [f"127.0.0.1:{server.port}"]  # one tunnel, reused
        assert server.connections == 1


def test_tls_runs_end_to_end_inside_the_tunnel(tmp_path: Path) -> None:
    context, settings = _tls_setup(tmp_path)
    with HttpProxy() as proxy, RawHttpServer(echo, tls=context) as server:
        transport = _transport(proxy.url, ca_bundle=settings.ca_bundle)
        try:
            url = f"https://localhost:{server.port}/dicom-web/studies"
            assert transport.request("POST", url, headers={}, body=b"y" * 70_000).data == (
                b"POST /dicom-web/studies 70000"
            )
        finally:
            transport.close()
        # The certificate was checked against the store's name, not the proxy's.
        assert proxy.targets("CONNECT") == [f"localhost:{server.port}"]


def test_proxy_credentials_are_sent_and_a_refusal_is_a_clear_error() -> None:
    with HttpProxy(credentials=("adapter", "s3cret")) as proxy, RawHttpServer(echo) as server:
        url = f"{server.url}/dicom-web/studies"
        good = _transport(proxy.url_with("adapter", "s3cret"))
        bad = _transport(proxy.url_with("adapter", "wrong"))
        try:
            assert good.request("GET", url, headers={}).status == 200
            with pytest.raises(AuthError) as caught:  # not retried: it cannot heal itself
                bad.request("GET", url, headers={})
        finally:
            good.close()
            bad.close()
        message = str(caught.value)
        assert "407" in message and "credentials" in message and "wrong" not in message
        assert f"http://127.0.0.1:{proxy.port}" in message


def test_a_proxy_that_cannot_reach_the_store_is_a_connection_error() -> None:
    with HttpProxy() as proxy:
        transport = _transport(proxy.url)
        with RawHttpServer(echo) as server:
            gone = server.url
        with pytest.raises(DicomwebConnectionError, match="502"):
            transport.request("GET", f"{gone}/dicom-web/studies", headers={})


def test_no_proxy_hosts_are_reached_directly() -> None:
    with HttpProxy() as proxy, RawHttpServer(echo) as server:
        transport = _transport(proxy.url, no_proxy=("127.0.0.1",))
        try:
            assert transport.request("GET", f"{server.url}/x", headers={}).status == 200
        finally:
            transport.close()
        assert proxy.requests == []
