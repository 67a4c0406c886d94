"""Outbound HTTP through a forward proxy, across real wires: the import adapter as a real
process configured by ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` storing into Orthanc through
CONNECT tunnels, refused at once with wrong proxy credentials, a bad proxy variable as a usage
error, and google-auth's token refresh going through the proxy while the store is reached
directly."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from common.auth import AuthConfig, AuthKind
from common.proxy import ProxySettings, parse_proxy_url
from common.status import Status
from tests.integration.test_import_store import pynetdicom_store
from tests.support import dcmtk
from tests.support.adapters import IMPORT_AET, AdapterProcess, running_import_adapter
from tests.support.google_token import token_endpoint, write_service_account_key
from tests.support.http_fault_server import HttpFaultServer
from tests.support.http_proxy import HttpProxy
from tests.support.orthanc import OrthancServer
from tests.support.samples import make_corpus


def test_import_adapter_stores_through_a_proxy(
    fresh_orthanc: Callable[..., OrthancServer], tmp_path: Path
) -> None:
    store = fresh_orthanc()
    corpus = make_corpus(tmp_path / "c", 5)
    with HttpProxy(credentials=("adapter", "pw")) as proxy:
        env = {
            "HTTPS_PROXY": proxy.url_with("adapter", "pw"),
            "HTTP_PROXY": proxy.url_with("adapter", "pw"),
            "NO_PROXY": "",
            "no_proxy": "",
        }
        args = ["--dicomweb_address", store.dicomweb_url]
        with AdapterProcess(args, log_path=tmp_path / "adapter.log", env=env) as adapter:
            result = dcmtk.dcmsend(
                "127.0.0.1", adapter.port, [s.path for s in corpus], IMPORT_AET
            )
            assert result.returncode == 0, result.stdout[-2000:] + adapter.log()[-2000:]
            assert dcmtk.dcmsend_summary(result).get("with status SUCCESS") == len(corpus)
        tunnels = proxy.targets("CONNECT")
    # Every STOW-RS went through the proxy, over kept-alive tunnels (not one per instance).
    assert tunnels and set(tunnels) == {f"127.0.0.1:{store.http_port}"}
    assert len(tunnels) < len(corpus)
    assert store.count_instances() == len(corpus)
    assert "pw" not in adapter.log()


def test_wrong_proxy_credentials_refuse_the_c_store_at_once(
    fresh_orthanc: Callable[..., OrthancServer], tmp_path: Path
) -> None:
    store = fresh_orthanc()
    sample = make_corpus(tmp_path / "c", 1)[0]
    with HttpProxy(credentials=("adapter", "pw")) as proxy:
        env = {"HTTP_PROXY": proxy.url_with("adapter", "wrong"), "NO_PROXY": "", "no_proxy": ""}
        args = ["--dicomweb_address", store.dicomweb_url, "--stow_retry_budget", "30"]
        with AdapterProcess(args, log_path=tmp_path / "adapter.log", env=env) as adapter:
            started = time.monotonic()
            status = pynetdicom_store(adapter.port, sample.path)
            elapsed = time.monotonic() - started
            log = adapter.log()
    # 407 is not retried for the 30 s budget: a wrong credential cannot heal itself.
    assert status == Status.NOT_AUTHORIZED, log[-2000:]
    assert elapsed < 10
    assert "407" in log and "wrong" not in log
    assert store.count_instances() == 0


def test_a_bad_proxy_variable_is_a_usage_error(tmp_path: Path) -> None:
    env = {"HTTPS_PROXY": "socks5://proxy:1080", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "import_adapter", "--dicomweb_address", "http://127.0.0.1:1/x"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "only http:// proxies are supported" in result.stderr
    assert "Traceback" not in result.stderr


def test_google_token_refresh_goes_through_the_proxy(
    fault_server: Callable[..., HttpFaultServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sink = fault_server()
    corpus = make_corpus(tmp_path / "c", 2)
    with HttpProxy() as proxy, token_endpoint() as token_uri:
        key_file = write_service_account_key(tmp_path / "sa.json", token_uri)
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
        url = parse_proxy_url(proxy.url)
        # The store is reached directly (NO_PROXY), the token endpoint through the proxy.
        settings = ProxySettings(https=url, http=url, no_proxy=(sink.url.split("//")[1],))
        auth = AuthConfig(kind=AuthKind.GOOGLE, proxy=settings)
        with running_import_adapter(f"{sink.url}/dicom-web", auth=auth) as running:
            for sample in corpus:
                assert pynetdicom_store(running.server.port, sample.path) == Status.SUCCESS
        forwarded = proxy.targets("POST")
    assert forwarded == [token_uri, token_uri]  # one refresh per request (60 s tokens)
    assert proxy.targets("CONNECT") == []
    headers = [r.header("Authorization") for r in sink.requests]
    assert all(h is not None and h.startswith("Bearer google-token-") for h in headers)
