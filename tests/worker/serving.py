"""Serve a worker app on a loopback port from a thread, for tests that talk HTTP to the real server stack."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from reference_worker.server import WorkerState, create_app


@contextmanager
def serving(state: WorkerState, start_timeout: float = 10.0) -> Iterator[str]:
    """Yields the base URL (`http://127.0.0.1:<port>`) while uvicorn serves `create_app(state)`."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(create_app(state), log_config=None, access_log=False, lifespan="off"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(start_timeout)
