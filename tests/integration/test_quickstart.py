"""The README's quick start stays true: its demo runs and finds the image it sent."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_round_trip() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "quickstart"), "--no-install", "--once"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the round trip works" in result.stdout
