"""`benchmarks.profile_step`'s per-weight attribution: the labels and the ranges it puts around products."""

from __future__ import annotations

import torch

from benchmarks.profile_step import PRODUCT_METHODS, named_products, products_by_weight, weight_label
from kernels.backend import KernelConfig, KernelSet
from kernels.qtensor import QTensor
from tests.worker.llama_helpers import load_model


def _named(name: str) -> QTensor:
    return QTensor.from_float(torch.zeros(2, 32), name)


def test_a_weight_label_drops_the_layer_and_the_suffix() -> None:
    assert weight_label(_named("blk.17.attn_q.weight")) == "attn_q"
    assert weight_label((_named("blk.0.ffn_gate.weight"), _named("blk.0.ffn_up.weight"))) == "ffn_gate+ffn_up"
    assert weight_label(_named("output.weight")) == "output"


def test_each_outermost_product_of_a_step_is_one_range_and_the_methods_come_back() -> None:
    """A llama step on CPU under the profiler: every layer's products appear once per token under their
    weights' names (qmatmul_add's inner qmatmul is not counted twice), and leaving restores the methods."""
    from torch.profiler import ProfilerActivity, profile

    model, _, _ = load_model("tiny/llama-f32.gguf", kernels=KernelConfig(kernels="reference"))
    before = {name: getattr(KernelSet, name) for name in PRODUCT_METHODS if hasattr(KernelSet, name)}
    cache = model.new_cache(8)
    try:
        model.forward(torch.tensor([1, 2, 3]), cache, last_only=True)
        with named_products(KernelSet), profile(activities=[ProfilerActivity.CPU]) as prof:
            model.forward(torch.tensor([4]), cache, last_only=True)
    finally:
        cache.free()
    assert {name: getattr(KernelSet, name) for name in before} == before
    per_token = products_by_weight(prof.events(), 1)
    n_layer = model.config.n_layer
    assert per_token["attn_q+attn_k+attn_v"]["calls"] == n_layer
    assert per_token["attn_output"]["calls"] == n_layer  # qmatmul_add, its inner qmatmul not again
    assert per_token["ffn_down"]["calls"] == n_layer
    assert per_token["output"]["calls"] == 1


def test_both_decode_gemv_kernels_count_as_gemvs() -> None:
    """The CUDA-core loop and the tensor-core Q4_K kernel (`kernels.tensor_core_gemv`) in one class: a
    profile that put the second under "other" would hide where a Phi-3 token's time goes."""
    from benchmarks.profile_step import kernel_class

    assert kernel_class("_qgemv_kernel") == kernel_class("_tc_gemv_kernel") == "GEMV (quantized, Triton)"
    assert kernel_class("_rope_attention_kernel") == "attention"
