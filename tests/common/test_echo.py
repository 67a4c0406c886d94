"""``python -m common.echo`` on our own DIMSE engine, against pynetdicom Verification SCPs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from common.echo import echo, main
from tests.support.dcmtk import StoreSCP
from tests.support.ports import free_port

LOCALHOST = "127.0.0.1"


@pytest.fixture
def scp() -> Iterator[Any]:
    servers: list[Any] = []

    def start(status: int = 0x0000, supported: Any = Verification) -> int:
        ae = AE(ae_title="ECHOSCP")
        ae.require_called_aet = True
        ae.add_supported_context(supported)
        port = free_port()
        servers.append(ae.start_server(
            (LOCALHOST, port), block=False,
            evt_handlers=[(evt.EVT_C_ECHO, lambda _event: status)],
        ))
        return port

    yield start
    for server in servers:
        server.shutdown()


def test_success_and_each_failure(scp: Any, capsys: pytest.CaptureFixture[str]) -> None:
    port = scp()
    assert echo(LOCALHOST, port, "ECHOSCP", "ECHOSCU", 5.0) is None
    assert main([LOCALHOST, str(port), "--aec", "ECHOSCP"]) == 0
    assert "answered Success" in capsys.readouterr().out

    problem = echo(LOCALHOST, port, "WRONG", "ECHOSCU", 5.0)
    assert problem is not None and "association rejected by WRONG@" in problem
    assert main([LOCALHOST, str(port), "--aec", "WRONG"]) == 1
    assert "FAIL: association rejected" in capsys.readouterr().err

    problem = echo(LOCALHOST, free_port(), "ECHOSCP", "ECHOSCU", 5.0)
    assert problem is not None and problem.startswith("no association with")

    failing = scp(status=0x0211)
    assert echo(LOCALHOST, failing, "ECHOSCP", "ECHOSCU", 5.0) == (
        f"C-ECHO to ECHOSCP@{LOCALHOST}:{failing} failed: status 0x0211"
    )

    storage_only = scp(supported=CTImageStorage)
    problem = echo(LOCALHOST, storage_only, "ECHOSCP", "ECHOSCU", 5.0)
    assert problem is not None and "accepted no Verification context" in problem


def test_echo_to_dcmtk_storescp(tmp_path: Path) -> None:
    """An independent implementation answers our C-ECHO (DCMTK's storescp)."""
    scp = StoreSCP(tmp_path / "in", aet="DCMTKSCP").start()
    try:
        assert echo(scp.host, scp.port, "DCMTKSCP", "ECHOSCU", 5.0) is None
    finally:
        scp.stop()
