"""The decode-step kernels of each device (`kernels.cpu_decode`; `kernels.triton_decode` on CUDA) against the
reference models' PyTorch ops."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

from reference_worker.models.attention import ReferenceAttention
from reference_worker.models.gpt_oss import SWIGLU_ALPHA, SWIGLU_LIMIT, route, swiglu
from reference_worker.models.llama import rms_norm
from reference_worker.models.rope import apply_rope, rope_frequencies

CUDA = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed"),
]
# float32 throughout; only the order of the sums differs from the reference ops.
REL_TOL = 1e-5


@pytest.fixture(params=[pytest.param("cpu"), pytest.param("cuda", marks=CUDA)])
def device(request) -> str:
    return request.param


def decode_kernels(device: str):
    """The module `kernels.backend` gives a fast kernel set on `device` as its decode-step kernels."""
    if device == "cpu":
        from kernels import cpu_decode

        return cpu_decode
    from kernels import triton_decode

    return triton_decode


def rel_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.double().cpu(), expected.double().cpu()
    return float((got - expected).abs().max() / expected.abs().max())


def test_rms_norm_matches_the_reference(device) -> None:
    fused = decode_kernels(device).rms_norm
    x, w = torch.randn(3, 2880, device=device) * 3, torch.randn(2880, device=device)
    assert rel_err(fused(x, w, 1e-5), rms_norm(x, w, 1e-5)) < REL_TOL


@pytest.mark.parametrize(
    ("neox", "head_dim", "rope_dim", "n_head", "n_kv"),
    [(True, 64, 64, 14, 2), (False, 64, 64, 9, 3), (True, 96, 96, 32, 32), (True, 96, 32, 4, 4)],
    ids=["qwen2", "llama", "phi3", "partial-rotary"],
)
def test_rope_store_rotates_q_and_k_and_stores_k_v_at_the_position(
    device, neox, head_dim, rope_dim, n_head, n_kv
):
    rope_store = decode_kernels(device).rope_store
    capacity, pos = 50, 37
    cos, sin = rope_frequencies(head_dim, 10000.0, rope_dim, max_positions=64, device=device)
    q, k, v = (torch.randn(n * head_dim, device=device) for n in (n_head, n_kv, n_kv))
    keys = torch.full((n_kv, capacity, head_dim), float("nan"), device=device)
    values = torch.full_like(keys, float("nan"))
    position = torch.tensor([pos], device=device)
    q_rot = rope_store(q, k, v, keys, values, cos, sin, position, neox)
    as_heads = lambda t, n: t.view(1, n, head_dim).transpose(0, 1)  # noqa: E731
    assert rel_err(q_rot, apply_rope(as_heads(q, n_head), cos, sin, position, neox)[:, 0]) < REL_TOL
    assert rel_err(keys[:, pos], apply_rope(as_heads(k, n_kv), cos, sin, position, neox)[:, 0]) < REL_TOL
    assert torch.equal(values[:, pos], v.view(n_kv, head_dim))
    assert keys[:, :pos].isnan().all() and values[:, pos + 1 :].isnan().all()  # nothing else written


@pytest.mark.parametrize(
    ("n_head", "n_kv", "head_dim", "window", "with_sinks", "pos"),
    [
        (14, 2, 64, None, False, 0),
        (14, 2, 64, None, False, 233),
        (32, 32, 96, None, False, 100),
        (64, 8, 64, 128, True, 299),
        (64, 8, 64, 128, True, 5),
        (4, 4, 64, None, True, 63),
    ],
    ids=["qwen-first", "qwen", "phi3", "gpt-oss-window", "gpt-oss-short", "sinks"],
)
def test_decode_attention_matches_the_reference(
    device, n_head, n_kv, head_dim, window, with_sinks, pos
) -> None:
    decode_attention = decode_kernels(device).decode_attention
    capacity, scale = 300, 1 / math.sqrt(head_dim)
    keys, values = torch.randn(2, n_kv, capacity, head_dim, device=device)
    keys[:, pos + 1 :] = float("nan")  # positions after the query are never read
    values[:, pos + 1 :] = float("nan")
    q = torch.randn(n_head, head_dim, device=device)
    sinks = torch.randn(n_head, device=device) if with_sinks else None
    position = torch.tensor([pos], device=device)
    expected = ReferenceAttention()(
        q[:, None], keys[:, : pos + 1], values[:, : pos + 1], start_pos=pos, scale=scale,
        sliding_window=window, sinks=sinks,
    )  # fmt: skip
    got = decode_attention(q, keys, values, position, scale, window, sinks)
    assert rel_err(got, expected.reshape(-1)) < REL_TOL
    if device == "cuda":  # Triton's CPU-interpreter variant of the same kernel
        same = decode_attention(q, keys, values, position, scale, window, sinks, whole_cache=True)
        assert torch.equal(got, same)


def test_activations_match_the_reference(device) -> None:
    silu_mul, swiglu_oai = decode_kernels(device).silu_mul, decode_kernels(device).swiglu_oai
    gate, up = torch.randn(2, 5000, device=device) * 6
    assert rel_err(silu_mul(gate, up), F.silu(gate) * up) < REL_TOL
    got = swiglu_oai(gate, up, SWIGLU_ALPHA, SWIGLU_LIMIT)
    assert rel_err(got, swiglu(gate, up)) < REL_TOL


def test_activations_read_gate_and_up_as_column_views_of_one_buffer(device) -> None:
    # A MoE's gate and up from one multi-weight GEMV: [T, k, 2F], each half a strided view.
    swiglu_oai = decode_kernels(device).swiglu_oai
    both = torch.randn(1, 4, 2 * 2880, device=device) * 6
    gate, up = both[..., :2880], both[..., 2880:]
    got = swiglu_oai(gate, up, SWIGLU_ALPHA, SWIGLU_LIMIT)
    assert got.shape == (1, 4, 2880)
    assert rel_err(got, swiglu(gate, up)) < REL_TOL


@pytest.mark.parametrize(("n_tokens", "n_expert", "k"), [(1, 32, 4), (3, 128, 4), (2, 10, 3)])
def test_moe_route_picks_the_reference_experts_and_weights(device, n_tokens, n_expert, k) -> None:
    logits = torch.randn(n_tokens, n_expert, device=device) * 3
    ids, weights = decode_kernels(device).moe_route(logits, k)
    expected_ids, expected_weights = route(logits, k)
    assert ids.dtype == torch.long and ids.device == logits.device
    assert torch.equal(ids, expected_ids)
    assert rel_err(weights, expected_weights) < REL_TOL


@pytest.mark.parametrize(("n_expert", "n", "k"), [(32, 2880, 4), (10, 96, 3)])
def test_moe_router_is_the_router_product_then_the_reference_routing(device, n_expert, n, k) -> None:
    """`moe_router` (`KernelConfig.fused_router`): the router's F32 product of the unformed ffn norm plus
    its bias, then top-k and softmax, in one launch on CUDA: the reference's experts and weights; on the
    CPU it declines (None), as for a formed input, a quantized router or more than one token."""
    from kernels.formats import GGMLType
    from kernels.qmatmul import RMSNormed
    from kernels.qtensor import QTensor

    x = torch.randn(1, n, device=device) * 2
    norm_weight = torch.rand(n, device=device) + 0.5
    h = RMSNormed(x, x * norm_weight, 1e-5)
    rows = torch.randn(n_expert, n, device=device)
    weight = QTensor(rows.contiguous().view(torch.uint8).reshape(-1), GGMLType.F32, (n_expert, n), "router")
    bias = torch.randn(n_expert, device=device)
    kernels = decode_kernels(device)
    got = kernels.moe_router(h, weight, bias, k)
    if device == "cpu":
        assert got is None
        return
    logits = h.value() @ rows.T + bias
    want_ids, want_weights = route(logits, k)
    ids, weights = got
    assert ids.dtype == torch.long and torch.equal(ids, want_ids)
    assert rel_err(weights, want_weights) < REL_TOL
    again = kernels.moe_router(h, weight, bias, k)  # the arrival counter is back at zero
    assert torch.equal(again[0], ids) and torch.equal(again[1], weights)
    # The default reads each row in one pass (8 warps) before the wait (`one_pass`, `row_early`); the form
    # before, three dependent steps of 1,024 values, gives the reference's routing too. `row_early` (the
    # weights asked for before the wait) keeps the same sums in the same order in either form.
    late = kernels.moe_router(h, weight, bias, k, row_early=False)
    assert torch.equal(late[0], ids) and torch.equal(late[1], weights)
    steps = kernels.moe_router(h, weight, bias, k, one_pass=False, row_early=False)
    assert torch.equal(steps[0], want_ids) and rel_err(steps[1], want_weights) < REL_TOL
    steps_early = kernels.moe_router(h, weight, bias, k, one_pass=False)
    assert torch.equal(steps_early[0], steps[0]) and torch.equal(steps_early[1], steps[1])
    assert kernels.moe_router(h.value(), weight, bias, k) is None  # a formed input: the GEMV's
    two = RMSNormed(x.repeat(2, 1), (x * norm_weight).repeat(2, 1), 1e-5)
    assert kernels.moe_router(two, weight, bias, k) is None  # the decode step's one token only


def test_moe_combine_adds_the_weighted_experts_to_the_residual(device) -> None:
    x, down = torch.randn(2, 2880, device=device), torch.randn(2, 4, 2880, device=device)
    weights = torch.softmax(torch.randn(2, 4, device=device), dim=-1)
    got = decode_kernels(device).moe_combine(x, down, weights)
    want = x + (down * weights[..., None]).sum(dim=1)
    assert rel_err(got, want) < REL_TOL
    # With the next norm's weight: the sum and the sum times that weight (`RMSNormed`), one launch.
    norm_weight = torch.randn(2880, device=device)
    normed = decode_kernels(device).moe_combine(x, down, weights, then_norm=(norm_weight, 1e-5))
    assert normed.eps == 1e-5 and torch.equal(normed.xw, normed.x * norm_weight)
    assert rel_err(normed.x, want) < REL_TOL


@pytest.mark.parametrize(
    ("neox", "n_head", "n_kv", "head_dim", "rope_dim", "window", "with_sinks", "pos"),
    [
        (True, 14, 2, 64, 64, None, False, 0),
        (True, 14, 2, 64, 64, None, False, 233),
        (False, 9, 3, 64, 64, None, False, 70),
        (True, 32, 32, 96, 96, None, False, 100),
        (True, 4, 4, 96, 32, None, False, 17),
        (True, 64, 8, 64, 64, 128, True, 299),
        (True, 64, 8, 64, 64, 128, True, 5),
        (True, 64, 8, 64, 64, None, True, 0),
    ],
    ids=[
        "qwen-first",
        "qwen",
        "llama",
        "phi3",
        "partial-rotary",
        "gpt-oss-window",
        "gpt-oss-short",
        "sinks-first",
    ],
)
def test_rope_attention_is_rope_kv_store_and_attention_of_the_reference(
    device, neox, n_head, n_kv, head_dim, rope_dim, window, with_sinks, pos
) -> None:
    rope_attention = decode_kernels(device).rope_attention
    capacity, scale = 300, 1 / math.sqrt(head_dim)
    cos, sin = rope_frequencies(head_dim, 10000.0, rope_dim, max_positions=capacity, device=device)
    keys, values = torch.randn(2, n_kv, capacity, head_dim, device=device)
    keys[:, pos:] = float("nan")  # the position itself is written by the kernel; later ones never read
    values[:, pos:] = float("nan")
    q, k, v = (torch.randn(n * head_dim, device=device) for n in (n_head, n_kv, n_kv))
    sinks = torch.randn(n_head, device=device) if with_sinks else None
    position = torch.tensor([pos], device=device)
    as_heads = lambda t, n: t.view(1, n, head_dim).transpose(0, 1)  # noqa: E731
    want_keys, want_values = keys.clone(), values.clone()
    want_keys[:, pos] = apply_rope(as_heads(k, n_kv), cos, sin, position, neox)[:, 0]
    want_values[:, pos] = v.view(n_kv, head_dim)
    q_rot = apply_rope(as_heads(q, n_head), cos, sin, position, neox)
    expected = ReferenceAttention()(
        q_rot, want_keys[:, : pos + 1], want_values[:, : pos + 1], start_pos=pos, scale=scale,
        sliding_window=window, sinks=sinks,
    )  # fmt: skip
    got = rope_attention(q, k, v, keys, values, cos, sin, position, neox, scale, window, sinks)
    assert rel_err(got, expected.reshape(-1)) < REL_TOL
    assert rel_err(keys[:, pos], want_keys[:, pos]) < REL_TOL
    assert torch.equal(values[:, pos], want_values[:, pos])
    assert keys[:, pos + 1 :].isnan().all() and values[:, pos + 1 :].isnan().all()  # nothing else written
    if device == "cuda":  # Triton's CPU-interpreter variant of the same kernel
        same = rope_attention(
            q, k, v, keys, values, cos, sin, position, neox, scale, window, sinks, whole_cache=True
        )
        assert torch.equal(got, same)
        # The re-tiled attention (`attention_tile(retiled=True)`: dot products for grouped heads) on
        # a fresh copy of the cache: the reference's numbers and the same new K/V.
        keys2, values2 = want_keys.clone(), want_values.clone()
        keys2[:, pos], values2[:, pos] = float("nan"), float("nan")
        retiled = rope_attention(
            q, k, v, keys2, values2, cos, sin, position, neox, scale, window, sinks, retiled=True
        )
        assert rel_err(retiled, expected.reshape(-1)) < REL_TOL
        assert torch.equal(keys2[:, pos], keys[:, pos]) and torch.equal(values2[:, pos], values[:, pos])
        # The splits sharing the positions the step reads (`by_position=True`), with one split and the
        # most: the reference's numbers, the same new K/V, nothing else written.
        for max_splits in (1, 16):
            keys3, values3 = want_keys.clone(), want_values.clone()
            keys3[:, pos:], values3[:, pos:] = float("nan"), float("nan")
            by_position = rope_attention(
                q, k, v, keys3, values3, cos, sin, position, neox, scale, window, sinks,
                max_splits=max_splits, by_position=True,
            )  # fmt: skip
            assert rel_err(by_position, expected.reshape(-1)) < REL_TOL
            assert torch.equal(keys3[:, pos], keys[:, pos]) and torch.equal(values3[:, pos], values[:, pos])
            assert keys3[:, pos + 1 :].isnan().all() and values3[:, pos + 1 :].isnan().all()
        # The merge as runtime loops over the splits (`unrolled_merge=False`, the form before the unrolled
        # default): the same bits.
        keys4, values4 = want_keys.clone(), want_values.clone()
        keys4[:, pos:], values4[:, pos:] = float("nan"), float("nan")
        looped = rope_attention(
            q, k, v, keys4, values4, cos, sin, position, neox, scale, window, sinks, unrolled_merge=False
        )
        assert torch.equal(looped, got)
        assert torch.equal(keys4[:, pos], keys[:, pos]) and torch.equal(values4[:, pos], values[:, pos])
        # Grouped heads two a program (`heads_apart=True`), the retiled dot loop unpipelined
        # (`dot_stages=1`), the tiles before 2026-12-07's defaults: the reference's numbers, the same new
        # K/V, nothing else written.
        tiles_before = {"retiled": False, "heads_apart": False}
        for options in ({"heads_apart": True}, {"retiled": True, "dot_stages": 1}, tiles_before):
            keys5, values5 = want_keys.clone(), want_values.clone()
            keys5[:, pos:], values5[:, pos:] = float("nan"), float("nan")
            other = rope_attention(
                q, k, v, keys5, values5, cos, sin, position, neox, scale, window, sinks, **options
            )
            assert rel_err(other, expected.reshape(-1)) < REL_TOL, options
            assert torch.equal(keys5[:, pos], keys[:, pos]) and torch.equal(values5[:, pos], values[:, pos])
            assert keys5[:, pos + 1 :].isnan().all() and values5[:, pos + 1 :].isnan().all()


@pytest.mark.parametrize("max_splits", [2, 4, 8])
@pytest.mark.parametrize(
    ("n_head", "n_kv", "head_dim", "window", "with_sinks", "pos"),
    [
        (32, 32, 96, None, False, 100),
        (14, 2, 64, None, False, 233),
        (64, 8, 64, 128, True, 299),
        (64, 8, 64, 128, True, 5),
    ],
    ids=["phi3", "qwen", "gpt-oss-window", "gpt-oss-short"],
)
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=CUDA)])
def test_clustered_attention_merge_gives_the_counters_bits(
    device, n_head, n_kv, head_dim, window, with_sinks, pos, max_splits
) -> None:
    """`rope_attention(clustered=True)`: a KV head's splits (2, 3 and 5 of the 300-position cache here) as one
    thread-block cluster, merged in split 0's shared memory, give the arrival counters' merge bit for bit
    and the same new K/V (sm_90+, launched as clusters of the splits)."""
    from kernels import cluster_launch, triton_decode

    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("thread-block clusters needs sm_90")
    capacity, scale = 300, 1 / math.sqrt(head_dim)
    cos, sin = rope_frequencies(head_dim, 10000.0, None, max_positions=capacity, device=device)
    keys, values = torch.randn(2, n_kv, capacity, head_dim, device=device)
    q, k, v = (torch.randn(n * head_dim, device=device) for n in (n_head, n_kv, n_kv))
    sinks = torch.randn(n_head, device=device) if with_sinks else None
    position = torch.tensor([pos], device=device)
    got, caches, sizes = {}, {}, []
    launch = cluster_launch.launch

    def recorded(kernel, grid, size, *args, **kwargs):  # the cluster size of each clustered launch
        sizes.append(size)
        launch(kernel, grid, size, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cluster_launch, "launch", recorded)
        for clustered in (False, True):
            caches[clustered] = (keys.clone(), values.clone())
            got[clustered] = triton_decode.rope_attention(
                q, k, v, *caches[clustered], cos, sin, position, True, scale, window, sinks,
                max_splits=max_splits, clustered=clustered,
            )  # fmt: skip
    splits = -(-capacity // max(32, 1 << (-(-capacity // max_splits) - 1).bit_length()))
    assert sizes == [splits]
    assert torch.equal(got[True], got[False])
    assert all(torch.equal(a, b) for a, b in zip(caches[True], caches[False], strict=True))
