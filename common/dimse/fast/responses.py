"""Reading the response to a request we sent, on either end of an association.

The requestor reads the responses to its C-STORE, C-ECHO and N-EVENT-REPORT requests
(:mod:`common.dimse.fast.scu`); the acceptor reads the C-STORE-RSPs to a C-GET's sub-operations
on the association it accepted (:mod:`common.dimse.fast.scp`), where the requestor may send a
C-CANCEL-RQ for the C-GET in between. One reader serves both.
"""

from __future__ import annotations

from collections.abc import Callable

from common.dimse.fast.commands import CCancelRq, CommandSet, decode_command_set
from common.dimse.fast.constants import AbortReason, CommandField, Tag
from common.dimse.fast.transport import DimseProtocolError, PduStream

#: Told of a C-CANCEL-RQ that arrived while a response was awaited, and its context ID.
OnCancel = Callable[[CCancelRq, int], object]


def read_response(
    stream: PduStream,
    expected: CommandField,
    message_id: int,
    timeout: float | None,
    on_cancel: OnCancel | None = None,
) -> CommandSet:
    """Read the response (of Command Field ``expected``) to request ``message_id``.

    Each message is waited for at most ``timeout`` seconds (None: forever). A dataset after
    the response (not expected for the responses read here) is read and dropped, so the
    stream stays in step. With ``on_cancel``, a C-CANCEL-RQ that arrives first is passed to it
    and the wait goes on; without, it is a protocol error like any other message.

    Raises:
        DimseProtocolError: another message came, or a response to another request.
        CommandSetError: a command set is malformed or lacks a mandatory element.
        (and whatever :meth:`PduStream.read_command` raises)
    """
    while True:
        # Set again for every message: the stream lowers it while a message is in progress.
        stream.sock.settimeout(timeout)
        context_id, raw = stream.read_command()
        command = decode_command_set(raw)
        field = command.command_field
        if field == CommandField.C_CANCEL_RQ and on_cancel is not None:
            _finish_message(stream, context_id, command)
            on_cancel(CCancelRq.from_command(command), context_id)
            continue
        if field != expected:
            raise DimseProtocolError(
                f"expected command 0x{expected:04X}, got 0x{field:04X}",
                AbortReason.UNEXPECTED_PDU,
            )
        _finish_message(stream, context_id, command)
        responded_to = command.us(Tag.MESSAGE_ID_BEING_RESPONDED_TO)
        if responded_to != message_id:
            raise DimseProtocolError(
                f"response to message {responded_to}, expected {message_id}",
                AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )
        return command


def _finish_message(stream: PduStream, context_id: int, command: CommandSet) -> None:
    """Read the rest of a message we have no use for: its dataset, if it has one (dropped)."""
    if command.has_dataset:
        stream.read_dataset(context_id, lambda _data: None)
    else:
        stream.end_message()
