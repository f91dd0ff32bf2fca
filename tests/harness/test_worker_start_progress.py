"""While a spawned worker starts, the harness says what it waits for, for how long, and the worker's last
log line (issue: long steps show progress)."""

from __future__ import annotations

import io
import sys

import pytest

from steps import targets
from steps.targets import SpawnConfig, SpawnTarget, WorkerStartError

# A worker that logs one load-progress line and never answers /health.
SLOW_WORKER = (
    "import json, sys, time; "
    "print(json.dumps({'event': 'model_load_progress', 'message': 'model loading 50% complete'})); "
    "sys.stdout.flush(); time.sleep(60)"
)


def test_a_slow_start_prints_progress_with_the_workers_last_log_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(targets, "PROGRESS_EVERY_S", 0.2)
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "__stderr__", terminal)
    # 4 s: on a loaded machine the stand-in worker's interpreter may take over a second to print its line.
    target = SpawnTarget(SpawnConfig(template="", start_timeout_s=4, log_dir=tmp_path))
    handle = target.launch([sys.executable, "-c", SLOW_WORKER], port=9, model=None, label="slow")
    try:
        with pytest.raises(WorkerStartError, match="not ready within"):
            target.wait_ready(handle)
    finally:
        handle.stop()
    lines = terminal.getvalue().splitlines()
    assert lines, "no progress line while the worker was starting"
    assert all(line.startswith("[harness] waiting for the worker") for line in lines)
    assert "GET /health" in lines[-1] and "of 4 s" in lines[-1]
    assert lines[-1].endswith("its last log line: model loading 50% complete")


def test_a_quick_failure_prints_nothing(tmp_path, monkeypatch) -> None:
    """The lines are for slow starts only: a worker that exits at once fails without them."""
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "__stderr__", terminal)
    target = SpawnTarget(SpawnConfig(template="", start_timeout_s=30, log_dir=tmp_path))
    handle = target.launch([sys.executable, "-c", "raise SystemExit(3)"], port=9, model=None, label="exits")
    with pytest.raises(WorkerStartError, match="status 3"):
        target.wait_ready(handle)
    assert terminal.getvalue() == ""
