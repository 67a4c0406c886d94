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
