"""The README's quick start stays true: its demo runs and finds the image it sent."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The quick start's own summary lines, in the order it prints them.
SUMMARY = ("Orthanc (DICOMweb store) at ", "Import adapter IMPORTADAPTER listening on port ",
           "$ /usr/bin/dcmsend ", "QIDO-RS ", "  -> found SOP Instance ")
#: A log line of the adapter it runs (text format: date, time, level).
ADAPTER_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\S* +[A-Z]+ ")


def test_quickstart_round_trip(tmp_path: Path) -> None:
    """Its output in a file (as in CI logs) has the summary lines in order, each where it
    happened among the adapter's log lines: the quick start flushes each one."""
    log = tmp_path / "quickstart.log"
    with log.open("wb") as out:
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / "quickstart"), "--no-install", "--once"],
            stdout=out, stderr=subprocess.STDOUT, timeout=120, cwd=ROOT,
            env={**os.environ, "PYTHON": sys.executable},
        )
    text = log.read_text()
    assert result.returncode == 0, text
    assert "the round trip works" in text
    lines = text.splitlines()
    positions = [next(i for i, line in enumerate(lines) if line.startswith(prefix))
                 for prefix in SUMMARY]
    assert positions == sorted(positions), text
    adapter_lines = [i for i, line in enumerate(lines) if ADAPTER_LOG.match(line)]
    assert adapter_lines, text
    # Printed before the adapter starts, so before its first log line.
    assert positions[0] < adapter_lines[0], text
