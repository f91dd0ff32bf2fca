"""One-off worker processes: a worker started once with a bad value, flag or file, or a shared worker sent a
signal, which a scenario then watches exit (M0-W-1100, M0-W-1110, M0-W-1210, M0-W-1340).

`ProcessState` (fixture `process_state`) holds what one scenario set up; it stops every process it started
and frees every port it held at teardown.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from steps.models import ModelFile
from steps.plugin import Harness, record_worker
from steps.ports import free_port, held_port
from steps.state import ScenarioState
from steps.targets import SpawnTarget, WorkerHandle
from steps.verdicts import not_applicable

HEALTH_PROBE_INTERVAL_S = 0.5
EXIT_POLL_S = 0.05

# What `--model`/`--port` are set to when a scenario names a kind of bad value instead of the value itself.
RELATIVE_MODEL_PATH = "a relative path to the model"
MISSING_MODEL_PATH = "a path that does not exist"
MODEL_NAMED_BIN = "a copy of the model named model.bin"
PORT_IN_USE = "a port that is in use"


@dataclass
class WatchedProcess:
    """A worker process a scenario expects to exit."""

    handle: WorkerHandle
    description: str  # how it was started or what was done to it, for messages: "after SIGTERM"
    probe_health: bool  # a worker that answers /health has accepted its input (it should have exited)
    since: float = field(default_factory=time.monotonic)


@dataclass
class ProcessState:
    """What one process scenario has set up: the model file, held ports, the processes it started, the
    process it watches."""

    model: ModelFile | None = None
    watched: WatchedProcess | None = None
    held_sockets: list[socket.socket] = field(default_factory=list)
    one_off: list[WorkerHandle] = field(default_factory=list)

    def close(self) -> None:
        for handle in self.one_off:
            handle.stop()
        for sock in self.held_sockets:
            sock.close()

    def the_model(self) -> ModelFile:
        assert self.model is not None, "the scenario needs a 'Given the model file of the ... model' step"
        return self.model

    def the_watched(self) -> WatchedProcess:
        assert self.watched is not None, "no worker process was started or signalled yet"
        return self.watched

    def log_handle(self, scenario_state: ScenarioState) -> WorkerHandle:
        """The process whose output a log check reads: the watched one, else the scenario's spawned worker."""
        if self.watched is not None:
            return self.watched.handle
        return spawned_worker(scenario_state)


@pytest.fixture
def process_state() -> Generator[ProcessState]:
    state = ProcessState()
    yield state
    state.close()


def spawn_target(harness: Harness) -> SpawnTarget:
    target = harness.target
    if not isinstance(target, SpawnTarget):
        not_applicable("the harness does not start workers here (attach mode)")
    return target


def spawned_worker(state: ScenarioState) -> WorkerHandle:
    worker = state.worker
    if worker is None or not worker.spawned:
        not_applicable("the worker was not started by the harness, so its process and logs are not visible")
    return worker


def start_one_off(
    harness: Harness,
    state: ProcessState,
    request: pytest.FixtureRequest,
    *,
    model_path: str | Path,
    description: str,
    worker_id: str | None = None,
    port: int | str | None = None,
    gpu: int | str | None = None,
    extra_args: tuple[str, ...] = (),
    drop_flag: str | None = None,
) -> WorkerHandle:
    """Starts the worker command once with the given values; the scenario then watches it exit."""
    target = spawn_target(harness)
    port = free_port() if port is None else port
    model = ModelFile("generated", Path(model_path), synthetic=True)
    command = target.command_for(model, port, worker_id or str(uuid.uuid4()), extra_args, gpu=gpu)
    if drop_flag is not None:
        command = without_flag(command, drop_flag)
    handle = target.launch(command, port=port, model=None, label="process")
    handle.exit_expected = True  # the scenario watches it exit
    state.one_off.append(handle)
    record_worker(request.node, handle)
    # A worker that answers /health on its port accepted its input; a port outside 1..65535 cannot be probed.
    probe = str(port).isdigit() and 0 < int(port) < 65536
    state.watched = WatchedProcess(handle, description, probe_health=probe)
    return handle


def without_flag(command: list[str], flag: str) -> list[str]:
    found = [index for index, token in enumerate(command) if token == flag or token.startswith(f"{flag}=")]
    if not found:
        not_applicable(f"the worker command does not pass {flag}, so it cannot be left out")
    index = found[0]
    width = 2 if command[index] == flag else 1  # "--flag value" or "--flag=value"
    return command[:index] + command[index + width :]


def model_value(value: str, model: ModelFile, harness: Harness, tmp_path: Path) -> str:
    """The `--model` value a scenario names: a kind of bad path, or the value itself."""
    if value == RELATIVE_MODEL_PATH:
        cwd = spawn_target(harness).config.cwd or Path.cwd()
        return os.path.relpath(model.path, cwd)
    if value == MISSING_MODEL_PATH:
        return str(tmp_path / "no-such-dir" / model.path.name)
    if value == MODEL_NAMED_BIN:
        return str(shutil.copyfile(model.path, tmp_path / "model.bin"))
    return value


def port_value(value: str, state: ProcessState) -> int | str:
    """The `--port` value a scenario names: a port held busy for the scenario, or the value itself."""
    if value != PORT_IN_USE:
        return value
    sock = held_port()
    state.held_sockets.append(sock)
    return sock.getsockname()[1]


def send_sigterm(worker: WorkerHandle, state: ProcessState) -> None:
    """SIGTERM to a running worker, which the scenario then watches exit."""
    assert worker.process is not None
    worker.exit_expected = True
    os.kill(worker.process.pid, signal.SIGTERM)
    state.watched = WatchedProcess(worker, "after SIGTERM", probe_health=False)


def answers_health(handle: WorkerHandle) -> bool:
    try:
        return httpx.get(f"{handle.base_url}/health", timeout=1.0).status_code == 200
    except (httpx.HTTPError, httpx.InvalidURL):
        return False


@dataclass(frozen=True)
class Exit:
    """How a watched process ended, or did not."""

    status: int | None  # None: still running at the deadline
    waited_s: float
    answered_health: bool  # it came up and answered GET /health 200 instead


def wait_for_exit(watched: WatchedProcess, seconds: float) -> Exit:
    """Waits up to `seconds` (from when the process was started or signalled) for it to exit; a process
    that answers /health meanwhile is reported at once."""
    process = watched.handle.process
    assert process is not None
    deadline = watched.since + seconds
    next_probe = time.monotonic() + HEALTH_PROBE_INTERVAL_S
    while process.poll() is None and time.monotonic() < deadline:
        if watched.probe_health and time.monotonic() >= next_probe:
            if answers_health(watched.handle):
                return Exit(None, time.monotonic() - watched.since, answered_health=True)
            next_probe = time.monotonic() + HEALTH_PROBE_INTERVAL_S
        time.sleep(EXIT_POLL_S)
    return Exit(process.poll(), time.monotonic() - watched.since, answered_health=False)
