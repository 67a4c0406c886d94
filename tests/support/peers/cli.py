"""Command-line SCUs as peers: GDCM's ``gdcmscu``, CTN's ``dicom_echo`` / ``send_image`` and
PixelMed's ``VerificationSOPClassSCU``.

GDCM and CTN only echo and store here (what they can do against a DICOMweb-backed SCP without a
database of their own); the statuses are read from what the tools print of each response.

- ``gdcmscu`` (Debian libgdcm-tools) aborts after the release with "ProtocolStream as nullptr
  is invalid" (exit 134) whatever the peer does, so its exit status means nothing; the
  statuses come from its debug dump of the response command sets (``-D``), which it prints
  twice per response: one status per distinct Affected SOP Instance UID is kept.
- CTN (Debian ctn) proposes Explicit VR Big Endian only for its C-STOREs (``-X``), a syntax
  no other peer here sends.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.support.components import missing, require_executable
from tests.support.peers import Outcome, Target

EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"


def _run(argv: Sequence[str]) -> tuple[int, str]:
    proc = subprocess.run(list(argv), capture_output=True, timeout=60,
                          env={**os.environ, "TCP_NODELAY": "1"})
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    return proc.returncode, f"$ {' '.join(argv)}\nexit {proc.returncode}\n{out[-6000:]}"


class _NoQueries:
    """The operations these command-line peers do not exercise here."""

    def find(self, target: Target, calling: str, study_uid: str) -> Outcome:
        raise AssertionError(f"{self} is not used for C-FIND")

    def move(self, target: Target, calling: str, study_uid: str, listen_port: int) -> Outcome:
        raise AssertionError(f"{self} is not used for C-MOVE")

    def get(self, target: Target, calling: str, study_uid: str) -> Outcome:
        raise AssertionError(f"{self} is not used for C-GET")

    def commit(self, target: Target, calling: str, transaction_uid: str,
               refs: list[tuple[str, str]], listen_port: int) -> Outcome:
        raise AssertionError(f"{self} is not used for Storage Commitment")


class Gdcm(_NoQueries):
    """GDCM ``gdcmscu``: echo and store."""

    name = "gdcm"
    operations = frozenset({"echo", "store"})
    _STATUS = re.compile(r"^\(0000,0900\) \?\? \(US\) (\d+)", re.MULTILINE)
    _AFFECTED = re.compile(r"^\(0000,1000\) \?\? \(UI\) \[([0-9.]+)", re.MULTILINE)

    def available(self) -> None:
        require_executable("/usr/bin/gdcmscu", "GDCM's SCU (apt libgdcm-tools)")

    def _base(self, target: Target, calling: str) -> list[str]:
        return ["/usr/bin/gdcmscu", "-D", "--call", target.called_aet, "--aetitle", calling]

    def echo(self, target: Target, calling: str) -> Outcome:
        _, log = _run([*self._base(target, calling), "--echo", target.host, str(target.port)])
        return Outcome(statuses=[int(s) for s in self._STATUS.findall(log)[:1]], log=log)

    def store(self, target: Target, calling: str, files: list[Path]) -> Outcome:
        statuses: list[int] = []
        logs = []
        for path in files:  # gdcmscu aborts at the end of each association: one file each
            _, log = _run([*self._base(target, calling), "--store", "-i", str(path),
                           target.host, str(target.port)])
            logs.append(log)
            seen: dict[str, int] = {}
            for uid, status in zip(self._AFFECTED.findall(log), self._STATUS.findall(log),
                                   strict=False):
                seen.setdefault(uid, int(status))
            statuses.extend(seen.values())
        return Outcome(statuses=statuses, log="\n".join(logs))


class Ctn(_NoQueries):
    """CTN ``dicom_echo`` and ``send_image`` (C-STORE in Explicit VR Big Endian)."""

    name = "ctn"
    operations = frozenset({"echo", "store"})

    def available(self) -> None:
        require_executable("/usr/bin/send_image", "CTN (apt ctn)")
        require_executable("/usr/bin/dicom_echo", "CTN (apt ctn)")

    def echo(self, target: Target, calling: str) -> Outcome:
        code, log = _run(["/usr/bin/dicom_echo", "-a", calling, "-c", target.called_aet,
                          target.host, str(target.port)])
        found = re.findall(r"Verification Status:\s+([0-9A-Fa-f]{4})", log)
        return Outcome(statuses=[int(s, 16) for s in found] if code == 0 else [], log=log)

    def store(self, target: Target, calling: str, files: list[Path]) -> Outcome:
        code, log = _run(["/usr/bin/send_image", "-q", "-r", "-a", calling,
                          "-c", target.called_aet, "-X", EXPLICIT_VR_BIG_ENDIAN,
                          target.host, str(target.port), *map(str, files)])
        found = re.findall(r"^Store Response\n(?:.*\n)*?Status:\s+([0-9A-Fa-f]{4})", log, re.MULTILINE)
        return Outcome(statuses=[int(s, 16) for s in found] if code == 0 else [], log=log)


class Pixelmed(_NoQueries):
    """PixelMed (Java, Debian pixelmed-apps): C-ECHO with and without User Identity.

    Only its ``VerificationSOPClassSCU`` command takes a User Identity (username, or username
    and passcode); it prints whether the C-ECHO succeeded, not the status. Its DICOM TLS
    offers only TLS_RSA_WITH_AES_128_CBC_SHA (the retired DICOM basic TLS profile), which the
    adapter's TLS 1.2+ forward-secret ciphers rightly refuse, so it is not a TLS peer here; its
    C-STORE command takes neither TLS nor User Identity and adds nothing over the others.
    """

    name = "pixelmed"
    operations = frozenset({"echo", "user_identity"})
    JAR = "/usr/share/java/pixelmed.jar"

    def available(self) -> None:
        require_executable("java", "PixelMed runs on Java (apt default-jre-headless)")
        if not Path(self.JAR).is_file():
            missing(f"{self.JAR} not found (apt pixelmed-apps)")

    def echo(self, target: Target, calling: str) -> Outcome:
        if target.tls is not None:
            raise AssertionError("PixelMed is not a TLS peer here (see the class docstring)")
        identity = []
        if target.user_identity is not None:
            identity = [target.user_identity.username]
            if target.user_identity.password:
                identity.append(target.user_identity.password)
        code, log = _run(["java", "-cp", self.JAR, "com.pixelmed.network.VerificationSOPClassSCU",
                          target.host, str(target.port), target.called_aet, calling,
                          "NONSECURE", *identity])
        ok = code == 0 and "VerificationSOPClass: was successful" in log
        return Outcome(statuses=[0] if ok else [], log=log)

    def store(self, target: Target, calling: str, files: list[Path]) -> Outcome:
        raise AssertionError("PixelMed is not used for C-STORE (see the class docstring)")
