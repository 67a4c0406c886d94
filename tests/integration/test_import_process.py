"""The import adapter as a real process and with real credentials: SIGTERM draining, constant
memory for a huge instance, and each authentication method across the wire."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common.auth import AuthConfig, AuthKind
from common.status import Status
from tests.integration.test_import_store import pynetdicom_store
from tests.support import dcmtk
from tests.support.adapters import IMPORT_AET, AdapterProcess, running_import_adapter
from tests.support.google_token import token_endpoint, write_service_account_key
from tests.support.http_fault_server import HttpFaultServer
from tests.support.orthanc import OrthancServer
from tests.support.samples import make_corpus, make_large_instance, pixel_data_sha256


def test_sigterm_drains_and_exits_zero(
    fresh_orthanc: Callable[..., OrthancServer],
    fault_server: Callable[..., HttpFaultServer],
    tmp_path: Path,
) -> None:
    store = fresh_orthanc()
    corpus = make_corpus(tmp_path / "c", 300)
    # Every STOW-RS is held 20 ms so that the 300 stores take ~6 s: SIGTERM lands mid-stream
    # however fast the adapter is (a fixed sleep let a fast run finish everything first).
    proxy: HttpFaultServer = fault_server(store.http_url)
    proxy.delay_next(0.02, times=len(corpus), method="POST")
    args = ["--dicomweb_address", f"{proxy.url}/dicom-web", "--shutdown_grace", "0.3"]
    with AdapterProcess(args, log_path=tmp_path / "adapter.log") as adapter:
        sender = subprocess.Popen(
            [dcmtk.dcmtk_tool("dcmsend"), "-v", "-aec", IMPORT_AET, "127.0.0.1",
             str(adapter.port), *(str(s.path) for s in corpus)],
            env=dcmtk.dcmtk_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + 30
        while len(proxy.requests) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert adapter.terminate(timeout=30) == 0, adapter.log()
        output, _ = sender.communicate(timeout=60)
    acknowledged = output.count("Received C-STORE Response (Success)")
    assert 0 < acknowledged < len(corpus), output[-2000:]
    # After the grace period new requests are refused (not dropped), then the association ends.
    assert "Refused: OutOfResources" in output
    # Every instance the SCU saw acknowledged is in the store.
    assert store.count_instances() >= acknowledged
    assert "DIMSE listener stopped" in adapter.log()


def test_idle_adapter_stops_promptly_on_sigterm(orthanc: OrthancServer, tmp_path: Path) -> None:
    args = ["--dicomweb_address", orthanc.dicomweb_url]
    with AdapterProcess(args, log_path=tmp_path / "adapter.log") as adapter:
        started = time.monotonic()
        assert adapter.terminate(timeout=10) == 0
        assert time.monotonic() - started < 5


def test_huge_instance_streams_in_constant_memory(
    fresh_orthanc: Callable[..., OrthancServer], tmp_path: Path
) -> None:
    store = fresh_orthanc()
    big = make_large_instance(tmp_path / "big", 300)
    args = ["--dicomweb_address", store.dicomweb_url, "--spool_dir", str(tmp_path / "spool")]
    with AdapterProcess(args, log_path=tmp_path / "adapter.log") as adapter:
        result = dcmtk.dcmsend("127.0.0.1", adapter.port, [big.path], IMPORT_AET)
        assert result.returncode == 0, result.stdout[-2000:] + adapter.log()[-2000:]
        peak = adapter.peak_rss_mb()
    assert peak < 150, f"adapter peak RSS {peak:.0f} MB for a 300 MB instance"
    fetched = tmp_path / "fetched.dcm"
    fetched.write_bytes(store.wado_instance(big.study_uid, big.series_uid, big.sop_instance_uid))
    assert pixel_data_sha256(fetched) == pixel_data_sha256(big.path)
    # Nothing is left behind in the spool.
    assert not any((tmp_path / "spool").iterdir())


# -- authentication across the wire -----------------------------------------------------------


def test_basic_auth_against_orthanc(
    fresh_orthanc: Callable[..., OrthancServer], tmp_path: Path
) -> None:
    store = fresh_orthanc(users={"alice": "s3cret"})
    corpus = make_corpus(tmp_path / "c", 2)
    good = AuthConfig(kind=AuthKind.BASIC, basic_user="alice", basic_password="s3cret")
    with running_import_adapter(store.dicomweb_url, auth=good) as running:
        assert pynetdicom_store(running.server.port, corpus[0].path) == Status.SUCCESS
    bad = AuthConfig(kind=AuthKind.BASIC, basic_user="alice", basic_password="wrong")
    with running_import_adapter(store.dicomweb_url, auth=bad) as running:
        assert pynetdicom_store(running.server.port, corpus[1].path) == Status.NOT_AUTHORIZED
    assert store.count_instances() == 1


def test_bearer_token_file_is_reread(
    fault_server: Callable[..., HttpFaultServer], tmp_path: Path
) -> None:
    sink = fault_server()
    corpus = make_corpus(tmp_path / "c", 2)
    token = tmp_path / "token"
    token.write_text("first-token\n")
    auth = AuthConfig(kind=AuthKind.BEARER, bearer_token_file=token)
    with running_import_adapter(f"{sink.url}/dicom-web", auth=auth) as running:
        assert pynetdicom_store(running.server.port, corpus[0].path) == Status.SUCCESS
        token.write_text("second-token\n")
        later = time.time() + 5
        __import__("os").utime(token, (later, later))
        assert pynetdicom_store(running.server.port, corpus[1].path) == Status.SUCCESS
    headers = [r.header("Authorization") for r in sink.requests]
    assert headers == ["Bearer first-token", "Bearer second-token"]


@pytest.fixture
def token_uri() -> Iterator[str]:
    with token_endpoint() as url:
        yield url


def test_google_application_default_credentials_refresh(
    fault_server: Callable[..., HttpFaultServer],
    token_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_file = write_service_account_key(tmp_path / "sa.json", token_uri)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    sink = fault_server()
    corpus = make_corpus(tmp_path / "c", 2)
    auth = AuthConfig(kind=AuthKind.GOOGLE)
    with running_import_adapter(f"{sink.url}/dicom-web", auth=auth) as running:
        for sample in corpus:
            assert pynetdicom_store(running.server.port, sample.path) == Status.SUCCESS
    headers = [r.header("Authorization") for r in sink.requests]
    assert headers[0] is not None and headers[0].startswith("Bearer google-token-")
    assert len(set(headers)) == 2  # refreshed: a new token for the second request
