"""An association we accept, served whole in the connection's thread.

:class:`AcceptorAssociation` reads the A-ASSOCIATE-RQ, asks the caller whether to admit it,
negotiates (:mod:`common.dimse.fast.negotiation`: contexts, roles, user identity, window), then
serves C-ECHO, C-STORE (received into memory or a spool file as it arrives), C-FIND, C-MOVE and
C-GET (their responses streamed as the caller produces them, a C-CANCEL-RQ noticed between
them; a C-GET's C-STORE sub-operations sent on this association through
:class:`GetSubOperations`), N-ACTION, release, abort and timeouts. What to do with each request
is the caller's (:class:`AcceptorHandlers`).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

from common.dimse.after_response import defer, response_pending
from common.dimse.fast.acse import (
    AcceptedContext,
    AssociateRequest,
    decode_associate_rq,
    encode_associate_ac,
    encode_associate_rj,
)
from common.dimse.fast.commands import (
    CCancelRq,
    CEchoRq,
    CEchoRsp,
    CFindRq,
    CFindRsp,
    CGetRq,
    CMoveRq,
    CMoveRsp,
    CommandSetError,
    CStoreRq,
    CStoreRsp,
    NActionRq,
    NActionRsp,
    SubOperationCounts,
    decode_command_set,
)
from common.dimse.fast.constants import (
    APPLICATION_CONTEXT_NAME,
    AbortReason,
    CommandField,
    PduType,
    RejectReason,
    RejectResult,
    RejectSource,
)
from common.dimse.fast.limits import (
    DEFAULT_MIN_RECEIVE_RATE,
    MAX_REQUEST_DATASET_LENGTH,
    DeadlineExceededError,
    TransferPace,
)
from common.dimse.fast.meta import FileMeta
from common.dimse.fast.negotiation import negotiate
from common.dimse.fast.receive import receive_dataset, remove_quietly
from common.dimse.fast.responses import OnCancel, read_response
from common.dimse.fast.transport import (
    ConnectionClosedError,
    DimseProtocolError,
    PduStream,
    PeerAbortedError,
    ReleaseRequestedError,
    acceptor_abort_pdu,
    max_pdv_data,
    message_pdus,
    release_pdu,
)
from common.logs import peer_label
from common.status import DimseStatus, instance_too_large_status

LOG = logging.getLogger(__name__)

@dataclass(frozen=True)
class AcceptorPolicy:
    """How the fast SCP answers requests.

    Attributes:
        ae_title: our AE title; requests calling anything else are rejected.
        max_pdu_size: our Maximum Length Received (0 = unlimited).
        acse_timeout / dimse_timeout / network_timeout: seconds (``None`` waits forever) for
            the association request (in total) and the release answer, for the rest of a
            message once it started, and for an idle association between messages.
        min_receive_rate: bytes per second a PDU or message must average once started, with
            ``dimse_timeout`` of slack (:class:`~common.dimse.fast.limits.TransferPace`).
        max_instance_size: the largest C-STORE dataset accepted, in bytes (0 = unlimited). A
            larger one is not written: its remaining fragments are read and dropped and the
            C-STORE is answered with :func:`common.status.instance_too_large_status`; one
            beyond twice the limit aborts the association (the peer is not bounded otherwise).
        served_syntaxes: transfer syntaxes accepted per non-storage SOP class served (Q/R,
            Storage Commitment), in order of preference.
        receive_dir: where C-STORE datasets too large to keep in memory are written as they
            arrive (None: the system's temporary directory); a partial file is deleted when
            its association fails.
    """

    ae_title: str
    max_pdu_size: int
    acse_timeout: float | None
    dimse_timeout: float | None
    network_timeout: float | None
    max_instance_size: int = 0
    served_syntaxes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    min_receive_rate: int = DEFAULT_MIN_RECEIVE_RATE
    receive_dir: Path | None = None

    @property
    def pace(self) -> TransferPace:
        """How fast a PDU or DIMSE message must keep arriving once started."""
        return TransferPace(self.dimse_timeout, float(self.min_receive_rate))


@dataclass(frozen=True)
class QRResponse:
    """One C-FIND/C-MOVE/C-GET response a handler produces (the SCP adds message ID, class).

    Attributes:
        status: the response's status (and error comment).
        counts: the sub-operation counts to include (None: none).
        identifier: an encoded identifier dataset in the context's transfer syntax (a C-FIND
            match, the Failed SOP Instance UID List of a final C-MOVE/C-GET response).
    """

    status: DimseStatus
    counts: SubOperationCounts | None = None
    identifier: bytes | None = None


@dataclass(frozen=True)
class PeerInfo:
    """One end of an association: its AE title and address."""

    ae_title: str
    address: str
    port: int

    @property
    def label(self) -> str:
        """``AE@address:port`` for logs, escaped (:func:`common.logs.peer_label`)."""
        return peer_label(self.ae_title, self.address, self.port)


class AssociationEvent(enum.Enum):
    """Association lifecycle notifications."""

    CONN_OPEN = "conn-open"
    ESTABLISHED = "established"
    REJECTED = "rejected"
    RELEASED = "released"
    ABORTED = "aborted"
    CONN_CLOSE = "conn-close"


@dataclass(frozen=True)
class Admission:
    """The caller's verdict on an association request.

    Attributes:
        rejection: ``(result, source, reason)`` of the A-ASSOCIATE-RJ to answer, or None.
        refused: SOP classes whose contexts are refused to this requester (user rejection).
    """

    rejection: tuple[RejectResult, RejectSource, int] | None = None
    refused: frozenset[str] = frozenset()


class AcceptorHandlers(Protocol):
    """What the SCP calls; implementations must not raise."""

    def admit(self, assoc: AcceptorAssociation, request: AssociateRequest) -> Admission:
        """Whether to accept a request that passed the protocol checks (limits, policy)."""

    def notify(self, event: AssociationEvent, assoc: AcceptorAssociation) -> None:
        """An association lifecycle event."""

    def c_echo(self, assoc: AcceptorAssociation, request: CEchoRq) -> DimseStatus:
        """Answer a C-ECHO."""

    def c_store(
        self,
        assoc: AcceptorAssociation,
        request: CStoreRq,
        context: AcceptedContext,
        spool_path: Path,
        content: bytes | None = None,
    ) -> DimseStatus:
        """Handle a C-STORE whose dataset, as a Part 10 file, is ``content`` or ``spool_path``.

        ``content``: the file's bytes when it is small enough to be kept in memory
        (:data:`~common.dicom.part10.IN_MEMORY_LIMIT`); ``spool_path`` then only names where
        such a file would go: it does not exist. None: the file ``spool_path`` holds it, and
        the handler may move it away.
        """

    def c_move(
        self,
        assoc: AcceptorAssociation,
        request: CMoveRq,
        context: AcceptedContext,
        identifier: bytes,
        is_cancelled: Callable[[], bool],
    ) -> Iterator[QRResponse]:
        """Serve a C-MOVE: yield its responses, the final one last.

        ``is_cancelled`` becomes True once a C-CANCEL-RQ for it arrived (or the requestor went
        away); the handler then ends with a Cancel response. Closing the generator early must
        release what it holds.
        """

    def c_find(
        self,
        assoc: AcceptorAssociation,
        request: CFindRq,
        context: AcceptedContext,
        identifier: bytes,
        is_cancelled: Callable[[], bool],
    ) -> Iterator[QRResponse]:
        """Serve a C-FIND: as :meth:`c_move`."""

    def c_get(
        self,
        assoc: AcceptorAssociation,
        request: CGetRq,
        context: AcceptedContext,
        identifier: bytes,
        is_cancelled: Callable[[], bool],
        sub_operations: GetSubOperations,
    ) -> Iterator[QRResponse]:
        """Serve a C-GET: as :meth:`c_move`, its C-STOREs sent through ``sub_operations``."""

    def n_action(
        self,
        assoc: AcceptorAssociation,
        request: NActionRq,
        context: AcceptedContext,
        information: bytes | None,
    ) -> DimseStatus:
        """Answer an N-ACTION; ``information``: the encoded Action Information, if any."""


class _Ended(Exception):
    """The association is over (released, aborted or dropped); unwinds the serve loop."""


class _Cancelled(Exception):
    """Marks a C-MOVE cancelled by a C-CANCEL-RQ (never raised)."""


class AcceptorAssociation:
    """One association we accepted, served in the thread that calls :meth:`serve`.

    :meth:`abort` may be called from any thread (shutdown); everything else belongs to the
    serving thread.
    """

    def __init__(
        self,
        sock: socket.socket,
        address: tuple[str, int],
        local: tuple[str, int],
        policy: AcceptorPolicy,
        handlers: AcceptorHandlers,
    ) -> None:
        self._sock = sock
        self._policy = policy
        self._handlers = handlers
        self._stream = PduStream(sock, policy.max_pdu_size, policy.pace)
        self._send_lock = threading.Lock()
        self._closed = False
        # Shutdown: _busy is set while a request is being received or handled; a stop request
        # then waits for its response to go out (so the SCU learns the request's fate).
        self._state_lock = threading.Lock()
        self._busy = False
        self._stop_requested = False
        self._stop_after_next = False
        self.requestor = PeerInfo("", address[0], address[1])
        self.acceptor = PeerInfo(policy.ae_title, local[0], local[1])
        #: The request has been read and answered (accepted or rejected).
        self.negotiated = False
        self.is_established = False
        self.contexts: dict[int, AcceptedContext] = {}
        #: SOP classes for which the requestor took the SCP role (C-GET sub-operations).
        self.requestor_scp: frozenset[str] = frozenset()
        self._fragment = max_pdv_data(0)

    @property
    def socket(self) -> socket.socket:
        """The association's connection (to inspect; reading or writing it is the engine's)."""
        return self._sock

    def __repr__(self) -> str:
        return f"AcceptorAssociation({self.requestor.label})"

    # -- thread-safe controls -----------------------------------------------------------------

    def abort(self, reason: AbortReason = AbortReason.NOT_SPECIFIED) -> None:
        """Send an A-ABORT and close the connection (wakes the serving thread)."""
        self._send_final(acceptor_abort_pdu(reason))

    def disconnect(self) -> None:
        """Close the connection without a PDU (for one that has not sent its request yet)."""
        self._shutdown()

    def request_stop(self) -> None:
        """Ask the association to end at shutdown, after answering one more request.

        The request in progress (if any) finishes normally; the next request that arrives is
        answered too (the service refuses it while draining: the SCU learns its fate instead of
        losing it to an abort), and then the association is aborted. The caller aborts
        associations that stay idle (:attr:`is_busy`) for too long.
        """
        with self._state_lock:
            self._stop_requested = True
            # A request being handled now started before the stop: it does not count.
            self._stop_after_next = self._busy

    @property
    def is_busy(self) -> bool:
        """Whether a request is being received, handled or answered right now."""
        with self._state_lock:
            return self._busy

    def _set_busy(self, busy: bool) -> None:
        with self._state_lock:
            self._busy = busy
            end = False
            if self._stop_requested and not busy:
                if self._stop_after_next:
                    self._stop_after_next = False  # answered the in-flight one; one more
                else:
                    end = True
        if end:
            self._end_with_abort(AbortReason.NOT_SPECIFIED)

    def _send_final(self, pdu: bytes) -> None:
        # The lock keeps an abort from another thread out of the middle of a message.
        if not self._send_lock.acquire(timeout=5.0):
            LOG.debug("%r: sender busy; closing without an A-ABORT", self)
            self._shutdown()
            return
        try:
            if not self._closed:
                try:
                    self._sock.settimeout(1.0)
                    self._sock.sendall(pdu)
                except OSError:
                    pass  # the peer is gone; nothing left to tell it
        finally:
            self._send_lock.release()
        self._shutdown()

    def _shutdown(self) -> None:
        self._closed = True
        self.is_established = False
        with contextlib.suppress(OSError):  # already disconnected
            self._sock.shutdown(socket.SHUT_RDWR)

    @contextlib.contextmanager
    def _sending(self) -> Iterator[PduStream]:
        """The stream, to write one whole message or PDU (no abort gets into its middle)."""
        with self._send_lock:
            if self._closed:
                raise ConnectionClosedError("association already closed")
            self._sock.settimeout(self._policy.network_timeout)
            yield self._stream

    def _send(self, data: bytes) -> None:
        with self._sending() as stream:
            stream.send(data)

    def _send_message(self, context_id: int, command: bytes, dataset: bytes | None = None) -> None:
        self._send(message_pdus(context_id, command, dataset, self._fragment))

    # -- serving ------------------------------------------------------------------------------

    def serve(self) -> None:
        """Negotiate and serve the association until it ends; never raises."""
        self._handlers.notify(AssociationEvent.CONN_OPEN, self)
        try:
            if self._negotiate():
                self._message_loop()
        except _Ended:
            pass
        except Exception:  # a bug here must cost one association, not the listener
            LOG.exception("%r: internal error; aborting", self)
            self._end_with_abort(AbortReason.NOT_SPECIFIED)
        finally:
            self._shutdown()
            with contextlib.suppress(OSError):
                self._sock.close()
            self._handlers.notify(AssociationEvent.CONN_CLOSE, self)

    def _negotiate(self) -> bool:
        policy = self._policy
        self._sock.settimeout(policy.acse_timeout)
        if policy.acse_timeout is not None:
            self._stream.deadline = time.monotonic() + policy.acse_timeout
        try:
            pdu_type, body = self._stream.read_pdu()
            if pdu_type != PduType.ASSOCIATE_RQ:
                raise DimseProtocolError("expected an A-ASSOCIATE-RQ", AbortReason.UNEXPECTED_PDU)
            header = bytes([pdu_type, 0]) + len(body).to_bytes(4, "big")
            request = decode_associate_rq(header + body)
        except DimseProtocolError as exc:
            LOG.warning("%r: bad association request (%s); aborting", self, exc)
            self._end_with_abort(exc.reason)
            return False
        except (OSError, TimeoutError) as exc:
            LOG.info("%r: connection lost before the association request: %s", self, exc)
            return False
        finally:
            self._stream.deadline = None
        self.requestor = PeerInfo(
            request.calling_ae_title, self.requestor.address, self.requestor.port
        )
        rejection = self._rejection(request)
        admission = Admission()
        if rejection is None:
            admission = self._handlers.admit(self, request)
            rejection = admission.rejection
        self.negotiated = True
        if rejection is not None:
            result, source, reason = rejection
            LOG.warning(
                "rejecting association from %r (result %d, source %d, reason %d)",
                self, result, source, reason,
            )
            self._send_final(encode_associate_rj(result, source, reason))
            self._handlers.notify(AssociationEvent.REJECTED, self)
            return False
        answer = negotiate(request, policy.served_syntaxes, admission.refused)
        self.contexts = dict(answer.contexts)
        self.requestor_scp = answer.requestor_scp
        self._fragment = max_pdv_data(request.max_length)
        # Established before the A-ASSOCIATE-AC leaves: the requestor may ask for a second
        # association the moment it has the AC, and the association limits count this one.
        self.is_established = True
        try:
            self._send(encode_associate_ac(
                request, answer.results, policy.max_pdu_size, answer.replies
            ))
        except OSError as exc:
            self.is_established = False
            LOG.info("%r: connection lost while accepting: %s", self, exc)
            return False
        self._handlers.notify(AssociationEvent.ESTABLISHED, self)
        return True

    def _rejection(
        self, request: AssociateRequest
    ) -> tuple[RejectResult, RejectSource, int] | None:
        """The protocol's reasons to reject (the caller's: :meth:`AcceptorHandlers.admit`)."""
        if not request.supports_protocol_version:
            return (
                RejectResult.PERMANENT,
                RejectSource.SERVICE_PROVIDER_ACSE,
                RejectReason.PROTOCOL_VERSION_NOT_SUPPORTED,
            )
        if request.application_context_name != APPLICATION_CONTEXT_NAME:
            return (
                RejectResult.PERMANENT,
                RejectSource.SERVICE_USER,
                RejectReason.APPLICATION_CONTEXT_NOT_SUPPORTED,
            )
        if request.called_ae_title != self._policy.ae_title.strip():
            return (
                RejectResult.PERMANENT,
                RejectSource.SERVICE_USER,
                RejectReason.CALLED_AE_NOT_RECOGNIZED,
            )
        return None

    def _message_loop(self) -> None:
        policy = self._policy
        while True:
            try:
                self._sock.settimeout(policy.network_timeout)
                context_id, raw = self._stream.read_command()
                self._set_busy(True)
                self._sock.settimeout(policy.dimse_timeout)
                command = decode_command_set(raw)
                with contextlib.suppress(CommandSetError):  # refused below, if it matters
                    if not command.has_dataset:
                        self._stream.end_message()  # the request is complete
                context = self.contexts.get(context_id)
                if context is None:
                    raise DimseProtocolError(
                        f"message on unaccepted context {context_id}",
                        AbortReason.INVALID_PDU_PARAMETER_VALUE,
                    )
                field = command.command_field
                if field == CommandField.C_STORE_RQ:
                    self._c_store(CStoreRq.from_command(command), context,
                                  command.has_dataset)
                elif field == CommandField.C_ECHO_RQ:
                    if command.has_dataset:
                        self._stream.read_dataset(context_id, lambda _data: None)
                    self._c_echo(CEchoRq.from_command(command), context)
                elif (
                    field in _QR_REQUESTS
                    and context.abstract_syntax in self._policy.served_syntaxes
                ):
                    query = _QR_REQUESTS[field].from_command(command)
                    self._query_retrieve(query, context, command.has_dataset)
                elif (
                    field == CommandField.N_ACTION_RQ
                    and context.abstract_syntax in self._policy.served_syntaxes
                ):
                    self._n_action(NActionRq.from_command(command), context)
                elif field == CommandField.C_CANCEL_RQ:
                    # For a request already answered (as pynetdicom: nothing to do).
                    LOG.debug("%r: C-CANCEL-RQ for no request in progress; ignored", self)
                else:
                    raise DimseProtocolError(
                        f"unsupported command 0x{field:04X}",
                        AbortReason.UNRECOGNIZED_PDU_PARAMETER,
                    )
                self._set_busy(False)
            except ReleaseRequestedError:
                self._release()
                return
            except PeerAbortedError:
                LOG.info("%r: aborted by the peer", self)
                self._ended(AssociationEvent.ABORTED)
            except CommandSetError as exc:
                LOG.warning("%r: malformed command set (%s); aborting", self, exc)
                self._end_with_abort(AbortReason.INVALID_PDU_PARAMETER_VALUE)
            except DimseProtocolError as exc:
                LOG.warning("%r: protocol error (%s); aborting", self, exc)
                self._end_with_abort(exc.reason)
            except DeadlineExceededError as exc:
                LOG.warning("%r: %s (under %d bytes/s, or silent for %ss); aborting",
                            self, exc, policy.min_receive_rate, policy.dimse_timeout)
                self._end_with_abort(AbortReason.NOT_SPECIFIED)
            except TimeoutError:
                LOG.warning("%r: no message within the timeout; aborting", self)
                self._end_with_abort(AbortReason.NOT_SPECIFIED)
            except OSError as exc:  # reset, closed (also by our own abort at shutdown)
                LOG.info("%r: connection lost: %s", self, exc or type(exc).__name__)
                self._ended(AssociationEvent.ABORTED)

    def _ended(self, event: AssociationEvent) -> None:
        self.is_established = False
        self._handlers.notify(event, self)
        raise _Ended

    def _end_with_abort(self, reason: AbortReason) -> None:
        was_established = self.is_established
        self.abort(reason)
        if was_established:
            self._ended(AssociationEvent.ABORTED)
        raise _Ended

    def _release(self) -> None:
        # Not established from here on, before the requestor reads our answer: it may ask for
        # another association at once, which the association limits must not count this one
        # against (it did, now and then, under load).
        self.is_established = False
        with contextlib.suppress(OSError):  # the requestor left without waiting for our answer
            self._send(release_pdu(PduType.RELEASE_RP))
        self._handlers.notify(AssociationEvent.RELEASED, self)

    def _c_echo(self, request: CEchoRq, context: AcceptedContext) -> None:
        status = self._handlers.c_echo(self, request)
        response = CEchoRsp(request.message_id, status.code, context.abstract_syntax,
                            status.comment)
        self._send_message(context.context_id, response.encode())

    def _c_store(self, request: CStoreRq, context: AcceptedContext, has_dataset: bool) -> None:
        if not has_dataset:
            raise DimseProtocolError(
                "C-STORE-RQ without a dataset", AbortReason.INVALID_PDU_PARAMETER_VALUE
            )
        policy = self._policy
        spooled = receive_dataset(
            self._stream, context, request, policy.receive_dir, policy.max_instance_size
        )
        if spooled is None:
            limit = self._policy.max_instance_size
            LOG.warning("%r: C-STORE of %s refused: dataset larger than %d bytes",
                        self, request.sop_instance_uid, limit)
            status = instance_too_large_status(limit)
            response = CStoreRsp(request.message_id, request.sop_class_uid,
                                 request.sop_instance_uid, status.code, status.comment)
            self._send_message(context.context_id, response.encode())
            return
        path, content = spooled
        # The handler's bookkeeping (log line, metrics) waits until the response is out.
        with response_pending():
            if content is None:
                # Whatever happens; the handler may have moved the file into a queue already.
                defer(partial(remove_quietly, path))
            status = self._handlers.c_store(self, request, context, path, content)
            response = CStoreRsp(
                request.message_id,
                request.sop_class_uid,
                request.sop_instance_uid,
                status.code,
                status.comment,
            )
            self._send_message(context.context_id, response.encode())

    def _read_identifier(self, context: AcceptedContext, what: str) -> bytes:
        """The dataset that follows a request, up to :data:`MAX_REQUEST_DATASET_LENGTH` bytes."""
        parts: list[bytes] = []
        size = 0

        def collect(data: memoryview) -> None:
            nonlocal size
            size += len(data)
            if size > MAX_REQUEST_DATASET_LENGTH:
                raise DimseProtocolError(
                    f"{what} too large", AbortReason.INVALID_PDU_PARAMETER_VALUE
                )
            parts.append(bytes(data))

        self._stream.read_dataset(context.context_id, collect)
        return b"".join(parts)

    def _n_action(self, request: NActionRq, context: AcceptedContext) -> None:
        information = (
            self._read_identifier(context, "action information") if request.has_dataset else None
        )
        status = self._handlers.n_action(self, request, context, information)
        response = NActionRsp(
            request.message_id,
            request.sop_class_uid or context.abstract_syntax,
            request.sop_instance_uid,
            request.action_type_id,
            status.code,
            status.comment,
        )
        self._send_message(context.context_id, response.encode())

    def _query_retrieve(
        self, request: CMoveRq | CFindRq, context: AcceptedContext, has_dataset: bool
    ) -> None:
        """Serve a C-FIND, C-MOVE or C-GET: stream the handler's responses, watch for C-CANCEL."""
        if not has_dataset:
            raise DimseProtocolError(
                "request without an identifier", AbortReason.INVALID_PDU_PARAMETER_VALUE
            )
        identifier = self._read_identifier(context, "request identifier")
        interrupted: list[BaseException] = []

        def cancel_seen(cancel: CCancelRq, context_id: int) -> bool:
            if cancel.message_id_being_responded_to == request.message_id:
                LOG.info("%r: C-CANCEL-RQ for request %d", self, request.message_id)
                interrupted.append(_Cancelled())
                return True
            LOG.debug("%r: C-CANCEL-RQ on context %d for another request; ignored",
                      self, context_id)
            return False

        def is_cancelled() -> bool:
            """Look for a C-CANCEL-RQ (or the requestor's departure) without waiting."""
            if interrupted:
                return True
            try:
                while self._stream.has_input():
                    context_id, raw = self._stream.read_command()
                    command = decode_command_set(raw)
                    self._stream.end_message()
                    if command.command_field != CommandField.C_CANCEL_RQ:
                        raise DimseProtocolError(
                            "another request while a C-FIND/C-MOVE/C-GET is in progress",
                            AbortReason.UNEXPECTED_PDU,
                        )
                    if cancel_seen(CCancelRq.from_command(command), context_id):
                        return True
            except (ConnectionError, ReleaseRequestedError, DimseProtocolError, CommandSetError,
                    TimeoutError, OSError) as exc:
                interrupted.append(exc)  # re-raised once the handler has cleaned up
                return True
            return False

        handlers = self._handlers
        if isinstance(request, CGetRq):
            sub_operations = GetSubOperations(
                self, partial(self._store_sub_operation, on_cancel=cancel_seen), interrupted
            )
            responses = handlers.c_get(
                self, request, context, identifier, is_cancelled, sub_operations
            )
        elif isinstance(request, CMoveRq):
            responses = handlers.c_move(self, request, context, identifier, is_cancelled)
        else:
            responses = handlers.c_find(self, request, context, identifier, is_cancelled)
        try:
            for response in responses:
                gone = [exc for exc in interrupted if not isinstance(exc, _Cancelled)]
                if gone:
                    raise gone[0]
                self._send_qr_response(request, context, response)
        finally:
            close = getattr(responses, "close", None)
            if close is not None:
                close()

    def _send_qr_response(
        self, request: CMoveRq | CFindRq, context: AcceptedContext, response: QRResponse
    ) -> None:
        status = response.status
        sop_class = request.sop_class_uid or context.abstract_syntax
        has_identifier = response.identifier is not None
        command = (
            CMoveRsp(
                request.message_id, sop_class, status.code, response.counts, status.comment,
                has_identifier=has_identifier,
                command_field=(
                    CommandField.C_GET_RSP
                    if isinstance(request, CGetRq)
                    else CommandField.C_MOVE_RSP
                ),
            ).encode()
            if isinstance(request, (CMoveRq, CGetRq))
            else CFindRsp(
                request.message_id, sop_class, status.code, status.comment,
                has_identifier=has_identifier,
            ).encode()
        )
        self._send_message(context.context_id, command, response.identifier)

    def _store_sub_operation(
        self,
        path: Path,
        meta: FileMeta,
        context: AcceptedContext,
        message_id: int,
        move_originator: tuple[str, int] | None,
        on_cancel: OnCancel,
    ) -> CStoreRsp:
        """C-STORE a Part 10 file's dataset to the requestor (a C-GET sub-operation).

        A C-CANCEL-RQ that arrives before the C-STORE-RSP goes to ``on_cancel``.
        """
        command = CStoreRq.for_file(meta, message_id, move_originator).encode()
        with self._sending() as stream:
            stream.send_file_dataset(
                context.context_id, command, path, meta.dataset_offset, self._fragment
            )
        response = read_response(
            self._stream, CommandField.C_STORE_RSP, message_id, self._policy.dimse_timeout,
            on_cancel,
        )
        return CStoreRsp.from_command(response)


#: The Q/R requests the SCP serves, by Command Field.
_QR_REQUESTS: dict[int, type[CFindRq] | type[CMoveRq]] = {
    CommandField.C_FIND_RQ: CFindRq,
    CommandField.C_MOVE_RQ: CMoveRq,
    CommandField.C_GET_RQ: CGetRq,
}


class GetSubOperations:
    """The C-STORE sub-operations of one C-GET, sent on the requesting association.

    Has the shape of :class:`common.dimse.fast.scu.RequestorAssociation` for sending
    (:attr:`contexts`, :meth:`send_c_store`), so one C-STORE sender serves both C-MOVE's
    outbound associations and C-GET (:mod:`common.dimse.sender`). While it waits for a
    C-STORE-RSP, a C-CANCEL-RQ for the C-GET is noted (the C-GET then ends with Cancel).
    A failure of the association is also recorded for the C-GET, which ends with it.
    """

    def __init__(
        self,
        assoc: AcceptorAssociation,
        store: Callable[
            [Path, FileMeta, AcceptedContext, int, tuple[str, int] | None], CStoreRsp
        ],
        interrupted: list[BaseException],
    ) -> None:
        """``store`` sends one C-STORE-RQ on ``assoc`` and reads its response."""
        self._store = store
        self._interrupted = interrupted
        #: The requestor, for logs.
        self.peer = assoc.requestor.label
        #: The contexts the requestor accepted the SCP role on, by (SOP class, syntax).
        self.contexts: dict[tuple[str, str], AcceptedContext] = {}
        for cx in assoc.contexts.values():
            if cx.abstract_syntax in assoc.requestor_scp:
                self.contexts.setdefault((cx.abstract_syntax, cx.transfer_syntax), cx)

    def send_c_store(
        self,
        path: Path,
        meta: FileMeta,
        context: AcceptedContext,
        message_id: int,
        move_originator: tuple[str, int] | None = None,
    ) -> CStoreRsp:
        """C-STORE the dataset of a Part 10 file to the requestor; returns its response.

        Raises:
            OSError, TimeoutError, DimseProtocolError, ReleaseRequestedError,
            CommandSetError: the association failed (recorded: the C-GET ends).
        """
        try:
            return self._store(path, meta, context, message_id, move_originator)
        except (OSError, DimseProtocolError, ReleaseRequestedError, CommandSetError) as exc:
            self._interrupted.append(exc)
            raise
