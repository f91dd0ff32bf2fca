"""Runs the MXFP4 micro-goldens (M0-W-1822) through `kernels` and prints a JSON verdict.

    python -m kernels.selfcheck --device cpu|cuda [--kernels reference|fast] [--goldens DIR]

Each case is computed in float32 through the chosen kernels' `qmatmul` and compared with the
float64 expected values written by `fixtures/mxfp4_goldens.py`. A case passes when its max relative
error is within the spec's ±1 % and within the reference path's own bound (1e-5). Exit status 0 when
every case passes, 1 when one fails, 2 when the check cannot run (missing goldens, no such device).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kernels.backend import KERNEL_CHOICES, KernelConfig, KernelSet, kernel_set
from kernels.formats import GGMLType
from kernels.qtensor import QTensor

GOLDENS_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "goldens" / "mxfp4"
STRICT_TOLERANCE = 1e-5  # what the float32 reference path achieves; the spec allows 1e-2


class Goldens:
    """The arrays of a goldens folder, loaded onto one device."""

    def __init__(self, folder: Path, device: torch.device) -> None:
        self.folder = folder
        self.device = device
        self.manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text())

    def array(self, name: str) -> torch.Tensor:
        entry = self.manifest["arrays"][name]
        dtype = np.dtype(entry["dtype"])  # stored little-endian; astype gives the native byte order
        values = np.fromfile(self.folder / entry["file"], dtype=dtype.newbyteorder("<")).astype(dtype)
        return torch.from_numpy(values.reshape(entry["shape"])).to(self.device)

    def weight(self, name: str) -> QTensor:
        entry = self.manifest["arrays"][name]
        raw = self.array(name).reshape(-1)
        return QTensor(raw, GGMLType[entry["ggml_type"]], tuple(entry["logical_shape"]), name)


def causal_attention(
    kernels: KernelSet, x: torch.Tensor, wq: QTensor, wk: QTensor, wv: QTensor, n_head: int
) -> torch.Tensor:
    """float32: per head softmax(q k^T / sqrt(d) + causal mask) v with MXFP4 Q/K/V projections."""
    t = x.shape[0]
    q, k, v = (kernels.qmatmul(x, w).view(t, n_head, -1).transpose(0, 1) for w in (wq, wk, wv))
    scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
    mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
    p = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return (p @ v).transpose(0, 1).reshape(t, -1)


def run_case(kernels: KernelSet, goldens: Goldens, case: dict[str, Any]) -> torch.Tensor:
    x = goldens.array(case["x"])
    if case["kind"] == "linear":
        return kernels.qmatmul(x, goldens.weight(case["w"]), goldens.array(case["bias"]))
    if case["kind"] == "causal_attention":
        weights = (goldens.weight(case[p]) for p in ("wq", "wk", "wv"))
        return causal_attention(kernels, x, *weights, n_head=case["n_head"])
    raise ValueError(f"golden case kind {case['kind']!r} is unknown")


def max_relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max|got - expected| / max|expected| (the manifest's error metric), in float64."""
    got, expected = got.double().cpu(), expected.double().cpu()
    return float((got - expected).abs().max() / expected.abs().max())


def selfcheck(
    device: torch.device, folder: Path = GOLDENS_DIR, config: KernelConfig | None = None
) -> dict[str, Any]:
    kernels = kernel_set(config, device)
    goldens = Goldens(folder, device)
    spec_tolerance = goldens.manifest["spec_tolerance_rel"]
    checks = []
    for name, case in goldens.manifest["cases"].items():
        err = max_relative_error(run_case(kernels, goldens, case), goldens.array(case["expected"]))
        checks.append(
            {
                "case": name,
                "max_rel_err": err,
                "spec_tolerance": spec_tolerance,
                "strict_tolerance": STRICT_TOLERANCE,
                "pass": err <= min(spec_tolerance, STRICT_TOLERANCE),
            }
        )
    return {
        "requirement": goldens.manifest["requirement"],
        "device": str(device),
        "kernels": kernels.name,
        "goldens": str(folder),
        "error_metric": goldens.manifest["error_metric"],
        "checks": checks,
        "pass": all(c["pass"] for c in checks),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kernels.selfcheck", description="MXFP4 micro-goldens (M0-W-1822)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--kernels", choices=KERNEL_CHOICES, default="fast")
    parser.add_argument(
        "--goldens", type=Path, default=GOLDENS_DIR, help="goldens folder (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"pass": False, "device": "cuda", "error": "no CUDA device"}))
        return 2
    if not (args.goldens / "manifest.json").is_file():
        print(
            json.dumps({"pass": False, "device": args.device, "error": f"no manifest.json in {args.goldens}"})
        )
        return 2
    verdict = selfcheck(torch.device(args.device), args.goldens, KernelConfig(kernels=args.kernels))
    print(json.dumps(verdict, indent=2))
    return 0 if verdict["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
