"""Fixtures of the engine's unit tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connected sockets: one end writes what the other end's stream reads."""
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()
