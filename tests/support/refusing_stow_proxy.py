"""A DICOMweb reverse proxy that refuses chosen instances inside a STOW-RS request.

In front of a real store (Orthanc): a ``POST .../studies`` is read whole and split into its
parts; the parts whose SOP Instance UID is in :attr:`RefusingStowProxy.refuse` are left out,
the others are sent on to the store as one multipart request, and the store's answer comes back
with the refused instances added to FailedSOPSequence (FailureReason 0xC000) and the status
202 Accepted (PS3.18 10.5.3: some instances stored, some not). Every other request is relayed
as it is. Each STOW-RS request's SOP Instance UIDs are recorded, in order.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.http_fault_server import (
    dicom_file_meta_uids,
    encode_multipart_related,
    parse_multipart_related,
)
from tests.support.ports import free_port

_FAILED_SOP_SEQUENCE = "00081198"
_CANNOT_UNDERSTAND = 0xC000
_ACCEPTED = 202


class RefusingStowProxy:
    """A reverse proxy to ``upstream`` (``http://host:port``) refusing chosen instances."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.refuse: set[str] = set()
        self.stow_requests: list[list[str]] = []
        self.lock = threading.Lock()
        #: Cleared: STOW-RS requests wait (up to 60 s) until it is set again.
        self.open = threading.Event()
        self.open.set()
        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The proxy's base URL (append the upstream's DICOMweb path)."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RefusingStowProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Send a request to the upstream store; its status, headers and body."""
        connection = http.client.HTTPConnection(
            self.upstream.hostname or "127.0.0.1", self.upstream.port, timeout=60
        )
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
            kept = {
                name: value
                for name, value in response.getheaders()
                if name.lower() not in ("connection", "transfer-encoding", "content-length")
            }
            return response.status, kept, data
        finally:
            connection.close()

    def stow(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        """Relay a STOW-RS request without the refused instances; the merged answer."""
        self.open.wait(60)
        parts = parse_multipart_related(body, headers.get("Content-Type", ""))
        uids = [(dicom_file_meta_uids(part.content) or ("", ""))[1] for part in parts]
        with self.lock:
            self.stow_requests.append(uids)
            refused = [uid for uid in uids if uid in self.refuse]
        kept = [part.content for part, uid in zip(parts, uids, strict=True) if uid not in refused]
        answer: dict[str, Any] = {}
        status = 200
        if kept:
            data, content_type = encode_multipart_related(kept)
            forwarded = {
                "Content-Type": content_type,
                "Accept": headers.get("Accept", "application/dicom+json"),
            }
            status, _, reply = self.forward("POST", path, forwarded, data)
            if reply.strip():
                loaded = json.loads(reply)
                answer = loaded[0] if isinstance(loaded, list) else loaded
        if refused:
            failed = answer.setdefault(_FAILED_SOP_SEQUENCE, {"vr": "SQ", "Value": []})
            failed.setdefault("Value", []).extend(
                {
                    "00081155": {"vr": "UI", "Value": [uid]},
                    "00081197": {"vr": "US", "Value": [_CANNOT_UNDERSTAND]},
                }
                for uid in refused
            )
            if status < 300:
                status = _ACCEPTED
        return status, json.dumps(answer).encode()


def _handler(proxy: RefusingStowProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length", "0") or 0)
            return self.rfile.read(length) if length else b""

        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _relay(self) -> None:
            body = self._body()
            headers = {name: value for name, value in self.headers.items()}
            headers.pop("Connection", None)
            if self.command == "POST" and self.path.rstrip("/").endswith("/studies"):
                status, data = proxy.stow(self.path, headers, body)
                self._answer(status, {"Content-Type": "application/dicom+json"}, data)
                return
            status, kept, data = proxy.forward(self.command, self.path, headers, body)
            self._answer(status, kept, data)

        do_GET = do_POST = do_DELETE = _relay

    return Handler
