"""TCP ports for workers: a free one to start a worker on, or one held busy (M0-W-1100 "port in use").

The one free-port helper of the project: the harness, the worker's CLI tests and the benchmarks use it.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on right now (the OS picks it; another process may still take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def held_port(host: str = "0.0.0.0") -> socket.socket:
    """A listening socket on a port of its own: the port stays in use until the socket is closed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(1)
    return sock
