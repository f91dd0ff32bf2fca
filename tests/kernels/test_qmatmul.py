"""qmatmul, qembedding, qmatmul_experts against a float64 oracle built on gguf-py's dequantization."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from kernels import backend
from kernels import qmatmul as qmatmul_module
from kernels.formats import FORMATS, GGMLType
from kernels.qmatmul import qembedding, qmatmul, qmatmul_experts
from kernels.qtensor import QTensor
from tests.kernels.conftest import READ_TYPES

TYPES = READ_TYPES
REL_TOL = 1e-5


def rel_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max|got - expected| / max|expected|."""
    return float((got.double().cpu() - expected).abs().max() / expected.abs().max())


def make_weight(qtype, shape, rng, blocks, device) -> tuple[QTensor, torch.Tensor]:
    """A random realistic QTensor and its float64 dequantization by gguf-py (the oracle)."""
    fmt = FORMATS[qtype]
    n_blocks = int(np.prod(shape)) // fmt.block_size
    raw = blocks(qtype, n_blocks, rng, realistic=True)
    w = QTensor.from_bytes(raw.tobytes(), qtype, shape, f"w.{qtype.name}", device)
    values = gguf_dequantize(raw.reshape(*shape[:-1], -1), GGMLQuantizationType(int(qtype)))
    return w, torch.from_numpy(np.ascontiguousarray(values)).double().reshape(shape)


@pytest.mark.parametrize(
    ("x_shape", "out_features", "in_features"),
    [((1, 512), 48, 512), ((7, 256), 33, 256), ((2, 3, 768), 40, 768)],
    ids=["decode-M1", "prefill-M7", "batched-2x3"],
)
@pytest.mark.parametrize("qtype", TYPES, ids=[t.name for t in TYPES])
def test_qmatmul_matches_float64(
    qtype, x_shape, out_features, in_features, device, rng, blocks, record_property
):
    w, w64 = make_weight(qtype, (out_features, in_features), rng, blocks, device)
    x = torch.from_numpy(rng.normal(0.0, 1.0, x_shape).astype(np.float32))
    bias = torch.from_numpy(rng.normal(0.0, 0.1, out_features).astype(np.float32))
    y = qmatmul(x.to(device), w, bias.to(device))
    assert y.shape == (*x_shape[:-1], out_features) and y.dtype == torch.float32
    err = rel_err(y, x.double() @ w64.T + bias.double())
    record_property("max_rel_err", err)
    assert err < REL_TOL


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize(
    "qtype", [GGMLType.Q4_0, GGMLType.Q6_K, GGMLType.MXFP4], ids=["Q4_0", "Q6_K", "MXFP4"]
)
def test_half_activations_compute_in_float32(qtype, dtype, device, rng, blocks) -> None:
    w, w64 = make_weight(qtype, (16, 256), rng, blocks, device)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (3, 256)).astype(np.float32)).to(dtype)
    y = qmatmul(x.to(device), w)
    assert y.dtype == dtype
    # The float32 result, rounded once to the activation dtype.
    assert rel_err(y, x.double() @ w64.T) < 2 ** -(7 if dtype == torch.bfloat16 else 10)
    assert rel_err(qmatmul(x.to(device), w, out_dtype=torch.float32), x.double() @ w64.T) < REL_TOL


def test_tiles_are_bounded(monkeypatch, rng, blocks) -> None:
    w, w64 = make_weight(GGMLType.Q4_0, (4096, 512), rng, blocks, "cpu")  # 8 MiB as float32
    tiles: list[tuple[int, ...]] = []
    original = QTensor.dequantize

    def spy(self, rows=None):
        out = original(self, rows)
        tiles.append(tuple(out.shape))
        return out

    monkeypatch.setattr(QTensor, "dequantize", spy)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (2, 512)).astype(np.float32))
    assert rel_err(qmatmul(x, w), x.double() @ w64.T) < REL_TOL
    assert len(tiles) >= 2 and sum(t[0] for t in tiles) == 4096
    assert max(t[0] * t[1] * 4 for t in tiles) <= qmatmul_module.MAX_TILE_BYTES


def test_tile_size_follows_the_limit(monkeypatch, rng, blocks) -> None:
    monkeypatch.setattr(qmatmul_module, "MAX_TILE_BYTES", 3 * 256 * 4)
    w, w64 = make_weight(GGMLType.Q6_K, (10, 256), rng, blocks, "cpu")
    assert qmatmul_module.tile_rows(w) == 3
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, 256)).astype(np.float32))
    assert rel_err(qmatmul(x, w), x.double() @ w64.T) < REL_TOL


def test_qembedding_dequantizes_only_the_selected_rows(monkeypatch, device, rng, blocks) -> None:
    w, w64 = make_weight(GGMLType.Q8_0, (50, 64), rng, blocks, device)
    ids = torch.tensor([[3, 49, 3], [0, 7, 7]])
    seen: list[int] = []
    original = QTensor.dequantize
    monkeypatch.setattr(
        QTensor,
        "dequantize",
        lambda self, rows=None, **kw: seen.append(rows.numel()) or original(self, rows, **kw),
    )
    got = qembedding(ids.to(device), w)
    assert got.shape == (2, 3, 64) and seen == [6]
    assert torch.equal(got.cpu().double(), w64[ids])


def test_qmatmul_experts(monkeypatch, device, rng, blocks) -> None:
    n_expert, out_features, in_features = 6, 24, 64
    w, w64 = make_weight(GGMLType.MXFP4, (n_expert, out_features, in_features), rng, blocks, device)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (5, in_features)).astype(np.float32))
    bias = torch.from_numpy(rng.normal(0.0, 0.1, (n_expert, out_features)).astype(np.float32))
    expert_ids = torch.tensor([[0, 4], [4, 2], [2, 0], [4, 0], [2, 4]])
    visited: list[int] = []
    original = QTensor.expert
    monkeypatch.setattr(QTensor, "expert", lambda self, i: visited.append(i) or original(self, i))
    y = qmatmul_experts(x.to(device), w, expert_ids.to(device), bias.to(device))
    assert y.shape == (5, 2, out_features)
    if device.type == "cpu":
        assert sorted(visited) == [0, 2, 4]  # each selected expert once; 1, 3, 5 never dequantized
    else:
        assert visited == []  # CUDA, 10 pairs: the selected experts gathered on the device
    expected = torch.einsum("ti,tkoi->tko", x.double(), w64[expert_ids]) + bias.double()[expert_ids]
    assert rel_err(y, expected) < REL_TOL


@pytest.mark.parametrize("qtype", [GGMLType.F32, GGMLType.MXFP4, GGMLType.Q4_K], ids=["F32", "MXFP4", "Q4_K"])
def test_gathered_experts_match_float64(qtype, device, rng, blocks) -> None:
    """The device-side gather CUDA decode uses (no expert id read back), checked on every device."""
    n_expert, out_features, in_features = 5, 16, 256
    w, w64 = make_weight(qtype, (n_expert, out_features, in_features), rng, blocks, device)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (2, in_features)).astype(np.float32))
    bias = torch.from_numpy(rng.normal(0.0, 0.1, (n_expert, out_features)).astype(np.float32))
    expert_ids = torch.tensor([[4, 1, 3], [1, 1, 0]])
    y = qmatmul_module._experts_gathered(x.to(device), w, expert_ids.to(device), bias.to(device))
    expected = torch.einsum("ti,tkoi->tko", x.double(), w64[expert_ids]) + bias.double()[expert_ids]
    assert y.shape == (2, 3, out_features) and rel_err(y, expected) < REL_TOL


def test_qmatmul_experts_rejects_bad_expert_id(rng, blocks) -> None:
    w, _ = make_weight(GGMLType.MXFP4, (2, 8, 32), rng, blocks, "cpu")
    with pytest.raises(IndexError, match="expert 2 out of range"):
        qmatmul_experts(torch.zeros(1, 32), w, torch.tensor([[2]]))


def test_shape_errors_name_the_weight(rng, blocks) -> None:
    w, _ = make_weight(GGMLType.Q8_0, (8, 64), rng, blocks, "cpu")
    with pytest.raises(ValueError, match=r"'w\.Q8_0'.*input has 32 features"):
        qmatmul(torch.zeros(1, 32), w)
    with pytest.raises(ValueError, match=r"'w\.Q8_0'.*bias shape \(7,\)"):
        qmatmul(torch.zeros(1, 64), w, torch.zeros(7))


# The kernel selection seam.


def test_fast_path_serves_what_it_supports_and_only_when_chosen(monkeypatch, rng, blocks) -> None:
    w, w64 = make_weight(GGMLType.Q4_0, (8, 64), rng, blocks, "cpu")
    x = torch.ones(1, 64)
    calls: list[str] = []

    def fake(x, w, bias, out_dtype):
        calls.append(w.name)
        return torch.zeros(1, 8, dtype=out_dtype)

    fake_path = backend.FastPath("fake", ("cpu",), lambda x, w: w.qtype == GGMLType.Q4_0, fake)
    monkeypatch.setitem(backend.FAST_PATHS, "cpu", lambda config: backend.DeviceKernels((fake_path,)))
    fast = backend.kernel_set(backend.KernelConfig(kernels="fast"), "cpu")
    reference = backend.kernel_set(backend.KernelConfig(kernels="reference"), "cpu")
    assert fast.paths == (fake_path,) and reference.paths == ()
    assert not fast.qmatmul(x, w).any() and calls == ["w.Q4_0"]
    assert rel_err(reference.qmatmul(x, w), x.double() @ w64.T) < REL_TOL and calls == ["w.Q4_0"]
    assert rel_err(qmatmul(x, w), x.double() @ w64.T) < REL_TOL and calls == ["w.Q4_0"]
    w8, _ = make_weight(GGMLType.Q8_0, (8, 64), rng, blocks, "cpu")
    assert fast.qmatmul(x, w8).any() and calls == ["w.Q4_0"]  # not supported: the reference path


def test_cpu_kernels_and_bad_choices_are_refused() -> None:
    from kernels import cpu_dense, cpu_native

    # CPU: the native GEMV over stored blocks (where it is built), then the float16-copy path (it serves
    # matrices that have a copy); reference: no fast path.
    assert backend.kernel_set(backend.KernelConfig(), "cpu").paths == (
        cpu_native.FAST_PATH,
        cpu_dense.FAST_PATH,
    )
    assert backend.kernel_set(backend.KernelConfig(kernels="reference"), "cpu").paths == ()
    assert not backend.KernelConfig().graphs_on(torch.device("cpu"))
    assert not backend.KernelConfig(kernels="reference").graphs_on(torch.device("cuda"))
    with pytest.raises(ValueError, match="'turbo' is not one of reference, fast"):
        backend.KernelConfig(kernels="turbo")  # type: ignore[arg-type]


@pytest.mark.parametrize("rows", [1, 3])
def test_qmatmul_add_is_the_residual_plus_the_product_bit_for_bit(rows, rng, blocks) -> None:
    # One row: the residual rides in as the bias (one launch on the GEMV path); the sum is the same.
    w, _ = make_weight(GGMLType.Q4_K, (16, 256), rng, blocks, "cpu")
    x = torch.from_numpy(rng.normal(0.0, 1.0, (rows, 256)).astype(np.float32))
    residual = torch.from_numpy(rng.normal(0.0, 10.0, (rows, 16)).astype(np.float32))
    bias = torch.from_numpy(rng.normal(0.0, 1.0, 16).astype(np.float32))
    for choice in backend.KERNEL_CHOICES:
        kernels = backend.kernel_set(backend.KernelConfig(kernels=choice), "cpu")
        assert torch.equal(kernels.qmatmul_add(x, w, residual), residual + kernels.qmatmul(x, w))
        assert torch.equal(kernels.qmatmul_add(x, w, residual, bias), residual + kernels.qmatmul(x, w, bias))
