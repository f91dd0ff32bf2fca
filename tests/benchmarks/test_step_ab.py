"""Which decode variants `benchmarks.step_ab --only` runs (the A/B itself needs a CUDA device)."""

from __future__ import annotations


def test_only_keeps_the_default_and_the_variants_named() -> None:
    from benchmarks.step_ab import select_variants

    variants = dict.fromkeys(
        [
            "default",
            "GEMV loads at use (the step before)",
            "GEMV loads ahead",
            "attention re-tiled",
            "with dependent launch",
            "with dependent launch, late trigger",
        ]
    )
    assert select_variants(variants, None) == variants
    assert list(select_variants(variants, ["gemv", "LATE"])) == [
        "default",
        "GEMV loads at use (the step before)",
        "GEMV loads ahead",
        "with dependent launch, late trigger",
    ]
    assert list(select_variants(variants, ["nothing like it"])) == ["default"]


def test_the_loop_form_rules_give_one_form_each() -> None:
    """`gemv_launch_shapes` rules applied to the default launch shapes, which load ahead in the small
    super-block tiles: "plain" takes that back everywhere, "with-words" replaces it (a loop has one form)."""
    import pytest

    pytest.importorskip("triton")
    from benchmarks.step_ab import GEMV_SHAPE_RULES
    from kernels import triton_gemv
    from kernels.formats import GGMLType

    shape = (896, 4864, 1, 132)  # Qwen2.5-0.5B's ffn_down (Q6_K)
    config = triton_gemv.default_config(GGMLType.Q6_K, *shape)
    layout = triton_gemv.LAYOUTS[GGMLType.Q6_K]
    assert config.ahead
    assert not GEMV_SHAPE_RULES["plain"](config, layout, shape).ahead
    words = GEMV_SHAPE_RULES["with-words"](config, layout, shape)
    assert words.with_words and not words.ahead
    big = triton_gemv.default_config(GGMLType.Q6_K, 3072, 8192, 1, 132)  # Phi-3-mini's ffn_down
    assert not big.ahead
