"""Association PDUs: A-ASSOCIATE-RQ/AC/RJ built and read through pynetdicom's PDU classes.

These happen once per association, so pynetdicom's general encoders cost nothing that matters
and handle every variable item correctly; A-ASSOCIATE-RJ is ten fixed bytes and is done here.

An A-ASSOCIATE-RQ's AE titles padded with NUL bytes are read as the titles they spell
(:func:`canonical_associate_rq`), and where a requestor's first choice for a context is
implicit VR little endian while it also offers explicit VR little endian, explicit comes first
(:func:`prefer_explicit_vr`), so that the first proposed syntax, which the acceptor takes,
keeps the VRs of private elements.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
    UserIdentityNegotiation,
)
from pynetdicom.presentation import PresentationContext

from common.dicom.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from common.dimse.ae_title import ae_title_from_field, space_padded
from common.dimse.fast.constants import (
    APPLICATION_CONTEXT_NAME,
    AbortReason,
    ContextResult,
    PduType,
    RejectResult,
    RejectSource,
)
from common.dimse.fast.transport import DimseProtocolError

_REJECT = struct.Struct(">BBIBBBB")
#: PS3.8 9.3.2: bit 0 of the Protocol Version field is version 1, the only one there is.
_PROTOCOL_VERSION_1 = 0x0001
#: PS3.8 table 9-11: where the Called and Calling AE Title fields of an A-ASSOCIATE-RQ are.
_AE_TITLE_FIELDS = (("called", 10, 26), ("calling", 26, 42))


@dataclass(frozen=True)
class ProposedContext:
    """A presentation context from an A-ASSOCIATE-RQ."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class RoleProposal:
    """An SCP/SCU Role Selection sub-item (PS3.7 D.3.3.4): roles proposed for one SOP class."""

    scu: bool
    scp: bool


@dataclass(frozen=True)
class UserIdentityProposal:
    """A User Identity sub-item (PS3.7 D.3.3.7), without its credentials.

    Nothing checks them, and they must never reach a log.

    Attributes:
        identity_type: 1 username, 2 username and passcode, 3 Kerberos, 4 SAML, 5 JWT.
        response_requested: the requestor asks for a positive response (a server response
            sub-item in the A-ASSOCIATE-AC).
    """

    identity_type: int
    response_requested: bool


@dataclass(frozen=True)
class AssociateRequest:
    """What an A-ASSOCIATE-RQ asks for.

    Attributes:
        roles: the SCP/SCU Role Selection sub-items, by SOP class.
        user_identity: the User Identity sub-item, if any.
        async_window: the Asynchronous Operations Window sub-item (invoked, performed), if any.
    """

    calling_ae_title: str
    called_ae_title: str
    application_context_name: str
    protocol_version: int
    contexts: tuple[ProposedContext, ...]
    max_length: int
    roles: Mapping[str, RoleProposal] = field(default_factory=dict)
    user_identity: UserIdentityProposal | None = None
    async_window: tuple[int, int] | None = None

    @property
    def supports_protocol_version(self) -> bool:
        """Whether version 1 of the protocol is among those proposed."""
        return bool(self.protocol_version & _PROTOCOL_VERSION_1)


@dataclass(frozen=True)
class AcceptedContext:
    """A presentation context the acceptor accepted: its ID, class and one transfer syntax."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str


@dataclass(frozen=True)
class AssociateAccept:
    """What an A-ASSOCIATE-AC granted (contexts resolved against our request).

    Attributes:
        roles: the acceptor's SCP/SCU Role Selection replies (PS3.7 D.3.3.4); a SOP class
            without one keeps the default roles (we are the SCU).
    """

    max_length: int
    contexts: tuple[AcceptedContext, ...]
    roles: Mapping[str, RoleProposal] = field(default_factory=dict)


@dataclass(frozen=True)
class AssociateReject:
    """An A-ASSOCIATE-RJ's result, source and reason/diagnostic."""

    result: int
    source: int
    reason: int


def _user_information(max_length: int) -> list[object]:
    length = MaximumLengthNotification()
    length.maximum_length_received = max_length
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    return [length, implementation, version]


def encode_associate_rq(
    calling_ae_title: str,
    called_ae_title: str,
    contexts: Sequence[ProposedContext],
    max_length: int,
    roles: Mapping[str, RoleProposal] | None = None,
) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing ``contexts`` (and the SCP/SCU ``roles`` by SOP class)."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(APPLICATION_CONTEXT_NAME)
    primitive.calling_ae_title = calling_ae_title
    primitive.called_ae_title = called_ae_title
    items = []
    for proposed in contexts:
        cx = PresentationContext()
        cx.context_id = proposed.context_id
        cx.abstract_syntax = UID(proposed.abstract_syntax)
        cx.transfer_syntax = [UID(ts) for ts in proposed.transfer_syntaxes]
        items.append(cx)
    primitive.presentation_context_definition_list = items
    user_items = _user_information(max_length)
    user_items += [_role_item(uid, role.scu, role.scp) for uid, role in (roles or {}).items()]
    primitive.user_information = user_items  # type: ignore[assignment]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def prefer_explicit_vr(proposed: Sequence[str]) -> tuple[str, ...]:
    """The transfer syntaxes of a proposed context in the order the acceptors consider them.

    The requestor's order, except that when its first choice is implicit VR little endian and
    it also offers explicit VR little endian, explicit comes first: both are uncompressed, and
    only explicit VR keeps the VRs of private elements (implicit VR data read elsewhere shows
    them as UN). Any other first choice (compressed, deflated, big endian, private) is kept:
    PS3.8 7.1.1.13 gives the order no meaning, and the adapter does not second-guess a
    requestor that prefers to send its data as it is.
    """
    if (
        proposed
        and proposed[0] == ImplicitVRLittleEndian
        and ExplicitVRLittleEndian in proposed
    ):
        first = proposed.index(ExplicitVRLittleEndian)
        return (proposed[first], *proposed[:first], *proposed[first + 1 :])
    return tuple(proposed)


def canonical_associate_rq(pdu_bytes: bytes) -> bytes:
    """An A-ASSOCIATE-RQ PDU with spaces for trailing NUL padding in its AE title fields.

    The same length as ``pdu_bytes`` (:func:`~common.dimse.ae_title.space_padded`); whatever
    else it holds is left as it came, for :func:`decode_associate_rq` to read or refuse.
    """
    data = bytearray(pdu_bytes)
    for _, start, end in _AE_TITLE_FIELDS:
        if len(data) >= end:
            data[start:end] = space_padded(bytes(data[start:end]))
    return bytes(data)


def _check_ae_titles(pdu_bytes: bytes) -> None:
    """Refuse AE title fields that spell no AE title, naming them escaped.

    Checked here rather than left to pynetdicom, whose error (logged at ERROR as well as
    raised) quotes the raw bytes.
    """
    for name, start, end in _AE_TITLE_FIELDS:
        field = pdu_bytes[start:end]
        if len(field) == end - start and ae_title_from_field(field) is None:
            raise DimseProtocolError(
                f"{name} AE title {field!r} is not an AE title",
                AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )


def decode_associate_rq(pdu_bytes: bytes) -> AssociateRequest:
    """Read a whole A-ASSOCIATE-RQ PDU (header included).

    AE titles padded with NULs read as the titles they spell (:func:`canonical_associate_rq`);
    each context's transfer syntaxes come in :func:`prefer_explicit_vr` order.

    Raises:
        DimseProtocolError: the PDU cannot be decoded, or an AE title field holds no AE title.
    """
    pdu_bytes = canonical_associate_rq(pdu_bytes)
    _check_ae_titles(pdu_bytes)
    pdu = A_ASSOCIATE_RQ()
    try:
        pdu.decode(pdu_bytes)
        primitive = pdu.to_primitive()
        contexts = tuple(
            ProposedContext(
                context_id=int(cx.context_id or 0),
                abstract_syntax=str(cx.abstract_syntax or ""),
                transfer_syntaxes=prefer_explicit_vr([str(ts) for ts in cx.transfer_syntax]),
            )
            for cx in primitive.presentation_context_definition_list
        )
        max_length = primitive.maximum_length_received
        roles: dict[str, RoleProposal] = {}
        identity: UserIdentityProposal | None = None
        window: tuple[int, int] | None = None
        for item in primitive.user_information:
            if isinstance(item, SCP_SCU_RoleSelectionNegotiation):
                roles[str(item.sop_class_uid or "")] = RoleProposal(
                    bool(item.scu_role), bool(item.scp_role)
                )
            elif isinstance(item, UserIdentityNegotiation):
                identity = UserIdentityProposal(
                    int(item.user_identity_type or 0), bool(item.positive_response_requested)
                )
            elif isinstance(item, AsynchronousOperationsWindowNegotiation):
                window = (
                    int(item.maximum_number_operations_invoked),
                    int(item.maximum_number_operations_performed),
                )
        return AssociateRequest(
            calling_ae_title=str(primitive.calling_ae_title or "").strip(),
            called_ae_title=str(primitive.called_ae_title or "").strip(),
            application_context_name=str(primitive.application_context_name or ""),
            protocol_version=int(pdu.protocol_version),
            contexts=contexts,
            max_length=int(max_length) if max_length is not None else 0,
            roles=roles,
            user_identity=identity,
            async_window=window,
        )
    except DimseProtocolError:
        raise
    except Exception as exc:  # pynetdicom raises assorted errors on malformed items
        raise DimseProtocolError(
            f"malformed A-ASSOCIATE-RQ: {exc}", AbortReason.INVALID_PDU_PARAMETER_VALUE
        ) from exc


@dataclass(frozen=True)
class NegotiationReplies:
    """The User Information sub-items an A-ASSOCIATE-AC answers with, beyond notifications.

    Attributes:
        roles: ``(SOP class, SCU role, SCP role)`` per role selection answered (PS3.7
            D.3.3.4): the roles the requestor may take.
        user_identity_response: the server response to send (PS3.7 D.3.3.7.2; empty for
            username and passcode identities); None: no User Identity sub-item.
        async_window: ``(invoked, performed)`` to answer (PS3.7 D.3.3.3); None: no sub-item.
    """

    roles: Sequence[tuple[str, bool, bool]] = ()
    user_identity_response: bytes | None = None
    async_window: tuple[int, int] | None = None


def _role_item(sop_class: str, scu: bool, scp: bool) -> SCP_SCU_RoleSelectionNegotiation:
    """An SCP/SCU Role Selection sub-item, proposed (A-ASSOCIATE-RQ) or answered (-AC)."""
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = UID(sop_class)
    role.scu_role = scu
    role.scp_role = scp
    return role


def _replies(replies: NegotiationReplies) -> list[object]:
    """The negotiation sub-items, in the order PS3.7 D.3.3 lists them."""
    items: list[object] = []
    if replies.async_window is not None:
        window = AsynchronousOperationsWindowNegotiation()
        window.maximum_number_operations_invoked = replies.async_window[0]
        window.maximum_number_operations_performed = replies.async_window[1]
        items.append(window)
    items += [_role_item(sop_class, scu, scp) for sop_class, scu, scp in replies.roles]
    if replies.user_identity_response is not None:
        identity = UserIdentityNegotiation()
        identity.server_response = replies.user_identity_response
        items.append(identity)
    return items


def encode_associate_ac(
    request: AssociateRequest,
    results: Sequence[tuple[int, int, str]],
    max_length: int,
    replies: NegotiationReplies | None = None,
) -> bytes:
    """An A-ASSOCIATE-AC answering ``request``.

    Args:
        request: the request being answered.
        results: ``(context ID, result, transfer syntax)`` for every proposed context; the
            transfer syntax only matters for accepted ones.
        max_length: our Maximum Length Received.
        replies: the answers to role selection, user identity and the asynchronous
            operations window (None: none).
    """
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(APPLICATION_CONTEXT_NAME)
    primitive.calling_ae_title = request.calling_ae_title or " "
    primitive.called_ae_title = request.called_ae_title or " "
    primitive.result = ContextResult.ACCEPTANCE
    primitive.result_source = RejectSource.SERVICE_USER
    items = []
    for context_id, result, syntax in results:
        cx = PresentationContext()
        cx.context_id = context_id
        cx.result = result
        # PS3.8 9.3.3.2: the transfer syntax of a refused context is not significant.
        cx.transfer_syntax = [UID(syntax)]
        items.append(cx)
    primitive.presentation_context_definition_results_list = items
    user_information = _user_information(max_length)
    if replies is not None:
        user_information += _replies(replies)
    primitive.user_information = user_information  # type: ignore[assignment]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def decode_associate_ac(
    pdu_bytes: bytes, proposed: Sequence[ProposedContext]
) -> AssociateAccept:
    """Read a whole A-ASSOCIATE-AC PDU and resolve its contexts against what we proposed.

    Raises:
        DimseProtocolError: the PDU cannot be decoded, or accepts a context we did not propose
            or a transfer syntax we did not offer for it.
    """
    by_id = {cx.context_id: cx for cx in proposed}
    pdu = A_ASSOCIATE_AC()
    try:
        pdu.decode(pdu_bytes)
        primitive = pdu.to_primitive()
        results = primitive.presentation_context_definition_results_list
        max_length = primitive.maximum_length_received
        roles = {
            str(item.sop_class_uid or ""): RoleProposal(bool(item.scu_role), bool(item.scp_role))
            for item in primitive.user_information
            if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
        }
    except Exception as exc:  # pynetdicom raises assorted errors on malformed items
        raise DimseProtocolError(
            f"malformed A-ASSOCIATE-AC: {exc}", AbortReason.INVALID_PDU_PARAMETER_VALUE
        ) from exc
    accepted: list[AcceptedContext] = []
    for cx in results:
        if cx.result != ContextResult.ACCEPTANCE:
            continue
        ours = by_id.get(int(cx.context_id or 0))
        syntax = str(cx.transfer_syntax[0]) if cx.transfer_syntax else ""
        if ours is None or syntax not in ours.transfer_syntaxes:
            raise DimseProtocolError(
                "A-ASSOCIATE-AC accepts a context or transfer syntax we did not propose",
                AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )
        accepted.append(AcceptedContext(ours.context_id, ours.abstract_syntax, syntax))
    return AssociateAccept(
        max_length=int(max_length) if max_length is not None else 0,
        contexts=tuple(accepted),
        roles=roles,
    )


def encode_associate_rj(result: RejectResult, source: RejectSource, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""
    return _REJECT.pack(PduType.ASSOCIATE_RJ, 0, 4, 0, result, source, reason)


def decode_associate_rj(body: bytes | bytearray) -> AssociateReject:
    """Read an A-ASSOCIATE-RJ body (the 4 bytes after the PDU header).

    Raises:
        DimseProtocolError: the body is too short.
    """
    if len(body) < 4:
        raise DimseProtocolError(
            "truncated A-ASSOCIATE-RJ", AbortReason.INVALID_PDU_PARAMETER_VALUE
        )
    return AssociateReject(result=body[1], source=body[2], reason=body[3])
