"""An association we request: open it; C-STORE, C-ECHO, N-EVENT-REPORT; release or abort.

Everything happens in the caller's thread on one blocking socket with ``TCP_NODELAY``: a
C-STORE is one ``sendall`` of the command and the first batch of dataset fragments (read from
the file into a buffer with room for the headers), then one read of the response.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.dimse.fast.acse import (
    AcceptedContext,
    AssociateAccept,
    AssociateReject,
    ProposedContext,
    RoleProposal,
    decode_associate_ac,
    decode_associate_rj,
    encode_associate_rq,
)
from common.dimse.fast.commands import (
    CEchoRq,
    CEchoRsp,
    CommandSet,
    CommandSetError,
    CStoreRq,
    CStoreRsp,
)
from common.dimse.fast.constants import (
    AbortReason,
    AbortSource,
    CommandField,
    PduType,
)
from common.dimse.fast.meta import FileMeta
from common.dimse.fast.notify import NEventReportRq, NEventReportRsp
from common.dimse.fast.responses import read_response
from common.dimse.fast.transport import (
    DimseProtocolError,
    PduStream,
    abort_pdu,
    max_pdv_data,
    message_pdus,
    pending_bytes,
    raise_for_control_pdu,
    release_pdu,
)
from common.dimse.tls import TlsSettings, client_context
from common.logs import peer_label

LOG = logging.getLogger(__name__)


class AssociationRejected(Exception):
    """The peer answered our A-ASSOCIATE-RQ with an A-ASSOCIATE-RJ."""

    def __init__(self, reject: AssociateReject) -> None:
        super().__init__(
            f"association rejected (result {reject.result}, source {reject.source}, "
            f"reason {reject.reason})"
        )
        self.reject = reject


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for each kind of thing (``None`` waits forever).

    Attributes:
        connect: the TCP connection.
        acse: the answer to an association request or a release request.
        dimse: a response to a DIMSE request.
        network: any single socket write (a peer that stops reading).
    """

    connect: float | None = 10.0
    acse: float | None = 30.0
    dimse: float | None = 120.0
    network: float | None = 120.0


def _connect(
    host: str, port: int, timeout: float | None, tls: TlsSettings | None = None
) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    # Nagle's algorithm would hold each small PDU back for the peer's delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is None:
        return sock
    try:
        # The handshake runs now, under the connect timeout (a silent server cannot stall us).
        return client_context(tls).wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


class RequestorAssociation:
    """An established association we requested. Not thread-safe."""

    def __init__(
        self, stream: PduStream, accept: AssociateAccept, timeouts: Timeouts, peer: str
    ) -> None:
        self._stream = stream
        self._timeouts = timeouts
        self._peer = peer
        self.peer_max_length = accept.max_length
        #: The peer's SCP/SCU Role Selection replies, by SOP class.
        self.roles: Mapping[str, RoleProposal] = accept.roles
        self._fragment = max_pdv_data(accept.max_length)
        #: The accepted contexts, by (abstract syntax, transfer syntax).
        self.contexts: dict[tuple[str, str], AcceptedContext] = {}
        for cx in accept.contexts:
            self.contexts.setdefault((cx.abstract_syntax, cx.transfer_syntax), cx)
        self.is_open = True

    @classmethod
    def request(
        cls,
        host: str,
        port: int,
        *,
        calling_ae_title: str,
        called_ae_title: str,
        contexts: Sequence[ProposedContext],
        max_length: int,
        timeouts: Timeouts,
        tls: TlsSettings | None = None,
        roles: Mapping[str, RoleProposal] | None = None,
    ) -> RequestorAssociation:
        """Connect (over DICOM TLS when ``tls`` is given) and negotiate.

        ``roles`` (by SOP class) are proposed as SCP/SCU Role Selection sub-items. Whatever the
        peer answers, the accepted contexts are usable: the caller decides what a role it did
        not get means (:attr:`roles` holds the answers).

        Raises:
            OSError: the connection failed (refused, unreachable, timed out, reset, TLS
                handshake or certificate verification failed: ``ssl.SSLError``).
            ConfigError: the TLS settings cannot be loaded.
            AssociationRejected: the peer rejected the association.
            DimseProtocolError: the peer answered with something other than AC/RJ, or a
                malformed one (we abort the connection first).
            TimeoutError: no answer within the ACSE timeout.
        """
        peer = peer_label(called_ae_title, host, port)
        sock = _connect(host, port, timeouts.connect, tls)
        stream = PduStream(sock, max_length)
        try:
            sock.settimeout(timeouts.network)
            stream.send(encode_associate_rq(calling_ae_title, called_ae_title, contexts,
                                            max_length, roles))
            sock.settimeout(timeouts.acse)
            pdu_type, body = stream.read_pdu()
            if pdu_type == PduType.ASSOCIATE_AC:
                header = bytes([pdu_type, 0]) + len(body).to_bytes(4, "big")
                accept = decode_associate_ac(header + body, contexts)
                return cls(stream, accept, timeouts, peer)
            if pdu_type == PduType.ASSOCIATE_RJ:
                raise AssociationRejected(decode_associate_rj(body))
            raise_for_control_pdu(pdu_type, body)
            raise AssertionError("unreachable")  # pragma: no cover
        except DimseProtocolError as exc:
            _send_quietly(sock, abort_pdu(AbortSource.SERVICE_PROVIDER, exc.reason))
            sock.close()
            raise
        except BaseException:
            sock.close()
            raise

    def __repr__(self) -> str:
        return f"RequestorAssociation({self._peer})"

    @property
    def fragment_size(self) -> int:
        """The most bytes one PDV carries to this peer."""
        return self._fragment

    def is_alive(self) -> bool:
        """Whether the peer has neither closed the connection nor sent anything unasked.

        A peer may abort or close an idle association at any time; with nobody reading the
        socket between messages we only learn it by looking (without blocking) before reuse.
        Anything readable now (an A-ABORT, an A-RELEASE-RQ, EOF) means the association is over.
        """
        if not self.is_open:
            return False
        if pending_bytes(self._stream.sock):
            return False  # TLS: something already decrypted and waiting
        try:
            readable, _, _ = select.select([self._stream.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def send_c_store(
        self,
        path: Path,
        meta: FileMeta,
        context: AcceptedContext,
        message_id: int,
        move_originator: tuple[str, int] | None = None,
    ) -> CStoreRsp:
        """C-STORE the dataset of a Part 10 file (its bytes after the meta header, as stored).

        Raises:
            OSError: the file or the socket failed (the association is aborted).
            TimeoutError: no response within the DIMSE timeout (aborted).
            DimseProtocolError, PeerAbortedError, ReleaseRequestedError: the peer broke the
                protocol or ended the association (aborted).
        """
        command = CStoreRq.for_file(meta, message_id, move_originator).encode()
        with self._aborting_on_failure():
            self._stream.sock.settimeout(self._timeouts.network)
            self._stream.send_file_dataset(
                context.context_id, command, path, meta.dataset_offset, self._fragment
            )
            rsp = self._read_response(CommandField.C_STORE_RSP, message_id)
            return CStoreRsp.from_command(rsp)

    def c_echo(self, message_id: int, context: AcceptedContext) -> CEchoRsp:
        """C-ECHO on ``context`` (a Verification context).

        Raises:
            as :meth:`send_c_store`.
        """
        with self._aborting_on_failure():
            self._send_message(context, CEchoRq(message_id).encode(), None)
            return CEchoRsp.from_command(self._read_response(CommandField.C_ECHO_RSP,
                                                             message_id))

    def n_event_report(
        self,
        message_id: int,
        context: AcceptedContext,
        event_type_id: int,
        sop_instance_uid: str,
        event_information: bytes | None,
    ) -> NEventReportRsp:
        """Send an N-EVENT-REPORT on ``context`` (for its SOP class) and return the response.

        Args:
            message_id: the request's Message ID.
            context: the accepted context the report goes on; its abstract syntax is the
                Affected SOP Class.
            event_type_id: the Event Type ID.
            sop_instance_uid: the Affected SOP Instance UID.
            event_information: the Event Information dataset, already encoded in the
                context's transfer syntax (None: none).

        Raises:
            as :meth:`send_c_store`.
        """
        command = NEventReportRq(
            message_id=message_id,
            sop_class_uid=context.abstract_syntax,
            sop_instance_uid=sop_instance_uid,
            event_type_id=event_type_id,
            has_event_information=event_information is not None,
        ).encode()
        with self._aborting_on_failure():
            self._send_message(context, command, event_information)
            return NEventReportRsp.from_command(
                self._read_response(CommandField.N_EVENT_REPORT_RSP, message_id)
            )

    @contextlib.contextmanager
    def _aborting_on_failure(self) -> Iterator[None]:
        """Abort the association when an exchange fails; the failure goes on to the caller.

        A malformed command set from the peer is raised as the protocol error it is.
        """
        try:
            yield
        except CommandSetError as exc:
            self.abort(AbortReason.INVALID_PDU_PARAMETER_VALUE)
            raise DimseProtocolError(str(exc), AbortReason.INVALID_PDU_PARAMETER_VALUE) from exc
        except BaseException:
            self.abort()
            raise

    def _send_message(
        self, context: AcceptedContext, command: bytes, dataset: bytes | None
    ) -> None:
        message = message_pdus(context.context_id, command, dataset, self._fragment)
        self._stream.sock.settimeout(self._timeouts.network)
        self._stream.send(message)

    def _read_response(self, field: CommandField, message_id: int) -> CommandSet:
        return read_response(self._stream, field, message_id, self._timeouts.dimse)

    def release(self) -> None:
        """Release the association (A-RELEASE-RQ, wait for A-RELEASE-RP), then close.

        Never raises: a peer that does not answer in time is aborted.
        """
        if not self.is_open:
            return
        sock = self._stream.sock
        try:
            sock.settimeout(self._timeouts.network)
            self._stream.send(release_pdu(PduType.RELEASE_RQ))
            sock.settimeout(self._timeouts.acse)
            while True:
                pdu_type, _body = self._stream.read_pdu()
                if pdu_type == PduType.RELEASE_RP:
                    break
                if pdu_type == PduType.RELEASE_RQ:
                    # A release collision (PS3.8 7.2.2.3): as requestor, answer and wait on.
                    self._stream.send(release_pdu(PduType.RELEASE_RP))
                    continue
                if pdu_type == PduType.ABORT:
                    break
                # P-DATA after our release request: a late message; keep waiting.
        except (OSError, DimseProtocolError) as exc:
            LOG.debug("release of %s failed (%s); aborting", self._peer, exc)
            self.abort()
            return
        self._close()

    def abort(self, reason: AbortReason = AbortReason.NOT_SPECIFIED) -> None:
        """Send an A-ABORT (best effort) and close. Never raises."""
        if not self.is_open:
            return
        source = (
            AbortSource.SERVICE_USER
            if reason == AbortReason.NOT_SPECIFIED
            else AbortSource.SERVICE_PROVIDER
        )
        _send_quietly(self._stream.sock, abort_pdu(source, reason))
        self._close()

    def _close(self) -> None:
        self.is_open = False
        with contextlib.suppress(OSError):  # already gone
            self._stream.sock.close()


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.settimeout(1.0)
        sock.sendall(data)
    except OSError:
        pass  # the peer is gone; nothing left to tell it

