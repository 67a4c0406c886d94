"""Helpers the peer drivers share: running a driver process, reading its JSON, reports."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from tests.support.peers import Outcome, Report

STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"


def run_json(argv: Sequence[str], *, timeout: float = 60.0,
             env: Mapping[str, str] | None = None) -> tuple[dict[str, Any], str]:
    """Run a driver that prints one JSON object as its last stdout line; return it and the log."""
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "TCP_NODELAY": "1", **(env or {})},
    )
    log = f"$ {' '.join(argv)[:2000]}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"peer driver failed:\n{log}")
    return json.loads(lines[-1]), log


def report_from(event_type: int, info: Mapping[str, Any]) -> Report:
    """A :class:`Report` from naturalized event information (keyword -> value)."""
    succeeded = [str(item["ReferencedSOPInstanceUID"])
                 for item in info.get("ReferencedSOPSequence") or []]
    failed = {str(item["ReferencedSOPInstanceUID"]): int(item.get("FailureReason", 0))
              for item in info.get("FailedSOPSequence") or []}
    return Report(int(event_type), str(info.get("TransactionUID", "")), succeeded, failed)


def outcome_from(data: Mapping[str, Any], log: str) -> Outcome:
    """An :class:`Outcome` from a driver's JSON (fields as dcmjs_peer.js and odil_peer.py print)."""
    report = None
    if data.get("report"):
        report = report_from(data["report"]["event_type"], data["report"]["dataset"] or {})
    response = data.get("user_identity_response")
    return Outcome(
        statuses=[int(s["status"]) for s in data.get("statuses", [])],
        identifiers=[{k: str(v) for k, v in d.items()} for d in data.get("datasets", [])],
        received=[str(u) for u in data.get("received", [])],
        report=report,
        user_identity_response=None if response is None else str(response).encode(),
        log=log + ("\nerrors: " + "; ".join(data["errors"]) if data.get("errors") else ""),
    )
