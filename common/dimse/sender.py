"""C-STORE SCU over one reused association.

The outbound path shared by C-MOVE, the export adapter and DIMSE destinations.

A :class:`StoreSender` keeps one association to one peer open across instances and
re-negotiates only when an instance needs a presentation context the association lacks. Files
are sent without decoding (pynetdicom's chunked send) when the peer accepted their exact
transfer syntax; otherwise they are converted to a syntax it accepted. Every SOP class is also
proposed with the uncompressed syntaxes, so a peer that refuses a compressed syntax still gets
the instance, decompressed.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from common.dicom.transcode import NATIVE_SYNTAXES, convert_file
from common.dimse.sockets import SOCKET_HANDLERS
from common.errors import MalformedDatasetError, PeerRejectedError, PeerUnavailableError
from common.status import DimseStatus

LOG = logging.getLogger(__name__)

#: The most presentation contexts an association may propose (PS3.8 9.3.2.2: odd IDs 1-255).
MAX_CONTEXTS = 128


@dataclass(frozen=True)
class PeerAddress:
    """A DIMSE peer: its AE title, host and port."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class SenderSettings:
    """How associations to peers are requested.

    Attributes:
        calling_aet: our AE title on these associations.
        max_pdu_size: the largest PDU we accept from the peer (0 = unlimited).
        connect_timeout: seconds to open the TCP connection.
        acse_timeout: seconds to wait for the association answer.
        dimse_timeout: seconds to wait for each C-STORE response.
        network_timeout: seconds of silence before the association is aborted.
    """

    calling_aet: str = "DICOMADAPTER"
    max_pdu_size: int = 0
    connect_timeout: float = 10.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 120.0
    network_timeout: float = 120.0


def _context(abstract_syntax: str, transfer_syntaxes: Iterable[str]) -> PresentationContext:
    cx = PresentationContext()
    cx.abstract_syntax = UID(abstract_syntax)
    cx.transfer_syntax = [UID(ts) for ts in transfer_syntaxes]
    return cx


class StoreSender:
    """C-STORE SCU over one reused association to one peer.

    Not thread-safe: give each worker thread its own sender.
    """

    def __init__(self, peer: PeerAddress, settings: SenderSettings) -> None:
        # Sending files in chunks keeps memory constant; it is a documented pynetdicom setting.
        _config.STORE_SEND_CHUNKED_DATASET = True
        self.peer = peer
        self._settings = settings
        self._ae = AE(ae_title=settings.calling_aet)
        self._ae.maximum_pdu_size = settings.max_pdu_size
        self._ae.connection_timeout = settings.connect_timeout
        self._ae.acse_timeout = settings.acse_timeout
        self._ae.dimse_timeout = settings.dimse_timeout
        self._ae.network_timeout = settings.network_timeout
        # SOP class -> transfer syntaxes wanted, in the order first seen (dicts keep order).
        self._wanted: dict[str, dict[str, None]] = {}
        self._assoc: Association | None = None
        # (SOP class, transfer syntax) pairs the current association accepted.
        self._accepted: set[tuple[str, str]] = set()
        # SOP class -> pairs covered by the current negotiation (accepted or refused).
        self._negotiated: set[tuple[str, str]] = set()
        self._message_id = 0

    def __repr__(self) -> str:
        return f"StoreSender({self.peer})"

    # -- negotiation --------------------------------------------------------------------------

    def propose(self, contexts: Iterable[tuple[str, str]]) -> None:
        """Add (SOP class, transfer syntax) pairs to negotiate on the next association."""
        for sop_class, syntax in contexts:
            self._wanted.setdefault(str(sop_class), {})[str(syntax)] = None

    def _requested_contexts(self, first: str) -> list[PresentationContext]:
        """One context per wanted (class, syntax), plus an uncompressed fallback per class.

        The class being sent now comes first so it always fits within the 128 contexts.
        """
        classes = [first, *(c for c in self._wanted if c != first)]
        contexts: list[PresentationContext] = []
        for sop_class in classes:
            wanted = self._wanted[sop_class]
            group = [_context(sop_class, [ts]) for ts in wanted]
            if not all(ts in wanted for ts in NATIVE_SYNTAXES):
                group.append(_context(sop_class, NATIVE_SYNTAXES))
            if len(contexts) + len(group) > MAX_CONTEXTS:
                if sop_class == first:
                    group = group[-(MAX_CONTEXTS - len(contexts)) :]
                else:
                    break
            contexts.extend(group)
        return contexts

    def _open(self, first: str) -> Association:
        self.close()
        contexts = self._requested_contexts(first)
        assoc = self._ae.associate(
            self.peer.host,
            self.peer.port,
            contexts=contexts,
            ae_title=self.peer.ae_title,
            evt_handlers=SOCKET_HANDLERS,  # type: ignore[arg-type]
        )
        if assoc.is_rejected:
            raise PeerRejectedError(f"{self.peer} rejected the association")
        if not assoc.is_established:
            raise PeerUnavailableError(f"cannot open an association to {self.peer}")
        self._assoc = assoc
        self._accepted = {
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
            for cx in assoc.accepted_contexts
        }
        # A pair counts as negotiated when it had a context of its own; one offered only
        # inside the uncompressed fallback context may still be accepted if asked alone.
        self._negotiated = self._accepted | {
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
            for cx in contexts
            if len(cx.transfer_syntax) == 1
        }
        LOG.debug("association to %s: %d contexts accepted", self.peer, len(self._accepted))
        return assoc

    def _association_for(self, sop_class: str, syntax: str) -> Association:
        assoc = self._assoc
        if assoc is not None and assoc.is_established and (sop_class, syntax) in (
            self._negotiated
        ):
            return assoc
        return self._open(sop_class)

    # -- sending ------------------------------------------------------------------------------

    def send(self, path: Path, *, move_originator: tuple[str, int] | None = None) -> DimseStatus:
        """C-STORE one Part 10 file and return the peer's status.

        Raises:
            PeerUnavailableError: the peer cannot be reached or the association failed.
            PeerRejectedError: the association or every context for the SOP class was refused.
            MalformedDatasetError: the file has no usable file meta.
            TranscodeError: the file needs converting and cannot be converted.
        """
        try:
            meta = read_file_meta_info(path)
            sop_class = str(meta.MediaStorageSOPClassUID)
            syntax = str(meta.TransferSyntaxUID)
        except Exception as exc:
            raise MalformedDatasetError(f"{path.name} has no usable file meta: {exc}") from exc
        self.propose([(sop_class, syntax)])
        assoc = self._association_for(sop_class, syntax)
        if (sop_class, syntax) in self._accepted:
            return self._send_file(assoc, path, move_originator)
        accepted = {ts for cls, ts in self._accepted if cls == sop_class}
        # Prefer a native syntax: decoding is lossless and cheaper than re-encoding.
        preference = [*NATIVE_SYNTAXES, *sorted(accepted)]
        target = next((ts for ts in preference if ts in accepted), None)
        if target is None:
            raise PeerRejectedError(
                f"{self.peer} accepted no presentation context for SOP class {sop_class}"
            )
        LOG.info(
            "%s does not accept %s for %s; converting to %s",
            self.peer,
            UID(syntax).name or syntax,
            sop_class,
            UID(target).name or target,
        )
        with tempfile.TemporaryDirectory(prefix="convert-") as folder:
            converted = Path(folder) / "converted.dcm"
            convert_file(path, target, converted)
            return self._send_file(assoc, converted, move_originator)

    def _send_file(
        self, assoc: Association, path: Path, move_originator: tuple[str, int] | None
    ) -> DimseStatus:
        self._message_id = self._message_id % 0xFFFF + 1
        kwargs: dict[str, Any] = {"msg_id": self._message_id}
        if move_originator is not None:
            kwargs["originator_aet"] = move_originator[0]
            kwargs["originator_id"] = move_originator[1]
        try:
            response = assoc.send_c_store(path, **kwargs)
        except (RuntimeError, OSError) as exc:
            self._forget()
            raise PeerUnavailableError(f"C-STORE to {self.peer} failed: {exc}") from exc
        status = response.get("Status") if response is not None else None
        if status is None:
            # An empty response: the DIMSE timeout expired or the association was aborted.
            self._forget()
            raise PeerUnavailableError(f"{self.peer} did not answer the C-STORE")
        return DimseStatus(int(status), str(response.get("ErrorComment", "") or ""))

    def _forget(self) -> None:
        if self._assoc is not None and self._assoc.is_established:
            self._assoc.abort()
        self._assoc = None
        self._accepted = set()
        self._negotiated = set()

    def close(self) -> None:
        """Release the association, if one is open."""
        assoc, self._assoc = self._assoc, None
        if assoc is not None and assoc.is_established:
            assoc.release()
        self._accepted = set()
        self._negotiated = set()
