"""`benchmarks/run_gpu.sh`'s arguments to the tools it runs, with a stand-in Python that records each call
(no GPU, no model: the script only passes them on)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="run_gpu.sh is a bash script")

RECORDER = """#!/bin/bash
for arg in "$@"; do printf '%s\\n' "$arg" >> "$CALLS"; done
printf '%s\\n' '--end--' >> "$CALLS"
"""


def _step_ab_only(tmp_path: Path, only: str) -> list[str]:
    """The `--only` texts `run_gpu.sh qwen` passes `benchmarks.step_ab` for BENCH_STEP_AB_ONLY=`only`."""
    python = tmp_path / "python"
    python.write_text(RECORDER)
    python.chmod(0o755)
    calls = tmp_path / "calls"
    calls.unlink(missing_ok=True)
    env = {
        **os.environ,
        "CALLS": str(calls),
        "OUT": str(tmp_path / "out"),
        "FIXTURES_DIR": str(tmp_path / "fixtures"),
        "BENCH_PYTHON": str(python),
        "BENCH_SKIP_LLAMACPP": "1",
        "BENCH_STEP_AB": "launch",
        "BENCH_STEP_AB_ONLY": only,
    }
    subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "run_gpu.sh"), "qwen"],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    runs = [run.strip("\n").split("\n") for run in calls.read_text().split("--end--\n") if run.strip()]
    (step_ab,) = [args for args in runs if args[:2] == ["-m", "benchmarks.step_ab"]]
    assert "--launch-only" in step_ab
    return step_ab[step_ab.index("--only") + 1 :]


def test_step_ab_filters_are_words_or_texts_between_semicolons(tmp_path: Path) -> None:
    assert _step_ab_only(tmp_path, "GEMV late") == ["GEMV", "late"]
    texts = _step_ab_only(tmp_path, "before the wait;splits as clusters")
    assert texts == ["before the wait", "splits as clusters"]
