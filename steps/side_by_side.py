"""Two workers started side by side on one device, for the isolation scenarios (M0-SYS-6.3.2, M0-SYS-2.4.1,
M0-SYS-2.4.2). Fixture `side_by_side`; the workers are stopped at the scenario's teardown.

Spawn mode only: the harness plays the part of the process that manages workers (pool-managerd from M1).
Both are started before either is waited for, so they load at the same time, as a pool manager would
start them; the harness's shared workers are stopped first, so only these two hold the device.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest

from steps.jobs import Run
from steps.models import ModelFile
from steps.plugin import Harness
from steps.ports import free_port
from steps.processes import spawn_target
from steps.sse import BackgroundStream
from steps.state import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, new_job_id
from steps.targets import WorkerHandle, WorkerStartError

# Who serves a worker's port when it is not a process of the worker itself, and the rule that finding
# breaks: of the isolation scenario's three rules, the failure names the one its finding breaks (kept as
# literals: a table from finding to rule, tests/harness/test_layout.py).
PORT_SERVED_BY = {
    "harness": ("M0-SYS-2.4.1", "the harness's own process (the one managing the workers)"),
    "other worker": ("M0-SYS-2.4.2", "a process of the other worker"),
    "outside": ("M0-SYS-6.3.2", "a process outside the worker's own"),
}


@dataclass
class SideBySide:
    workers: list[WorkerHandle] = field(default_factory=list)
    alone: Run | None = None  # the job run on the second worker alone
    streams: list[BackgroundStream] = field(default_factory=list)  # the same job on both workers
    killed_at: float | None = None
    second_ended_before_kill: bool = False
    _clients: list[httpx.Client] = field(default_factory=list)

    def pair(self) -> tuple[WorkerHandle, WorkerHandle]:
        assert len(self.workers) == 2, "the scenario needs 'Given two workers serving ... side by side'"
        return self.workers[0], self.workers[1]

    def close(self) -> None:
        for stream in self.streams:
            stream.close()
        for client in self._clients:
            client.close()
        for worker in self.workers:
            worker.stop()


@pytest.fixture
def side_by_side() -> Generator[SideBySide]:
    state = SideBySide()
    yield state
    state.close()


def port_of(worker: WorkerHandle) -> int:
    port = urlsplit(worker.base_url).port
    assert port is not None, f"no port in {worker.base_url}"
    return port


def start_side_by_side(harness: Harness, model: ModelFile, state: SideBySide) -> None:
    target = spawn_target(harness)
    target.close()  # the shared workers leave the device to these two
    for number in (1, 2):
        port, worker_id = free_port(), str(uuid.uuid4())
        command = target.command_for(model, port, worker_id, ())
        handle = target.launch(command, port=port, model=model, label=f"{model.path.stem}-side-{number}")
        handle.worker_id, handle.gpu = worker_id, target.config.gpu
        state.workers.append(handle)
    try:
        for handle in state.workers:
            target.wait_ready(handle)
    except WorkerStartError as exc:
        pytest.fail(f"setup error: {exc}", pytrace=False)


def stream_on_both(state: SideBySide, body: dict) -> None:
    """The same job on both workers at once, each on its own connection, read until the first worker's job
    has begun (its first event: the job is accepted and in the worker's hands) and the second's streams
    tokens. Not until the first's tokens: a worker whose first job prepares for seconds (compiles, captures
    a CUDA graph) would let the warm second worker finish before the kill, and the scenario not apply."""
    for worker in state.pair():
        client = httpx.Client(timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
        state._clients.append(client)
        job = {**body, "job_id": new_job_id()}
        state.streams.append(BackgroundStream(client, f"{worker.base_url}/execute", job))
    first, second = state.streams
    first.wait_until(lambda seen: bool(seen.events) or seen.ended, READ_TIMEOUT_S)
    second.wait_until(lambda seen: bool(seen.of_type("token")) or seen.ended, READ_TIMEOUT_S)


def kill_first(state: SideBySide) -> None:
    """SIGKILL to the first worker's whole process group, in the middle of its job."""
    first, _ = state.pair()
    assert first.process is not None
    second_stream = state.streams[1].stream
    state.second_ended_before_kill = second_stream is None or second_stream.ended
    first.exit_expected = True
    os.killpg(first.process.pid, signal.SIGKILL)
    state.killed_at = time.monotonic()
    first.process.wait(timeout=10.0)
