"""A free port on the loopback interface, for whatever the lab starts: servers, PgBouncer."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port nobody listens on now (the OS picks it; a race with another program is unlikely)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]  # (host, port) for an IPv4 socket; typeshed says Any
        return port
