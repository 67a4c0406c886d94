"""odil (C++, Debian ``odil python3-odil``) as a peer: ``drivers/odil_peer.py`` run by /usr/bin/python3.

Debian's python3-odil is built for the system Python only, so the driver runs in a subprocess
with ``/usr/bin/python3`` whatever Python runs the tests. odil has no Storage Commitment and no
TLS; its User Identity sub-item never asks for a response; its C-MOVE SCU races the move
destination (drivers/odil_peer.py), so it is not used for C-MOVE.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.support.components import missing, require_executable
from tests.support.peers import Outcome, Target
from tests.support.peers.common import outcome_from, run_json

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).parent / "drivers" / "odil_peer.py"


class Odil:
    """odil: echo, store, find, get, user identity (no response requested); no C-MOVE (see
    drivers/odil_peer.py)."""

    name = "odil"
    operations = frozenset({"echo", "store", "find", "get", "user_identity"})

    def available(self) -> None:
        python = require_executable(SYSTEM_PYTHON, "odil's Python bindings are Debian's")
        probe = subprocess.run([python, "-c", "import odil"], capture_output=True, text=True)
        if probe.returncode != 0:
            missing("Debian package python3-odil is not installed (scripts/install)")

    def _run(self, target: Target, calling: str, job: dict[str, Any]) -> Outcome:
        if target.tls is not None:
            raise AssertionError("odil has no DICOM TLS")
        job = {"host": target.host, "port": target.port, "calling": calling,
               "called": target.called_aet, **job}
        if target.user_identity is not None:
            job["user_identity"] = {"primary": target.user_identity.username,
                                    "secondary": target.user_identity.password}
        data, log = run_json([SYSTEM_PYTHON, str(SCRIPT), json.dumps(job)], timeout=60)
        return outcome_from(data, log)

    def echo(self, target: Target, calling: str) -> Outcome:
        return self._run(target, calling, {"op": "echo"})

    def store(self, target: Target, calling: str, files: list[Path]) -> Outcome:
        return self._run(target, calling, {"op": "store", "files": [str(f) for f in files]})

    def find(self, target: Target, calling: str, study_uid: str) -> Outcome:
        return self._run(target, calling, {"op": "find", "study": study_uid})

    def move(self, target: Target, calling: str, study_uid: str, listen_port: int) -> Outcome:
        raise AssertionError("odil is not used for C-MOVE (see drivers/odil_peer.py)")

    def get(self, target: Target, calling: str, study_uid: str) -> Outcome:
        return self._run(target, calling, {"op": "get", "study": study_uid})

    def commit(self, target: Target, calling: str, transaction_uid: str,
               refs: list[tuple[str, str]], listen_port: int) -> Outcome:
        raise AssertionError("odil has no Storage Commitment SCU")
