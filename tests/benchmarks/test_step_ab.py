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
