"""C-STORE SCU over one reused association, on our DIMSE engine.

The outbound path shared by C-MOVE, the export adapter and DIMSE destinations; C-GET sends its
sub-operations on the requesting association through the same :func:`store_file`
(:class:`ChannelSender`).

A :class:`StoreSender` keeps one association to one peer open across instances and
re-negotiates only when an instance needs a presentation context the association lacks. Files
are sent without decoding: the dataset bytes after the file meta stream from the file into
P-DATA-TF fragments of the peer's maximum PDU size (:mod:`common.dimse.fast`). When the peer did
not accept the file's transfer syntax, the file is converted to a syntax it accepted. Every SOP
class is also proposed with the uncompressed syntaxes, so a peer that refuses a compressed
syntax still gets the instance, decompressed.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydicom.uid import UID

from common.dicom.transcode import NATIVE_SYNTAXES, convert_file
from common.dimse.fast.acse import AcceptedContext, ProposedContext, RoleProposal
from common.dimse.fast.commands import CommandSetError, CStoreRsp
from common.dimse.fast.constants import RejectResult
from common.dimse.fast.meta import FileMeta, read_file_meta
from common.dimse.fast.scu import AssociationRejected, RequestorAssociation, Timeouts
from common.dimse.fast.transport import DimseProtocolError, ReleaseRequestedError
from common.dimse.tls import TlsSettings
from common.errors import (
    AssociationRejectedError,
    NoAcceptableContextError,
    PeerRejectedError,
    PeerUnavailableError,
)
from common.status import DimseStatus

LOG = logging.getLogger(__name__)

#: The most presentation contexts an association may propose (PS3.8 9.3.2.2: odd IDs 1-255).
MAX_CONTEXTS = 128
#: The Maximum Length Received we announce when the settings say "unlimited" (0): large PDUs
#: keep the per-PDU cost down, and a few peers mishandle 0.
_DEFAULT_MAX_PDU = 1 << 20


@dataclass(frozen=True)
class PeerAddress:
    """A DIMSE peer: its AE title, host and port, and TLS settings when it speaks DICOM TLS.

    ``tls`` is not part of :meth:`__str__`, so spool queue names derived from it stay stable.
    """

    ae_title: str
    host: str
    port: int
    tls: TlsSettings | None = None

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


def _next_message_id(current: int) -> int:
    """The Message ID after ``current`` (1 to 65535, then 1 again)."""
    return current % 0xFFFF + 1


def _c_store(
    channel: StoreChannel,
    path: Path,
    meta: FileMeta,
    context: AcceptedContext,
    message_id: int,
    move_originator: tuple[str, int] | None,
    peer: str,
) -> DimseStatus:
    """One C-STORE on ``channel``; the peer's status.

    Raises:
        PeerUnavailableError: the association failed during it (it has been aborted).
    """
    try:
        response = channel.send_c_store(path, meta, context, message_id, move_originator)
    except (OSError, DimseProtocolError, ReleaseRequestedError, CommandSetError) as exc:
        raise PeerUnavailableError(f"C-STORE to {peer} failed: {exc}") from exc
    return DimseStatus(response.status, response.error_comment)


class StoreChannel(Protocol):
    """An association C-STOREs can be sent on (requested by us, or a C-GET's requestor)."""

    @property
    def contexts(self) -> Mapping[tuple[str, str], AcceptedContext]:
        """The accepted contexts, by (SOP class, transfer syntax)."""
        ...

    def send_c_store(
        self,
        path: Path,
        meta: FileMeta,
        context: AcceptedContext,
        message_id: int,
        move_originator: tuple[str, int] | None = None,
    ) -> CStoreRsp:
        """C-STORE a Part 10 file's dataset on ``context``."""
        ...


#: Sends a Part 10 file on an accepted context and returns the peer's status.
SendOnContext = Callable[[Path, FileMeta, AcceptedContext], DimseStatus]


def store_file(
    contexts: Mapping[tuple[str, str], AcceptedContext],
    path: Path,
    meta: FileMeta,
    send: SendOnContext,
    peer: str,
) -> DimseStatus:
    """C-STORE one file in its own transfer syntax if accepted, else converted to one that is.

    A native syntax is preferred for the conversion: decoding is lossless and cheaper than
    re-encoding.

    Raises:
        NoAcceptableContextError: no context was accepted for the instance's SOP class.
        TranscodeError: the file needs converting and cannot be converted.
        (and whatever ``send`` raises)
    """
    sop_class, syntax = meta.sop_class_uid, meta.transfer_syntax_uid
    context = contexts.get((sop_class, syntax))
    if context is not None:
        return send(path, meta, context)
    accepted = {ts for cls, ts in contexts if cls == sop_class}
    preference = [*NATIVE_SYNTAXES, *sorted(accepted)]
    target = next((ts for ts in preference if ts in accepted), None)
    if target is None:
        raise NoAcceptableContextError(
            f"{peer} accepted no presentation context for SOP class {sop_class}",
            sop_class_uid=sop_class,
        )
    LOG.info(
        "%s does not accept %s for %s; converting to %s",
        peer,
        UID(syntax).name or syntax,
        sop_class,
        UID(target).name or target,
    )
    with tempfile.TemporaryDirectory(prefix="convert-") as folder:
        converted = Path(folder) / "converted.dcm"
        convert_file(path, target, converted)
        return send(converted, read_file_meta(converted), contexts[(sop_class, target)])


class ChannelSender:
    """C-STOREs on an association someone else opened (a C-GET's requesting association).

    Not thread-safe. The channel's failures become :class:`PeerUnavailableError`.
    """

    def __init__(self, channel: StoreChannel, peer: str) -> None:
        self._channel = channel
        self._peer = peer
        self._message_id = 0

    def send(
        self,
        path: Path,
        *,
        meta: FileMeta | None = None,
        move_originator: tuple[str, int] | None = None,
    ) -> DimseStatus:
        """C-STORE one Part 10 file and return the peer's status (as :meth:`StoreSender.send`)."""

        def on_context(source: Path, meta: FileMeta, context: AcceptedContext) -> DimseStatus:
            self._message_id = _next_message_id(self._message_id)
            return _c_store(
                self._channel, source, meta, context, self._message_id, move_originator,
                self._peer,
            )  # fmt: skip

        return store_file(
            self._channel.contexts,
            path,
            read_file_meta(path) if meta is None else meta,
            on_context,
            self._peer,
        )


def request_association(
    peer: PeerAddress,
    *,
    calling_aet: str,
    contexts: Sequence[ProposedContext],
    max_length: int,
    timeouts: Timeouts,
    roles: Mapping[str, RoleProposal] | None = None,
) -> RequestorAssociation:
    """Open an association to ``peer`` (over DICOM TLS when it has TLS settings).

    The one place where the engine's association failures become :mod:`common.errors`.
    ``max_length`` is our Maximum Length Received; 0 ("unlimited" in the settings) announces
    1 MiB.

    Raises:
        AssociationRejectedError: the peer rejected the association.
        PeerRejectedError: the peer's TLS certificate is not trusted (retrying cannot help).
        PeerUnavailableError: the peer cannot be reached, or broke the protocol or timed out
            while negotiating.
        ConfigError: the TLS settings cannot be loaded.
    """
    try:
        return RequestorAssociation.request(
            peer.host,
            peer.port,
            calling_ae_title=calling_aet,
            called_ae_title=peer.ae_title,
            contexts=contexts,
            max_length=max_length or _DEFAULT_MAX_PDU,
            timeouts=timeouts,
            tls=peer.tls,
            roles=roles,
        )
    except AssociationRejected as exc:
        reject = exc.reject
        raise AssociationRejectedError(
            f"{peer} rejected the association (result {reject.result}, "
            f"source {reject.source}, reason {reject.reason})",
            permanent=reject.result == RejectResult.PERMANENT,
            source=reject.source,
            reason=reject.reason,
        ) from exc
    except ssl.SSLCertVerificationError as exc:
        # An untrusted certificate stays untrusted: not worth retrying.
        raise PeerRejectedError(
            f"{peer}: TLS certificate not trusted ({exc.verify_message})"
        ) from exc
    except (OSError, DimseProtocolError) as exc:
        raise PeerUnavailableError(f"cannot open an association to {peer}: {exc}") from exc


class StoreSender:
    """C-STORE SCU over one reused association to one peer.

    Not thread-safe: give each worker thread its own sender.
    """

    def __init__(self, peer: PeerAddress, settings: SenderSettings) -> None:
        self.peer = peer
        self._settings = settings
        self._timeouts = Timeouts(
            connect=settings.connect_timeout,
            acse=settings.acse_timeout,
            dimse=settings.dimse_timeout,
            network=settings.network_timeout,
        )
        # SOP class -> transfer syntaxes wanted, in the order first seen (dicts keep order).
        self._wanted: dict[str, dict[str, None]] = {}
        self._assoc: RequestorAssociation | None = None
        # (SOP class, transfer syntax) pairs covered by the current negotiation (accepted or
        # refused), so a refused pair does not trigger a new negotiation for every instance.
        self._negotiated: set[tuple[str, str]] = set()
        self._message_id = 0

    def __repr__(self) -> str:
        return f"StoreSender({self.peer})"

    # -- negotiation --------------------------------------------------------------------------

    def propose(self, contexts: Iterable[tuple[str, str]]) -> None:
        """Add (SOP class, transfer syntax) pairs to negotiate on the next association."""
        for sop_class, syntax in contexts:
            self._wanted.setdefault(str(sop_class), {})[str(syntax)] = None

    def _requested_contexts(self, first: str) -> list[ProposedContext]:
        """One context per wanted (class, syntax), plus an uncompressed fallback per class.

        The class being sent now comes first so it always fits within the 128 contexts.
        """
        classes = [first, *(c for c in self._wanted if c != first)]
        groups: list[tuple[str, tuple[str, ...]]] = []
        for sop_class in classes:
            wanted = self._wanted[sop_class]
            group: list[tuple[str, tuple[str, ...]]] = [(sop_class, (ts,)) for ts in wanted]
            if not all(ts in wanted for ts in NATIVE_SYNTAXES):
                group.append((sop_class, tuple(str(ts) for ts in NATIVE_SYNTAXES)))
            if len(groups) + len(group) > MAX_CONTEXTS:
                if sop_class == first:
                    group = group[-(MAX_CONTEXTS - len(groups)) :]
                else:
                    break
            groups.extend(group)
        return [
            ProposedContext(2 * index + 1, abstract, syntaxes)
            for index, (abstract, syntaxes) in enumerate(groups)
        ]

    def _open(self, first: str) -> RequestorAssociation:
        self.close()
        contexts = self._requested_contexts(first)
        settings = self._settings
        assoc = request_association(
            self.peer,
            calling_aet=settings.calling_aet,
            contexts=contexts,
            max_length=settings.max_pdu_size,
            timeouts=self._timeouts,
        )
        self._assoc = assoc
        # A pair counts as negotiated when it had a context of its own; one offered only
        # inside the uncompressed fallback context may still be accepted if asked alone.
        self._negotiated = set(assoc.contexts) | {
            (cx.abstract_syntax, cx.transfer_syntaxes[0])
            for cx in contexts
            if len(cx.transfer_syntaxes) == 1
        }
        LOG.debug("association to %s: %d contexts accepted", self.peer, len(assoc.contexts))
        return assoc

    def open(self) -> None:
        """Open the association now, negotiating every proposed context.

        A C-MOVE learns this way that its destination cannot be reached before any
        sub-operation; :meth:`send` then reuses the association.

        Raises:
            ValueError: nothing was proposed.
            PeerUnavailableError / AssociationRejectedError / PeerRejectedError: as :meth:`send`.
        """
        if not self._wanted:
            raise ValueError("no presentation context proposed")
        self._open(next(iter(self._wanted)))

    def _association_for(self, sop_class: str, syntax: str) -> RequestorAssociation:
        assoc = self._assoc
        if assoc is not None and (sop_class, syntax) in self._negotiated:
            if assoc.is_alive():
                return assoc
            LOG.info("association to %s was closed by the peer; opening a new one", self.peer)
            self._forget()
        return self._open(sop_class)

    # -- sending ------------------------------------------------------------------------------

    def send(
        self,
        path: Path,
        *,
        meta: FileMeta | None = None,
        move_originator: tuple[str, int] | None = None,
    ) -> DimseStatus:
        """C-STORE one Part 10 file and return the peer's status.

        ``meta``: the file's meta header when the caller has read it already (a C-MOVE's
        prefetcher has); else it is read here.

        Raises:
            PeerUnavailableError: the peer cannot be reached or the association failed.
            AssociationRejectedError: the peer rejected the association.
            NoAcceptableContextError: it accepted no context for the instance's SOP class.
            MalformedDatasetError: the file has no usable file meta.
            TranscodeError: the file needs converting and cannot be converted.
        """
        if meta is None:
            meta = read_file_meta(path)
        sop_class, syntax = meta.sop_class_uid, meta.transfer_syntax_uid
        self.propose([(sop_class, syntax)])
        assoc = self._association_for(sop_class, syntax)

        def on_context(source: Path, meta: FileMeta, context: AcceptedContext) -> DimseStatus:
            return self._send_file(assoc, source, meta, context, move_originator)

        return store_file(assoc.contexts, path, meta, on_context, str(self.peer))

    def _send_file(
        self,
        assoc: RequestorAssociation,
        path: Path,
        meta: FileMeta,
        context: AcceptedContext,
        move_originator: tuple[str, int] | None,
    ) -> DimseStatus:
        self._message_id = _next_message_id(self._message_id)
        try:
            return _c_store(
                assoc, path, meta, context, self._message_id, move_originator, str(self.peer)
            )
        except PeerUnavailableError:
            self._forget()  # the association has been aborted; the next send opens a new one
            raise

    def _forget(self) -> None:
        if self._assoc is not None:
            self._assoc.abort()
        self._assoc = None
        self._negotiated = set()

    def close(self) -> None:
        """Release the association, if one is open."""
        assoc, self._assoc = self._assoc, None
        if assoc is not None:
            assoc.release()
        self._negotiated = set()
