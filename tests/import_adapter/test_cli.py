"""The ``dicom-adapter import`` command line: flags -> ImportConfig, and usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import import_adapter.app
from common.auth import AuthKind
from common.cli.main import cli, run
from import_adapter.config import ImportConfig

ORTHANC = "http://127.0.0.1:8042/dicom-web"
GOOGLE = (
    "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb"
)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[ImportConfig]:
    configs: list[ImportConfig] = []

    def fake_run(config: ImportConfig) -> int:
        configs.append(config)
        return 0

    monkeypatch.setattr(import_adapter.app, "run", fake_run)
    return configs


def _run(args: list[str]) -> int:
    return run(cli, ["import", *args])


def test_reference_spellings(captured: list[ImportConfig]) -> None:
    assert _run(["--dimse_aet=MYAE", "--dimse_port=4242", f"--dicomweb_address={GOOGLE}",
                 "--oauth_scopes=a,b", "--verbose", "--stow_http2"]) == 0
    config = captured[0]
    assert config.dimse.ae_title == "MYAE" and config.dimse.port == 4242
    assert config.dicomweb.root == GOOGLE and config.dicomweb.is_google
    assert config.auth.scopes == ("a", "b") and config.stow_http2


def test_dashed_spellings_and_defaults(captured: list[ImportConfig]) -> None:
    assert _run(["--dicomweb-address", ORTHANC, "--max-associations", "5"]) == 0
    config = captured[0]
    assert config.dimse.ae_title == "IMPORTADAPTER" and config.dimse.port == 2575
    assert config.dimse.max_associations == 5
    assert config.auth.kind is AuthKind.AUTO


def test_environment_variables(captured: list[ImportConfig], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOM_ADAPTER_DICOMWEB_ADDRESS", ORTHANC)
    monkeypatch.setenv("DICOM_ADAPTER_DIMSE_AET", "FROMENV")
    monkeypatch.setenv("DICOM_ADAPTER_BEARER_TOKEN", "secret-token")
    assert _run([]) == 0
    assert captured[0].dimse.ae_title == "FROMENV"
    assert captured[0].auth.bearer_token == "secret-token"
    assert "secret-token" not in repr(captured[0])


def test_deprecated_address_pair(captured: list[ImportConfig]) -> None:
    assert _run([
        "--dicomweb_addr=https://healthcare.googleapis.com/v1",
        "--dicomweb_stow_path=/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb/studies",
    ]) == 0
    assert captured[0].dicomweb.root == GOOGLE


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "missing --dicomweb_address"),
        (["--dicomweb_address", ORTHANC, "--bogus"], "No such option"),
        (["--dicomweb_address", "https://healthcare.googleapis.com/v1/x"], "expected https://"),
        (["--dicomweb_address", ORTHANC + "/studies"], "ends in /studies"),
        (["--dicomweb_address", ORTHANC, "--dimse_aet", "X" * 17], "longer than 16"),
        (["--dicomweb_address", ORTHANC, "--dimse_port", "70000"], "70000"),
        (["--dicomweb_address", ORTHANC, "--dicomweb_addr", "http://x"], "not both"),
        (["--dicomweb_addr", "http://x"], "go together"),
    ],
)
def test_usage_errors_are_one_line(
    args: list[str], message: str, captured: list[ImportConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not captured


def test_help_lists_env_vars(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--help"]) == 0
    out = capsys.readouterr().out
    assert "DICOM_ADAPTER_DIMSE_AET" in out and "--dimse_aet" in out


def test_unreadable_password_file_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Runs the real wiring up to building the authenticator, which fails before listening.
    code = _run([
        "--dicomweb_address", ORTHANC, "--auth", "basic", "--basic_auth_user", "u",
        "--basic_auth_password_file", str(tmp_path / "absent"), "--dimse_port", "1",
    ])
    assert code == 2
    assert "cannot read basic auth password file" in capsys.readouterr().err


def test_port_in_use_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = _run(["--dicomweb_address", ORTHANC, "--dimse_port", str(port),
                     "--dimse_bind_address", "127.0.0.1"])
    assert code == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err



def test_reference_compat_flags(captured: list[ImportConfig], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--dicomweb_address", ORTHANC, "--monitoring_project_id", "p",
                 "--dimse_cmove_aet", "IMPORTADAPTER", "--max_waiting_time_btw_uploads", "900",
                 "--persistent_file_storage_location", "/tmp/spool-compat"]) == 0
    assert captured[0].spool is not None
    assert captured[0].retrieve.calling_aet == "IMPORTADAPTER"
    assert _run(["--dicomweb_address", ORTHANC, "--dimse_aet", "MINE",
                 "--dimse_cmove_aet", "OTHERAET"]) == 0
    assert captured[-1].retrieve.calling_aet == "OTHERAET"  # C-MOVE sub-operations call as it
    assert _run(["--dicomweb_address", ORTHANC, "--dimse_aet", "MINE"]) == 0
    assert captured[-1].retrieve.calling_aet == ""  # the listener's AE title
    assert _run(["--dicomweb_address", ORTHANC,
                 "--persistent_file_storage_location", "gs://bucket/x"]) == 2
    assert "gs:// is not supported" in capsys.readouterr().err


def test_proxy_variables_reach_the_transport_and_the_credentials(
    captured: list[ImportConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("https_proxy", "http_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@proxy.hospital:3128")
    monkeypatch.setenv("NO_PROXY", ".hospital.local")
    assert _run(["--dicomweb_address", GOOGLE]) == 0
    (config,) = captured
    assert config.http.proxy == config.auth.proxy
    proxy = config.http.proxy.for_url("https", "healthcare.googleapis.com", 443)
    assert proxy is not None and (proxy.host, proxy.port) == ("proxy.hospital", 3128)
    assert config.http.proxy.for_url("https", "pacs.hospital.local", 443) is None


def test_an_unusable_proxy_is_a_one_line_usage_error(
    captured: list[ImportConfig],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "https://proxy:3128")
    assert _run(["--dicomweb_address", ORTHANC]) == 2
    err = capsys.readouterr().err
    assert "only http:// proxies are supported" in err
    assert err.count("\n") == 1 and not captured
