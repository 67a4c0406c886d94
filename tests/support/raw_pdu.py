"""Reading whole PDUs off a raw socket, for tests that speak DICOM by hand."""

from __future__ import annotations

import socket


def read_pdu(sock: socket.socket) -> bytes:
    """One whole PDU (header included); ConnectionError if the peer closes first."""

    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError(f"closed after {len(data)} of {count} bytes")
            data += chunk
        return data

    header = exactly(6)
    return header + exactly(int.from_bytes(header[2:6], "big"))


def association_answer(
    port: int, called_ae_title: str, calling_ae_title: str = "RAWSCU", host: str = "127.0.0.1"
) -> bytes:
    """The whole PDU an SCP answers to an A-ASSOCIATE-RQ proposing Verification.

    Tests of rejections read the answer off a raw socket: pynetdicom's requestor checks its
    socket after sending the request, so an A-ASSOCIATE-RJ that arrives (and closes the
    connection) before that check is reported as an abort, not a rejection.
    """
    # Imported here: this module is also used by tests that never build a request.
    from common.dimse.fast.acse import ProposedContext, encode_associate_rq
    from common.dimse.fast.constants import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION_SOP_CLASS

    verification = ProposedContext(1, VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,))
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(encode_associate_rq(calling_ae_title, called_ae_title, [verification], 16384))
        return read_pdu(sock)
