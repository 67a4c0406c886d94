"""An ASGI DICOMweb STOW sink for HTTP/2 tests, served by hypercorn (``tests.support.h2_sink:app``).

Each stored instance is confirmed in a ReferencedSOPSequence; ``GET /seen`` returns the HTTP
versions and SOP Instance UIDs it saw, so a test can check HTTP/2 was really used.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pydicom

SEEN: list[dict[str, str]] = []


def _sop_instance_uid(body: bytes) -> str:
    start = body.find(b"\r\n\r\n") + 4
    end = body.rfind(b"\r\n--")
    ds = pydicom.dcmread(io.BytesIO(body[start:end]), stop_before_pixels=True)
    return str(ds.SOPInstanceUID)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI application."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["method"] == "GET" and scope["path"] == "/seen":
        reply = json.dumps(SEEN).encode()
    else:
        uid = _sop_instance_uid(body)
        SEEN.append({"http_version": scope["http_version"], "sop_instance_uid": uid})
        reply = json.dumps(
            {"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [uid]}}]}}
        ).encode()
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/dicom+json"),
                    (b"content-length", str(len(reply)).encode())],
    })
    await send({"type": "http.response.body", "body": reply})
