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
