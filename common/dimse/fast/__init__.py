"""The adapters' DIMSE engine: every association the import adapter accepts, and ours we open.

pynetdicom spends most of a small C-STORE in its machinery: two threads per association handing
PDUs through queues with polling sleeps, and pydicom encoding/decoding every command set. This
package does the same work in the association's own thread, on a blocking socket, with
hand-written encoders for the few things that happen per message. pynetdicom is a codec
library here: its PDU item classes encode and decode the association PDUs, and its SOP class
registry tells storage classes apart; its AE, association and DUL are not used.

One layer per module, bottom up::

    constants    PDU types, item types, command fields, reject/abort reasons (PS3.7, PS3.8)
    commands     DIMSE command sets (implicit VR little endian group 0000): C-STORE, C-ECHO,
                 C-FIND, C-MOVE, C-GET, C-CANCEL, N-ACTION
    notify       N-EVENT-REPORT command sets (the Storage Commitment report)
    limits       what a peer may send, and how slowly (PDU lengths, the transfer pace)
    meta         reading a Part 10 file's meta header without pydicom
    transport    PDU framing on a blocking socket: P-DATA-TF, PDV fragmentation, errors
    acse         association PDUs through pynetdicom.pdu: request, accept, reject, abort
    negotiation  what an acceptor answers: contexts, roles, user identity, async window
    receive      a C-STORE's dataset into memory, or a file as it arrives
    responses    reading the response to a request we sent (either end of an association)
    scu          an association we request (with role selection): C-STORE a file, C-ECHO,
                 N-EVENT-REPORT, release, abort
    scp          an association we accept: negotiate, then serve every request

Errors inside the engine are :class:`~common.dimse.fast.transport.DimseProtocolError` and
:class:`~common.dimse.fast.transport.ConnectionClosedError`; the SCU maps them onto
:mod:`common.errors` at its boundary.
"""
