"""Run provenance: what was tested, on what, with which software, from which commit.

The harness core records what only it knows through `run_provenance(config)`:

    from steps.report.provenance import run_provenance
    run_provenance(config).record_worker(target.describe())   # worker command template or URL
    run_provenance(config).record_model(model.provenance)     # {"role","path","synthetic","sha256"}
    run_provenance(config).record_device("NVIDIA H100 80GB HBM3, driver 550.54")

The report plugin itself records the worker commands and model files that scenarios carry in their user
properties (`worker_command`, `model_file`, `model_synthetic`), and `--worker-url` when attached.
Everything else (git commit, versions, host, date, command line) is collected here. Model files that are
recorded without a digest are hashed here, so the report always carries SHA-256.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.metadata
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DISTRIBUTIONS = ("torch", "pytest", "pytest-bdd", "pytest-html", "httpx", "gguf", "llama_cpp_python")


@dataclass
class RunProvenance:
    worker: dict[str, object] = field(default_factory=dict)
    models: dict[str, dict[str, object]] = field(default_factory=dict)  # by path
    commands: list[str] = field(default_factory=list)  # each distinct worker command line, in first-use order
    device: str = ""

    def record_command(self, command: str) -> None:
        if command not in self.commands:
            self.commands.append(command)

    def record_worker(self, description: dict[str, object]) -> None:
        self.worker.update(description)

    def record_model(self, provenance: dict[str, object]) -> None:
        path = str(provenance.get("path", ""))
        self.models.setdefault(path, dict(provenance))

    def record_device(self, description: str) -> None:
        self.device = description


_KEY = pytest.StashKey[RunProvenance]()


def run_provenance(config: pytest.Config) -> RunProvenance:
    """The run's provenance record, created on first use."""
    if _KEY not in config.stash:
        config.stash[_KEY] = RunProvenance()
    return config.stash[_KEY]


def collect(config: pytest.Config, started: dt.datetime) -> dict[str, object]:
    """The provenance block of every report: recorded facts plus what this process can find out."""
    recorded = run_provenance(config)
    root = config.rootpath
    return {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["pytest", *config.invocation_params.args]),
        "worker": _worker(config, recorded),
        "models": [_with_digest(model) for model in recorded.models.values()],
        "device": recorded.device or _device(),
        "host": f"{platform.node()} ({platform.system()} {platform.release()}, {platform.machine()})",
        "python": sys.version.split()[0],
        "versions": {name: _version(name) for name in DISTRIBUTIONS},
        "git": _git(root),
    }


def _worker(config: pytest.Config, recorded: RunProvenance) -> dict[str, object]:
    worker: dict[str, object] = dict(recorded.worker)
    url = config.getoption("worker_url", None)
    if url:
        worker.setdefault("url", url)
    template = config.getoption("worker_cmd", None)
    if template:
        worker.setdefault("template", template)
    if recorded.commands:
        worker["commands"] = list(recorded.commands)
    return worker or {"target": "no worker was used by the scenarios of this run"}


def _with_digest(model: dict[str, object]) -> dict[str, object]:
    model = dict(model)
    path = Path(str(model.get("path", "")))
    if not model.get("sha256") and path.is_file():
        model["sha256"] = file_sha256(str(path))
    return model


def file_sha256(path: str) -> str:
    """The SHA-256 of a model file, or "" when it cannot be read; each file is read once per process."""
    file = Path(path)
    try:
        stat = file.stat()
    except OSError:
        return ""
    return _digest(str(file.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _digest(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a rebuilt file is read again
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _run(args: list[str], cwd: Path) -> str:
    try:
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _git(root: Path) -> dict[str, object]:
    if shutil.which("git") is None:
        return {"commit": "unknown (git not installed)"}
    commit = _run(["git", "rev-parse", "HEAD"], root)
    if not commit:
        return {"commit": "unknown (not a git checkout)"}
    changed = _run(["git", "status", "--porcelain", "--untracked-files=no"], root)
    return {"commit": commit, "modified": bool(changed)}


def _device() -> str:
    """GPU name and driver from nvidia-smi when present; otherwise say that the run was CPU-only."""
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        gpus = _run(query, Path.cwd())
        if gpus:
            return "; ".join(line.strip() for line in gpus.splitlines())
    return f"CPU only, no CUDA device ({platform.processor() or platform.machine()})"
