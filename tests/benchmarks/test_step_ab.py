"""Which decode variants `benchmarks.step_ab --only` runs (the A/B itself needs a CUDA device)."""

from __future__ import annotations

import dataclasses


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
    # A text of several words names the variants holding every one of them, in any order.
    assert list(select_variants(variants, ["late dependent"])) == [
        "default",
        "with dependent launch, late trigger",
    ]
    assert list(select_variants(variants, ["gemv ahead", "  "])) == ["default", "GEMV loads ahead"]


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
    big = triton_gemv.default_config(GGMLType.Q4_K, 3072, 8192, 1, 132)  # Phi-3-mini's ffn_down (Q4_K layers)
    assert not big.ahead
    # File-order Q6_K loads ahead at every size; regrouped, only in the small tiles.
    assert triton_gemv.default_config(GGMLType.Q6_K, 3072, 8192, 1, 132).ahead
    regrouped = triton_gemv.REGROUPED_LAYOUTS[GGMLType.Q6_K]
    assert not triton_gemv.default_config(GGMLType.Q6_K, 3072, 8192, 1, 132, layout=regrouped).ahead


def test_the_k_quant_ahead_rule_leaves_q6_k_and_the_doubled_split_stays_within_the_steps() -> None:
    """The rule "k4-k5-ahead": Phi-3's Q4_K and Q5_K tiles load ahead, its large Q6_K tile (registers) does not;
    "splits-doubled": twice the split, never more programs a tile than the loop has steps; "splits-halved": half
    of it, at least one."""
    import pytest

    pytest.importorskip("triton")
    from benchmarks.step_ab import GEMV_SHAPE_RULES
    from kernels import triton_gemv
    from kernels.formats import GGMLType

    regrouped_q6_k = triton_gemv.REGROUPED_LAYOUTS[GGMLType.Q6_K]
    layouts = (
        (GGMLType.Q4_K, None, True),
        (GGMLType.Q5_K, None, True),
        (GGMLType.Q6_K, regrouped_q6_k, False),
    )
    for qtype, layout, ahead in layouts:
        shape = (9216, 3072, 1, 132)
        layout = layout or triton_gemv.LAYOUTS[qtype]
        config = triton_gemv.default_config(qtype, *shape, layout=layout)
        assert not config.ahead
        assert GEMV_SHAPE_RULES["k4-k5-ahead"](config, layout, shape).ahead is ahead
    # Q4_K's register cap is its plain loop's: the rule's loop that loads ahead launches without it.
    q4_k = triton_gemv.default_config(GGMLType.Q4_K, 9216, 3072, 1, 132)
    assert q4_k.register_cap == 64
    assert (
        GEMV_SHAPE_RULES["k4-k5-ahead"](q4_k, triton_gemv.LAYOUTS[GGMLType.Q4_K], shape).register_cap is None
    )
    shape = (9216, 3072, 1, 132)  # 12 super-blocks a row, one a step
    config = triton_gemv.default_config(GGMLType.Q4_K, *shape)
    doubled = GEMV_SHAPE_RULES["splits-doubled"](config, triton_gemv.LAYOUTS[GGMLType.Q4_K], shape)
    assert doubled.split == min(2 * config.split, 12) and doubled.block_n == config.block_n
    many = dataclasses.replace(config, split=8)
    assert GEMV_SHAPE_RULES["splits-doubled"](many, triton_gemv.LAYOUTS[GGMLType.Q4_K], shape).split == 12
    # "splits-halved": half the split, at least one program a tile.
    halved = GEMV_SHAPE_RULES["splits-halved"](many, triton_gemv.LAYOUTS[GGMLType.Q4_K], shape)
    assert (halved.split, halved.block_n, halved.register_cap) == (4, config.block_n, config.register_cap)
    unsplit = dataclasses.replace(config, split=1)
    assert GEMV_SHAPE_RULES["splits-halved"](unsplit, triton_gemv.LAYOUTS[GGMLType.Q4_K], shape).split == 1


def test_the_register_cap_rules_cap_only_the_tensor_core_launches() -> None:
    """ "tc-registers-80": a launch on the tensor cores takes maxnreg 80 (`GemvConfig.tc_max_registers`) and
    nothing else changes; a CUDA-core launch is left as it is (its own cap is `max_registers`)."""
    import pytest

    pytest.importorskip("triton")
    from benchmarks.step_ab import GEMV_SHAPE_RULES
    from kernels import triton_gemv
    from kernels.formats import GGMLType

    shape = (8192, 3072, 1, 132)
    layout = triton_gemv.LAYOUTS[GGMLType.Q4_K]
    config = dataclasses.replace(triton_gemv.default_config(GGMLType.Q4_K, *shape), tensor_cores=True)
    assert config.tc_max_registers is None
    assert GEMV_SHAPE_RULES["tc-registers-80"](config, layout, shape) == dataclasses.replace(
        config, tc_max_registers=80
    )
    cuda_cores = dataclasses.replace(config, tensor_cores=False)
    assert GEMV_SHAPE_RULES["tc-registers-96"](cuda_cores, layout, shape) == cuda_cores


def test_the_rule_before_walks_the_most_units_that_leave_four_programs_an_sm() -> None:
    """ "tc-walks-before" on Phi-3's Q4_K shapes on 132 SMs (`GemvConfig.tc_units_per_program`): gate/up (its
    GLU launch has 128 row tiles) 2 super-blocks, 768 programs; q/k/v 2; the output projection 1; down 2.
    Block formats and CUDA-core launches are left as they are."""
    import pytest

    pytest.importorskip("triton")
    from benchmarks.step_ab import GEMV_SHAPE_RULES
    from kernels import triton_gemv
    from kernels.formats import GGMLType

    rule = GEMV_SHAPE_RULES["tc-walks-before"]
    q4_k = triton_gemv.LAYOUTS[GGMLType.Q4_K]
    for shape, per in {(8192, 3072): 2, (9216, 3072): 2, (3072, 3072): 1, (3072, 8192): 2}.items():
        full = (*shape, 1, 132)
        config = dataclasses.replace(triton_gemv.default_config(GGMLType.Q4_K, *full), tensor_cores=True)
        assert rule(config, q4_k, full) == dataclasses.replace(config, tc_units_per_program=per), shape
        cuda_cores = dataclasses.replace(config, tensor_cores=False)
        assert rule(cuda_cores, q4_k, full) == cuda_cores
    q8 = triton_gemv.Q8_0_CODES_THEN_SCALES_LAYOUT
    oss = (5120, 2880, 1, 132)
    config = triton_gemv.default_config(GGMLType.Q8_0, *oss, tensor_cores=True, layout=q8)
    assert rule(config, q8, oss) == config


def test_the_stream_probe_launches_the_gemvs_split() -> None:
    """`benchmarks.stream_probe` times its loads in the GEMV's own launch shape: the same split for the
    same rows a program (`triton_gemv.default_config`'s rule)."""
    import pytest

    pytest.importorskip("triton")
    import triton

    from benchmarks.stream_probe import SHAPES
    from kernels import triton_gemv

    for shape in SHAPES:
        config = triton_gemv.default_config(shape.qtype, shape.out_features, shape.in_features, 1, 132)
        n_tiles = triton.cdiv(shape.out_features, config.block_n)
        assert triton_gemv.split_for(n_tiles, shape.in_features // 256, 3, 132) == config.split, shape


def test_regrouped_weights_swap_in_regrouped_copies_and_put_the_originals_back() -> None:
    """The `Q8_0 regrouped` variants' weights: each 2-D Q8_0 matrix (a tied embedding and output once) a
    regrouped copy with the same values while the block runs, the file-order originals after, the same
    copies on the next entry (a graph captured with them keeps reading them); other types untouched. And
    the way back (`2-D matrices in file order`): the file's bytes again, while the block runs."""
    import types as namespaces
    from unittest import mock

    import numpy as np
    import pytest
    import torch
    from gguf import GGMLQuantizationType, quants

    pytest.importorskip("triton")
    from benchmarks.step_ab import FILE_ORDER, regroupable_types, regrouped_matrix_count, regrouped_weights
    from kernels import triton_gemv
    from kernels.formats import GGMLType
    from kernels.qtensor import CODES_THEN_SCALES, GGML, QTensor
    from tests.kernels import interpreter

    rng = np.random.default_rng(5)

    def q8_0(shape, name):
        values = rng.normal(0.0, 1.0, shape).astype(np.float32)
        packed = quants.quantize(values, GGMLQuantizationType.Q8_0)
        return QTensor.from_bytes(packed.tobytes(), GGMLType.Q8_0, shape, name)

    embd = q8_0((40, 64), "token_embd.weight")
    other = QTensor.from_float(torch.ones(8, 64, dtype=torch.float16), "ffn_down.weight")
    layer_q = q8_0((64, 64), "attn_q.weight")
    layer = namespaces.SimpleNamespace(wq=layer_q, w2=other)
    model = namespaces.SimpleNamespace(token_embd=embd, output=embd, layers=[layer])
    assert regroupable_types(model) == [GGMLType.Q8_0]
    want = {name: t.dequantize() for name, t in (("embd", embd), ("q", layer.wq))}
    with mock.patch.object(triton_gemv, "pack", interpreter.as_if_cuda(triton_gemv.pack)):
        with regrouped_weights(model, (GGMLType.Q8_0,)) as n:
            assert n == 2 and model.output is model.token_embd  # still one table
            assert model.token_embd.layout == CODES_THEN_SCALES and layer.wq.layout == CODES_THEN_SCALES
            assert torch.equal(model.token_embd.dequantize(), want["embd"])
            assert torch.equal(layer.wq.dequantize(), want["q"]) and layer.w2.layout == GGML
            first = layer.wq
        assert model.token_embd is embd and model.output is embd and layer.wq.layout == GGML
        with regrouped_weights(model, (GGMLType.Q8_0,)):
            assert layer.wq is first
            # A model loaded with its Q8_0 matrices regrouped (the default): `2-D matrices in file order`
            # reads copies in the file's order, with the same values, and puts the regrouped ones back.
            assert regrouped_matrix_count(model) == 2
            with regrouped_weights(model, FILE_ORDER) as n:
                assert n == 2 and model.output is model.token_embd
                assert model.token_embd.layout == GGML and layer.wq.layout == GGML
                assert torch.equal(model.token_embd.data, embd.data) and torch.equal(
                    layer.wq.data, layer_q.data
                )
            assert layer.wq is first and regrouped_matrix_count(model) == 2
        assert regrouped_matrix_count(model) == 0


def test_the_tensor_core_choice_takes_the_larger_q4_k_and_regrouped_q6_k_matrices_and_the_rules_move_it() -> (
    None
):
    """`default_config(tensor_cores=True)` (the worker's kernel set) puts Q4_K and regrouped Q6_K matrices of at
    least `TENSOR_CORE_MIN_BYTES` on the tensor cores and nothing else; the step A/B's "cuda-cores" rule
    takes that back ("q6-k-cuda-cores" for Q6_K only), "q4-k-tensor-cores" adds the smaller Q4_K matrices
    and leaves other types alone."""
    import pytest

    pytest.importorskip("triton")
    from benchmarks.step_ab import GEMV_SHAPE_RULES
    from kernels import triton_gemv
    from kernels.formats import GGMLType

    phi_o = (3072, 3072, 1, 132)  # 5.3 MB
    qwen_down = (896, 4864, 1, 132)  # 2.4 MB
    assert triton_gemv.default_config(GGMLType.Q4_K, *phi_o, tensor_cores=True).tensor_cores
    assert not triton_gemv.default_config(GGMLType.Q4_K, *phi_o).tensor_cores  # the kernel set did not ask
    assert not triton_gemv.default_config(GGMLType.Q4_K, *qwen_down, tensor_cores=True).tensor_cores
    assert not triton_gemv.default_config(GGMLType.Q6_K, *phi_o, tensor_cores=True).tensor_cores  # file order
    regrouped = triton_gemv.REGROUPED_LAYOUTS[GGMLType.Q6_K]
    phi_down = (3072, 8192, 1, 132)  # 19.7 MB, regrouped by default
    on_q6 = triton_gemv.default_config(GGMLType.Q6_K, *phi_down, tensor_cores=True, layout=regrouped)
    assert on_q6.tensor_cores
    assert not GEMV_SHAPE_RULES["q6-k-cuda-cores"](on_q6, regrouped, phi_down).tensor_cores
    q4_k, q6_k = triton_gemv.LAYOUTS[GGMLType.Q4_K], triton_gemv.LAYOUTS[GGMLType.Q6_K]
    on = triton_gemv.default_config(GGMLType.Q4_K, *phi_o, tensor_cores=True)
    assert not GEMV_SHAPE_RULES["cuda-cores"](on, q4_k, phi_o).tensor_cores
    small = triton_gemv.default_config(GGMLType.Q4_K, *qwen_down, tensor_cores=True)
    assert GEMV_SHAPE_RULES["q4-k-tensor-cores"](small, q4_k, qwen_down).tensor_cores
    q6 = triton_gemv.default_config(GGMLType.Q6_K, *phi_o, tensor_cores=True)
    assert not GEMV_SHAPE_RULES["q4-k-tensor-cores"](q6, q6_k, phi_o).tensor_cores
    # Regrouped Q8_0 reads on the tensor cores only where a variant asks (not timed yet): GPT-OSS's attention
    # matrices in both Q8_0 variants, its 615 MB output only in the one without a bound, Qwen2.5's 0.9 MB
    # attention matrices in neither.
    q8 = triton_gemv.REGROUPED_LAYOUTS[GGMLType.Q8_0]
    oss_qkv, oss_output, qwen_q = (5120, 2880, 1, 132), (201088, 2880, 1, 132), (896, 896, 1, 132)
    everywhere, bounded = (
        GEMV_SHAPE_RULES["q8-0-tensor-cores"],
        GEMV_SHAPE_RULES["q8-0-tensor-cores-below-64-mib"],
    )
    for shape, on_all, on_bounded in (
        (oss_qkv, True, True),
        (oss_output, True, False),
        (qwen_q, False, False),
    ):
        default = triton_gemv.default_config(GGMLType.Q8_0, *shape, tensor_cores=True, layout=q8)
        assert not default.tensor_cores
        assert everywhere(default, q8, shape).tensor_cores is on_all
        assert bounded(default, q8, shape).tensor_cores is on_bounded
    assert everywhere(on, q4_k, phi_o) is on  # other layouts as they were
    mxfp4 = triton_gemv.REGROUPED_LAYOUTS[GGMLType.MXFP4]
    experts = triton_gemv.default_config(GGMLType.MXFP4, 2880, 2880, 4, 132, tensor_cores=True, layout=mxfp4)
    assert not experts.tensor_cores  # not in TENSOR_CORE_FORMATS until timed
    assert GEMV_SHAPE_RULES["mxfp4-tensor-cores"](experts, mxfp4, (2880, 2880, 4, 132)).tensor_cores
    both = GEMV_SHAPE_RULES["block-formats-tensor-cores"]
    assert both(experts, mxfp4, (2880, 2880, 4, 132)).tensor_cores
    oss_q = triton_gemv.default_config(GGMLType.Q8_0, *oss_qkv, tensor_cores=True, layout=q8)
    assert both(oss_q, q8, oss_qkv).tensor_cores
    oss_out = triton_gemv.default_config(GGMLType.Q8_0, *oss_output, tensor_cores=True, layout=q8)
    assert not both(oss_out, q8, oss_output).tensor_cores


def test_the_tensor_core_kernel_walks_the_fewest_super_blocks_within_one_wave() -> None:
    """Phi-3's Q4_K shapes on 132 SMs: the fewest super-blocks that keep the grid within four programs an SM
    (timed in the step on an H200, 2026-12-07: +7.0 %), 4 where none does (the 501-tile output); the rule
    before gave the most that leave at least four. GPT-OSS's regrouped Q8_0 shapes keep that rule, in
    32-element blocks, divisors of their rows'."""
    import pytest

    pytest.importorskip("triton")
    from kernels.tensor_core_gemv import units_per_program, units_per_program_before

    assert units_per_program("q4_k", 12, 128, 132) == 4  # ffn_up's GLU launch: 384 programs
    assert units_per_program_before("q4_k", 12, 128, 132) == 2  # 768: 1.45 waves at 103 registers
    assert units_per_program("q4_k", 12, 144, 132) == 4  # attn_qkv
    assert units_per_program("q4_k", 12, 48, 132) == 2  # attn_output
    assert units_per_program("q4_k", 32, 48, 132) == 4  # ffn_down
    assert units_per_program("q6_k_codes_then_scales", 12, 501, 132) == 4  # output: no walk fits one wave
    assert units_per_program("q4_k", 19, 14, 132) == 1  # a row of 19 super-blocks: only 1 divides it
    q8_0 = "q8_0_codes_then_scales"
    assert units_per_program(q8_0, 90, 80, 132) == 10  # attn_qkv 5,120 x 2,880: 9 splits
    assert units_per_program(q8_0, 128, 45, 132) == 8  # attn_output 2,880 x 4,096: 16 splits
    assert units_per_program(q8_0, 90, 3142, 132) == 30  # output 201,088 x 2,880: at most 32 a program


def test_every_launch_shape_variant_names_a_rule() -> None:
    """The step A/B's launch-shape variants (`GEMV_SHAPE_VARIANTS`, `Q8_0_VARIANTS`) each name a rule of
    `GEMV_SHAPE_RULES`, and no variant is named twice."""
    from benchmarks.step_ab import GEMV_SHAPE_RULES, GEMV_SHAPE_VARIANTS, Q8_0_VARIANTS

    assert set(GEMV_SHAPE_VARIANTS.values()) | set(Q8_0_VARIANTS.values()) <= set(GEMV_SHAPE_RULES)
    assert not set(GEMV_SHAPE_VARIANTS) & set(Q8_0_VARIANTS)


def test_only_default_is_the_default_alone() -> None:
    """`run_gpu.sh`'s BENCH_STEP_BASE times a tree's default kernels with `--only default` (an earlier tree
    knows no other way to ask for them alone): no variant's name may hold the word."""
    import inspect
    import re

    from benchmarks import step_ab

    named = [
        *step_ab.GEMV_SHAPE_VARIANTS,
        *step_ab.Q8_0_VARIANTS,
        *re.findall(r'variants\[f?"([^"]+)"\]', inspect.getsource(step_ab.main)),
        *re.findall(r'^\s+"([^"]+)": dependent_launch\.', inspect.getsource(step_ab.main), re.M),
    ]
    assert len(named) > 30 and not [name for name in named if "default" in name.lower()]
    variants = dict.fromkeys(["default", *named])
    assert list(step_ab.select_variants(variants, ["default"])) == ["default"]
