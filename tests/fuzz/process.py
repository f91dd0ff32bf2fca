"""A real `python -m reference_worker` process on a tiny CPU fixture, for the load, fault and soak runs,
and a streaming client that reads one job's SSE answer completely (or says how it ended)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from .inprocess import REPO, TINY_MODEL

START_TIMEOUT_SEC = 60


@dataclass
class WorkerProcess:
    url: str
    popen: subprocess.Popen[str]
    stdout: str = ""  # the JSON log lines, once the process has ended
    stderr: str = ""

    @property
    def rss_bytes(self) -> int:
        return psutil.Process(self.popen.pid).memory_info().rss

    def health(self) -> dict[str, Any]:
        return httpx.get(self.url + "/health", timeout=10).json()

    def wait_idle(self, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        health = self.health()
        while health["busy"] and time.monotonic() < deadline:
            time.sleep(0.01)
            health = self.health()
        return health


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_argv(model: Path, port: int) -> list[str]:
    """The required flags of `python -m reference_worker` (a fresh worker id)."""
    return ["--worker-id", str(uuid.uuid4()), "--model", str(model), "--gpu-device", "0", "--port", str(port)]


@contextmanager
def worker_process(*flags: str, model: Path = TINY_MODEL) -> Iterator[WorkerProcess]:
    """Starts the worker on 127.0.0.1 (CPU), waits until /health answers; SIGTERM and wait at the end."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "reference_worker",
        *worker_argv(model.resolve(), port),
        "--device",
        "cpu",
        "--host",
        "127.0.0.1",
        *flags,
    ]
    # Files, not pipes: a pipe nobody reads fills up and the worker blocks writing its next log line.
    stdout, stderr = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    popen = subprocess.Popen(argv, cwd=REPO, stdout=stdout, stderr=stderr, text=True)
    worker = WorkerProcess(f"http://127.0.0.1:{port}", popen)
    try:
        deadline = time.monotonic() + START_TIMEOUT_SEC
        while True:
            if popen.poll() is not None:
                stderr.seek(0)
                raise RuntimeError(f"worker exited {popen.returncode}: {stderr.read()}")
            try:
                if httpx.get(worker.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker did not answer /health within {START_TIMEOUT_SEC} s")
            time.sleep(0.1)
        yield worker
    finally:
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        for stream in (stdout, stderr):
            stream.seek(0)
        worker.stdout, worker.stderr = stdout.read(), stderr.read()
        stdout.close()
        stderr.close()


@dataclass
class Answer:
    """One `/execute` answer as a client saw it."""

    status: int
    events: list[dict[str, Any]] = field(default_factory=list)
    body: Any = None  # the JSON body of a non-stream answer
    retry_after: str | None = None
    transport_error: str | None = None

    @property
    def text(self) -> str:
        return "".join(e["t"] for e in self.events if e.get("type") == "token")

    @property
    def terminal(self) -> dict[str, Any] | None:
        return self.events[-1] if self.events and self.events[-1].get("type") in ("end", "error") else None


def execute(
    client: httpx.Client, url: str, body: dict[str, Any], stop_after_tokens: int | None = None
) -> Answer:
    """Posts `body` and reads the stream to its end (or closes it after `stop_after_tokens` tokens)."""
    try:
        with client.stream("POST", url + "/execute", json=body, timeout=60) as response:
            if response.status_code != 200:
                response.read()
                return Answer(
                    response.status_code,
                    body=response.json(),
                    retry_after=response.headers.get("retry-after"),
                )
            answer = Answer(200)
            tokens = 0
            for line in response.iter_lines():
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    answer.events.append(event)
                    tokens += event.get("type") == "token"
                    if stop_after_tokens is not None and tokens >= stop_after_tokens:
                        return answer  # leaving the block closes the connection mid-stream
            return answer
    except httpx.HTTPError as e:
        return Answer(0, transport_error=f"{type(e).__name__}: {e}")
