"""The CPU fast path (`kernels.cpu_dense`) against the reference path and the float64 oracle."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from kernels import cpu_dense
from kernels.backend import KernelConfig, KernelSet, kernel_set
from kernels.formats import GGMLType
from kernels.qmatmul import reference_qmatmul
from kernels.qtensor import QTensor
from tests.kernels.conftest import READ_TYPES
from tests.kernels.test_qmatmul import make_weight, rel_err

# The float16-copy path alone (kernels="fast" on the CPU puts `kernels.cpu_native` before it, which
# takes one-row products of its types: tested in test_cpu_native.py), and kernels="reference".
FAST = KernelSet(KernelConfig(kernels="fast"), torch.device("cpu"), (cpu_dense.FAST_PATH,))
REFERENCE = kernel_set(KernelConfig(kernels="reference"), "cpu")
QUANTIZED = [t for t in READ_TYPES if t not in cpu_dense.PLAIN_TYPES]
# One float16 rounding per weight (relative 2^-11 at most); summed over `in` products of random sign.
REL_TOL = 2e-3


class Arena:
    """Stands in for the worker's memory accounting: remembers what was allocated and given back."""

    def __init__(self) -> None:
        self.live: list[torch.Tensor] = []
        self.released = 0

    def allocate(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        t = torch.empty(shape, dtype=dtype)
        self.live.append(t)
        return t

    def release(self, t: torch.Tensor) -> None:
        self.released += 1
        self.live = [x for x in self.live if x is not t]


def build(*weights: QTensor) -> tuple[cpu_dense.DenseCache, Arena]:
    arena = Arena()
    return cpu_dense.build(weights, arena.allocate, release=arena.release), arena


@pytest.mark.parametrize(
    ("x_shape", "out_features", "in_features"),
    [((1, 512), 48, 512), ((7, 256), 33, 256), ((2, 3, 768), 40, 768)],
    ids=["decode-M1", "prefill-M7", "batched-2x3"],
)
@pytest.mark.parametrize("qtype", QUANTIZED, ids=[t.name for t in QUANTIZED])
def test_dense_path_matches_float64(qtype, x_shape, out_features, in_features, rng, blocks, record_property):
    w, w64 = make_weight(qtype, (out_features, in_features), rng, blocks, "cpu")
    cache, arena = build(w)
    assert cache.tensors and cpu_dense.FAST_PATH in kernel_set(KernelConfig(), "cpu").paths
    assert cpu_dense.FAST_PATH.supports(torch.zeros(1, in_features), w)
    x = torch.from_numpy(rng.normal(0.0, 1.0, x_shape).astype(np.float32))
    bias = torch.from_numpy(rng.normal(0.0, 0.1, out_features).astype(np.float32))
    y = FAST.qmatmul(x, w, bias)
    assert y.shape == (*x_shape[:-1], out_features) and y.dtype == torch.float32
    err = rel_err(y, x.double() @ w64.T + bias.double())
    record_property("max_rel_err", err)
    assert err < REL_TOL
    assert cache.nbytes == out_features * in_features * 2 == sum(t.nbytes for t in arena.live)


def test_a_wrong_copy_is_caught(rng, blocks):
    """The comparison above fails on a cache that holds other values (rows swapped)."""
    w, w64 = make_weight(GGMLType.Q4_K, (48, 512), rng, blocks, "cpu")
    cache, _ = build(w)
    dense = cache.tensors[w.name]
    dense[[0, 1]] = dense[[1, 0]]
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, 512)).astype(np.float32))
    assert rel_err(FAST.qmatmul(x, w), x.double() @ w64.T) > REL_TOL


def test_reference_mode_bypasses_the_cache(rng, blocks):
    w, _ = make_weight(GGMLType.Q4_1, (40, 256), rng, blocks, "cpu")
    cache, _ = build(w)
    cache.tensors[w.name].zero_()  # would give zeros if it were used
    x = torch.from_numpy(rng.normal(0.0, 1.0, (3, 256)).astype(np.float32))
    torch.testing.assert_close(
        REFERENCE.qmatmul(x, w), reference_qmatmul(x, w, None, torch.float32), rtol=0, atol=0
    )
    assert FAST.qmatmul(x, w).abs().max() == 0


def test_expert_tensors_serve_every_expert(rng, blocks):
    n_expert, out_features, in_features = 4, 24, 256
    w, w64 = make_weight(GGMLType.MXFP4, (n_expert, out_features, in_features), rng, blocks, "cpu")
    cache, _ = build(w)
    assert all(cpu_dense.dense_weight(w.expert(e)) is not None for e in range(n_expert))
    x = torch.from_numpy(rng.normal(0.0, 1.0, (5, in_features)).astype(np.float32))
    ids = torch.tensor([[0, 3], [1, 2], [3, 3], [2, 0], [1, 1]])
    y = FAST.qmatmul_experts(x, w, ids)
    expected = torch.einsum("ti,tkoi->tko", x.double(), w64[ids])
    assert rel_err(y, expected) < REL_TOL


def test_plain_float_tensors_are_not_copied():
    w = QTensor.from_float(torch.randn(16, 64), "f32")
    h = QTensor.from_float(torch.randn(16, 64).half(), "f16")
    cache, arena = build(w, h)
    assert not cache.tensors and not arena.live
    assert cpu_dense.dense_weight(w) is None and not cpu_dense.FAST_PATH.supports(torch.zeros(1, 64), w)


def test_values_beyond_float16_stay_on_the_reference_path():
    big = QTensor.from_float(torch.full((8, 32), 1e6), "big")
    # Q8_0 with a scale of 1e4 and quants of 127: values ~1.27e6, beyond float16's 65504.
    block = np.zeros(34, dtype=np.uint8)
    block[0:2] = np.array([1e4], dtype=np.float16).view(np.uint8)
    block[2:] = 127
    w = QTensor.from_bytes(np.tile(block, 8).tobytes(), GGMLType.Q8_0, (8, 32), "huge")
    cache, arena = build(w, big)
    assert cache.skipped == {"huge": "values beyond the torch.float16 range"}
    assert arena.released == 1 and not arena.live
    assert cpu_dense.dense_weight(w) is None


def test_an_entry_is_forgotten_with_its_weight(rng, blocks):
    """A later tensor at the same address must never find a stale copy."""
    w, _ = make_weight(GGMLType.Q8_0, (32, 64), rng, blocks, "cpu")
    build(w)
    key = cpu_dense._key(w)
    assert key in cpu_dense._table
    del w
    gc.collect()
    assert key not in cpu_dense._table


def test_cuda_tensors_are_not_cacheable():
    w = QTensor(torch.zeros(18 * 2, dtype=torch.uint8, device="meta"), GGMLType.Q4_0, (2, 32), "on-meta")
    assert not cpu_dense.cacheable(w)


# q, k and v of one layer: different types and heights, one input width.
GROUP = ((GGMLType.Q4_K, 512), (GGMLType.Q6_K, 128), (GGMLType.Q8_0, 128))


def make_group(rng, blocks, in_features: int = 512) -> tuple[list[QTensor], list[torch.Tensor]]:
    made = [make_weight(qtype, (out, in_features), rng, blocks, "cpu") for qtype, out in GROUP]
    for i, (w, _) in enumerate(made):
        object.__setattr__(w, "name", f"blk.0.m{i}.weight")
    return [w for w, _ in made], [w64 for _, w64 in made]


@pytest.mark.parametrize("rows", [1, 7], ids=["decode-M1", "prefill-M7"])
def test_weights_of_one_input_are_one_product(rows, rng, blocks, record_property):
    """A group is copied into one buffer and its products come out of one product (views of one output),
    each within the float16 bound of its own float64 product, biases included."""
    ws, w64s = make_group(rng, blocks)
    arena = Arena()
    cache = cpu_dense.build(ws, arena.allocate, release=arena.release, groups=[tuple(ws)])
    assert (
        len(arena.live) == 1 and cache.nbytes == arena.live[0].nbytes == sum(w.shape[0] for w in ws) * 512 * 2
    )
    assert rows > 1 or arena.live[0].numel() >= cpu_dense.DIRECT_MIN_WEIGHTS  # one row takes the GEMV
    x = torch.from_numpy(rng.normal(0.0, 1.0, (rows, 512)).astype(np.float32))
    biases = (torch.randn(512), None, torch.randn(128))
    ys = FAST.qmatmuls(x, tuple(ws), biases)
    assert cpu_dense.dense_qmatmuls(x, tuple(ws), biases) is not None
    assert len({y.untyped_storage().data_ptr() for y in ys}) == 1
    errs = []
    for y, w64, b in zip(ys, w64s, biases, strict=True):
        expected = x.double() @ w64.T + (0 if b is None else b.double())
        assert y.shape == expected.shape and y.dtype == torch.float32
        errs.append(rel_err(y, expected))
    record_property("max_rel_err", max(errs))
    assert max(errs) < REL_TOL


def test_a_group_in_another_order_is_served_one_by_one(rng, blocks):
    """Asked in an order other than the one copied, each product still uses its own rows (and a wrong
    row offset would be caught: swapping two members' rows in the shared copy breaks the bound)."""
    ws, w64s = make_group(rng, blocks)
    arena = Arena()
    cache = cpu_dense.build(ws, arena.allocate, release=arena.release, groups=[tuple(ws)])
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, 512)).astype(np.float32))
    order = (ws[1], ws[0], ws[2])
    assert cpu_dense.dense_qmatmuls(x, order, (None,) * 3) is None
    for y, w64 in zip(FAST.qmatmuls(x, order), (w64s[1], w64s[0], w64s[2]), strict=True):
        assert rel_err(y, x.double() @ w64.T) < REL_TOL
    block = cache.tensors[ws[0].name]._base
    block[[0, 600]] = block[[600, 0]]  # a row of q swapped with a row of v
    ys = FAST.qmatmuls(x, tuple(ws))
    assert max(rel_err(y, x.double() @ w64.T) for y, w64 in zip(ys, w64s, strict=True)) > REL_TOL


def test_a_group_with_values_beyond_float16_is_copied_one_by_one(rng, blocks):
    ws, _ = make_group(rng, blocks, in_features=256)
    block = np.zeros(34, dtype=np.uint8)
    block[0:2] = np.array([1e4], dtype=np.float16).view(np.uint8)
    block[2:] = 127
    huge = QTensor.from_bytes(np.tile(block, 64).tobytes(), GGMLType.Q8_0, (8, 256), "huge")
    arena = Arena()
    cache = cpu_dense.build([*ws[:2], huge], arena.allocate, release=arena.release, groups=[(*ws[:2], huge)])
    assert cache.skipped == {"huge": "values beyond the torch.float16 range"}
    assert arena.released == 2  # the group's buffer, then the copy of its own
    assert all(cpu_dense.dense_weight(w) is not None for w in ws[:2])
    x = torch.randn(1, 256)
    assert cpu_dense.dense_qmatmuls(x, (*ws[:2], huge), (None,) * 3) is None
    assert len(FAST.qmatmuls(x, (*ws[:2], huge))) == 3
