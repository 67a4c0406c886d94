"""Free loopback ports and readiness polling.

Tests never hard-code ports: every server binds a port from :func:`free_port`.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["free_port", "wait_for_port", "wait_until"]

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 and not handed out before in this process.

    The port is found by binding ``127.0.0.1:0``; the socket is closed before returning, so a
    child process can bind it. Remembering earlier answers avoids giving one port to the HTTP
    and DICOM listeners of the same server.
    """
    with _lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("could not find a free TCP port")


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 10.0,
    process: subprocess.Popen[Any] | None = None,
) -> None:
    """Wait until a TCP connection to ``host:port`` succeeds.

    Raises :class:`TimeoutError` after ``timeout`` seconds, or :class:`RuntimeError` at once if
    ``process`` (the server being waited for) has exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process exited with code {process.returncode} before {host}:{port} opened"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} did not accept connections within {timeout} s")
        time.sleep(0.02)


def wait_until(
    predicate: Callable[[], bool],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> None:
    """Poll ``predicate`` until it returns True; raise :class:`TimeoutError` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{message} not met within {timeout} s")
        time.sleep(interval)
