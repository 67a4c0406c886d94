"""Standing checks: the README's generated tables are current; ruff and mypy are clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.components import require

ROOT = Path(__file__).resolve().parents[1]


def test_readme_generated_sections_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("tool", [["ruff", "check", "."], ["mypy"]])
def test_static_checks_are_clean(tool: list[str]) -> None:
    require(shutil.which(tool[0]) is not None, f"{tool[0]} is not installed")
    result = subprocess.run(tool, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


#: docs/interop.md's rows -> the operation names the peer drivers declare.
INTEROP_ROWS = {
    "C-ECHO": "echo",
    "C-STORE": "store",
    "C-FIND": "find",
    "C-MOVE": "move",
    "C-GET": "get",
    "Storage Commitment (N-ACTION, N-EVENT-REPORT back)": "commit",
    "DICOM TLS (echo, store, find)": "tls",
    "User Identity (sent, no response asked)": "user_identity",
    "User Identity (response asked)": "user_identity_response",
}


def test_interop_table_matches_the_peers() -> None:
    """docs/interop.md's table says what tests/support/peers declares, and every operation has
    at least two independent implementations (issue 16's guard rail)."""
    from tests.support.peers.registry import PEERS, matrix

    text = (ROOT / "docs" / "interop.md").read_text()
    table = text.split("<!-- interop-table: begin -->")[1].split("<!-- interop-table: end -->")[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in table.strip().splitlines()]
    header, body = rows[0], rows[2:]
    assert header[1:] == list(PEERS)
    assert [row[0] for row in body] == list(INTEROP_ROWS)
    for row in body:
        operation = INTEROP_ROWS[row[0]]
        documented = {name for name, cell in zip(header[1:], row[1:], strict=True) if cell != "-"}
        assert documented == set(matrix(operation)), row[0]
        assert len(documented) >= 2, row[0]
