"""Independent DICOM implementations as test peers of the import adapter (interop matrix).

Each module drives one implementation that shares no code with DCMTK, pynetdicom or the
adapter: :mod:`.dcmjs` (dcmjs-dimse, JavaScript), :mod:`.netdicom2` (pynetdicom2, a separate
Python code base), :mod:`.odil` (odil, C++, through Debian's python3-odil), :mod:`.gdcm`
and :mod:`.cli` (GDCM's ``gdcmscu``, CTN's ``send_image``, PixelMed's
``VerificationSOPClassSCU``). Every driver exposes the same small interface, :class:`Peer`: one method per
operation, each doing the whole exchange across the real wire and returning an
:class:`Outcome` with what came back (statuses, identifiers, instances received by the peer's
own SCP or on the same association, the Storage Commitment report). A component that is
missing makes the test skip, or fail under ``CI=true`` (:mod:`tests.support.components`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = ["Outcome", "Peer", "Report", "Target", "TlsFiles", "UserIdentity"]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files a peer presents and trusts (tests.support.tls_certs)."""

    key: Path
    cert: Path
    ca: Path


@dataclass(frozen=True)
class UserIdentity:
    """A User Identity sub-item (PS3.7 D.3.3.7): type 1 username, 2 username and passcode."""

    username: str
    password: str = ""
    response_requested: bool = False

    @property
    def kind(self) -> int:
        """The User Identity Type the peer sends."""
        return 2 if self.password else 1


@dataclass(frozen=True)
class Target:
    """The import adapter as a peer calls it."""

    host: str
    port: int
    called_aet: str
    tls: TlsFiles | None = None
    user_identity: UserIdentity | None = None


@dataclass(frozen=True)
class Report:
    """A Storage Commitment N-EVENT-REPORT as the requester received it."""

    event_type: int
    transaction_uid: str
    succeeded: list[str]
    failed: dict[str, int]


@dataclass
class Outcome:
    """What a peer saw on the wire for one operation."""

    statuses: list[int] = field(default_factory=list)
    """The DIMSE status of every response, in order (pending ones included)."""
    identifiers: list[dict[str, str]] = field(default_factory=list)
    """C-FIND pending identifiers, keyword -> string value (the keys the test asks about)."""
    received: list[str] = field(default_factory=list)
    """SOP Instance UIDs the peer received (its C-MOVE destination SCP, or C-GET sub-ops)."""
    report: Report | None = None
    user_identity_response: bytes | None = None
    """The server response of the User Identity sub-item in the A-ASSOCIATE-AC, if any."""
    log: str = ""

    @property
    def final(self) -> int:
        """The status of the last response."""
        assert self.statuses, f"no DIMSE response received:\n{self.log}"
        return self.statuses[-1]


class Peer(Protocol):
    """One independent implementation, as the interop tests use it."""

    name: str
    operations: frozenset[str]
    """Which of echo, store, find, move, get, commit, tls (echo, store and find over TLS),
    user_identity (sub-item sent, no response asked) and user_identity_response (asks for one)
    it exercises."""

    def available(self) -> None:
        """Skip (or fail under CI=true) if the implementation is not installed."""

    def echo(self, target: Target, calling: str) -> Outcome:
        """C-ECHO."""
        ...

    def store(self, target: Target, calling: str, files: list[Path]) -> Outcome:
        """C-STORE each file on one association."""
        ...

    def find(self, target: Target, calling: str, study_uid: str) -> Outcome:
        """Study-root C-FIND at STUDY level for one Study Instance UID."""
        ...

    def move(self, target: Target, calling: str, study_uid: str, listen_port: int) -> Outcome:
        """C-MOVE of one study to the peer's own storage SCP (AE title ``calling``)."""
        ...

    def get(self, target: Target, calling: str, study_uid: str) -> Outcome:
        """C-GET of one study, sub-operations on the same association."""
        ...

    def commit(self, target: Target, calling: str, transaction_uid: str,
               refs: list[tuple[str, str]], listen_port: int) -> Outcome:
        """Storage Commitment N-ACTION, then wait for the N-EVENT-REPORT on ``listen_port``."""
        ...
