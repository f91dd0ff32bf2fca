"""Worker targets: how the harness gets a worker to talk to.

- `SpawnTarget`: starts a process with the M0 CLI (M0-W-1100) on a free port and waits until `/health`
  answers 200. The reference worker is the default command; `--worker-cmd` names any other binary.
- `AttachTarget`: a live worker at `--worker-url`; process-level scenarios are not applicable there, and so
  are the scenarios of models it does not serve (`steps/served.py`).

Spawned workers are reused across scenarios that ask for the same (model, extra arguments) and at most
one runs at a time (M0 is one worker per GPU). Each runs in its own process group and is stopped with
SIGTERM, then SIGKILL after a grace period, from session finish, unconfigure and atexit, so no process
outlives the test run even on failure or Ctrl-C.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from steps import served as served_model
from steps.models import ModelCatalogue, ModelFile
from steps.ports import free_port  # noqa: F401 - part of this module's public names
from steps.served import ServedModel

PLACEHOLDERS = ("{model}", "{port}", "{gpu}", "{worker_id}")
M0_CLI = "--worker-id {worker_id} --model {model} --gpu-device {gpu} --port {port}"
STOP_GRACE_S = 5.0
LOG_TAIL_BYTES = 8000
# A worker still starting after this long gets a line on the terminal, and another each interval: what
# the harness waits for, for how long, and the worker's last log line (e.g. its load progress).
PROGRESS_EVERY_S = 10.0


class WorkerStartError(Exception):
    """The worker did not become ready; the message carries its exit status and log tail."""


def cuda_visible() -> bool:
    """Cheap GPU presence test without importing torch: CUDA_VISIBLE_DEVICES and nvidia-smi."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return shutil.which("nvidia-smi") is not None


@dataclass
class WorkerHandle:
    """A worker the harness can send requests to."""

    base_url: str
    command: list[str] | None = None  # None when attached
    process: subprocess.Popen | None = None
    stdout_path: Path | None = None
    stderr_path: Path | None = None
    model: ModelFile | None = None
    key: tuple[str, tuple[str, ...]] | None = None
    worker_id: str | None = None  # as given on the command line, when the harness chose it
    gpu: int | str | None = None  # --gpu-device as given, when the harness chose it
    ready_after_s: float | None = None  # process start -> first 200 from /health
    started_at: float | None = None  # time.monotonic() when the process was started
    exit_expected: bool = False  # the harness or the scenario stops it, or expects it to exit
    death_reported: bool = False  # an unexpected exit was reported against a scenario

    @property
    def spawned(self) -> bool:
        return self.process is not None

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None

    def log_tail(self) -> dict[str, str]:
        """Last bytes of the captured stdout/stderr, for failure reports."""
        tails = {}
        for name, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            if path is not None and path.exists():
                with path.open("rb") as handle:
                    handle.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
                    tails[name] = handle.read().decode("utf-8", errors="replace")
        return tails

    def died(self) -> str | None:
        """How the process ended when nobody expected it to ("killed by signal SIGKILL"), else None."""
        if self.process is None or self.exit_expected:
            return None
        code = self.process.poll()
        if code is None:
            return None
        if code < 0:
            try:
                return f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}"

    def describe(self) -> str:
        pid = self.process.pid if self.process is not None else None
        model = self.model.path.name if self.model is not None else "no model"
        worker_id = f" {self.worker_id}" if self.worker_id else ""
        return f"the worker{worker_id} (pid {pid}, serving {model}, {self.base_url})"

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        self.exit_expected = True
        if self.process is None:
            return
        if self.process.poll() is not None:
            _signal_group(self.process, signal.SIGKILL)  # whatever it left behind in its group
            return
        _signal_group(self.process, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(self.process, signal.SIGKILL)
            self.process.wait(timeout=grace_s)
        # Children the worker left behind in its group go too.
        _signal_group(self.process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the harness itself dies (Linux), so nothing is orphaned."""
    os.setsid()
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class WorkerTarget(ABC):
    """Where workers come from."""

    kind: str
    can_spawn: bool

    @abstractmethod
    def acquire(self, model: ModelFile, extra_args: tuple[str, ...] = ()) -> WorkerHandle: ...

    @abstractmethod
    def close(self) -> None:
        """Stop everything this target started."""

    @abstractmethod
    def describe(self) -> dict[str, object]:
        """Provenance for the report: what was tested and how it was started."""


class NotServedHere(Exception):
    """The attached worker cannot play the scenario's part; the message is the not-applicable reason."""


class ModelNotServed(NotServedHere):
    """The attached worker serves another model than the scenario's role."""

    def __init__(self, served: str, role: str) -> None:
        super().__init__(f"the attached worker serves {served}; this scenario needs {role}")
        self.served, self.role = served, role

    def naming(self, role_as_written: str) -> ModelNotServed:
        """The same verdict with the role as the scenario writes it ("Qwen2.5-0.5B-Instruct Q4_K_M")."""
        return ModelNotServed(self.served, role_as_written)


class AttachTarget(WorkerTarget):
    """A live worker: scenarios of the model it serves are judged against that model's file; the others,
    and those that need the worker started with particular arguments, are not applicable."""

    kind = "attach"
    can_spawn = False

    def __init__(self, url: str, catalogue: ModelCatalogue, worker_model: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.catalogue = catalogue
        self.worker_model = worker_model
        self._served: ServedModel | None = None
        self._detected = False

    @property
    def served(self) -> ServedModel | None:
        """Determined once, on first use; None when /health cannot tell (the scenarios then run as written)."""
        if not self._detected:
            self._detected = True
            if self.worker_model is not None:
                self._served = served_model.from_file(self.worker_model, self.catalogue)
            else:
                self._served = served_model.detect(self.url, self.catalogue)
        return self._served

    def acquire(self, model: ModelFile, extra_args: tuple[str, ...] = ()) -> WorkerHandle:
        served = self.served
        if served is not None and not served.plays(model.role):
            raise ModelNotServed(served.label, model.role)
        if extra_args:
            raise NotServedHere(
                f"this scenario needs the worker started with `{shlex.join(extra_args)}`; "
                "the attached worker was started without the harness"
            )
        judged = served.judged_file(model) if served is not None else model
        return WorkerHandle(base_url=self.url, model=judged)

    def acquire_any(self, default: ModelFile) -> WorkerHandle:
        """For scenarios of any model: the attached worker as it is, judged as the file it serves (the
        --worker-model file, else the catalogue file /health matched); `default` when /health cannot tell,
        so that those scenarios run and fail on their own."""
        served = self.served
        if served is None:
            return WorkerHandle(base_url=self.url, model=default)
        if served.file is not None:
            return WorkerHandle(base_url=self.url, model=served.judged_file(default))
        if not served.roles:
            raise NotServedHere(
                f"the attached worker serves {served.label}, a file the harness does not know; "
                "name it with --worker-model so that the scenarios of any model are judged against it"
            )
        role = default.role if default.role in served.roles else sorted(served.roles)[0]
        return WorkerHandle(base_url=self.url, model=self.catalogue.resolve(role))

    def close(self) -> None:
        """Nothing to stop: the attached worker belongs to whoever started it."""

    def describe(self) -> dict[str, object]:
        described: dict[str, object] = {"target": self.kind, "url": self.url}
        if self._detected:
            served = self._served
            described.update(
                served.describe()
                if served is not None
                else {"served model": "not determined: GET /health gave no JSON object"}
            )
        return described


@dataclass
class SpawnConfig:
    template: str  # command line with {model} {port} {gpu} {worker_id}
    gpu: int = 0
    extra_args: tuple[str, ...] = ()  # --worker-arg, appended to every spawn
    start_timeout_s: float = 120.0
    log_dir: Path = Path("reports/workers")
    cwd: Path | None = None


def reference_template() -> str:
    """The reference worker's command: this interpreter, on CPU when no GPU is visible."""
    command = f"{shlex.quote(sys.executable)} -m reference_worker {M0_CLI}"
    return command if cuda_visible() else f"{command} --device cpu"


@dataclass
class SpawnTarget(WorkerTarget):
    config: SpawnConfig
    kind: str = "spawn"
    can_spawn: bool = True
    _running: dict[tuple[str, tuple[str, ...]], WorkerHandle] = field(default_factory=dict)
    _started: int = 0

    def __post_init__(self) -> None:
        _LIVE_TARGETS.append(self)

    def command_for(
        self,
        model: ModelFile,
        port: int | str,
        worker_id: str,
        extra_args: tuple[str, ...],
        gpu: int | str | None = None,
    ) -> list[str]:
        """The worker's argv; `gpu` overrides the configured --gpu-device value (process scenarios)."""
        template = self.config.template
        if not any(placeholder in template for placeholder in PLACEHOLDERS):
            template = f"{template} {M0_CLI}"  # a bare binary gets the standard M0 CLI
        gpu = self.config.gpu if gpu is None else gpu
        values = {"{model}": str(model.path), "{port}": str(port), "{gpu}": str(gpu)}
        values["{worker_id}"] = worker_id
        argv = []
        for token in shlex.split(template):
            for placeholder, value in values.items():
                token = token.replace(placeholder, value)
            argv.append(token)
        return argv + list(self.config.extra_args) + list(extra_args)

    def acquire(self, model: ModelFile, extra_args: tuple[str, ...] = ()) -> WorkerHandle:
        key = (str(model.path), tuple(extra_args))
        handle = self._running.get(key)
        if handle is not None and handle.alive():
            return handle
        if handle is not None:
            _note(f"{handle.describe()} {handle.died() or 'has exited'}; starting a fresh one")
        self.close()  # one worker at a time: the previous one frees its GPU memory first
        handle = self._start(model, key)
        self._running[key] = handle
        return handle

    def _start(self, model: ModelFile, key: tuple[str, tuple[str, ...]]) -> WorkerHandle:
        port = free_port()
        worker_id = str(uuid.uuid4())
        command = self.command_for(model, port, worker_id, key[1])
        handle = self.launch(command, port=port, model=model, label=model.path.stem)
        handle.key, handle.worker_id, handle.gpu = key, worker_id, self.config.gpu
        try:
            self.wait_ready(handle)
        except BaseException:
            handle.stop()
            raise
        return handle

    def launch(self, command: list[str], *, port: int, model: ModelFile | None, label: str) -> WorkerHandle:
        """Starts `command` with its output in the log dir and returns at once (no readiness wait).

        The caller owns the handle: shared workers go through `acquire`; process scenarios start
        one-off workers here and stop them themselves.
        """
        self._started += 1
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        stem = f"worker-{os.getpid()}-{self._started}-{label}"
        stdout_path = self.config.log_dir / f"{stem}.stdout.log"
        stderr_path = self.config.log_dir / f"{stem}.stderr.log"
        started_at = time.monotonic()
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            try:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    cwd=self.config.cwd,
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                raise WorkerStartError(f"cannot start worker `{shlex.join(command)}`: {exc}") from None
        return WorkerHandle(
            base_url=f"http://127.0.0.1:{port}",
            command=command,
            process=process,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
            model=model,
            started_at=started_at,
        )

    def wait_ready(self, handle: WorkerHandle) -> None:
        """Ready = GET /health answers 200 (M0-W-1320) before the start timeout."""
        assert handle.process is not None
        began = time.monotonic()
        deadline = began + self.config.start_timeout_s
        last_problem = "no answer yet"
        next_note = began + PROGRESS_EVERY_S
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if time.monotonic() >= next_note:
                    next_note += PROGRESS_EVERY_S
                    _note_waiting(handle, time.monotonic() - began, self.config.start_timeout_s, last_problem)
                code = handle.process.poll()
                if code is not None:
                    raise WorkerStartError(
                        f"worker exited with status {code} before it was ready\n"
                        f"command: {shlex.join(handle.command or [])}\n{_format_tails(handle)}"
                    )
                try:
                    response = client.get(f"{handle.base_url}/health")
                    if response.status_code == 200:
                        if handle.started_at is not None:
                            handle.ready_after_s = time.monotonic() - handle.started_at
                        return
                    last_problem = f"/health answered {response.status_code}"
                except httpx.HTTPError as exc:
                    last_problem = f"{type(exc).__name__}"
                time.sleep(0.2)
        raise WorkerStartError(
            f"worker not ready within {self.config.start_timeout_s:.0f} s ({last_problem}); "
            f"raise --worker-start-timeout if loading is slow\n"
            f"command: {shlex.join(handle.command or [])}\n{_format_tails(handle)}"
        )

    def close(self) -> None:
        while self._running:
            _, handle = self._running.popitem()
            handle.stop()

    def describe(self) -> dict[str, object]:
        return {"target": self.kind, "command_template": self.config.template, "gpu": self.config.gpu}


def _note(line: str) -> None:
    """One line on the terminal, past pytest's capture."""
    print(f"[harness] {line}", file=sys.__stderr__, flush=True)


def _note_waiting(handle: WorkerHandle, waited_s: float, timeout_s: float, last_problem: str) -> None:
    """One progress line on the terminal (past pytest's capture) about a worker that is still starting."""
    model = handle.model.path.name if handle.model is not None else "no model"
    last_line = handle.log_tail().get("stdout", "").strip().rsplit("\n", 1)[-1]
    try:
        last_line = json.loads(last_line).get("message", last_line)
    except (ValueError, AttributeError):
        pass
    log = f"; its last log line: {last_line[:120]}" if last_line else ""
    print(
        f"[harness] waiting for the worker serving {model} at {handle.base_url} to answer GET /health: "
        f"{waited_s:.0f} s of {timeout_s:.0f} s ({last_problem}){log}",
        file=sys.__stderr__,
        flush=True,
    )


def _format_tails(handle: WorkerHandle) -> str:
    return "\n".join(f"--- {name} (tail) ---\n{text}" for name, text in handle.log_tail().items())


_LIVE_TARGETS: list[SpawnTarget] = []


@atexit.register
def _stop_all() -> None:
    for target in _LIVE_TARGETS:
        target.close()
