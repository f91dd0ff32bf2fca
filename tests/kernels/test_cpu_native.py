"""The native CPU GEMV over stored blocks (`kernels.cpu_native`) against the float64 oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels import cpu_native
from kernels.backend import KernelConfig, kernel_set
from kernels.formats import GGMLType
from kernels.qtensor import QTensor
from tests.kernels.test_qmatmul import make_weight, rel_err

TYPES = list(cpu_native.FUNCTIONS)
# float32 products and sums in another order than float64's: a few float32 roundings per block.
REL_TOL = 1e-5

needs_native = pytest.mark.skipif(
    not cpu_native.available(), reason=f"native CPU GEMV not built here: {cpu_native.unavailable_reason()}"
)


@needs_native
@pytest.mark.parametrize(
    ("x_shape", "out_features", "in_features"),
    [((1, 512), 48, 512), ((768,), 192, 768), ((1, 1, 1536), 40, 1536), ((1, 256), 16, 256)],
    ids=["row", "1-D", "batched-1x1", "one-K-block"],
)
@pytest.mark.parametrize("qtype", TYPES, ids=[t.name for t in TYPES])
def test_native_gemv_matches_float64(qtype, x_shape, out_features, in_features, rng, blocks, record_property):
    w, w64 = make_weight(qtype, (out_features, in_features), rng, blocks, "cpu")
    x = torch.from_numpy(rng.normal(0.0, 1.0, x_shape).astype(np.float32))
    bias = torch.from_numpy(rng.normal(0.0, 0.1, out_features).astype(np.float32))
    fast = kernel_set(KernelConfig(), "cpu")
    assert cpu_native.serves(x, w) and fast.paths[0] is cpu_native.FAST_PATH
    y = fast.qmatmul(x, w, bias)
    assert y.shape == (*x_shape[:-1], out_features) and y.dtype == torch.float32
    err = rel_err(y, x.double() @ w64.T + bias.double())
    record_property("max_rel_err", err)
    assert err < REL_TOL


@needs_native
@pytest.mark.parametrize("qtype", TYPES, ids=[t.name for t in TYPES])
def test_a_wrong_scale_is_caught(qtype, rng, blocks):
    """The comparison above fails when one block's scale is not the stored one (an exponent bit of the
    f16 `d` of block 0 of row 0: the first field of every type taken, the last of Q6_K's)."""
    w, w64 = make_weight(qtype, (16, 256), rng, blocks, "cpu")
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, 256)).astype(np.float32))
    data = w.data.clone()
    data[209 if qtype == GGMLType.Q6_K else 1] ^= 0x04
    bad = QTensor(data, w.qtype, w.shape, w.name)
    assert rel_err(cpu_native.native_qmatmul(x, bad, None, torch.float32), x.double() @ w64.T) > REL_TOL


@needs_native
def test_weights_of_one_input_are_one_output_buffer(rng, blocks):
    made = [
        make_weight(t, (n, 512), rng, blocks, "cpu") for t, n in ((GGMLType.Q4_1, 64), (GGMLType.Q8_0, 32))
    ]
    ws, w64s = tuple(w for w, _ in made), [w64 for _, w64 in made]
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, 512)).astype(np.float32))
    biases = (None, torch.randn(32))
    ys = kernel_set(KernelConfig(), "cpu").qmatmuls(x, ws, biases)
    assert len({y.untyped_storage().data_ptr() for y in ys}) == 1
    for y, w64, b in zip(ys, w64s, biases, strict=True):
        assert rel_err(y, x.double() @ w64.T + (0 if b is None else b.double())) < REL_TOL
    q5k, _ = make_weight(GGMLType.Q5_K, (16, 512), rng, blocks, "cpu")
    assert cpu_native.native_qmatmuls(x, (*ws, q5k), (None,) * 3) is None  # Q5_K: not a native type


def test_what_it_does_not_take(rng, blocks):
    w, _ = make_weight(GGMLType.Q4_0, (16, 64), rng, blocks, "cpu")
    assert not cpu_native.serves(torch.zeros(2, 64), w)  # more than one row: the float16 copies' tiles
    assert not cpu_native.serves(torch.zeros(1, 64, dtype=torch.float16), w)
    q5k, _ = make_weight(GGMLType.Q5_K, (16, 256), rng, blocks, "cpu")
    assert not cpu_native.serves(torch.zeros(1, 256), q5k)


def test_without_a_compiler_it_is_unavailable(monkeypatch, tmp_path):
    """No compiler: `available()` is False with the reason, and nothing else changes."""
    monkeypatch.setattr(cpu_native, "_state", {})
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert not cpu_native.available()
    assert "no-such-cc" in cpu_native.unavailable_reason()
    w = QTensor.from_bytes(bytes(18 * 2), GGMLType.Q4_0, (2, 32), "w")
    assert not cpu_native.serves(torch.zeros(1, 32), w)
