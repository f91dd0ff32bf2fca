"""The prefill GEMM's numbers without a GPU: `kernels/triton_qgemm.py` run by Triton's interpreter on CPU.

    TRITON_INTERPRET=1 python -m tests.kernels.interpreted_qgemm [--formats q4_k mxfp4 ...]

For every format the GEMM decodes: the dense product (a partial row tile, a partial column tile, with a
bias; and for the 32-element block formats an input width that ends mid-step), and the grouped
mixture-of-experts product (pairs sorted and padded by expert on the device, with expert biases); both
also regrouped CODES_THEN_SCALES for MXFP4, Q8_0 and Q6_K, against gguf-py's weights in float64 within two float16
roundings per product. Prints one line per check and exits 1 if any fails. Like
`tests.kernels.interpreted_gemv`, it needs `TRITON_INTERPRET=1` in a fresh process
(`tests/kernels/test_triton_interpreted.py` runs it that way); the CUDA tests judge the GPU's numbers.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from tests.kernels import interpreter
from tests.kernels.interpreted_gemv import _oracle_weight, _rel_err

# float16 operands, float32 sums: two float16 roundings per product (tests/kernels/test_triton_prefill.py)
PREFILL_TOL = 3e-3


def _rows(rng, n: int, k_in: int, magnitude: float = 1.0) -> torch.Tensor:
    return torch.from_numpy(rng.normal(0.0, magnitude, (n, k_in)).astype(np.float32))


def _orders(w):
    """`w` in the file's order and, for the types that have it, a copy regrouped CODES_THEN_SCALES (MXFP4's
    experts as the CUDA model loads them; Q8_0 and Q6_K matrices as `--regroup` asks): (label, weight)."""
    from kernels.qtensor import SCALES

    yield "", w
    if w.qtype in SCALES:
        yield "regrouped ", type(w)(w.data.clone(), w.qtype, w.shape, w.name).codes_then_scales_in_place()


def _judged(label: str, y: torch.Tensor, want: torch.Tensor, file_order_y: torch.Tensor | None):
    """Within two float16 roundings of the float64 product; a regrouped weight's product (`file_order_y`:
    the same weight's in the file's order) also bit for bit the file order's: the same decoded values."""
    err = _rel_err(y, want)
    ok, detail = err < PREFILL_TOL, f"rel err {err:.1e}"
    if file_order_y is not None:
        same = torch.equal(y, file_order_y)
        ok, detail = (
            ok and same,
            detail + (", the file order's bits" if same else ", not the file order's bits"),
        )
    return label, ok, detail


def check_format(name: str, rng) -> list[tuple[str, bool, str]]:
    from kernels import triton_qgemm
    from kernels.formats import GGMLType

    qtype = GGMLType[name.upper()]
    super_block = qtype in (GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K)
    widths = (512,) if super_block else (192, 160)  # 160: five blocks, the last step half past the end
    results = []
    for k_in in widths:
        # Dense: 70 rows (a partial row tile of 64) x 40 weight rows (a partial column tile), a bias,
        # activations far outside float16's range (the per-row scale keeps them finite).
        w, w64 = _oracle_weight(qtype, (40, k_in), rng)
        x = _rows(rng, 70, k_in, 1e5)
        bias = torch.from_numpy(rng.normal(0.0, 0.1, 40).astype(np.float32))
        file_order_y = None
        for label, weight in _orders(w):
            assert triton_qgemm.supports(x, weight)
            y = triton_qgemm.matmul(x, weight, bias, torch.float32)
            results.append(
                _judged(
                    f"{name} {label}dense 70x{k_in} @ 40 rows + bias",
                    y,
                    x.double() @ w64.T + bias.double(),
                    file_order_y,
                )
            )
            file_order_y = y if file_order_y is None else file_order_y
    # Grouped experts: 20 tokens x 3 of 4 experts (60 pairs, more than decode's MAX_PAIRS), expert biases.
    k_in = widths[0]
    g, g64 = _oracle_weight(qtype, (4, 24, k_in), rng)
    x = _rows(rng, 20, k_in)
    ids = torch.from_numpy(rng.integers(0, 4, (20, 3))).long()
    ids[:, 0] = torch.where(ids[:, 0] == 2, 3, ids[:, 0])  # expert 2 rarer than the others
    bias = torch.from_numpy(rng.normal(0.0, 0.1, (4, 24)).astype(np.float32))
    want = torch.einsum("ti,tjoi->tjo", x.double(), g64[ids]) + bias.double()[ids]
    file_order_y = None
    for label, weight in _orders(g):
        assert triton_qgemm.supports_experts(x, weight, ids)
        y = triton_qgemm.matmul_experts(x, weight, ids, bias, torch.float32)
        results.append(_judged(f"{name} {label}experts, 20 tokens x 3 + bias", y, want, file_order_y))
        file_order_y = y if file_order_y is None else file_order_y
    return results


def check_scaled_half(rng) -> list[tuple[str, bool, str]]:
    """The activations' scaling in one launch: PyTorch's `torch.div(x, max|x|).half()` bit for bit, on
    rows of very different magnitudes (one far beyond float16's range, one all zeros), a width that takes
    several steps and ends mid-step, and a strided view."""
    from kernels import triton_qgemm

    x = _rows(rng, 6, 2880)
    x[0] *= 1e9
    x[1] *= 1e-9
    x[2] = 0.0
    results = []
    for label, rows in (("contiguous", x), ("strided", x[:, :2000])):
        x16, scale = triton_qgemm.scaled_half(rows)
        want_scale = torch.linalg.vector_norm(rows, ord=float("inf"), dim=1).clamp_min(1e-30)
        same = torch.equal(scale, want_scale) and torch.equal(
            x16, torch.div(rows, want_scale[:, None]).half()
        )
        results.append((f"activation scaling, {label}", same, "bit for bit" if same else "differs"))
    return results


def check_expert_blocks(rng) -> list[tuple[str, bool, str]]:
    """The device-side sort and padding: every pair once, in its expert's run, blocks of one expert."""
    from kernels.triton_qgemm import expert_blocks

    ids = torch.from_numpy(rng.integers(0, 5, (37, 4))).long()
    ids[ids == 3] = 4  # expert 3 never selected: no block
    pairs, block_expert = expert_blocks(ids, 6, 16)
    flat = ids.reshape(-1)
    real = pairs[pairs < flat.numel()].long()
    ok = sorted(real.tolist()) == list(range(flat.numel()))
    blocks = pairs.view(-1, 16)
    for b, e in enumerate(block_expert.tolist()):
        members = blocks[b][blocks[b] < flat.numel()].long()
        ok &= e < 6 or members.numel() == 0
        ok &= bool((flat[members] == e).all()) if e < 6 else True
    ok &= 3 not in block_expert.tolist() and block_expert.tolist() == sorted(block_expert.tolist())
    return [("expert blocks: each pair once, blocks of one expert, sorted", ok, f"{len(real)} pairs")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.kernels.interpreted_qgemm", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--formats", nargs="+", help="ggml type names (default: every format the GEMM reads)")
    args = parser.parse_args(argv)
    if not interpreter.ready():
        return 2
    from kernels import triton_qgemm

    # CPU tensors, checked as the GPU's would be.
    triton_qgemm.readable = interpreter.as_if_cuda(triton_qgemm.readable)
    formats = args.formats or list(triton_qgemm.FORMAT_NAMES.values())
    rng = np.random.default_rng(20241204)
    failed = interpreter.report([*check_scaled_half(rng), *check_expert_blocks(rng)])
    failed += sum(interpreter.report(check_format(name, rng)) for name in formats)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
