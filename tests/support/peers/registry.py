"""The peers of the interop matrix, by name, and which operations each one exercises."""

from __future__ import annotations

from tests.support.peers import Peer
from tests.support.peers.cli import Ctn, Gdcm, Pixelmed
from tests.support.peers.dcmjs import DcmjsDimse
from tests.support.peers.netdicom2 import PyNetDicom2
from tests.support.peers.odil import Odil

PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (DcmjsDimse(), PyNetDicom2(), Odil(), Gdcm(), Ctn(), Pixelmed())
}


def matrix(operation: str) -> list[str]:
    """The names of the peers that exercise ``operation``, for ``pytest.mark.parametrize``."""
    return sorted(name for name, peer in PEERS.items() if operation in peer.operations)
