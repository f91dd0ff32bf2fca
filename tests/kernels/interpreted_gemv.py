"""The decode GEMV's numbers without a GPU: `kernels/triton_gemv.py` run by Triton's interpreter on CPU.

    TRITON_INTERPRET=1 python -m tests.kernels.interpreted_gemv [--formats q4_k mxfp4 ...]

Triton's interpreter executes a kernel's operations with NumPy, program by program, so the fused decoders
and their products can be checked against gguf-py's dequantization on a machine without a GPU (slowly:
seconds per launch on small shapes). The checks: the plain product, the decode step's
norms inside the GEMV (an rms-normed input; the residual sum with its scaled copy; each in one launch
and split in two), the segmented launch with expert ids and biases, the dequantizer and the embedding
rows by id (the table as one-row experts), against a float64 oracle or the reference's rows. Prints one line per check and exits 1 if any
fails. The interpreter must be chosen before the kernels are defined (`TRITON_INTERPRET=1` in the
environment of a fresh process); `tests/kernels/test_triton_interpreted.py` runs this module that way.
The CUDA tests stay the judge of what the GPU computes; this catches a wrong decoder before device time.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from tests.kernels import interpreter

REL_TOL = 1e-5  # as tests/kernels: the fast paths against the float64 oracle


def _oracle_weight(qtype, shape, rng):
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize

    from kernels.formats import FORMATS
    from kernels.qtensor import QTensor
    from tests.kernels.conftest import make_blocks

    raw = make_blocks(qtype, int(np.prod(shape)) // FORMATS[qtype].block_size, rng, realistic=True)
    w = QTensor.from_bytes(raw.tobytes(), qtype, shape, f"w.{qtype.name}")
    values = gguf_dequantize(raw.reshape(*shape[:-1], -1), GGMLQuantizationType(int(qtype)))
    return w, torch.from_numpy(np.ascontiguousarray(values)).double().reshape(shape)


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).abs().max() / want.abs().max())


SWIGLU_OAI = (1.702, 7.0)  # gpt-oss's alpha and limit


def _oai_experts(x64, g64, u64, gb, ub, ids) -> torch.Tensor:
    """The float64 oracle of a MoE's gate/up and clamped SwiGLU for one token's experts `ids`."""
    alpha, limit = SWIGLU_OAI
    gate = torch.einsum("i,poi->po", x64[0], g64[ids]) + gb.double()[ids]
    up = torch.einsum("i,poi->po", x64[0], u64[ids]) + ub.double()[ids]
    gate, up = gate.clamp(max=limit), up.clamp(min=-limit, max=limit)
    return gate * torch.sigmoid(alpha * gate) * (up + 1)


def _split_config():
    """A launch shape that splits each row in two (so the split-K reduction runs)."""
    from kernels import triton_gemv

    return triton_gemv.GemvConfig(block_n=16, units_per_step=1, num_warps=4, split=2, stages=1)


def check_format(name: str, rng) -> list[tuple[str, bool, str]]:
    from kernels import triton_gemv
    from kernels.formats import GGMLType
    from tests.kernels.conftest import EXACT_TYPES, assert_half_of

    qtype = GGMLType[name.upper()]
    unit = triton_gemv.LAYOUTS[qtype].unit
    k_in = 2 * unit if unit == 256 else 8 * unit
    results = []
    # Plain product with a bias: 40 rows (a partial row tile) x k_in.
    w, w64 = _oracle_weight(qtype, (40, k_in), rng)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, k_in)).astype(np.float32))
    bias = torch.from_numpy(rng.normal(0.0, 0.1, 40).astype(np.float32))
    y = triton_gemv.launch(x, w, bias, 1)
    err = _rel_err(y, x.double() @ w64.T + bias.double())
    results.append((f"{name} plain+bias", err < REL_TOL, f"rel err {err:.1e}"))
    # The decode step's norms inside the GEMVs, in one launch and split in two (the split-K reduction's
    # epilogue): rms_norm(rows) @ W.T + bias from rows x weight and the rows' 1/rms; and the residual
    # riding in as the bias, with the sum times the next norm weight stored beside the sum.
    rows = x * 3.0 + 0.5
    nw = torch.from_numpy(rng.normal(1.0, 0.2, k_in).astype(np.float32))
    eps = 1e-6
    normed = rows.double() / torch.sqrt(rows.double().pow(2).mean(-1, keepdim=True) + eps) * nw.double()
    residual = torch.from_numpy(rng.normal(0.0, 1.0, 40).astype(np.float32))
    nw_out = torch.from_numpy(rng.normal(1.0, 0.2, 40).astype(np.float32))
    summed = x.double() @ w64.T + residual.double()
    for label, config in (("one launch", None), ("split in two", _split_config())):
        y = triton_gemv.launch_segments(
            rows * nw, (w,), (bias,), 1, rms_of=rows.contiguous(), eps=eps, config=config
        )
        err = _rel_err(y, normed @ w64.T + bias.double())
        results.append((f"{name} rms-normed input, {label}", err < REL_TOL, f"rel err {err:.1e}"))
        y, yw = triton_gemv.launch_segments(x, (w,), (residual,), 1, scaled_by=nw_out, config=config)
        err = max(_rel_err(y, summed), _rel_err(yw, summed * nw_out.double()))
        results.append(
            (f"{name} residual sum and its scaled copy, {label}", err < REL_TOL, f"rel err {err:.1e}")
        )
        # GPT-OSS's output projection: a bias and the residual (the epilogue's second addend).
        y, yw = triton_gemv.launch_segments(
            x, (w,), (bias,), 1, scaled_by=nw_out, config=config, residual=residual.reshape(1, -1)
        )
        biased = summed + bias.double()
        err = max(_rel_err(y, biased), _rel_err(yw, biased * nw_out.double()))
        results.append(
            (f"{name} residual, bias and scaled copy, {label}", err < REL_TOL, f"rel err {err:.1e}")
        )
    # Gate, up and SiLU in one launch (the decode step's FFN): two tensors, and one fused [gate; up]
    # matrix read as row views; with the rms-normed input; in one launch and split in two.
    (g2, g2_64), (u2, u2_64) = _oracle_weight(qtype, (40, k_in), rng), _oracle_weight(qtype, (40, k_in), rng)
    fused = type(g2)(torch.cat([g2.data, u2.data]), g2.qtype, (80, k_in), "ffn_up")
    for label, config in (("one launch", None), ("split in two", _split_config())):
        for pair_label, (gate, up) in (
            ("two tensors", (g2, u2)),
            ("[gate; up] rows", triton_gemv.gate_and_up_rows(fused)),
        ):
            for norm_label, xin, rms_of, want_x in (
                ("", x, None, x.double()),
                (", rms-normed", rows * nw, rows.contiguous(), normed),
            ):
                y = triton_gemv.launch_segments(
                    xin, (gate, up), (None, None), 1, rms_of=rms_of, eps=eps, config=config, glu=True
                )
                g_want, u_want = want_x @ g2_64.T, want_x @ u2_64.T
                err = _rel_err(y, g_want * torch.sigmoid(g_want) * u_want)
                results.append(
                    (
                        f"{name} gate/up/SiLU, {pair_label}{norm_label}, {label}",
                        err < REL_TOL,
                        f"rel err {err:.1e}",
                    )
                )
    # Two expert tensors (gate and up) in one segmented launch with expert ids, 1 token x 3 experts.
    (g, g64), (u, u64) = _oracle_weight(qtype, (4, 24, k_in), rng), _oracle_weight(qtype, (4, 24, k_in), rng)
    ids = torch.tensor([3, 0, 3])
    y = triton_gemv.launch_segments(x, (g, u), (None, None), 3, expert_ids=ids, x_group=3)
    want = torch.cat([torch.einsum("i,poi->po", x[0].double(), t[ids]) for t in (g64, u64)], dim=1)
    # ... with the rms-normed input (GPT-OSS's ffn norm inside its experts' GEMV).
    y_normed = triton_gemv.launch_segments(
        rows * nw, (g, u), (None, None), 3, expert_ids=ids, x_group=3, rms_of=rows.contiguous(), eps=eps
    )
    want_normed = torch.cat([torch.einsum("i,poi->po", normed[0], t[ids]) for t in (g64, u64)], dim=1)
    err = _rel_err(y_normed, want_normed)
    results.append((f"{name} experts, two segments, rms-normed", err < REL_TOL, f"rel err {err:.1e}"))
    # GPT-OSS's experts: gate, up, their biases and the clamped SwiGLU in one launch (each pair's program
    # walks the same rows of both), plain and rms-normed input, in one launch and split in two.
    gb = torch.from_numpy(rng.normal(0.0, 0.5, (4, 24)).astype(np.float32))
    ub = torch.from_numpy(rng.normal(0.0, 0.5, (4, 24)).astype(np.float32))
    for label, config in (("one launch", None), ("split in two", _split_config())):
        for norm_label, xin, rms_of, want_x in (
            ("", x, None, x.double()),
            (", rms-normed", rows * nw, rows.contiguous(), normed),
        ):
            y_glu = triton_gemv.launch_segments(
                xin, (g, u), (gb, ub), 3, expert_ids=ids, x_group=3, rms_of=rms_of, eps=eps, config=config,
                glu=True, glu_oai=SWIGLU_OAI,
            )  # fmt: skip
            err = _rel_err(y_glu, _oai_experts(want_x, g64, u64, gb, ub, ids))
            results.append(
                (
                    f"{name} experts gate/up/SwiGLU-OAI{norm_label}, {label}",
                    err < REL_TOL,
                    f"rel err {err:.1e}",
                )
            )
    err = _rel_err(y, want)
    results.append((f"{name} experts, two segments", err < REL_TOL, f"rel err {err:.1e}"))
    # MXFP4 experts regrouped as the CUDA model loads them (codes, then scales): the same products and,
    # bit for bit, the same float16 tiles as the file's order.
    if qtype == GGMLType.MXFP4:
        filed = g.dequantize()
        regrouped = type(g)(g.data.clone(), g.qtype, g.shape, g.name).codes_then_scales_in_place()
        u2 = type(u)(u.data.clone(), u.qtype, u.shape, u.name).codes_then_scales_in_place()
        y = triton_gemv.launch_segments(x, (regrouped, u2), (None, None), 3, expert_ids=ids, x_group=3)
        err = _rel_err(y, want)
        results.append((f"{name} regrouped experts, two segments", err < REL_TOL, f"rel err {err:.1e}"))
        y_glu = triton_gemv.launch_segments(
            x, (regrouped, u2), (gb, ub), 3, expert_ids=ids, x_group=3, glu=True, glu_oai=SWIGLU_OAI
        )
        err = _rel_err(y_glu, _oai_experts(x.double(), g64, u64, gb, ub, ids))
        results.append((f"{name} regrouped experts gate/up/SwiGLU-OAI", err < REL_TOL, f"rel err {err:.1e}"))
        tiles = torch.full((2, 24, k_in), float("nan"), dtype=torch.float16)
        triton_gemv.dequantize_into(regrouped, tiles, experts=torch.tensor([2, 1]))
        same = torch.equal(tiles, filed[[2, 1]].half())
        results.append(
            (f"{name} regrouped dequantize", same, "exact" if same else "differs from the file order's")
        )
    # The dequantizer (prefill): the reference path's float32 weights rounded once to float16, exactly
    # where the decoder is bit-exact (`EXACT_TYPES`), else within that rounding and one float32 step.
    out = torch.full((2, 24, k_in), float("nan"), dtype=torch.float16)
    triton_gemv.dequantize_into(g, out, experts=torch.tensor([2, 1]))
    exact = qtype in EXACT_TYPES
    try:
        assert_half_of(out, g.dequantize()[[2, 1]], exact=exact)
        results.append(
            (f"{name} dequantize", True, "the reference rounded to float16" + (" exactly" * exact))
        )
    except AssertionError as e:
        results.append((f"{name} dequantize", False, f"not the reference rounded to float16 {e}"))
    results.append(_check_embedding(name, qtype, k_in, rng, exact))
    if triton_gemv.LAYOUTS[qtype].fmt in triton_gemv.AHEAD_FORMATS:
        results.extend(_check_ahead(name, qtype, rng))
        results.extend(_check_epilogues(name, qtype, rng))
    if qtype == GGMLType.MXFP4:
        results.extend(_check_ahead_regrouped(rng))
    return results


def _ahead_pair(block_n: int, ub: int, split: int):
    """A launch shape, the same shape loading ahead (`GemvConfig.ahead`) and with the activations loaded
    with the words (`GemvConfig.with_words`)."""
    from kernels.triton_gemv import GemvConfig

    plain = GemvConfig(block_n, ub, 4, split)
    return (
        plain,
        GemvConfig(block_n, ub, 4, split, ahead=True),
        GemvConfig(block_n, ub, 4, split, with_words=True),
    )


def _check_ahead(name: str, qtype, rng) -> list[tuple[str, bool, str]]:
    """The loop that loads a step's words and activations before the previous step is decoded, and the
    plain loop loading a step's activations with its words, compute the plain loop's sums bit for bit
    (same decode, same accumulation order): 10 blocks (5 super-blocks) a row walked in steps of 4 blocks
    (1 super-block) with a short last step, in one split and in two uneven splits; the dequantizer
    alike. Each also against the float64 oracle."""
    from kernels import triton_gemv

    unit = triton_gemv.LAYOUTS[qtype].unit
    superblocks = unit == 256
    k_in = 5 * unit if superblocks else 10 * unit
    ub = 1 if superblocks else 4
    w, w64 = _oracle_weight(qtype, (40, k_in), rng)
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, k_in)).astype(np.float32))
    results = []
    for split in (1, 2):
        plain, *loading = _ahead_pair(16, ub, split)
        want = triton_gemv.launch(x, w, None, 1, config=plain)
        for how, config in zip(("loads ahead", "activations with the words"), loading, strict=True):
            got = triton_gemv.launch(x, w, None, 1, config=config)
            err = _rel_err(got, x.double() @ w64.T)
            same = torch.equal(got, want)
            results.append(
                (
                    f"{name} {how}, {split} split(s)",
                    same and err < REL_TOL,
                    f"same bits: {same}, rel err {err:.1e}",
                )
            )
    plain, *loading = _ahead_pair(16, ub, 2)
    tiles = [torch.full((40, k_in), float("nan"), dtype=torch.float16) for _ in range(3)]
    for tile, config in zip(tiles, (plain, *loading), strict=True):
        triton_gemv.dequantize_into(w, tile, config=config)
    same = all(torch.equal(tiles[0], t) for t in tiles[1:]) and not tiles[0].isnan().any()
    results.append(
        (f"{name} loads ahead / with the words, dequantize", bool(same), "same tiles" if same else "differ")
    )
    return results


def _check_epilogues(name: str, qtype, rng) -> list[tuple[str, bool, str]]:
    """The loop loading ahead and the one taking a step's activations with its words give the plain
    loop's bits in every epilogue the decode steps use: q/k/v with biases from the rms-normed input, the
    residual with the next norm's scaled copy (with and without a bias), gate/up/SiLU from the normed
    input, and experts' gate/up/SwiGLU with biases; in one launch and split in two and three (the
    reduction). Rows of 3 RMS_STEP blocks and a bit: the rms reads four chunks, the last one partial.
    (Bit equality here holds only as far as the interpreter's arithmetic goes: it sums a reduction as
    numpy does, not in the GPU's order; the CUDA tests compare on the device.)"""
    import dataclasses

    from kernels import triton_gemv

    unit = triton_gemv.LAYOUTS[qtype].unit
    k_in = unit * (3 * triton_gemv.RMS_STEP // unit + 1)
    ub = 1 if unit == 256 else 8
    (w, _), (w2, _), (w3, _) = (_oracle_weight(qtype, (n, k_in), rng) for n in (40, 24, 8))
    (g, _), (u, _) = (_oracle_weight(qtype, (4, 24, k_in), rng) for _ in range(2))
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, k_in)).astype(np.float32))
    rows = (x * 3.0 + 0.5).contiguous()
    bias, b2, b3, residual, nw_out = (
        torch.from_numpy(rng.normal(0.0, 0.5, n).astype(np.float32)) for n in (40, 24, 8, 40, 40)
    )
    gb, ubias = (torch.from_numpy(rng.normal(0.0, 0.5, (4, 24)).astype(np.float32)) for _ in range(2))
    ids = torch.tensor([3, 0, 3])
    launches = {
        "q/k/v, biases, normed": lambda c: triton_gemv.launch_segments(
            x, (w, w2, w3), (bias, b2, b3), 1, rms_of=rows, eps=1e-6, config=c
        ),
        "residual, scaled copy": lambda c: triton_gemv.launch_segments(
            x, (w,), (residual,), 1, scaled_by=nw_out, config=c
        ),
        "bias, residual, scaled copy": lambda c: triton_gemv.launch_segments(
            x, (w,), (bias,), 1, scaled_by=nw_out, residual=residual.reshape(1, -1), config=c
        ),
        "gate/up/SiLU, normed": lambda c: triton_gemv.launch_segments(
            x, (w, w), (None, None), 1, rms_of=rows, eps=1e-6, glu=True, config=c
        ),
        "experts gate/up/SwiGLU-OAI, biases, normed": lambda c: triton_gemv.launch_segments(
            x, (g, u), (gb, ubias), 3, expert_ids=ids, x_group=3, rms_of=rows, eps=1e-6, glu=True,
            glu_oai=SWIGLU_OAI, config=c,
        ),
    }  # fmt: skip
    results = []
    for split in (1, 2, 3):
        plain = triton_gemv.GemvConfig(16, ub, 4, split)
        forms = {
            "loads ahead": dataclasses.replace(plain, ahead=True),
            "activations with the words": dataclasses.replace(plain, with_words=True),
        }
        for label, run in launches.items():
            want = run(plain)
            want = want if isinstance(want, tuple) else (want,)
            for form, config in forms.items():
                got = run(config)
                got = got if isinstance(got, tuple) else (got,)
                same = all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
                finite = all(bool(torch.isfinite(a).all()) for a in got)
                results.append(
                    (f"{name} {form}, {label}, {split} split(s)", same and finite, f"same bits: {same}")
                )
    return results


def _check_ahead_regrouped(rng) -> list[tuple[str, bool, str]]:
    """`_check_ahead` for MXFP4 experts regrouped as the CUDA model loads them: two experts' gate/up with
    the clamped SwiGLU, split in two, and the dequantizer."""
    from kernels import triton_gemv
    from kernels.formats import GGMLType

    k_in = 10 * 32
    g, g64 = _oracle_weight(GGMLType.MXFP4, (4, 24, k_in), rng)
    u, u64 = _oracle_weight(GGMLType.MXFP4, (4, 24, k_in), rng)
    g, u = g.codes_then_scales_in_place(), u.codes_then_scales_in_place()
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, k_in)).astype(np.float32))
    ids = torch.tensor([3, 1])
    plain, ahead, _ = _ahead_pair(8, 4, 2)
    ys = [
        triton_gemv.launch_segments(
            x, (g, u), (None, None), 2, expert_ids=ids, x_group=2, glu=True, glu_oai=SWIGLU_OAI, config=c
        )
        for c in (plain, ahead)
    ]
    zero = torch.zeros(4, 24, dtype=torch.float32)
    err = _rel_err(ys[1], _oai_experts(x.double(), g64, u64, zero, zero, ids))
    same = torch.equal(ys[0], ys[1])
    results = [
        (
            "mxfp4 regrouped experts loading ahead, gate/up/SwiGLU-OAI",
            same and err < REL_TOL,
            f"same bits: {same}, rel err {err:.1e}",
        )
    ]
    tiles = [torch.full((2, 24, k_in), float("nan"), dtype=torch.float16) for _ in range(2)]
    triton_gemv.dequantize_into(g, tiles[0], experts=ids, config=plain)
    triton_gemv.dequantize_into(g, tiles[1], experts=ids, config=ahead)
    same = torch.equal(tiles[0], tiles[1]) and not tiles[1].isnan().any()
    results.append(
        ("mxfp4 regrouped loads ahead, dequantize", bool(same), "same tiles" if same else "differ")
    )
    return results


def _check_regrouped(name: str, rng) -> list[tuple[str, bool, str]]:
    """Q8_0 or Q6_K matrices regrouped CODES_THEN_SCALES (codes in 16-byte loads, the float16 scales
    apart) against the same matrices in the file's order: every decode launch form gives the same bits
    (one launch and split in two, Q8_0 at 8 blocks a step, loading ahead, q/k/v segments with biases from
    normed rows, gate/up with SiLU, the residual with its scaled copy), and the dequantizer the same
    tiles."""
    from kernels import triton_gemv
    from kernels.formats import GGMLType

    qtype = GGMLType[name.upper()]
    # Q8_0: 10 blocks (steps of 8 blocks end part-way); Q6_K: 3 super-blocks.
    k_in = 3 * 256 if qtype == GGMLType.Q6_K else 10 * 32
    filed = [_oracle_weight(qtype, (n, k_in), rng)[0] for n in (40, 24, 24)]
    regrouped = [
        type(w)(w.data.clone(), w.qtype, w.shape, w.name).codes_then_scales_in_place() for w in filed
    ]
    x = torch.from_numpy(rng.normal(0.0, 1.0, (1, k_in)).astype(np.float32))
    rows = x * 3.0 + 0.5
    nw = torch.from_numpy(rng.normal(1.0, 0.2, k_in).astype(np.float32))
    biases = tuple(torch.from_numpy(rng.normal(0.0, 0.1, w.shape[0]).astype(np.float32)) for w in filed)
    residual = torch.from_numpy(rng.normal(0.0, 1.0, (1, 40)).astype(np.float32))
    nw_out = torch.from_numpy(rng.normal(1.0, 0.2, 40).astype(np.float32))
    configs = {"default shape": None, "split in two": _split_config()}
    if qtype == GGMLType.Q8_0:
        configs["8 blocks a step"] = triton_gemv.GemvConfig(16, 8, 4, 1)
        configs["8 blocks a step, ahead"] = triton_gemv.GemvConfig(16, 8, 4, 2, ahead=True)
    else:
        configs["ahead, split in two"] = triton_gemv.GemvConfig(16, 1, 4, 2, ahead=True)
        configs["activations with the words"] = triton_gemv.GemvConfig(16, 1, 4, 1, with_words=True)
    launches = {
        "plain": lambda ws, c: triton_gemv.launch(x, ws[0], None, 1, config=c),
        "q/k/v normed, biases": lambda ws, c: triton_gemv.launch_segments(
            rows * nw, tuple(ws), biases, 1, rms_of=rows.contiguous(), eps=1e-6, config=c
        ),
        "gate/up, SiLU": lambda ws, c: triton_gemv.launch_segments(
            x, (ws[1], ws[2]), (None, None), 1, glu=True, config=c
        ),
        "residual, scaled": lambda ws, c: triton_gemv.launch_segments(
            x, (ws[0],), (None,), 1, scaled_by=nw_out, residual=residual, config=c
        ),
    }  # fmt: skip
    results = []
    for label, run in launches.items():
        for shape, config in configs.items():
            want, got = run(filed, config), run(regrouped, config)
            want = want if isinstance(want, tuple) else (want,)
            got = got if isinstance(got, tuple) else (got,)
            same = all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
            results.append((f"{name} regrouped {label}, {shape}", same, "same bits" if same else "differ"))
    tiles = [torch.full((40, k_in), float("nan"), dtype=torch.float16) for _ in range(2)]
    triton_gemv.dequantize_into(filed[0], tiles[0])
    triton_gemv.dequantize_into(regrouped[0], tiles[1])
    same = torch.equal(tiles[0], tiles[1]) and not tiles[1].isnan().any()
    results.append((f"{name} regrouped dequantize", bool(same), "same tiles" if same else "differ"))
    return results


def _check_routed_sum(rng) -> list[tuple[str, bool, str]]:
    """A MoE down projection with its routed sum in the epilogue (`launch_segments(mix=...)`, regrouped
    MXFP4 experts with biases, two tokens of four pairs): the same bits as the same launch's products
    followed by `triton_decode.moe_combine`, plain and with the next norm's scaled copy, in one launch and
    split in two (the split's last program forms the sum); the arrival counters back at zero."""
    from kernels import triton_decode, triton_gemv
    from kernels.formats import GGMLType

    w, _ = _oracle_weight(GGMLType.MXFP4, (6, 40, 128), rng)
    w = type(w)(w.data.clone(), w.qtype, w.shape, w.name).codes_then_scales_in_place()
    ids = torch.tensor([5, 0, 3, 2, 2, 1, 5, 4])
    pairs = torch.from_numpy(rng.normal(0.0, 1.0, (8, 128)).astype(np.float32))
    bias = torch.from_numpy(rng.normal(0.0, 0.1, (6, 40)).astype(np.float32))
    weights = torch.softmax(torch.from_numpy(rng.normal(0.0, 1.0, (2, 4)).astype(np.float32)), dim=-1)
    residual = torch.from_numpy(rng.normal(0.0, 1.0, (2, 40)).astype(np.float32))
    nw = torch.from_numpy(rng.normal(1.0, 0.2, 40).astype(np.float32))
    results = []
    for shape, config in {"default shape": None, "split in two": _split_config()}.items():
        products = triton_gemv.launch(pairs, w, bias, 8, expert_ids=ids, config=config).view(2, 4, 40)
        for scaled in (False, True):
            want = triton_decode.moe_combine(
                residual, products, weights, then_norm=(nw, 1e-6) if scaled else None
            )
            want = (want.x, want.xw) if scaled else (want,)
            got = triton_gemv.launch_segments(
                pairs, (w,), (bias,), 8, expert_ids=ids, config=config, scaled_by=nw if scaled else None,
                mix=triton_gemv.RoutedSum(weights, residual),
            )  # fmt: skip
            got = got if scaled else (got,)
            same = all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
            label = f"mxfp4 experts' routed sum{', scaled' if scaled else ''}, {shape}"
            results.append((label, same, "moe_combine's bits" if same else "differ"))
    idle = int(triton_gemv.SplitCounters.get(pairs.device, 1).count_nonzero()) == 0
    results.append(("routed sum's arrival counters", idle, "back at zero" if idle else "left set"))
    return results


def _check_embedding(name: str, qtype, k_in: int, rng, exact: bool) -> tuple[str, bool, str]:
    """`triton_gemv.embedding`: rows of a table by id, in float32: the reference path's rows bit for bit
    where the decoder is bit-exact, else within one float32 rounding of each weight."""
    from kernels import triton_gemv

    table, _ = _oracle_weight(qtype, (40, k_in), rng)
    ids = torch.tensor([[7, 0], [39, 7]])
    got = triton_gemv.embedding(ids, table)
    want = table.dequantize(rows=ids.reshape(-1)).reshape(2, 2, k_in)
    if exact:
        same = torch.equal(got, want)
        return (f"{name} embedding rows", same, "the reference's rows exactly" if same else "differ")
    err = _rel_err(got, want.double())
    return (f"{name} embedding rows", err < 1e-6, f"rel err {err:.1e} (one float32 rounding: < 1e-6)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.kernels.interpreted_gemv", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--formats", nargs="+", help="ggml type names (default: every format the GEMV reads)")
    args = parser.parse_args(argv)
    if not interpreter.ready():
        return 2
    from kernels import triton_gemv

    triton_gemv._sm_count = lambda index: 132  # the H200's SM count: the launch shapes of the GPU
    formats = args.formats or [layout.fmt for layout in triton_gemv.LAYOUTS.values()]
    rng = np.random.default_rng(20240601)
    failed = sum(interpreter.report(check_format(name, rng)) for name in formats)
    for name in ("q8_0", "q6_k"):
        if name in formats:
            failed += interpreter.report(_check_regrouped(name, rng))
    if "mxfp4" in formats:
        failed += interpreter.report(_check_routed_sum(rng))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
