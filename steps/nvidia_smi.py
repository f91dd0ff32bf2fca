"""The CUDA contexts nvidia-smi lists (`--query-compute-apps=pid,used_memory --format=csv,noheader`): which
processes of a worker hold one, and how much device memory (M0-W-1400, M0-W-1010, M0-W-1401). When
nvidia-smi cannot see the processes of this machine's PID namespace (containers), a check is not
applicable, with that reason. Fixture `context_pids` (given by the step that notes them).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from steps.envelope import MIB
from steps.process_tree import tree_of
from steps.state import step_result
from steps.targets import WorkerHandle
from steps.verdicts import not_applicable, require

NVIDIA_SMI_QUERY = ("--query-compute-apps=pid,used_memory", "--format=csv,noheader")
NVIDIA_SMI_TIMEOUT_S = 30.0
_MEMORY = re.compile(r"^\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>[KMGT]i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": MIB, "kib": 1 << 10, "kb": 1 << 10, "mib": MIB, "mb": MIB, "gib": 1 << 30, "gb": 1 << 30}


@dataclass(frozen=True)
class ComputeApp:
    pid: int
    used_bytes: int | None  # None when nvidia-smi cannot say ("[N/A]", "[Insufficient Permissions]")


def compute_apps() -> list[ComputeApp]:
    """The processes holding a CUDA context, as nvidia-smi lists them."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        not_applicable("nvidia-smi is not installed, so the worker's GPU context cannot be seen")
    try:
        done = subprocess.run(
            [binary, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        not_applicable(f"nvidia-smi did not answer: {exc}")
    if done.returncode != 0:
        not_applicable(f"nvidia-smi failed with code {done.returncode}: {done.stderr.strip()[:200]}")
    apps = []
    for line in done.stdout.splitlines():
        pid_text, _, memory_text = line.partition(",")
        if not pid_text.strip().isdigit():
            continue
        match = _MEMORY.match(memory_text)
        used = None
        if match:
            used = int(float(match["value"]) * _UNITS[(match["unit"] or "").lower()])
        apps.append(ComputeApp(int(pid_text), used))
    return apps


def worker_pids(worker: WorkerHandle) -> set[int]:
    """The worker's process and its descendants (a wrapper command may hand the GPU to a child)."""
    assert worker.process is not None
    try:
        return tree_of(psutil.Process(worker.process.pid))
    except psutil.Error:
        return {worker.process.pid}


def pid_exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def worker_apps(worker: WorkerHandle, requirement: str) -> list[ComputeApp]:
    """The worker's entries in nvidia-smi; not applicable when nvidia-smi cannot see this PID namespace."""
    apps = compute_apps()
    pids = worker_pids(worker)
    mine = [app for app in apps if app.pid in pids]
    if not mine and not any(pid_exists(app.pid) for app in apps):
        not_applicable(
            f"nvidia-smi lists {len(apps)} compute processes, none of them in this machine's PID namespace "
            "(a container?), so the worker's GPU context cannot be told apart"
        )
    require(
        mine,
        requirement,
        f"nvidia-smi lists no CUDA context for the worker (pids {sorted(pids)}); compute processes: "
        f"{[(app.pid, app.used_bytes) for app in apps]}",
    )
    return mine


context_pids = step_result("context_pids", "When I note the worker's processes that hold a CUDA context")
