"""MXFP4 micro-goldens (M0-W-1822): committed, reproducible, and met by the kernels far inside the spec."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kernels.backend import KernelConfig
from kernels.selfcheck import GOLDENS_DIR, STRICT_TOLERANCE, main, selfcheck

pytestmark = pytest.mark.oracle


def test_goldens_are_committed_small_and_intact() -> None:
    manifest = json.loads((GOLDENS_DIR / "manifest.json").read_text())
    assert manifest["requirement"] == "M0-W-1822" and manifest["spec_tolerance_rel"] == 0.01
    assert set(manifest["cases"]) == {"linear_decode", "linear_prefill", "attention"}
    total = 0
    for entry in manifest["arrays"].values():
        raw = (GOLDENS_DIR / entry["file"]).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == entry["sha256"], entry["file"]
        total += len(raw)
    assert total < 200_000


def test_generator_reproduces_the_committed_files(tmp_path: Path) -> None:
    from fixtures.mxfp4_goldens import write_goldens

    write_goldens(tmp_path)
    committed = sorted(p.name for p in GOLDENS_DIR.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == committed
    for name in committed:
        assert (tmp_path / name).read_bytes() == (GOLDENS_DIR / name).read_bytes(), name


@pytest.mark.parametrize("kernels", ["reference", "fast"])
def test_selfcheck_passes_far_inside_the_spec(kernels, device, record_property) -> None:
    verdict = selfcheck(device, config=KernelConfig(kernels=kernels))
    assert verdict["pass"], verdict
    for check in verdict["checks"]:
        record_property(f"max_rel_err.{check['case']}", check["max_rel_err"])
        assert check["max_rel_err"] < STRICT_TOLERANCE < check["spec_tolerance"]


def test_selfcheck_cli_prints_a_json_verdict() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "kernels.selfcheck", "--device", "cpu"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert run.returncode == 0, run.stderr
    verdict = json.loads(run.stdout)
    assert verdict["pass"] is True and verdict["device"] == "cpu"
    assert {c["case"] for c in verdict["checks"]} == {"linear_decode", "linear_prefill", "attention"}


def test_selfcheck_reports_what_it_cannot_run(tmp_path: Path, capsys) -> None:
    assert main(["--goldens", str(tmp_path)]) == 2
    assert "no manifest.json" in json.loads(capsys.readouterr().out)["error"]
    if not torch.cuda.is_available():
        assert main(["--device", "cuda"]) == 2
        assert json.loads(capsys.readouterr().out)["error"] == "no CUDA device"
