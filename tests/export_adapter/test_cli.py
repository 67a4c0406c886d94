"""Unit tests of the export command line: flag spellings, env vars, the two peer modes."""

from __future__ import annotations

import pytest

from common.cli.main import cli, run
from export_adapter.cli import build_config, command
from export_adapter.config import DimsePeerConfig, ExportConfig, StowPeerConfig
from export_adapter.source import SourceMode

BASE = ["--project_id", "proj", "--subscription_id", "sub"]
DIMSE = ["--peer_dimse_aet", "PACS", "--peer_dimse_ip", "10.0.0.1", "--peer_dimse_port", "104"]


def config_for(args: list[str]) -> ExportConfig:
    ctx = command.make_context("export", list(args))
    return build_config(ctx.params)


def usage_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert run(command, args, prog_name="dicom-adapter export") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_dimse_mode_with_reference_spellings() -> None:
    config = config_for([*BASE, *DIMSE])
    assert isinstance(config.peer, DimsePeerConfig)
    assert (config.peer.peer.ae_title, config.peer.peer.host, config.peer.peer.port) == (
        "PACS", "10.0.0.1", 104
    )  # fmt: skip
    assert config.peer.sender.calling_aet == "EXPORTADAPTER"
    assert config.subscription_path == "projects/proj/subscriptions/sub"
    assert config.source.mode is SourceMode.RESOURCE_NAME
    assert config.source.address.root == "https://healthcare.googleapis.com/v1"
    assert config.dead_letter_topic is None
    assert config.flow.max_messages == 4 * config.flow.workers


def test_dashed_spellings_and_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOM_ADAPTER_PEER_DIMSE_PORT", "11112")
    monkeypatch.setenv("DICOM_ADAPTER_SUBSCRIPTION_ID", "from-env")
    config = config_for(
        [
            "--project-id", "proj", "--peer-dimse-aet", "PACS", "--peer-dimse-ip", "h",
            "--client-aet", "ME", "--dicomweb-addr", "http://127.0.0.1:8042/dicom-web",
            "--dead-letter-topic", "dlq", "--workers", "3", "--max-outstanding-messages", "5",
        ]
    )  # fmt: skip
    assert isinstance(config.peer, DimsePeerConfig)
    assert config.peer.peer.port == 11112
    assert config.peer.sender.calling_aet == "ME"
    assert config.subscription_path == "projects/proj/subscriptions/from-env"
    assert config.source.mode is SourceMode.DICOMWEB_ROOT
    assert config.dead_letter_topic == "projects/proj/topics/dlq"
    assert (config.flow.workers, config.flow.max_messages) == (3, 5)


def test_stow_mode() -> None:
    config = config_for(
        [*BASE, "--peer_dicomweb_address", "http://peer:8042/dicom-web/",
         "--use_gcp_application_default_credentials"]
    )  # fmt: skip
    assert isinstance(config.peer, StowPeerConfig)
    assert config.peer.address.root == "http://peer:8042/dicom-web"
    assert config.peer.use_adc


def test_stow_mode_deprecated_pair() -> None:
    config = config_for(
        [*BASE, "--peer_dicomweb_addr", "http://peer:8042",
         "--peer_dicomweb_stow_path", "/dicom-web/studies"]
    )  # fmt: skip
    assert isinstance(config.peer, StowPeerConfig)
    assert config.peer.address.root == "http://peer:8042/dicom-web"
    assert not config.peer.use_adc


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (BASE, "missing peer"),
        ([*BASE, *DIMSE, "--peer_dicomweb_address", "http://p/dicom-web"], "not both"),
        ([*BASE, "--peer_dimse_aet", "PACS"], "--peer_dimse_ip, --peer_dimse_port"),
        ([*BASE, "--peer_dicomweb_addr", "http://p"], "go together"),
        ([*BASE, *DIMSE, "--dicomweb_addr", "ftp://x"], "not an http(s) URL"),
        ([*BASE, *DIMSE, "--subscription_id", "projects/p/topics/t"], "projects/PROJECT"),
        (["--subscription_id", "s", *DIMSE], "--project_id"),
        ([*BASE, *DIMSE[:4], "--peer_dimse_port", "0"], "peer_dimse_port"),
        ([*BASE, *DIMSE, "--client_aet", "X" * 17], "longer than 16"),
    ],
)
def test_usage_errors_are_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in usage_error(args, capsys)


def test_group_maps_export_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(cli, ["export", *BASE]) == 2
    assert "missing peer" in capsys.readouterr().err


def test_proxy_variables_reach_the_transport_and_the_source_credentials(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("https_proxy", "http_proxy", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "proxy.hospital:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.hospital:3129")
    config = config_for([*BASE, *DIMSE])
    assert config.http.proxy == config.source_auth.proxy
    assert config.http.proxy.for_url("https", "healthcare.googleapis.com", 443) is not None
    plain = config.http.proxy.for_url("http", "pacs", 8042)
    assert plain is not None and plain.port == 3129
    monkeypatch.setenv("HTTP_PROXY", "socks5://proxy:1080")
    assert "only http:// proxies" in usage_error([*BASE, *DIMSE], capsys)
