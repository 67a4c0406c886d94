"""N-EVENT-REPORT command sets (PS3.7 10.1.1, 10.3.1), encoded and decoded by hand.

The Storage Commitment SCP reports the outcome of a commitment request to the requester with
an N-EVENT-REPORT (PS3.4 J.3.3): the request names the Storage Commitment Push Model instance
and the event (all committed / some failed), and carries the Event Information as a dataset.
As in :mod:`common.dimse.fast.commands`, the encoders produce exactly what pynetdicom produces
for the same primitive (the tests compare them byte for byte).
"""

from __future__ import annotations

from dataclasses import dataclass

from common.dimse.fast.commands import (
    CommandSet,
    CommandSetError,
    encode_elements,
    encode_text,
    encode_uid,
    encode_us,
)
from common.dimse.fast.constants import CommandField, DataSetType, Tag


@dataclass(frozen=True)
class NEventReportRq:
    """An N-EVENT-REPORT-RQ command set (PS3.7 10.3.1.1.1).

    Attributes:
        has_event_information: whether an Event Information dataset follows.
    """

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    event_type_id: int
    has_event_information: bool = True

    def encode(self) -> bytes:
        """The command set bytes."""
        dataset = DataSetType.PRESENT if self.has_event_information else DataSetType.NONE
        return encode_elements(
            [
                (Tag.AFFECTED_SOP_CLASS_UID, encode_uid(self.sop_class_uid)),
                (Tag.COMMAND_FIELD, encode_us(CommandField.N_EVENT_REPORT_RQ)),
                (Tag.MESSAGE_ID, encode_us(self.message_id)),
                (Tag.COMMAND_DATA_SET_TYPE, encode_us(dataset)),
                (Tag.AFFECTED_SOP_INSTANCE_UID, encode_uid(self.sop_instance_uid)),
                (Tag.EVENT_TYPE_ID, encode_us(self.event_type_id)),
            ]
        )

    @classmethod
    def from_command(cls, command: CommandSet) -> NEventReportRq:
        """Read a decoded N-EVENT-REPORT-RQ.

        Raises:
            CommandSetError: a mandatory element is missing or malformed.
        """
        sop_class = command.text(Tag.AFFECTED_SOP_CLASS_UID)
        sop_instance = command.text(Tag.AFFECTED_SOP_INSTANCE_UID)
        if not sop_class or not sop_instance:
            raise CommandSetError("N-EVENT-REPORT-RQ lacks an Affected SOP Class/Instance UID")
        return cls(
            message_id=command.us(Tag.MESSAGE_ID),
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            event_type_id=command.us(Tag.EVENT_TYPE_ID),
            has_event_information=command.has_dataset,
        )


@dataclass(frozen=True)
class NEventReportRsp:
    """An N-EVENT-REPORT-RSP command set (PS3.7 10.3.1.1.2).

    The UIDs and the Event Type ID are optional in a response (empty / None when absent).

    Attributes:
        has_event_reply: whether an Event Reply dataset follows.
    """

    message_id_being_responded_to: int
    status: int
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    event_type_id: int | None = None
    error_comment: str = ""
    has_event_reply: bool = False

    def encode(self) -> bytes:
        """The command set bytes (as pynetdicom's, for tests and an SCU's side)."""
        elements: list[tuple[int, bytes]] = []
        if self.sop_class_uid:
            elements.append((Tag.AFFECTED_SOP_CLASS_UID, encode_uid(self.sop_class_uid)))
        elements += [
            (Tag.COMMAND_FIELD, encode_us(CommandField.N_EVENT_REPORT_RSP)),
            (Tag.MESSAGE_ID_BEING_RESPONDED_TO, encode_us(self.message_id_being_responded_to)),
            (
                Tag.COMMAND_DATA_SET_TYPE,
                encode_us(DataSetType.PRESENT if self.has_event_reply else DataSetType.NONE),
            ),
            (Tag.STATUS, encode_us(self.status)),
        ]
        if self.error_comment:
            elements.append((Tag.ERROR_COMMENT, encode_text(self.error_comment)))
        if self.sop_instance_uid:
            elements.append((Tag.AFFECTED_SOP_INSTANCE_UID, encode_uid(self.sop_instance_uid)))
        if self.event_type_id is not None:
            elements.append((Tag.EVENT_TYPE_ID, encode_us(self.event_type_id)))
        return encode_elements(elements)

    @classmethod
    def from_command(cls, command: CommandSet) -> NEventReportRsp:
        """Read a decoded N-EVENT-REPORT-RSP.

        Raises:
            CommandSetError: the Status or Message ID Being Responded To is missing, or an
                element present is malformed.
        """
        return cls(
            message_id_being_responded_to=command.us(Tag.MESSAGE_ID_BEING_RESPONDED_TO),
            status=command.us(Tag.STATUS),
            sop_class_uid=command.text(Tag.AFFECTED_SOP_CLASS_UID),
            sop_instance_uid=command.text(Tag.AFFECTED_SOP_INSTANCE_UID),
            event_type_id=(
                command.us(Tag.EVENT_TYPE_ID) if command.has(Tag.EVENT_TYPE_ID) else None
            ),
            error_comment=command.text(Tag.ERROR_COMMENT),
            has_event_reply=command.has_dataset,
        )
