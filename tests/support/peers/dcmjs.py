"""dcmjs-dimse (JavaScript, npm) as a peer: ``drivers/dcmjs_peer.js`` run by Node.js per operation.

scripts/install puts the package in ``tests/support/peers/node_modules`` (``npm ci`` from
the committed lock file). Each call starts ``node`` with a JSON job; the script runs the client
(and, for C-MOVE and Storage Commitment, its own SCP on the given port) and prints what it saw.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.support.components import missing, require_executable
from tests.support.peers import Outcome, Target
from tests.support.peers.common import outcome_from, run_json

JS_DIR = Path(__file__).parent  # package.json, package-lock.json, node_modules
SCRIPT = Path(__file__).parent / "drivers" / "dcmjs_peer.js"


class DcmjsDimse:
    """dcmjs-dimse: every operation, TLS and user identity."""

    name = "dcmjs-dimse"
    operations = frozenset({"echo", "store", "find", "move", "get", "commit", "tls",
                            "user_identity", "user_identity_response"})

    def available(self) -> None:
        require_executable("node", "dcmjs-dimse runs on Node.js (apt nodejs)")
        if not (JS_DIR / "node_modules" / "dcmjs-dimse").is_dir():
            missing(f"npm package dcmjs-dimse not in {JS_DIR}/node_modules (scripts/install)")

    def _run(self, target: Target, calling: str, job: dict[str, Any],
             timeout: float = 30.0) -> Outcome:
        job = {"host": target.host, "port": target.port, "calling": calling,
               "called": target.called_aet, "timeout": timeout, **job}
        if target.tls is not None:
            job["tls"] = {"key": str(target.tls.key), "cert": str(target.tls.cert),
                          "ca": str(target.tls.ca)}
        if target.user_identity is not None:
            identity = target.user_identity
            job["user_identity"] = {"type": identity.kind, "primary": identity.username,
                                    "secondary": identity.password,
                                    "response": identity.response_requested}
        node = shutil.which("node") or "node"
        data, log = run_json([node, str(SCRIPT), json.dumps(job)], timeout=timeout + 15)
        return outcome_from(data, log)

    def echo(self, target: Target, calling: str) -> Outcome:
        return self._run(target, calling, {"op": "echo"})

    def store(self, target: Target, calling: str, files: list[Path]) -> Outcome:
        return self._run(target, calling, {"op": "store", "files": [str(f) for f in files]})

    def find(self, target: Target, calling: str, study_uid: str) -> Outcome:
        keys = {"StudyInstanceUID": study_uid, "PatientID": "", "StudyDate": "",
                "NumberOfStudyRelatedInstances": ""}
        return self._run(target, calling, {"op": "find", "keys": keys})

    def move(self, target: Target, calling: str, study_uid: str, listen_port: int) -> Outcome:
        return self._run(target, calling, {"op": "move", "study": study_uid,
                                           "destination": calling, "listen_port": listen_port})

    def get(self, target: Target, calling: str, study_uid: str) -> Outcome:
        return self._run(target, calling, {"op": "get", "study": study_uid})

    def commit(self, target: Target, calling: str, transaction_uid: str,
               refs: list[tuple[str, str]], listen_port: int) -> Outcome:
        return self._run(target, calling, {"op": "commit", "transaction": transaction_uid,
                                           "refs": refs, "listen_port": listen_port})
