"""The decode step's fused RoPE + KV store + attention without a GPU: `kernels/triton_decode.py`'s
`rope_attention` run by Triton's interpreter on CPU.

    TRITON_INTERPRET=1 python -m tests.kernels.interpreted_attention

The same cases as the CUDA test `tests/kernels/test_decode_kernels.py` (Qwen, Llama, Phi-3 head layouts,
partial rotary, GPT-OSS sliding windows and sinks, the first position), each with the cache positions
read by one program per KV head and split among several (`max_splits`), against the reference RoPE and
`ReferenceAttention` in float32; the split result also against the unsplit one; and with
`attention_tile(retiled=True)` (dot products for grouped heads), against both; and with the splits
sharing the positions the step reads (`by_position=True`, `_position_span`), against both; and with
grouped heads two a program (`heads_apart=True`), against both, and with the merge unrolled the same
bits as their looped merge. Run with the
whole cache as the loop bound (`whole_cache=True`) but for `by_position`, whose bounds come from the
position in memory (`interpreter.ready` lets the interpreter take them). Prints one line per check and
exits 1 if any fails; `tests/kernels/test_triton_interpreted.py` runs it.
"""

from __future__ import annotations

import math
import sys

import torch

from tests.kernels import interpreter

REL_TOL = 1e-5
# (neox, n_head, n_kv, head_dim, rope_dim, window, sinks, position): the CUDA test's cases.
CASES = {
    "qwen-first": (True, 14, 2, 64, 64, None, False, 0),
    "qwen": (True, 14, 2, 64, 64, None, False, 233),
    "llama": (False, 9, 3, 64, 64, None, False, 70),
    "phi3": (True, 32, 32, 96, 96, None, False, 100),
    "partial-rotary": (True, 4, 4, 96, 32, None, False, 17),
    "gpt-oss-window": (True, 64, 8, 64, 64, 128, True, 299),
    "gpt-oss-short": (True, 64, 8, 64, 64, 128, True, 5),
    "sinks-first": (True, 64, 8, 64, 64, None, True, 0),
}
SPLITS = (1, 4, 16)  # also `by_position=True`'s
UNROLLED_SPLITS = (4, 16)  # `unrolled_merge=True`: the same bits as the runtime loops' merge
HEADS_APART_SPLITS = (1, 16)  # `heads_apart=True`: grouped heads two a program (axis 2 of the grid)
RETILED_SPLITS = (
    1,
    16,
)  # `attention_tile(retiled=True)`: dot products for grouped heads, 32 positions a step


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).abs().max() / want.double().abs().max())


def check_case(name: str, case: tuple, gen: torch.Generator) -> list[tuple[str, bool, str]]:
    from kernels import triton_decode
    from reference_worker.models.attention import ReferenceAttention
    from reference_worker.models.rope import apply_rope, rope_frequencies

    neox, n_head, n_kv, head_dim, rope_dim, window, with_sinks, pos = case
    capacity, scale = 300, 1 / math.sqrt(head_dim)
    cos, sin = rope_frequencies(head_dim, 10000.0, rope_dim, max_positions=capacity, device="cpu")
    cache = torch.randn(2, n_kv, capacity, head_dim, generator=gen)
    cache[:, :, pos:] = float("nan")  # the position is written by the kernel; later ones are never read
    q, k, v = (torch.randn(n * head_dim, generator=gen) for n in (n_head, n_kv, n_kv))
    sinks = torch.randn(n_head, generator=gen) if with_sinks else None
    position = torch.tensor([pos])
    as_heads = lambda t, n: t.view(1, n, head_dim).transpose(0, 1)  # noqa: E731
    want_keys, want_values = cache[0].clone(), cache[1].clone()
    want_keys[:, pos] = apply_rope(as_heads(k, n_kv), cos, sin, position, neox)[:, 0]
    want_values[:, pos] = v.view(n_kv, head_dim)
    q_rot = apply_rope(as_heads(q, n_head), cos, sin, position, neox)
    want = ReferenceAttention()(
        q_rot, want_keys[:, : pos + 1], want_values[:, : pos + 1], start_pos=pos, scale=scale,
        sliding_window=window, sinks=sinks,
    ).reshape(-1)  # fmt: skip
    results, unsplit, looped, apart_looped = [], None, {}, {}
    runs = [(m, False, False, False, False) for m in SPLITS]
    runs += [(m, True, False, False, False) for m in RETILED_SPLITS]
    runs += [(m, False, True, False, False) for m in SPLITS]
    runs += [(m, False, False, True, False) for m in UNROLLED_SPLITS]
    runs += [(m, False, False, False, True) for m in HEADS_APART_SPLITS]
    runs += [(16, False, False, True, True)]  # heads apart, the merge unrolled: its looped merge's bits
    for max_splits, retiled, by_position, unrolled, heads_apart in runs:
        keys, values = cache[0].clone(), cache[1].clone()
        got = triton_decode.rope_attention(
            q, k, v, keys, values, cos, sin, position, neox, scale, window, sinks,
            whole_cache=not by_position, max_splits=max_splits, retiled=retiled, by_position=by_position,
            unrolled_merge=unrolled, heads_apart=heads_apart,
        )  # fmt: skip
        if not (retiled or by_position or unrolled):
            (apart_looped if heads_apart else looped)[max_splits] = got
        _, n_split = triton_decode.attention_splits(capacity, 16, max_splits)
        err = _rel_err(got, want)
        stored = _rel_err(keys[:, pos], want_keys[:, pos]) < REL_TOL and torch.equal(
            values[:, pos], want_values[:, pos]
        )
        untouched = bool(keys[:, pos + 1 :].isnan().all() and values[:, pos + 1 :].isnan().all())
        ok = err < REL_TOL and stored and untouched
        detail = (
            f"rel err {err:.1e}"
            + ("" if stored else ", new K/V wrong")
            + ("" if untouched else ", wrote past it")
        )
        if unsplit is None:
            unsplit = got
        else:
            apart = _rel_err(got, unsplit)
            ok = ok and apart < REL_TOL
            detail += f", {apart:.1e} from unsplit"
        if unrolled:
            same = torch.equal(got, (apart_looped if heads_apart else looped)[max_splits])
            ok = ok and same
            detail += ", the looped merge's bits" if same else ", not the looped merge's bits"
        tiles = ", heads apart" if heads_apart else ""
        tiles += (
            ", retiled"
            if retiled
            else ", split by position"
            if by_position
            else ", merge unrolled"
            if unrolled
            else ""
        )
        results.append((f"{name}, at most {max_splits} splits{tiles}", ok, detail))
    return results


def main() -> int:
    if not interpreter.ready():
        return 2
    gen = torch.Generator().manual_seed(20261204)
    failed = sum(interpreter.report(check_case(name, case, gen)) for name, case in CASES.items())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
