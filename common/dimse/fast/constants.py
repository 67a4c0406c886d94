"""Protocol constants: PDU and item types, DIMSE command fields and tags, ACSE reasons.

Named here so no code in the engine carries a bare protocol number (PS3.8 9.3, PS3.7 9.3/E).
"""

from __future__ import annotations

from enum import IntEnum

#: DICOM Application Context Name (PS3.7 A.2.1).
APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
#: Verification SOP Class (C-ECHO).
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
#: The transfer syntax of every DIMSE command set (PS3.7 6.3.1).
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"


class PduType(IntEnum):
    """Upper layer PDU types (PS3.8 9.3.1)."""

    ASSOCIATE_RQ = 0x01
    ASSOCIATE_AC = 0x02
    ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    RELEASE_RQ = 0x05
    RELEASE_RP = 0x06
    ABORT = 0x07


#: Bytes of a PDU header: type (1), reserved (1), length (4, big endian).
PDU_HEADER_LENGTH = 6
#: Bytes of a PDV item header: item length (4), presentation context ID (1), control header (1).
PDV_HEADER_LENGTH = 6
#: Largest A-ASSOCIATE-RQ we are willing to peek at or read (128 contexts of long UIDs fit).
MAX_ASSOCIATE_RQ_LENGTH = 1 << 18
#: Largest non-P-DATA PDU body we read (release/abort are 4 bytes; anything huge is garbage).
MAX_CONTROL_PDU_LENGTH = 1 << 18


class PdvControl(IntEnum):
    """Bits of the PDV message control header (PS3.8 E.2)."""

    COMMAND = 0x01
    LAST_FRAGMENT = 0x02


class CommandField(IntEnum):
    """(0000,0100) Command Field values (PS3.7 E.1)."""

    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    C_FIND_RQ = 0x0020
    C_FIND_RSP = 0x8020
    C_MOVE_RQ = 0x0021
    C_MOVE_RSP = 0x8021
    C_GET_RQ = 0x0010
    C_GET_RSP = 0x8010
    C_CANCEL_RQ = 0x0FFF
    N_ACTION_RQ = 0x0130
    N_ACTION_RSP = 0x8130
    N_EVENT_REPORT_RQ = 0x0100
    N_EVENT_REPORT_RSP = 0x8100


class DataSetType(IntEnum):
    """(0000,0800) Command Data Set Type: any value other than ``NONE`` means a dataset follows.

    ``PRESENT`` is the value pynetdicom and DCMTK send (PS3.7 leaves it open).
    """

    PRESENT = 0x0001
    NONE = 0x0101


class Priority(IntEnum):
    """(0000,0700) Priority."""

    MEDIUM = 0x0000
    HIGH = 0x0001
    LOW = 0x0002


class Tag(IntEnum):
    """Command set elements (group 0000) of the engine's messages (PS3.7 9.3, 10.3, E.1)."""

    COMMAND_GROUP_LENGTH = 0x00000000
    AFFECTED_SOP_CLASS_UID = 0x00000002
    REQUESTED_SOP_CLASS_UID = 0x00000003
    COMMAND_FIELD = 0x00000100
    MESSAGE_ID = 0x00000110
    MESSAGE_ID_BEING_RESPONDED_TO = 0x00000120
    MOVE_DESTINATION = 0x00000600
    PRIORITY = 0x00000700
    COMMAND_DATA_SET_TYPE = 0x00000800
    STATUS = 0x00000900
    OFFENDING_ELEMENT = 0x00000901
    ERROR_COMMENT = 0x00000902
    ERROR_ID = 0x00000903
    AFFECTED_SOP_INSTANCE_UID = 0x00001000
    REQUESTED_SOP_INSTANCE_UID = 0x00001001
    EVENT_TYPE_ID = 0x00001002
    ACTION_TYPE_ID = 0x00001008
    NUMBER_OF_REMAINING_SUBOPERATIONS = 0x00001020
    NUMBER_OF_COMPLETED_SUBOPERATIONS = 0x00001021
    NUMBER_OF_FAILED_SUBOPERATIONS = 0x00001022
    NUMBER_OF_WARNING_SUBOPERATIONS = 0x00001023
    MOVE_ORIGINATOR_AE_TITLE = 0x00001030
    MOVE_ORIGINATOR_MESSAGE_ID = 0x00001031


class RejectResult(IntEnum):
    """A-ASSOCIATE-RJ Result (PS3.8 9.3.4)."""

    PERMANENT = 0x01
    TRANSIENT = 0x02


class RejectSource(IntEnum):
    """A-ASSOCIATE-RJ Source (PS3.8 9.3.4)."""

    SERVICE_USER = 0x01
    SERVICE_PROVIDER_ACSE = 0x02
    SERVICE_PROVIDER_PRESENTATION = 0x03


class RejectReason(IntEnum):
    """A-ASSOCIATE-RJ Reason/Diag., named per source (PS3.8 9.3.4)."""

    # source SERVICE_USER
    NO_REASON = 0x01
    APPLICATION_CONTEXT_NOT_SUPPORTED = 0x02
    CALLING_AE_NOT_RECOGNIZED = 0x03
    CALLED_AE_NOT_RECOGNIZED = 0x07
    # source SERVICE_PROVIDER_ACSE: 0x01 no reason, 0x02 protocol version not supported
    PROTOCOL_VERSION_NOT_SUPPORTED = 0x02
    # source SERVICE_PROVIDER_PRESENTATION: 0x01 temporary congestion, 0x02 local limit exceeded
    TEMPORARY_CONGESTION = 0x01
    LOCAL_LIMIT_EXCEEDED = 0x02


class AbortSource(IntEnum):
    """A-ABORT Source (PS3.8 9.3.8)."""

    SERVICE_USER = 0x00
    SERVICE_PROVIDER = 0x02


class AbortReason(IntEnum):
    """A-ABORT Reason/Diag. when the source is the service provider (PS3.8 9.3.8)."""

    NOT_SPECIFIED = 0x00
    UNRECOGNIZED_PDU = 0x01
    UNEXPECTED_PDU = 0x02
    UNRECOGNIZED_PDU_PARAMETER = 0x04
    UNEXPECTED_PDU_PARAMETER = 0x05
    INVALID_PDU_PARAMETER_VALUE = 0x06


class ContextResult(IntEnum):
    """Presentation context negotiation results (PS3.8 9.3.3.2)."""

    ACCEPTANCE = 0x00
    USER_REJECTION = 0x01
    NO_REASON = 0x02
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 0x03
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 0x04


