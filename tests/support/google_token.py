"""Google credentials on loopback: a stand-in OAuth token endpoint and a service-account key
whose ``token_uri`` points at it, so google-auth's real refresh runs across a real wire."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.ports import free_port


class _TokenEndpoint(BaseHTTPRequestHandler):
    """A stand-in for Google's OAuth token endpoint: hands out short-lived numbered tokens."""

    issued = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length).decode()
        assert "grant_type=urn" in body and "assertion=" in body
        with _TokenEndpoint.lock:
            _TokenEndpoint.issued += 1
            token = f"google-token-{_TokenEndpoint.issued}"
        # 60 s is inside google-auth's refresh margin, so every request refreshes.
        reply = json.dumps({"access_token": token, "expires_in": 60, "token_type": "Bearer"})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply.encode())

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def token_endpoint() -> Iterator[str]:
    """Serve the stand-in token endpoint; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _TokenEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token"
    finally:
        server.shutdown()
        server.server_close()


def write_service_account_key(path: Path, token_uri: str) -> Path:
    """A fresh service-account key file (new RSA key) whose tokens come from ``token_uri``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path.write_text(json.dumps({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": hashlib.sha1(pem.encode()).hexdigest(),
        "private_key": pem,
        "client_email": "adapter@test-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }))  # fmt: skip
    return path
