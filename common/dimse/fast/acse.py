"""Association PDUs: A-ASSOCIATE-RQ/AC/RJ built and read through pynetdicom's PDU classes.

These happen once per association, so pynetdicom's general encoders cost nothing that matters
and handle every variable item correctly; A-ASSOCIATE-RJ is ten fixed bytes and is done here.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext

from common.dicom.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from common.dimse.fast.constants import (
    APPLICATION_CONTEXT_NAME,
    PDU_HEADER_LENGTH,
    AbortReason,
    ContextResult,
    ItemType,
    PduType,
    RejectResult,
    RejectSource,
)
from common.dimse.fast.transport import DimseProtocolError

_REJECT = struct.Struct(">BBIBBBB")
#: PS3.8 9.3.2: bit 0 of the Protocol Version field is version 1, the only one there is.
_PROTOCOL_VERSION_1 = 0x0001


@dataclass(frozen=True)
class ProposedContext:
    """A presentation context from an A-ASSOCIATE-RQ."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class AssociateRequest:
    """What an A-ASSOCIATE-RQ asks for.

    Attributes:
        user_item_types: the item types of every User Information sub-item, so a caller can
            tell whether the request needs negotiation beyond the notifications.
    """

    calling_ae_title: str
    called_ae_title: str
    application_context_name: str
    protocol_version: int
    contexts: tuple[ProposedContext, ...]
    max_length: int
    user_item_types: frozenset[int]

    @property
    def supports_protocol_version(self) -> bool:
        """Whether version 1 of the protocol is among those proposed."""
        return bool(self.protocol_version & _PROTOCOL_VERSION_1)


@dataclass(frozen=True)
class RoleSelection:
    """An SCP/SCU Role Selection sub-item (PS3.7 D.3.3.4): the roles proposed for a SOP class.

    The requestor is by default the SCU of every context; proposing ``scu_role=False,
    scp_role=True`` asks to act as the SCP on the association it requested (as the Storage
    Commitment SCP does to send its N-EVENT-REPORT, PS3.4 J.3.3).
    """

    sop_class_uid: str
    scu_role: bool
    scp_role: bool

    def primitive(self) -> SCP_SCU_RoleSelectionNegotiation:
        """The sub-item as a pynetdicom primitive (its PDU classes encode it)."""
        item = SCP_SCU_RoleSelectionNegotiation()
        item.sop_class_uid = UID(self.sop_class_uid)
        item.scu_role = self.scu_role
        item.scp_role = self.scp_role
        return item


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
    roles: tuple[RoleSelection, ...] = ()


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
    roles: Sequence[RoleSelection] = (),
) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing ``contexts`` (and the SCP/SCU ``roles``, if any)."""
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
    user_items: list[object] = [*_user_information(max_length)]
    user_items += [role.primitive() for role in roles]
    primitive.user_information = user_items  # type: ignore[assignment]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def decode_associate_rq(pdu_bytes: bytes) -> AssociateRequest:
    """Read a whole A-ASSOCIATE-RQ PDU (header included).

    Raises:
        DimseProtocolError: the PDU cannot be decoded.
    """
    pdu = A_ASSOCIATE_RQ()
    try:
        pdu.decode(pdu_bytes)
        primitive = pdu.to_primitive()
        contexts = tuple(
            ProposedContext(
                context_id=int(cx.context_id or 0),
                abstract_syntax=str(cx.abstract_syntax or ""),
                transfer_syntaxes=tuple(str(ts) for ts in cx.transfer_syntax),
            )
            for cx in primitive.presentation_context_definition_list
        )
        user_items = frozenset(
            int(item_type)
            for item in pdu.user_information.user_data
            if (item_type := getattr(item, "item_type", None)) is not None
        ) if pdu.user_information is not None else frozenset()
        max_length = primitive.maximum_length_received
        return AssociateRequest(
            calling_ae_title=str(primitive.calling_ae_title or "").strip(),
            called_ae_title=str(primitive.called_ae_title or "").strip(),
            application_context_name=str(primitive.application_context_name or ""),
            protocol_version=int(pdu.protocol_version),
            contexts=contexts,
            max_length=int(max_length) if max_length is not None else 0,
            user_item_types=user_items,
        )
    except DimseProtocolError:
        raise
    except Exception as exc:  # pynetdicom raises assorted errors on malformed items
        raise DimseProtocolError(
            f"malformed A-ASSOCIATE-RQ: {exc}", AbortReason.INVALID_PDU_PARAMETER_VALUE
        ) from exc


def encode_associate_ac(
    request: AssociateRequest,
    results: Sequence[tuple[int, int, str]],
    max_length: int,
) -> bytes:
    """An A-ASSOCIATE-AC answering ``request``.

    Args:
        request: the request being answered.
        results: ``(context ID, result, transfer syntax)`` for every proposed context; the
            transfer syntax only matters for accepted ones.
        max_length: our Maximum Length Received.
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
    primitive.user_information = _user_information(max_length)  # type: ignore[assignment]
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
        roles = tuple(
            RoleSelection(str(item.sop_class_uid), bool(item.scu_role), bool(item.scp_role))
            for item in primitive.user_information
            if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
        )
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


def pdu_length(header: bytes) -> int:
    """The total length of a PDU (header included) from its 6-byte header."""
    return PDU_HEADER_LENGTH + int.from_bytes(header[2:6], "big")


#: The User Information sub-items the fast SCP understands without pynetdicom.
FAST_USER_ITEMS = frozenset(
    {ItemType.MAXIMUM_LENGTH, ItemType.IMPLEMENTATION_CLASS_UID,
     ItemType.IMPLEMENTATION_VERSION_NAME}
)
