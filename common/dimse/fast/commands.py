"""DIMSE command sets (C-STORE, C-ECHO, C-FIND, C-MOVE, C-GET, N-ACTION), encoded by hand.

A command set is a handful of group 0000 elements in implicit VR little endian (PS3.7 6.3.1,
9.3); pynetdicom builds a pydicom Dataset for each one and encodes it through the generic
writer, which costs more than the rest of a small C-STORE. Here each element is one
``struct.pack``. The encoders produce exactly what pynetdicom produces for the same primitive
(the tests compare them byte for byte); the decoder reads any command set, keeps every element
and leaves interpretation to the typed accessors.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from common.dimse.fast.constants import (
    VERIFICATION_SOP_CLASS,
    CommandField,
    DataSetType,
    Priority,
    Tag,
)
from common.dimse.fast.meta import FileMeta
from common.status import safe_error_comment

_HEADER = struct.Struct("<HHI")
_US = struct.Struct("<H")
_UL = struct.Struct("<I")
_GROUP_LENGTH_SIZE = _HEADER.size + _UL.size


class CommandSetError(ValueError):
    """A command set is truncated, malformed or lacks a mandatory element."""


def _element(tag: int, value: bytes) -> bytes:
    return _HEADER.pack(tag >> 16, tag & 0xFFFF, len(value)) + value


def _us(value: int) -> bytes:
    return _US.pack(value)


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    # UI values are padded to even length with a NUL (PS3.5 9.1).
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    # AE, LO and other text values are padded with a space.
    return raw + b" " if len(raw) % 2 else raw


def encode_elements(elements: Sequence[tuple[int, bytes]]) -> bytes:
    """A command set from ``(tag, encoded value)`` pairs in ascending tag order.

    The Command Group Length element is computed and put first.
    """
    body = b"".join(_element(tag, value) for tag, value in elements)
    return _element(Tag.COMMAND_GROUP_LENGTH, _UL.pack(len(body))) + body


#: The value encoders, for the command sets defined in other modules (N-EVENT-REPORT in
#: :mod:`common.dimse.fast.notify`): US, UI (NUL-padded) and AE/LO (space-padded).
encode_us = _us
encode_uid = _uid
encode_text = _text


@dataclass(frozen=True)
class CommandSet:
    """A decoded command set: every element's raw value, by tag."""

    elements: dict[int, bytes]

    def has(self, tag: int) -> bool:
        """Whether the element is present."""
        return tag in self.elements

    def us(self, tag: int) -> int:
        """An US value.

        Raises:
            CommandSetError: the element is missing or is not two bytes long.
        """
        raw = self.elements.get(tag)
        if raw is None or len(raw) != _US.size:
            raise CommandSetError(f"command element ({tag >> 16:04X},{tag & 0xFFFF:04X}) "
                                  "is missing or not an US")
        return int(_US.unpack(raw)[0])

    def text(self, tag: int, default: str = "") -> str:
        """A UI/AE/LO value without its padding (``default`` when absent)."""
        raw = self.elements.get(tag)
        if raw is None:
            return default
        return raw.decode("ascii", "replace").rstrip("\x00 ").lstrip(" ")

    @property
    def command_field(self) -> int:
        """(0000,0100) Command Field."""
        return self.us(Tag.COMMAND_FIELD)

    @property
    def has_dataset(self) -> bool:
        """Whether a dataset follows the command set."""
        return self.us(Tag.COMMAND_DATA_SET_TYPE) != DataSetType.NONE


def decode_command_set(data: bytes | bytearray | memoryview) -> CommandSet:
    """Decode an implicit VR little endian command set.

    Raises:
        CommandSetError: an element runs past the end, or an element is not in group 0000.
    """
    view = memoryview(data)
    elements: dict[int, bytes] = {}
    offset = 0
    end = len(view)
    while offset < end:
        if end - offset < _HEADER.size:
            raise CommandSetError("command set ends inside an element header")
        group, element, length = _HEADER.unpack_from(view, offset)
        offset += _HEADER.size
        if group != 0x0000:
            raise CommandSetError(f"command set holds an element of group {group:04X}")
        if length > end - offset:
            raise CommandSetError("command set ends inside an element value")
        elements[(group << 16) | element] = bytes(view[offset : offset + length])
        offset += length
    if Tag.COMMAND_FIELD not in elements:
        raise CommandSetError("command set has no Command Field")
    return CommandSet(elements)


# -- typed messages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CStoreRq:
    """A C-STORE-RQ command set (PS3.7 9.3.1.1)."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    priority: int = Priority.MEDIUM
    move_originator_aet: str | None = None
    move_originator_message_id: int | None = None

    def encode(self) -> bytes:
        """The command set bytes."""
        elements = [
            (Tag.AFFECTED_SOP_CLASS_UID, _uid(self.sop_class_uid)),
            (Tag.COMMAND_FIELD, _us(CommandField.C_STORE_RQ)),
            (Tag.MESSAGE_ID, _us(self.message_id)),
            (Tag.PRIORITY, _us(self.priority)),
            (Tag.COMMAND_DATA_SET_TYPE, _us(DataSetType.PRESENT)),
            (Tag.AFFECTED_SOP_INSTANCE_UID, _uid(self.sop_instance_uid)),
        ]
        if self.move_originator_aet:
            elements.append((Tag.MOVE_ORIGINATOR_AE_TITLE, _text(self.move_originator_aet)))
        if self.move_originator_message_id is not None:
            elements.append(
                (Tag.MOVE_ORIGINATOR_MESSAGE_ID, _us(self.move_originator_message_id))
            )
        return encode_elements(elements)

    @classmethod
    def for_file(
        cls, meta: FileMeta, message_id: int, move_originator: tuple[str, int] | None = None
    ) -> CStoreRq:
        """The C-STORE-RQ that sends a Part 10 file (``move_originator``: AE title, message ID)."""
        return cls(
            message_id=message_id,
            sop_class_uid=meta.sop_class_uid,
            sop_instance_uid=meta.sop_instance_uid,
            move_originator_aet=move_originator[0] if move_originator else None,
            move_originator_message_id=move_originator[1] if move_originator else None,
        )

    @classmethod
    def from_command(cls, command: CommandSet) -> CStoreRq:
        """Read a decoded C-STORE-RQ.

        Raises:
            CommandSetError: a mandatory element is missing or malformed.
        """
        sop_class = command.text(Tag.AFFECTED_SOP_CLASS_UID)
        sop_instance = command.text(Tag.AFFECTED_SOP_INSTANCE_UID)
        if not sop_class or not sop_instance:
            raise CommandSetError("C-STORE-RQ lacks an Affected SOP Class/Instance UID")
        return cls(
            message_id=command.us(Tag.MESSAGE_ID),
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            priority=command.us(Tag.PRIORITY) if command.has(Tag.PRIORITY) else Priority.MEDIUM,
            move_originator_aet=command.text(Tag.MOVE_ORIGINATOR_AE_TITLE) or None,
            move_originator_message_id=(
                command.us(Tag.MOVE_ORIGINATOR_MESSAGE_ID)
                if command.has(Tag.MOVE_ORIGINATOR_MESSAGE_ID)
                else None
            ),
        )


@dataclass(frozen=True)
class CStoreRsp:
    """A C-STORE-RSP command set (PS3.7 9.3.1.2)."""

    message_id_being_responded_to: int
    sop_class_uid: str
    sop_instance_uid: str
    status: int
    error_comment: str = ""

    def encode(self) -> bytes:
        """The command set bytes."""
        elements = [
            (Tag.AFFECTED_SOP_CLASS_UID, _uid(self.sop_class_uid)),
            (Tag.COMMAND_FIELD, _us(CommandField.C_STORE_RSP)),
            (Tag.MESSAGE_ID_BEING_RESPONDED_TO, _us(self.message_id_being_responded_to)),
            (Tag.COMMAND_DATA_SET_TYPE, _us(DataSetType.NONE)),
            (Tag.STATUS, _us(self.status)),
        ]
        if self.error_comment:
            elements.append((Tag.ERROR_COMMENT, _text(safe_error_comment(self.error_comment))))
        elements.append((Tag.AFFECTED_SOP_INSTANCE_UID, _uid(self.sop_instance_uid)))
        return encode_elements(elements)

    @classmethod
    def from_command(cls, command: CommandSet) -> CStoreRsp:
        """Read a decoded C-STORE-RSP (class and instance UIDs are optional in a response).

        Raises:
            CommandSetError: the Status or Message ID Being Responded To is missing.
        """
        return cls(
            message_id_being_responded_to=command.us(Tag.MESSAGE_ID_BEING_RESPONDED_TO),
            sop_class_uid=command.text(Tag.AFFECTED_SOP_CLASS_UID),
            sop_instance_uid=command.text(Tag.AFFECTED_SOP_INSTANCE_UID),
            status=command.us(Tag.STATUS),
            error_comment=command.text(Tag.ERROR_COMMENT),
        )


@dataclass(frozen=True)
class CEchoRq:
    """A C-ECHO-RQ command set (PS3.7 9.3.5.1)."""

    message_id: int
    sop_class_uid: str = VERIFICATION_SOP_CLASS

    def encode(self) -> bytes:
        """The command set bytes."""
        return encode_elements(
            [
                (Tag.AFFECTED_SOP_CLASS_UID, _uid(self.sop_class_uid)),
                (Tag.COMMAND_FIELD, _us(CommandField.C_ECHO_RQ)),
                (Tag.MESSAGE_ID, _us(self.message_id)),
                (Tag.COMMAND_DATA_SET_TYPE, _us(DataSetType.NONE)),
            ]
        )

    @classmethod
    def from_command(cls, command: CommandSet) -> CEchoRq:
        """Read a decoded C-ECHO-RQ.

        Raises:
            CommandSetError: the Message ID is missing.
        """
        return cls(
            message_id=command.us(Tag.MESSAGE_ID),
            sop_class_uid=command.text(Tag.AFFECTED_SOP_CLASS_UID, VERIFICATION_SOP_CLASS),
        )


@dataclass(frozen=True)
class CEchoRsp:
    """A C-ECHO-RSP command set (PS3.7 9.3.5.2)."""

    message_id_being_responded_to: int
    status: int
    sop_class_uid: str = VERIFICATION_SOP_CLASS
    error_comment: str = ""

    def encode(self) -> bytes:
        """The command set bytes."""
        elements = [
            (Tag.AFFECTED_SOP_CLASS_UID, _uid(self.sop_class_uid)),
            (Tag.COMMAND_FIELD, _us(CommandField.C_ECHO_RSP)),
            (Tag.MESSAGE_ID_BEING_RESPONDED_TO, _us(self.message_id_being_responded_to)),
            (Tag.COMMAND_DATA_SET_TYPE, _us(DataSetType.NONE)),
            (Tag.STATUS, _us(self.status)),
        ]
        if self.error_comment:
            elements.append((Tag.ERROR_COMMENT, _text(safe_error_comment(self.error_comment))))
        return encode_elements(elements)

    @classmethod
    def from_command(cls, command: CommandSet) -> CEchoRsp:
        """Read a decoded C-ECHO-RSP.

        Raises:
            CommandSetError: the Status or Message ID Being Responded To is missing.
        """
        return cls(
            message_id_being_responded_to=command.us(Tag.MESSAGE_ID_BEING_RESPONDED_TO),
            status=command.us(Tag.STATUS),
            sop_class_uid=command.text(Tag.AFFECTED_SOP_CLASS_UID, VERIFICATION_SOP_CLASS),
            error_comment=command.text(Tag.ERROR_COMMENT),
        )


@dataclass(frozen=True)
class CMoveRq:
    """A C-MOVE-RQ command set (PS3.7 9.1.4.1.1); its identifier follows as a dataset."""

    message_id: int
    sop_class_uid: str
    move_destination: str
    priority: int = Priority.MEDIUM

    def encode(self) -> bytes:
        """The command set bytes (as pynetdicom's, for tests and an SCU)."""
        return encode_elements(
            [
                (Tag.AFFECTED_SOP_CLASS_UID, _uid(self.sop_class_uid)),
                (Tag.COMMAND_FIELD, _us(CommandField.C_MOVE_RQ)),
                (Tag.MESSAGE_ID, _us(self.message_id)),
                (Tag.MOVE_DESTINATION, _text(self.move_destination)),
                (Tag.PRIORITY, _us(self.priority)),
                (Tag.COMMAND_DATA_SET_TYPE, _us(DataSetType.PRESENT)),
            ]
        )

    @classmethod
    def from_command(cls, command: CommandSet) -> CMoveRq:
        """Read a decoded C-MOVE-RQ (the destination may be empty: the SCP answers 0xA801).

        Raises:
            CommandSetError: the Message ID is missing or malformed.
        """
        return cls(
            message_id=command.us(Tag.MESSAGE_ID),
            sop_class_uid=command.text(Tag.AFFECTED_SOP_CLASS_UID),
            move_destination=command.text(Tag.MOVE_DESTINATION),
            priority=command.us(Tag.PRIORITY) if command.has(Tag.PRIORITY) else Priority.MEDIUM,
        )


@dataclass(frozen=True)
class SubOperationCounts:
    """The Number of Remaining/Completed/Failed/Warning Sub-operations of a C-MOVE-RSP.

    ``remaining`` is None where the response must not carry it (final responses other than
    Cancel, PS3.4 C.4.2.1.6).
    """

    completed: int
    failed: int
    warning: int
    remaining: int | None = None


@dataclass(frozen=True)
class CMoveRsp:
    """A C-MOVE-RSP or C-GET-RSP command set (PS3.7 9.1.4.1.2, 9.1.3.1.2).

    Both have the same elements (encoded as pynetdicom does); ``command_field`` tells which.
    """

    message_id_being_responded_to: int
    sop_class_uid: str
    status: int
    counts: SubOperationCounts | None = None
    error_comment: str = ""
    has_identifier: bool = False
    command_field: int = CommandField.C_MOVE_RSP

    def encode(self) -> bytes:
        """The command set bytes."""
        elements = [
            (Tag.AFFECTED_SOP_CLASS_UID, _uid(self.sop_class_uid)),
            (Tag.COMMAND_FIELD, _us(self.command_field)),
            (Tag.MESSAGE_ID_BEING_RESPONDED_TO, _us(self.message_id_being_responded_to)),
            (
                Tag.COMMAND_DATA_SET_TYPE,
                _us(DataSetType.PRESENT if self.has_identifier else DataSetType.NONE),
            ),
            (Tag.STATUS, _us(self.status)),
        ]
        if self.error_comment:
            elements.append((Tag.ERROR_COMMENT, _text(safe_error_comment(self.error_comment))))
        counts = self.counts
        if counts is not None:
            if counts.remaining is not None:
                elements.append((Tag.NUMBER_OF_REMAINING_SUBOPERATIONS, _us(counts.remaining)))
            elements += [
                (Tag.NUMBER_OF_COMPLETED_SUBOPERATIONS, _us(counts.completed)),
                (Tag.NUMBER_OF_FAILED_SUBOPERATIONS, _us(counts.failed)),
                (Tag.NUMBER_OF_WARNING_SUBOPERATIONS, _us(counts.warning)),
            ]
        return encode_elements(elements)


@dataclass(frozen=True)
class CCancelRq:
    """A C-CANCEL-RQ command set (PS3.7 9.3.2.3): cancels the request it responds to."""

    message_id_being_responded_to: int

    def encode(self) -> bytes:
        """The command set bytes (as pynetdicom's)."""
        return encode_elements(
            [
                (Tag.COMMAND_FIELD, _us(CommandField.C_CANCEL_RQ)),
                (Tag.MESSAGE_ID_BEING_RESPONDED_TO, _us(self.message_id_being_responded_to)),
                (Tag.COMMAND_DATA_SET_TYPE, _us(DataSetType.NONE)),
            ]
        )

    @classmethod
    def from_command(cls, command: CommandSet) -> CCancelRq:
        """Read a decoded C-CANCEL-RQ.

        Raises:
            CommandSetError: the Message ID Being Responded To is missing.
        """
        return cls(command.us(Tag.MESSAGE_ID_BEING_RESPONDED_TO))


@dataclass(frozen=True)
class CFindRq:
    """A C-FIND-RQ command set (PS3.7 9.1.2.1.1); its identifier follows as a dataset.

    A C-GET-RQ (PS3.7 9.1.3.1.1) has the same elements: :class:`CGetRq`.
    """

    message_id: int
    sop_class_uid: str
    priority: int = Priority.MEDIUM

    #: The request's Command Field.
    FIELD = CommandField.C_FIND_RQ

    def encode(self) -> bytes:
        """The command set bytes (as pynetdicom's, for tests and an SCU)."""
        return encode_elements(
            [
                (Tag.AFFECTED_SOP_CLASS_UID, _uid(self.sop_class_uid)),
                (Tag.COMMAND_FIELD, _us(self.FIELD)),
                (Tag.MESSAGE_ID, _us(self.message_id)),
                (Tag.PRIORITY, _us(self.priority)),
                (Tag.COMMAND_DATA_SET_TYPE, _us(DataSetType.PRESENT)),
            ]
        )

    @classmethod
    def from_command(cls, command: CommandSet) -> CFindRq:
        """Read a decoded C-FIND-RQ (or, called on :class:`CGetRq`, a C-GET-RQ).

        Raises:
            CommandSetError: the Message ID is missing or malformed.
        """
        return cls(
            message_id=command.us(Tag.MESSAGE_ID),
            sop_class_uid=command.text(Tag.AFFECTED_SOP_CLASS_UID),
            priority=command.us(Tag.PRIORITY) if command.has(Tag.PRIORITY) else Priority.MEDIUM,
        )


@dataclass(frozen=True)
class CFindRsp:
    """A C-FIND-RSP command set (PS3.7 9.1.2.1.2), elements as pynetdicom encodes them."""

    message_id_being_responded_to: int
    sop_class_uid: str
    status: int
    error_comment: str = ""
    has_identifier: bool = False

    def encode(self) -> bytes:
        """The command set bytes."""
        elements = [
            (Tag.AFFECTED_SOP_CLASS_UID, _uid(self.sop_class_uid)),
            (Tag.COMMAND_FIELD, _us(CommandField.C_FIND_RSP)),
            (Tag.MESSAGE_ID_BEING_RESPONDED_TO, _us(self.message_id_being_responded_to)),
            (
                Tag.COMMAND_DATA_SET_TYPE,
                _us(DataSetType.PRESENT if self.has_identifier else DataSetType.NONE),
            ),
            (Tag.STATUS, _us(self.status)),
        ]
        if self.error_comment:
            elements.append((Tag.ERROR_COMMENT, _text(safe_error_comment(self.error_comment))))
        return encode_elements(elements)


@dataclass(frozen=True)
class CGetRq(CFindRq):
    """A C-GET-RQ command set (PS3.7 9.1.3.1.1); its identifier follows as a dataset."""

    FIELD = CommandField.C_GET_RQ


@dataclass(frozen=True)
class NActionRq:
    """An N-ACTION-RQ command set (PS3.7 10.3.4.1.1); the Action Information may follow."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    action_type_id: int
    has_dataset: bool = True

    def encode(self) -> bytes:
        """The command set bytes (as pynetdicom's, for tests and an SCU)."""
        return encode_elements(
            [
                (Tag.REQUESTED_SOP_CLASS_UID, _uid(self.sop_class_uid)),
                (Tag.COMMAND_FIELD, _us(CommandField.N_ACTION_RQ)),
                (Tag.MESSAGE_ID, _us(self.message_id)),
                (
                    Tag.COMMAND_DATA_SET_TYPE,
                    _us(DataSetType.PRESENT if self.has_dataset else DataSetType.NONE),
                ),
                (Tag.REQUESTED_SOP_INSTANCE_UID, _uid(self.sop_instance_uid)),
                (Tag.ACTION_TYPE_ID, _us(self.action_type_id)),
            ]
        )

    @classmethod
    def from_command(cls, command: CommandSet) -> NActionRq:
        """Read a decoded N-ACTION-RQ.

        Raises:
            CommandSetError: the Message ID or Action Type ID is missing or malformed.
        """
        return cls(
            message_id=command.us(Tag.MESSAGE_ID),
            sop_class_uid=command.text(Tag.REQUESTED_SOP_CLASS_UID),
            sop_instance_uid=command.text(Tag.REQUESTED_SOP_INSTANCE_UID),
            action_type_id=command.us(Tag.ACTION_TYPE_ID),
            has_dataset=command.has_dataset,
        )


@dataclass(frozen=True)
class NActionRsp:
    """An N-ACTION-RSP command set (PS3.7 10.3.4.1.2), without an Action Reply."""

    message_id_being_responded_to: int
    sop_class_uid: str
    sop_instance_uid: str
    action_type_id: int
    status: int
    error_comment: str = ""

    def encode(self) -> bytes:
        """The command set bytes."""
        elements = [
            (Tag.AFFECTED_SOP_CLASS_UID, _uid(self.sop_class_uid)),
            (Tag.COMMAND_FIELD, _us(CommandField.N_ACTION_RSP)),
            (Tag.MESSAGE_ID_BEING_RESPONDED_TO, _us(self.message_id_being_responded_to)),
            (Tag.COMMAND_DATA_SET_TYPE, _us(DataSetType.NONE)),
            (Tag.STATUS, _us(self.status)),
        ]
        if self.error_comment:
            elements.append((Tag.ERROR_COMMENT, _text(safe_error_comment(self.error_comment))))
        elements += [
            (Tag.AFFECTED_SOP_INSTANCE_UID, _uid(self.sop_instance_uid)),
            (Tag.ACTION_TYPE_ID, _us(self.action_type_id)),
        ]
        return encode_elements(elements)
