"""A/B of decode variants on one loaded model: the same weights, prompt and greedy tokens, several ways.

    python -m benchmarks.step_ab --model /abs/model.gguf [--tokens 128] [--reps 2] [--launch-only]
        [--only TEXT...] [--out FILE.json]

Loads the model the way the worker does (`load_worker`, `--kernels fast`, CUDA graphs), then decodes
`--tokens` greedy tokens per run with each variant, the variants interleaved `--reps` times so that a
drift of the machine hits them alike. Each variant captures its own decode graph. Variants:
- `default`: what the engine does (weights of one type and input in one GEMV launch);
- `one launch per weight`: q/k/v and gate/up as separate GEMV launches (`FastPath.qmatmuls` and
  `ExpertsFastPath.qmatmuls_experts` off);
- `rope, attention apart`: RoPE + KV store and the attention as two launches per layer (`rope_store`,
  `decode_attention`) instead of one (`rope_attention`);
- MoE models only: `router and top-k apart` (`KernelConfig.fused_router` off: the router's product a GEMV,
  its top-k `moe_route`; by default `triton_decode.moe_router` does both in one launch, each expert's program
  reading its whole row in one load step before it waits for the previous grid), `router in three steps
  after the wait (before 2026-12-07)` (`moe_router(one_pass=False, row_early=False)`: three dependent
  steps of 1,024 values, all after the wait), `router in one pass after the wait` (`row_early=False`),
  `combine in the down GEMV` (`KernelConfig.fused_combine`: the routed sum and the residual formed by the
  down GEMV's epilogue, one launch a layer fewer), `routing unfused` (top-k, softmax, weighted sum and
  residual as the reference model's PyTorch ops instead of `moe_route` / `moe_combine`), and all three of
  the above together (the step before they were fused);
- `GEMV loads ahead`: every GEMV of a format that has the form (`triton_gemv.AHEAD_FORMATS`) in its
  default launch shape, its loop loading each step's words and activations before the previous step is
  decoded (`GemvConfig.ahead`: one memory round trip a step instead of 3-7, `triton_offline.memory_round_trips`;
  the launch shapes are chosen while the variant's graph is captured);
- `GEMV activations with the words`: the same formats' plain loop loading each step's activations with
  its weight words (`GemvConfig.with_words`; Q5_0 / Q8_0: one round trip a step instead of 3-5, no more
  registers; the super-block loops' SASS does not change);
- `Q5_0/Q8_0 tiles without round trips`: those GEMVs (Qwen's, GPT-OSS's attention) at 16 rows x 8 blocks
  with 8 warps instead of the default tiles, whose loops convert operands through shared memory (6-20
  barriers a step, `benchmarks.ptx_cost`); none at this tile. The split is chosen as `default_config`'s;
- `GEMV loads ahead, Q4_K/Q5_K only`: those loops ahead at every size; `GEMV loops plain (none ahead)`:
  no loop ahead (the default has the super-block loops of at most 1,024 rows, file-order Q6_K and the
  regrouped Q8_0 16 x 8 tile load ahead, `triton_gemv.default_config`);
- `GEMV splits doubled`, `GEMV splits halved`: every split GEMV with twice or half the default's split;
- `tensor-core prologue storing zero columns`: the tensor-core GEMVs' prologue storing B's six unused
  columns as zeros (`GemvConfig.tc_zero_columns`, the form before 2026-12-06) instead of leaving them
  unwritten (the default: a quarter of the stores, the same bits);
- `Q4_K tensor-core GEMVs on float16 codes`: those launches decoding the codes to float16 hi + lo operands
  (`GemvConfig.tc_int8_codes` off, the form before 2026-12-06) instead of the default's int8 mma (the codes
  as int8 A operands as they lie, the activations as four signed 8-bit limbs in B's columns);
- `tensor-core GEMVs capped at 96 registers`, `... at 80 registers`: every tensor-core launch with ptxas's
  maxnreg (`GemvConfig.tc_max_registers`); only Q4_K's gate/up walk holds more (86: five programs an SM;
  at 80 six, spilling 16 bytes);
- `tensor-core walks by the rule before 2026-12-07`: the super-block formats' tensor-core launches
  walking the most super-blocks that leave the grid at least four programs an SM
  (`tensor_core_gemv.units_per_program_before`; Phi-3's gate/up 2, 768 programs in 1.45 waves) instead of
  the default's fewest that keep it within one wave (4, 384 programs: Phi-3 +7.0 % on an H200);
- `tensor-core walks two units ahead` (`GemvConfig.tc_units_ahead` 2): every tensor-core launch with the
  next two units' words in flight beside the one multiplied, the first two asked for before the
  activations' prologue (the same bits; Q4_K's gate/up walk then holds 166 registers: three programs an
  SM, which still hold Phi-3's 384 in one wave); `..., four super-blocks a program`: the same, each
  program walking 4 where it divides the row's (Phi-3's output projection: 144 programs instead of 288).
  Timed on an H100 (2026-12-07): Phi-3 −1.3 % and −1.9 %, the same tokens;
- `tensor-core Q4_K words by TMA` (`GemvConfig.tc_words_by_tma`): every Q4_K int8 tensor-core launch of
  one matrix asking for each program's whole share at its start by TMA copies into shared memory instead
  of one super-block's words ahead in registers (the same bits; launched early, as by default on sm_90,
  the copies run before the wait, beside the previous kernel's tail);
- `tensor-core first words before the wait[, capped at 80 registers]` (`GemvConfig.tc_words_early`, where
  the default launches early): each tensor-core launch of a 2-D matrix asking for its first unit's words
  before it waits for the previous grid (and with ptxas's maxnreg at 80);
- `tensor-core first two units' words before the wait` (the same with `GemvConfig.tc_units_ahead` 2): two
  units' words asked for before the wait, and two in flight beside the one multiplied after it;
- `tensor-core splits by arrival counters` (`GemvConfig.tc_cluster_splits` off, the form before
  2026-12-07): every tensor-core launch split into 2-8 programs a row tile summing its splits through L2
  (each stores its partial sums, the last to arrive at the tile's counter reads and sums them) instead of
  the default's thread-block cluster, splits 1.. sending their sums into split 0's shared memory (the
  same bits). With `without dependent launch`, the step before 2026-12-07 for Phi-3 (+4.0 % now, H100);
- `tensor-core rows across 2 warps`, `... 4 warps` (`GemvConfig.tc_warp_split`): every tensor-core launch
  whose row's units the split divides with 32 or 16 rows a program, its warps each walking their own run
  of the units and the runs' sums added in the program, so that the split of K across programs (partial
  sums, an arrival counter, the last program's second pass) is left only where the tiles alone leave
  fewer than two programs an SM; Q4_K's walk is then the float16 one. Timed on an H100 (2026-12-07):
  Phi-3 −10.5 % (2 warps) and −11.6 % (4), the same tokens;
- `regrouped Q8_0 GEMVs plain (none ahead)` (where the model has regrouped Q8_0 matrices): their 16-row x
  8-block tile's loop plain, as before it loaded ahead by default (GPT-OSS's attention and output);
- `2-D matrices in file order` (where the default regrouped some: every Q8_0 matrix, the larger Q6_K
  ones, `triton_gemv.regrouped_by_default`): those read from copies in the file's order (`--regroup
  none`); `Q8_0 regrouped`, `Q6_K regrouped` (and both, where the model has both), for the types with
  matrices still in the file's order: those read CODES_THEN_SCALES (`--regroup`: a row's codes in 16-byte
  loads, the scales apart), as regrouped copies beside the originals (`regrouped_weights`);
- `GEMVs on the CUDA cores only`, `regrouped Q6_K GEMVs on the CUDA cores (Q4_K on the tensor cores)`,
  `every Q4_K GEMV on the tensor cores` (the small ones too); where the model has regrouped Q8_0
  matrices, `regrouped Q8_0 GEMVs on the tensor cores too` (every one of at least 4 MiB) and `... below
  64 MiB ...` (GPT-OSS's attention, not its 615 MB output); MoE models, `MXFP4 expert GEMVs on the tensor
  cores too` and that with the Q8_0 matrices below 64 MiB: `kernels.tensor_core_gemv` by layout and size;
  `..., in one wave` (the Q8_0 ones below 64 MiB, and with the MXFP4 experts): those tensor-core launches
  walking the fewest blocks whose splits a thread-block cluster holds with the grid in one wave
  (`GemvConfig.tc_blocks_in_one_wave`) instead of 9-16 splits summed by arrival counters;
- `attention re-tiled`: `rope_attention` on `triton_decode.attention_tile(retiled=True)`'s tiles (grouped
  heads on dot products, Phi-3's 32 positions a step without spills); `attention re-tiled, not pipelined`:
  those dot loops at num_stages 1 (14 KB of shared memory a program for grouped heads instead of the
  pipelined loop's 39 KB of cp.async buffers, `rope_attention(dot_stages=1)`); `attention heads apart`:
  grouped heads two a program (`rope_attention(heads_apart=True)`, four times the programs, a third of
  a program's loop); `attention tiles before 2026-12-07`: `retiled=False, heads_apart=False` (the default
  re-tiles one head a KV head and takes 7 or more grouped heads apart, `triton_decode.chosen_tile`);
- `attention split by position`: `rope_attention(by_position=True)`: its programs share the positions the
  step reads (the window's, in whole blocks) instead of a fixed share of the capacity each, so at a short
  context split 0 does not walk them alone, nor do splits walk a sliding window's masked blocks;
- `attention merge looped`: `rope_attention(unrolled_merge=False)`: the last split merges the splits'
  states in runtime loops, one L2 round trip a split (the form before 2026-12-06; by default the loops
  are unrolled, the same sums in the same order, the splits' loads in flight together);
- `attention splits as clusters`: `rope_attention(clustered=True)`: a KV head's 2-8 splits as one
  thread-block cluster, splits 1.. storing their states into split 0's shared memory, which merges them
  (the same bits) instead of an arrival counter and the states' round trips through L2 (sm_90);
- sm_90 and later: the default kernels captured `without dependent launch`, `with dependent launch`
  (`KernelConfig.dependent_launch`) and `with dependent launch and weight prefetch` (`weight_prefetch`),
  both also with a `late trigger` (`late_trigger`), and `weight prefetch without dependent launch`, each
  that is not the default already.
Prints ms per token (median of the per-token times) and tok/s per run, and whether every variant gave
the default's tokens (they must: the variants compute the same function; a difference is a bug).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import json
import statistics
import sys
import time
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from kernels import dependent_launch
from kernels.formats import GGMLType, tensor_nbytes
from kernels.qmatmul import RMSNormed


def with_kernel_set(model: Any, kernels: Any) -> None:
    """Points the model and its layers at `kernels` (a `KernelSet`)."""
    model.kernels = kernels
    for layer in model.layers:
        layer.kernels = kernels


def one_launch_per_weight(kernels: Any) -> Any:
    """The same kernel set with no multi-weight launches: `qmatmuls` falls back to one `qmatmul` each,
    `qmatmuls_experts` to one `qmatmul_experts` each."""
    paths = tuple(dataclasses.replace(p, qmatmuls=None) for p in kernels.paths)
    experts_paths = tuple(dataclasses.replace(p, qmatmuls_experts=None) for p in kernels.experts_paths)
    return dataclasses.replace(kernels, paths=paths, experts_paths=experts_paths)


def rope_attention_apart(kernels: Any) -> Any:
    """The same kernel set with RoPE + KV store and the attention as two launches per layer."""
    decode = types.SimpleNamespace(**vars(kernels.decode))

    def apart(q, k, v, keys, values, cos, sin, position, neox, scale, sliding_window=None, sinks=None):
        q = decode.rope_store(q, k, v, keys, values, cos, sin, position, neox)
        return decode.decode_attention(q, keys, values, position, scale, sliding_window, sinks)

    decode.rope_attention = apart
    return dataclasses.replace(kernels, decode=decode)


def router_apart(kernels: Any) -> Any:
    """The same kernel set with a MoE step's router product a GEMV and its top-k `moe_route`, two launches
    (`KernelConfig.fused_router` off; by default `triton_decode.moe_router` does both in one)."""
    return dataclasses.replace(kernels, config=dataclasses.replace(kernels.config, fused_router=False))


def combine_in_down(kernels: Any) -> Any:
    """The same kernel set with a MoE step's routed sum formed by the down GEMV's epilogue
    (`KernelConfig.fused_combine`) instead of `moe_combine`'s launch."""
    return dataclasses.replace(kernels, config=dataclasses.replace(kernels.config, fused_combine=True))


def router_with(kernels: Any, **options: Any) -> Any:
    """The same kernel set with `moe_router` called with `options` (`one_pass`, `row_early`)."""
    decode = types.SimpleNamespace(**vars(kernels.decode))
    decode.moe_router = functools.partial(kernels.decode.moe_router, **options)
    return dataclasses.replace(kernels, decode=decode)


def _rope_attention_with(kernels: Any, **options: Any) -> Any:
    """The same kernel set with `rope_attention` called with `options`."""
    decode = types.SimpleNamespace(**vars(kernels.decode))
    decode.rope_attention = functools.partial(kernels.decode.rope_attention, **options)
    return dataclasses.replace(kernels, decode=decode)


def attention_by_position(kernels: Any) -> Any:
    """The same kernel set with `rope_attention`'s splits sharing the positions the step reads
    (`by_position=True`) instead of a fixed share of the cache's capacity each."""
    return _rope_attention_with(kernels, by_position=True)


def attention_merge_looped(kernels: Any) -> Any:
    """The same kernel set with `rope_attention`'s merge of the splits as runtime loops
    (`unrolled_merge=False`: one L2 round trip a split, the form before 2026-12-06; the same bits)."""
    return _rope_attention_with(kernels, unrolled_merge=False)


def attention_retiled(kernels: Any, dot_stages: int = 3) -> Any:
    """The same kernel set with `rope_attention` on `triton_decode.attention_tile(retiled=True)`'s tiles,
    its dot loop pipelined `dot_stages` deep (Triton's num_stages; 1: no cp.async buffers)."""
    return _rope_attention_with(kernels, retiled=True, dot_stages=dot_stages)


def routing_unfused(kernels: Any) -> Any:
    """The same kernel set with a MoE's routing and combination as the reference model's PyTorch ops (the
    router's product a GEMV: `moe_router` would route before them)."""
    from reference_worker.models.gpt_oss import route

    kernels = router_apart(kernels)
    decode = types.SimpleNamespace(**vars(kernels.decode))
    decode.moe_route = route

    def combine(x, down, weights, then_norm=None):
        y = x + (down * weights[..., None]).sum(dim=1)
        return y if then_norm is None else RMSNormed(y, y * then_norm[0], then_norm[1])

    decode.moe_combine = combine
    return dataclasses.replace(kernels, decode=decode)


@dataclasses.dataclass(frozen=True)
class Variant:
    kernels: Any  # the model's KernelSet for this variant
    dependent_launch: dependent_launch.DependentLaunch  # how its decode graph's kernels are launched
    gemv_shapes: str = ""  # "" or a GEMV_SHAPE_RULES name: its GEMVs' launch shapes (`gemv_launch_shapes`)
    # ggml types whose 2-D matrices it reads regrouped, or FILE_ORDER (`regrouped_weights`)
    regroup: tuple[Any, ...] | str = ()


def _matrix_holders(model: Any) -> list[Any]:
    return [model, *getattr(model, "layers", ())]


def _regrouped_matrices(model: Any) -> dict[int, Any]:
    """The distinct 2-D matrices of `model` stored CODES_THEN_SCALES, by id."""
    from kernels.qtensor import GGML, QTensor

    return {
        id(t): t
        for holder in _matrix_holders(model)
        for t in vars(holder).values()
        if isinstance(t, QTensor) and len(t.shape) == 2 and t.layout != GGML
    }


def regrouped_matrix_count(model: Any) -> int:
    """How many distinct 2-D matrices of `model` are stored CODES_THEN_SCALES."""
    return len(_regrouped_matrices(model))


def regrouped_types(model: Any) -> set[Any]:
    """The types of the 2-D matrices of `model` stored CODES_THEN_SCALES."""
    return {t.qtype for t in _regrouped_matrices(model).values()}


def regroupable_types(model: Any) -> list[Any]:
    """The types of `kernels.backend.REGROUP_CHOICES` that some 2-D matrix of `model` has, in that order."""
    from kernels.backend import REGROUP_CHOICES
    from kernels.qtensor import GGML, QTensor

    present = {
        t.qtype
        for holder in _matrix_holders(model)
        for t in vars(holder).values()
        if isinstance(t, QTensor) and len(t.shape) == 2 and t.layout == GGML
    }
    return [GGMLType[name.upper()] for name in REGROUP_CHOICES if GGMLType[name.upper()] in present]


# (id of a matrix, types or "file order") -> (that matrix, its copy): see `regrouped_weights`.
_COPIES: dict[tuple[int, Any], tuple[Any, Any]] = {}
FILE_ORDER = "file order"  # `regrouped_weights`: every regrouped 2-D matrix read in the file's order


@contextlib.contextmanager
def regrouped_weights(model: Any, regroup: tuple[Any, ...] | str) -> Iterator[int]:
    """While the block runs, the model's 2-D matrices of the types `regroup` (those in the file's order)
    are copies regrouped as `--regroup` stores them at load (`triton_gemv.pack`), or with FILE_ORDER its
    regrouped 2-D matrices are copies in the file's order (`--regroup none`); the originals are kept (a
    graph captured before still reads them) and put back after. A matrix held twice (a tied embedding
    and output) gets one copy. The copies live as long as the process (`_COPIES`): a graph captured while
    they were in place (a prefill bucket's) reads them on every later replay. Yields how many matrices
    were swapped."""
    if not regroup:
        yield 0
        return
    from kernels import triton_gemv
    from kernels.qtensor import GGML, QTensor

    def copy_of(t: QTensor) -> QTensor | None:
        if regroup == FILE_ORDER:
            return t.in_file_order() if t.layout != GGML else None
        if t.qtype not in regroup or t.layout != GGML:
            return None
        copy = triton_gemv.pack(QTensor(t.data.clone(), t.qtype, t.shape, t.name), regroup=regroup)
        return copy if copy.layout != GGML else None

    swapped: list[tuple[Any, str, QTensor]] = []
    for holder in _matrix_holders(model):
        for attr, t in list(vars(holder).items()):
            if not (isinstance(t, QTensor) and len(t.shape) == 2):
                continue
            key = (id(t), regroup)
            if key not in _COPIES:
                _COPIES[key] = (t, copy_of(t))  # t: keeps its id unique
            copy = _COPIES[key][1]
            if copy is not None:
                swapped.append((holder, attr, t))
                setattr(holder, attr, copy)
    try:
        yield len({id(t) for _, _, t in swapped})
    finally:
        for holder, attr, original in swapped:
            setattr(holder, attr, original)


def _loop_form(form: str, config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """`config` with its loop's `form` on ("ahead" or "with_words", a `GemvConfig` field) where the format
    has it (`triton_gemv.AHEAD_FORMATS`) and the loop does not pipeline through shared memory."""
    from kernels import triton_gemv

    if layout.fmt in triton_gemv.AHEAD_FORMATS and config.stages == 1:
        return dataclasses.replace(config, ahead=form == "ahead", with_words=form == "with_words")
    return config


def _round_trip_free(config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """Q5_0 / Q8_0 at 16 rows x 8 blocks, 8 warps; the split as `default_config` picks one for a tile."""
    import triton

    tile = (config.block_n, config.units_per_step, config.num_warps)
    if layout.fmt not in ("q5_0", "q8_0") or config.stages != 1 or tile not in ((16, 8, 4), (8, 32, 4)):
        return config  # (n32/u2, the large output matrices' tile, has none)
    n_rows, in_features, n_out_rows, sm_count = shape
    n_units = in_features // layout.unit
    ub = 8
    while ub > 1 and n_units <= ub // 2:
        ub //= 2
    programs = triton.cdiv(n_rows, 16) * n_out_rows
    split = max(1, min(triton.cdiv(4 * sm_count, programs), triton.cdiv(n_units, ub) // 2))
    return dataclasses.replace(config, block_n=16, units_per_step=ub, num_warps=8, split=split)


def _plain_loops(config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """Every GEMV loop plain: no tile loads ahead (`default_config` has the small super-block tiles do)."""
    return dataclasses.replace(config, ahead=False, with_words=False)


def _q8_0_plain(config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """Regrouped Q8_0 loops plain (the default before its 16-row x 8-block tile loaded ahead)."""
    if layout.fmt == "q8_0_codes_then_scales":
        return dataclasses.replace(config, ahead=False)
    return config


def _k4_k5_ahead(config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """Q4_K and Q5_K loops load each step's words ahead at every size; Q6_K's stay as they are (its loop
    ahead takes 167 registers against 80, `benchmarks.ptx_cost --ahead`: a third of the programs an SM)."""
    if layout.fmt in ("q4_k", "q5_k"):
        return _loop_form("ahead", config, layout, shape)
    return config


def _splits_doubled(config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """Twice the split of every split GEMV where its units allow (more, shorter programs: more loads in
    flight at once, fewer steps each)."""
    in_features = shape[1]
    steps = in_features // layout.unit // config.units_per_step
    return dataclasses.replace(config, split=max(1, min(2 * config.split, steps)))


def _splits_halved(config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """Half the split of every split GEMV (fewer, longer programs: `benchmarks.kernels_gemv --sweep-split`
    found Phi-3's Q4_K gate/up rows faster unsplit, 2026-12-06)."""
    return dataclasses.replace(config, split=max(1, config.split // 2))


def _q4_k_tensor_cores(config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """Every Q4_K matrix in the file's order on the tensor cores (`kernels.tensor_core_gemv`, where it serves
    the launch), the small ones too (the default: those of `triton_gemv.TENSOR_CORE_MIN_BYTES`)."""
    if layout.fmt == "q4_k":
        return dataclasses.replace(config, tensor_cores=True)
    return config


def _q6_k_cuda_cores(config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """Regrouped Q6_K matrices on the CUDA-core loop, the Q4_K ones on the tensor cores (the default before
    regrouped Q6_K went to the tensor cores too, 2026-12-06)."""
    if layout.fmt == "q6_k_codes_then_scales":
        return dataclasses.replace(config, tensor_cores=False)
    return config


def _q8_0_tensor_cores(
    max_bytes: int | None, config: Any, layout: Any, shape: tuple[int, int, int, int]
) -> Any:
    """Regrouped Q8_0 matrices of at least `triton_gemv.TENSOR_CORE_MIN_BYTES` (and below `max_bytes`, if
    given) on the tensor cores too (`kernels.tensor_core_gemv` reads them; not in TENSOR_CORE_FORMATS until
    timed)."""
    from kernels import triton_gemv

    if layout.fmt != "q8_0_codes_then_scales":
        return config
    size = tensor_nbytes(GGMLType.Q8_0, (shape[0], shape[1]))
    if size < triton_gemv.TENSOR_CORE_MIN_BYTES or (max_bytes is not None and size >= max_bytes):
        return config
    return dataclasses.replace(config, tensor_cores=True)


# GPT-OSS's output matrix (615 MB, Q8_0) runs at ~87 % of the copy bandwidth on the CUDA cores (H100,
# 2026-12-06): the variant below keeps it there and moves only the attention's matrices (12.5-15.7 MB).
Q8_0_TENSOR_CORE_BELOW = 64 << 20


def _mxfp4_tensor_cores(config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """Regrouped MXFP4 (GPT-OSS's experts, by token-expert pair) on the tensor cores too (not timed yet)."""
    if layout.fmt == "mxfp4_codes_then_scales":
        return dataclasses.replace(config, tensor_cores=True)
    return config


def _block_formats_tensor_cores(config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """Both of the above: MXFP4 experts and regrouped Q8_0 below 64 MiB on the tensor cores too."""
    config = _mxfp4_tensor_cores(config, layout, shape)
    return _q8_0_tensor_cores(Q8_0_TENSOR_CORE_BELOW, config, layout, shape)


def _blocks_in_one_wave(
    rule: Callable[..., Any], config: Any, layout: Any, shape: tuple[int, int, int, int]
) -> Any:
    """`rule`'s launches, the tensor-core ones of the block formats walking the fewest blocks whose splits a
    cluster holds with the grid in one wave (`GemvConfig.tc_blocks_in_one_wave`)."""
    config = rule(config, layout, shape)
    return dataclasses.replace(config, tc_blocks_in_one_wave=True) if config.tensor_cores else config


def _tc_zero_columns(config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """The tensor-core launches' prologue storing B's six unused columns as zeros (`GemvConfig.
    tc_zero_columns`: the form before 2026-12-06; the default leaves them unwritten, the same bits)."""
    return dataclasses.replace(config, tc_zero_columns=True) if config.tensor_cores else config


def _q4_k_float16(config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """The Q4_K tensor-core launches on float16 mma (`GemvConfig.tc_int8_codes` off: the codes decoded to
    float16 hi + lo, the form before 2026-12-06; the default takes them as int8 operands as they lie)."""
    if config.tensor_cores and layout.fmt == "q4_k":
        return dataclasses.replace(config, tc_int8_codes=False)
    return config


def _tc_registers(cap: int, config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """The tensor-core launches with ptxas's maxnreg at `cap` (`GemvConfig.tc_max_registers`)."""
    return dataclasses.replace(config, tc_max_registers=cap) if config.tensor_cores else config


def _tc_words_early(
    cap: int | None, ahead: int, config: Any, layout: Any, shape: tuple[int, int, int, int]
) -> Any:
    """The tensor-core launches asking for their first words before the wait (`GemvConfig.tc_words_early`),
    capped at `cap` registers if given; with `ahead` 2 the first two units' words (`GemvConfig.
    tc_units_ahead`: two in flight beside the one multiplied for the rest of the walk too)."""
    if not config.tensor_cores:
        return config
    return dataclasses.replace(config, tc_words_early=True, tc_max_registers=cap, tc_units_ahead=ahead)


def _tc_walks_before(config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """The tensor-core launches of the super-block formats walking what the rule before 2026-12-07 gave
    (`tensor_core_gemv.units_per_program_before`: the most super-blocks that leave the grid at least four
    programs an SM; Phi-3's gate/up 2, 768 programs in 1.45 waves) instead of the default's fewest that keep
    it within one wave (`GemvConfig.tc_units_per_program`)."""
    from kernels import tensor_core_gemv

    if not config.tensor_cores or layout.unit != tensor_core_gemv.SUPERBLOCK:
        return config
    n_rows, in_features, _, sm_count = shape
    tiles = -(-n_rows // tensor_core_gemv.ROWS_PER_PROGRAM)
    per = tensor_core_gemv.units_per_program_before(layout.fmt, in_features // layout.unit, tiles, sm_count)
    return dataclasses.replace(config, tc_units_per_program=per)


def _tc_two_ahead(per: int | None, config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """The tensor-core launches with two units' words in flight beside the one multiplied (`GemvConfig.
    tc_units_ahead`), each program walking `per` units where given and it divides the row's (the longer
    walk the deeper look-ahead makes worth its fewer programs)."""
    if not config.tensor_cores:
        return config
    return dataclasses.replace(
        config, tc_units_ahead=2, tc_units_per_program=per or config.tc_units_per_program
    )


def _tc_warp_split(split: int, config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """The tensor-core launches with each row tile's units across `split` of its warps (`GemvConfig.
    tc_warp_split`: 64 / split rows a program, the split of K across programs only where the tiles alone
    leave fewer than two programs an SM; Q4_K's walk the float16 one)."""
    if not config.tensor_cores:
        return config
    return dataclasses.replace(config, tc_warp_split=split)


def _tc_words_by_tma(config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """The tensor-core launches asking for each program's whole share by TMA (`GemvConfig.tc_words_by_tma`:
    Q4_K on int8 mma, one matrix; the others keep their walk)."""
    if not config.tensor_cores:
        return config
    return dataclasses.replace(config, tc_words_by_tma=True)


def _tc_counter_splits(config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """The tensor-core launches' splits summed through L2 by the last program to arrive at an arrival
    counter (`GemvConfig.tc_cluster_splits` off: the form before 2026-12-07; the same bits)."""
    if not config.tensor_cores:
        return config
    return dataclasses.replace(config, tc_cluster_splits=False)


def _cuda_cores(config: Any, layout: Any, shape: tuple[int, int, int, int]) -> Any:
    """Every GEMV on the CUDA-core loop (`KernelConfig.tensor_core_gemv` off)."""
    return dataclasses.replace(config, tensor_cores=False)


GEMV_SHAPE_RULES = {
    "ahead": functools.partial(_loop_form, "ahead"),
    "k4-k5-ahead": _k4_k5_ahead,
    "q8-0-plain": _q8_0_plain,
    "splits-doubled": _splits_doubled,
    "splits-halved": _splits_halved,
    "with-words": functools.partial(_loop_form, "with_words"),
    "round-trip-free": _round_trip_free,
    "plain": _plain_loops,
    "q4-k-tensor-cores": _q4_k_tensor_cores,
    "cuda-cores": _cuda_cores,
    "tc-zero-columns": _tc_zero_columns,
    "q4-k-float16": _q4_k_float16,
    "tc-registers-96": functools.partial(_tc_registers, 96),
    "tc-registers-80": functools.partial(_tc_registers, 80),
    "tc-words-early": functools.partial(_tc_words_early, None, 1),
    "tc-words-early-80": functools.partial(_tc_words_early, 80, 1),
    "tc-two-units-early": functools.partial(_tc_words_early, None, 2),
    "tc-walks-before": _tc_walks_before,
    "tc-two-ahead": functools.partial(_tc_two_ahead, None),
    "tc-two-ahead-four": functools.partial(_tc_two_ahead, 4),
    "tc-warp-split-2": functools.partial(_tc_warp_split, 2),
    "tc-warp-split-4": functools.partial(_tc_warp_split, 4),
    "tc-words-by-tma": _tc_words_by_tma,
    "tc-counter-splits": _tc_counter_splits,
    "q6-k-cuda-cores": _q6_k_cuda_cores,
    "q8-0-tensor-cores": functools.partial(_q8_0_tensor_cores, None),
    "q8-0-tensor-cores-below-64-mib": functools.partial(_q8_0_tensor_cores, Q8_0_TENSOR_CORE_BELOW),
    "mxfp4-tensor-cores": _mxfp4_tensor_cores,
    "block-formats-tensor-cores": _block_formats_tensor_cores,
    "q8-0-tensor-cores-below-64-mib-one-wave": functools.partial(
        _blocks_in_one_wave, functools.partial(_q8_0_tensor_cores, Q8_0_TENSOR_CORE_BELOW)
    ),
    "block-formats-tensor-cores-one-wave": functools.partial(
        _blocks_in_one_wave, _block_formats_tensor_cores
    ),
}


@contextlib.contextmanager
def gemv_launch_shapes(rule: str) -> Iterator[None]:
    """The GEMV's default launch shapes changed by `GEMV_SHAPE_RULES[rule]` while the block runs
    (`triton_gemv.launch_segments` asks `default_config` at each launch; a captured graph keeps the
    shapes it was captured with); "" leaves them."""
    if not rule:
        yield
        return
    from kernels import triton_gemv

    chosen, change = triton_gemv.default_config, GEMV_SHAPE_RULES[rule]

    def changed(qtype: Any, n_rows: int, in_features: int, n_out_rows: int, sm_count: int, **kw: Any) -> Any:
        config = chosen(qtype, n_rows, in_features, n_out_rows, sm_count, **kw)
        layout = kw.get("layout") or triton_gemv.LAYOUTS[qtype]
        return change(config, layout, (n_rows, in_features, n_out_rows, sm_count))

    with mock.patch.object(triton_gemv, "default_config", changed):
        yield


# The step A/B's variants that change only the GEMVs' launch shapes: variant name -> GEMV_SHAPE_RULES key,
# in the order they are timed (every model; the Q8_0 ones where the model has regrouped Q8_0 matrices).
GEMV_SHAPE_VARIANTS = {
    "GEMV loads ahead": "ahead",
    "GEMV loads ahead, Q4_K/Q5_K only": "k4-k5-ahead",
    "GEMV splits doubled": "splits-doubled",
    "GEMV splits halved": "splits-halved",
    "GEMV activations with the words": "with-words",
    "Q5_0/Q8_0 tiles without round trips": "round-trip-free",
    "GEMV loops plain (none ahead)": "plain",
    "GEMVs on the CUDA cores only": "cuda-cores",
    "tensor-core prologue storing zero columns": "tc-zero-columns",
    "Q4_K tensor-core GEMVs on float16 codes": "q4-k-float16",
    "tensor-core GEMVs capped at 96 registers": "tc-registers-96",
    "tensor-core GEMVs capped at 80 registers": "tc-registers-80",
    "tensor-core walks by the rule before 2026-12-07": "tc-walks-before",
    "tensor-core walks two units ahead": "tc-two-ahead",
    "tensor-core walks two units ahead, four super-blocks a program": "tc-two-ahead-four",
    "tensor-core rows across 2 warps": "tc-warp-split-2",
    "tensor-core rows across 4 warps": "tc-warp-split-4",
    "tensor-core Q4_K words by TMA": "tc-words-by-tma",
    "tensor-core splits by arrival counters": "tc-counter-splits",
    "tensor-core first words before the wait": "tc-words-early",
    "tensor-core first words before the wait, capped at 80 registers": "tc-words-early-80",
    "tensor-core first two units' words before the wait": "tc-two-units-early",
    "regrouped Q6_K GEMVs on the CUDA cores (Q4_K on the tensor cores)": "q6-k-cuda-cores",
    "every Q4_K GEMV on the tensor cores": "q4-k-tensor-cores",
}
Q8_0_VARIANTS = {
    "regrouped Q8_0 GEMVs plain (none ahead)": "q8-0-plain",
    "regrouped Q8_0 GEMVs on the tensor cores too": "q8-0-tensor-cores",
    "regrouped Q8_0 GEMVs below 64 MiB on the tensor cores too": "q8-0-tensor-cores-below-64-mib",
    "regrouped Q8_0 GEMVs below 64 MiB on the tensor cores too, in one wave": "q8-0-tensor-cores-below-64-mib-one-wave",
}


def run_variant(engine: Any, variant: Variant, ids: list[int], tokens: int) -> dict[str, Any]:
    from reference_worker.decode_step import DecodeGraphs
    from reference_worker.sampling import SamplingParams

    with_kernel_set(engine.model, variant.kernels)
    # Captured afresh for this variant's kernels and launch form.
    engine.graphs = DecodeGraphs(engine.model, dependent_launch=variant.dependent_launch)
    with gemv_launch_shapes(variant.gemv_shapes), regrouped_weights(engine.model, variant.regroup):
        session = engine.start(ids, tokens + 10, SamplingParams(temperature=0.0))
        try:
            out = [session.next_token()]
            for _ in range(8):  # capture and warm up
                out.append(session.next_token())
            torch.cuda.synchronize()
            stamps = [time.perf_counter()]
            for _ in range(tokens):
                out.append(session.next_token())
                stamps.append(time.perf_counter())
        finally:
            session.free()
    per_token = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {
        "ms_per_token_p50": round(statistics.median(per_token) * 1e3, 4),
        "tok_s": round(len(per_token) / sum(per_token), 2),
        "tokens": out,
    }


def select_variants(variants: dict[str, Any], only: list[str] | None) -> dict[str, Any]:
    """The default and, with `only`, the variants named by one of its texts: a text names a variant whose
    name holds each of its words, in any order and case ("two ahead" names "... two units ahead")."""
    if not only:
        return variants
    wanted = [text.lower().split() for text in only]

    def named(name: str) -> bool:
        return any(all(word in name.lower() for word in words) for words in wanted if words)

    return {name: v for name, v in variants.items() if name == "default" or named(name)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.step_ab", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--out", type=Path)
    p.add_argument(
        "--launch-only",
        action="store_true",
        help="without the variants that take the fused step apart (one launch per weight, RoPE and "
        "attention apart, routing unfused)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        metavar="TEXT",
        help="the default and the variants named by one of these texts: each word of a text in the name, in "
        "any order and case, e.g. 'GEMV' 'late trigger' 'two ahead'",
    )
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: the A/B needs a CUDA device", file=sys.stderr)
        return 2

    from reference_worker.cli import parse_config
    from reference_worker.logs import EventLog
    from reference_worker.worker import load_worker

    config = parse_config(
        ["--worker-id", str(uuid.uuid4()), "--model", str(args.model.resolve()), "--gpu-device", "0"]
        + ["--port", "8080", "--device", "cuda", "--kernels", "fast"]
    )
    state = load_worker(config, EventLog(io.StringIO()))
    engine = state.engine
    default_kernels = engine.model.kernels
    early = engine.graphs.dependent_launch if engine.graphs is not None else dependent_launch.OFF
    variants = {"default": Variant(default_kernels, early)}
    variants.update(
        {
            name: Variant(default_kernels, early, gemv_shapes=rule)
            for name, rule in GEMV_SHAPE_VARIANTS.items()
        }
    )
    if GGMLType.Q8_0 in regrouped_types(engine.model):
        variants.update(
            {name: Variant(default_kernels, early, gemv_shapes=rule) for name, rule in Q8_0_VARIANTS.items()}
        )
    if hasattr(engine.model.layers[0], "moe"):  # MoE (GPT-OSS): its MXFP4 experts are regrouped at load
        variants["MXFP4 expert GEMVs on the tensor cores too"] = Variant(
            default_kernels, early, gemv_shapes="mxfp4-tensor-cores"
        )
        variants["MXFP4 experts and regrouped Q8_0 below 64 MiB on the tensor cores too"] = Variant(
            default_kernels, early, gemv_shapes="block-formats-tensor-cores"
        )
        variants["MXFP4 experts and regrouped Q8_0 below 64 MiB on the tensor cores too, in one wave"] = (
            Variant(default_kernels, early, gemv_shapes="block-formats-tensor-cores-one-wave")
        )
    if regrouped_matrix_count(engine.model):  # the default regroups some (triton_gemv.regrouped_by_default)
        variants["2-D matrices in file order"] = Variant(default_kernels, early, regroup=FILE_ORDER)
    regroupable = regroupable_types(engine.model)
    for qtype in regroupable:
        variants[f"{qtype.name} regrouped"] = Variant(default_kernels, early, regroup=(qtype,))
    if len(regroupable) > 1:
        names = " and ".join(t.name for t in regroupable)
        variants[f"{names} regrouped"] = Variant(default_kernels, early, regroup=tuple(regroupable))
    if default_kernels.decode is not None and hasattr(default_kernels.decode, "attention_tile"):
        variants["attention re-tiled"] = Variant(attention_retiled(default_kernels), early)
        variants["attention re-tiled, not pipelined"] = Variant(attention_retiled(default_kernels, 1), early)
        variants["attention heads apart"] = Variant(
            _rope_attention_with(default_kernels, heads_apart=True), early
        )
        variants["attention tiles before 2026-12-07"] = Variant(
            _rope_attention_with(default_kernels, retiled=False, heads_apart=False), early
        )
        variants["attention split by position"] = Variant(attention_by_position(default_kernels), early)
        variants["attention merge looped"] = Variant(attention_merge_looped(default_kernels), early)
        variants["attention splits as clusters"] = Variant(
            _rope_attention_with(default_kernels, clustered=True), early
        )
    if not args.launch_only:
        variants["one launch per weight"] = Variant(one_launch_per_weight(default_kernels), early)
    if default_kernels.decode is not None and not args.launch_only:
        variants["rope, attention apart"] = Variant(rope_attention_apart(default_kernels), early)
    if default_kernels.decode is not None and hasattr(engine.model.layers[0], "moe"):
        variants["router and top-k apart"] = Variant(router_apart(default_kernels), early)
        variants["router in three steps after the wait (before 2026-12-07)"] = Variant(
            router_with(default_kernels, one_pass=False, row_early=False), early
        )
        variants["router in one pass after the wait"] = Variant(
            router_with(default_kernels, row_early=False), early
        )
        variants["combine in the down GEMV"] = Variant(combine_in_down(default_kernels), early)
        if not args.launch_only:
            variants["routing unfused"] = Variant(routing_unfused(default_kernels), early)
            variants["all three apart (the step before)"] = Variant(
                routing_unfused(rope_attention_apart(one_launch_per_weight(default_kernels))), early
            )
    if dependent_launch.supported(engine.device):
        modes = {
            "without dependent launch": dependent_launch.OFF,
            "with dependent launch": dependent_launch.DependentLaunch(True),
            "with dependent launch and weight prefetch": dependent_launch.DependentLaunch(True, True),
            "weight prefetch without dependent launch": dependent_launch.DependentLaunch(False, True),
            "with dependent launch, late trigger": dependent_launch.DependentLaunch(True, late_trigger=True),
            "with dependent launch, late trigger and weight prefetch": dependent_launch.DependentLaunch(
                True, True, late_trigger=True
            ),
        }
        variants.update(
            {name: Variant(default_kernels, mode) for name, mode in modes.items() if mode != early}
        )
    variants = select_variants(variants, args.only)
    ids = [1 + (7 * i) % 97 for i in range(8)]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    failed: dict[str, str] = {}  # a variant that raised (e.g. a capture the driver refuses), and why
    for _ in range(args.reps):
        for name, variant in variants.items():
            if name in failed:
                continue
            try:
                results[name].append(run_variant(engine, variant, ids, args.tokens))
            except Exception as e:  # the other variants still run; the failure is reported below
                failed[name] = f"{type(e).__name__}: {e}"
                torch.cuda.synchronize()
    with_kernel_set(engine.model, default_kernels)
    if "default" in failed:
        print(f"error: the default variant failed: {failed['default']}", file=sys.stderr)
        return 1
    want = results["default"][0]["tokens"]
    summary = {
        name: {
            "ms_per_token_p50": [r["ms_per_token_p50"] for r in runs],
            "tok_s": [r["tok_s"] for r in runs],
            "same_tokens_as_default": all(r["tokens"] == want for r in runs),
            **({"failed": failed[name]} if name in failed else {}),
        }
        for name, runs in results.items()
    }
    print(f"| {args.model.name} | ms/token p50 per run | tok/s per run | same tokens |")
    print("|---|---|---|---|")
    for name, s in summary.items():
        same = f"failed: {s['failed']}" if "failed" in s else s["same_tokens_as_default"]
        print(f"| {name} | {s['ms_per_token_p50']} | {s['tok_s']} | {same} |")
    if args.out:
        args.out.write_text(json.dumps({"model": str(args.model), "variants": summary}, indent=2) + "\n")
    return 0 if all(s["same_tokens_as_default"] and "failed" not in s for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
