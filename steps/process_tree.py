"""The processes of a spawned worker as the operating system sees them (psutil): which process is the worker,
which processes it started, and which process answers on its port (M0-W-1365, M0-SYS-6.3.2, M0-SYS-2.4.1).

The command the harness starts may be a launcher (`sh -c ...`, `env ...`, `timeout ...`) that runs the
worker as its only child; the worker is then that child. Every other process below the worker is a helper
the worker started.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psutil

from steps.state import step_result
from steps.targets import WorkerHandle

# Commands that only start the worker and wait for it; the worker is their one child.
LAUNCHERS = frozenset({"sh", "bash", "dash", "zsh", "env", "timeout", "nice", "nohup", "setsid", "stdbuf"})
WATCH_INTERVAL_S = 0.02


def worker_process(handle: WorkerHandle) -> psutil.Process:
    """The worker's own process: the spawned one, or the only child of a launcher."""
    assert handle.process is not None, "the worker was not started by the harness"
    process = psutil.Process(handle.process.pid)
    while _name(process) in LAUNCHERS:
        children = process.children()
        if len(children) != 1:
            break
        process = children[0]
    return process


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.Error:
        return ""


def describe(process: psutil.Process) -> str:
    try:
        command = " ".join(process.cmdline())[:160]
    except psutil.Error:
        command = "(gone)"
    return f"pid {process.pid} `{command}`"


@dataclass
class HelperWatch:
    """Samples the worker's descendants on a thread, from `start()` to `stop()`: every process seen."""

    worker: psutil.Process
    seen: dict[int, str] = field(default_factory=dict)  # pid -> description
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="helper-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            self.sample()

    def sample(self) -> None:
        try:
            children = self.worker.children(recursive=True)
        except psutil.Error:
            return
        self.samples += 1
        for child in children:
            if child.pid not in self.seen:
                self.seen[child.pid] = describe(child)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.sample()


def listening_pids(port: int) -> set[int]:
    """The processes listening on TCP `port` on this machine (any address)."""
    return {
        conn.pid
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid
    }


def tree_of(process: psutil.Process) -> set[int]:
    try:
        return {process.pid, *(child.pid for child in process.children(recursive=True))}
    except psutil.Error:
        return {process.pid}


helper_watch = step_result("helper_watch", "When I execute a job ..., watching the worker's processes")
