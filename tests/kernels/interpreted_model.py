"""The decode step and the prefill of every llama-family and GPT-OSS tiny file through the CUDA kernel set,
on CPU under Triton's interpreter: the model's wiring of the fast kernels checked end to end before any GPU
time.

    TRITON_INTERPRET=1 python -m tests.kernels.interpreted_model [--files tiny/qwen2-q4_k_m.gguf ...]
                                                                [--variant ahead|with-words|...]
                                                                [--regroup q8_0 q6_k]

The kernel set is the one `kernels.backend` gives CUDA (`FAST_PATHS["cuda"]`: the Triton GEMV with its
norm, residual and gate/up forms, the MoE paths, the fused decode-step kernels, the load-time packing),
moved to the CPU: its paths declared for CPU tensors and its device checks (`supports_layout`, `pack`,
the prefill GEMM's `readable`) taking CPU tensors. A short prompt's rows go through the same GEMV; then
each decode step runs the model's step form (`forward(..., positions=)`), as a CUDA graph would capture
it, and its logits are compared with the reference kernels' plain forward at the same tokens
(`FAST_LOGITS_TOL`, the CUDA test's bound). Then a 40-token prompt goes through the prefill GEMM
(`kernels.triton_qgemm`, dense, and grouped by expert for the MoE file) as a prefill graph records it
(padded to its bucket, the logits of its last row): those logits within `PREFILL_LOGITS_TOL` of the
reference's, the GEMM must have served it, and no op in it may read a device value back to the host
(`HostReads`: a CUDA graph capture would fail on one). The MoE file's decode experts must go through the
MoE GEMV (gate, up and the clamped SwiGLU in one launch), not the host-grouped reference products.
`--variant` runs the same checks with one of `benchmarks.step_ab`'s kernel variants (the GEMVs loading
ahead everywhere or only in the output tile or the small k-quant matrices, with the activations with the
words, the Q5_0/Q8_0 tiles without round trips, the re-tiled attention), so a variant's wiring through the
model is held to the same bounds before the device times it. `--regroup q8_0 q6_k` loads the fast model
with those types' matrices regrouped (the worker's `--regroup`): the same checks, and its logits must be
the file order's bit for bit; without it, the worker's default (`triton_gemv.regrouped_by_default`: the
tiny files' Q8_0 matrices) is what the checks run.
Prints one line per file and exits 1 if any fails; `tests/kernels/test_triton_interpreted.py` runs it.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from reference_worker.prefill_graph import bucket_for
from tests.kernels import interpreter

FAST_LOGITS_TOL = 1e-3  # tests/worker/test_decode_step.py: fast kernels against the reference
PROMPT = [1, 5, 9, 2, 7, 3]
STEPS = 4
# tests/worker/test_decode_step.py: a prompt longer than the GEMVs serve goes through the prefill GEMM
# (float16 operands: two float16 roundings per product), logits against the reference within this bound.
LONG_PROMPT = [(7 * i + 3) % 50 + 1 for i in range(40)]
PREFILL_LOGITS_TOL = 1e-2
FAST_CACHE_POSITIONS = 256  # reference_worker.engine.GRAPH_CACHE_BUCKET
FILES = [
    f"tiny/{arch}-{mix}.gguf" for arch in ("llama", "qwen2", "phi3") for mix in ("q4_0", "q8_0", "q4_k_m")
] + ["tiny/gpt-oss-mxfp4_moe.gguf"]


def _cuda_kernels_on_cpu() -> None:
    """`kernels.backend.FAST_PATHS["cpu"]` becomes the CUDA kernel set with its paths declared for CPU."""
    from kernels import backend, triton_gemv, triton_qgemm

    cuda = backend.FAST_PATHS["cuda"]
    prefill = {
        triton_qgemm.FAST_PATH.name: ("qmatmul", "prefill GEMM"),
        triton_qgemm.EXPERTS_FAST_PATH.name: ("qmatmul_experts", "prefill expert GEMM"),
    }

    def on_cpu_counted(p):
        """`p` declared for CPU tensors, its prefill GEMM (if it is one) counted in SERVED."""
        if p.name not in prefill:
            return dataclasses.replace(p, devices=("cpu",))
        field, label = prefill[p.name]
        return dataclasses.replace(p, devices=("cpu",), **{field: _counted(getattr(p, field), label)})

    def on_cpu(config: backend.KernelConfig) -> backend.DeviceKernels:
        found = cuda(config)
        counted = {
            field: _counted(getattr(p, field, None), label)
            for p in found.paths
            for field, label in COUNTED_FORMS.items()
            if getattr(p, field, None) is not None
        }
        return dataclasses.replace(
            found,
            paths=tuple(
                dataclasses.replace(
                    on_cpu_counted(p), **{f: counted[f] for f in counted if getattr(p, f, None) is not None}
                )
                for p in found.paths
            ),
            experts_paths=tuple(
                dataclasses.replace(
                    on_cpu_counted(p),
                    qmatmuls_experts_normed=_counted(p.qmatmuls_experts_normed, "normed experts"),
                    qmatmul_experts_glu=_counted(p.qmatmul_experts_glu, "experts gate/up/SwiGLU"),
                    qmatmul_experts_routed_sum=_counted(p.qmatmul_experts_routed_sum, "experts routed sum"),
                )
                for p in found.experts_paths
            ),
        )

    backend.FAST_PATHS["cpu"] = on_cpu
    _without_cuda_checks(triton_gemv, triton_qgemm)
    from kernels import triton_decode

    triton_decode.rope_attention = _counted(triton_decode.rope_attention, "rope+attention")
    triton_decode.moe_router = _counted(triton_decode.moe_router, "router+top-k")


# Calls the fast forms served (not declined) during the current file's steps, by form.
SERVED: dict[str, int] = {}


def _counted(fn, label: str):
    """`fn`, counting in SERVED the calls it served (returned something), so a file that silently fell
    back to the plain products (and so checks nothing of the fused forms) shows it."""
    if fn is None:
        return None

    def call(*args, **kwargs):
        out = fn(*args, **kwargs)
        if out is not None:
            SERVED[label] = SERVED.get(label, 0) + 1
        return out

    return call


# The fast path's optional forms the decode step uses, by their FastPath field.
COUNTED_FORMS = {
    "qembedding": "embedding",
    "qmatmul_add_normed": "residual+norm",
    "qmatmuls_normed": "normed input",
    "qmatmul_glu": "gate/up/SiLU",
}


def _without_cuda_checks(triton_gemv, triton_qgemm) -> None:
    """The GEMV's and the prefill GEMM's layout and packing checks ask for CUDA tensors; here the same
    checks on CPU ones (the MoE GEMV holds its own reference to the GEMV's layout check)."""
    from kernels import triton_moe

    supports_layout, pack, readable = triton_gemv.supports_layout, triton_gemv.pack, triton_qgemm.readable
    triton_gemv.supports_layout = interpreter.as_if_cuda(supports_layout)
    triton_moe.supports_layout = triton_gemv.supports_layout
    triton_gemv.pack = interpreter.as_if_cuda(pack)
    triton_qgemm.readable = interpreter.as_if_cuda(readable)


def _fast_run(fast, reference) -> tuple[list[torch.Tensor], float, torch.Tensor, float, HostReads]:
    """The decode steps and the padded prefill of `fast`, beside the reference's plain forward at the
    same tokens: (each step's logits, their worst relative error, the prefill's last-row logits, its
    relative error, the host reads of the prefill)."""
    tokens = list(PROMPT)
    # The step's cache as large as a served request's (GRAPH_CACHE_BUCKET): its attention is split among
    # several programs per KV head, most of them past the position (empty), merged by the last.
    want_cache, got_cache = reference.new_cache(len(PROMPT) + STEPS), fast.new_cache(FAST_CACHE_POSITIONS)
    worst, steps = 0.0, []
    try:
        ids = torch.tensor(PROMPT)
        want = reference.forward(ids, want_cache, last_only=True)[0]
        fast.forward(ids, got_cache, last_only=True)  # the prompt's rows through the same GEMV
        for _ in range(STEPS):
            token = int(want.argmax())
            tokens.append(token)
            position = torch.tensor([got_cache.length])
            got = fast.forward(torch.tensor([token]), got_cache, last_only=True, positions=position)[0]
            got_cache.advance(1)
            steps.append(got)
            want = reference.forward(torch.tensor([token]), want_cache, last_only=True)[0]
            err = float((got.double() - want.double()).abs().max() / want.double().abs().max())
            worst = max(worst, err)
    finally:
        want_cache.free()
        got_cache.free()
    # The prompt's rows through the prefill GEMM (dense, and the grouped experts of a MoE), as a prefill
    # graph records them (reference_worker.prefill_graph): padded with the last token to its bucket, the
    # logits of the prompt's last row; and nothing in it may read a device value back to the host.
    want_cache, got_cache = reference.new_cache(len(LONG_PROMPT)), fast.new_cache(FAST_CACHE_POSITIONS)
    bucket = bucket_for(len(LONG_PROMPT))
    try:
        want = reference.forward(torch.tensor(LONG_PROMPT), want_cache, last_only=True)[0]
        padded = torch.tensor(LONG_PROMPT + LONG_PROMPT[-1:] * (bucket - len(LONG_PROMPT)))
        with HostReads() as reads:
            got = fast.forward(
                padded, got_cache, last_only=True, last_row=torch.tensor([len(LONG_PROMPT) - 1])
            )
        got = got[0]
        prefill_err = float((got.double() - want.double()).abs().max() / want.double().abs().max())
    finally:
        want_cache.free()
        got_cache.free()
    return steps, worst, got, prefill_err, reads


def _regrouped(model) -> list[str]:
    """The names of the model's weights stored CODES_THEN_SCALES."""
    from kernels.qtensor import CODES_THEN_SCALES, QTensor

    holders = [model, *getattr(model, "layers", ())]
    return sorted(
        {
            t.name
            for h in holders
            for t in vars(h).values()
            if isinstance(t, QTensor) and t.layout == CODES_THEN_SCALES
        }
    )


def check_file(
    name: str, regroup: tuple[str, ...] | None = None, fused_router: bool = True, fused_combine: bool = False
) -> tuple[bool, str]:
    """The fast model loaded with `KernelConfig(regroup=regroup, fused_router=fused_router,
    fused_combine=fused_combine)` (regroup None: the worker's default, by type and size). Types named: its
    logits must then also be the file order's bit for bit (the kernels decode the same halfwords, and the
    interpreter sums them in the same order), and something regrouped. `fused_router` (the default): a MoE
    file's steps must have routed in `moe_router`; off, through the router's GEMV and `moe_route`.
    `fused_combine`: a MoE file's steps must have formed the routed sum in the down GEMV, and its logits
    must be those of the default's `moe_combine`, bit for bit (one `routed_sum` for both)."""
    from kernels.backend import KernelConfig
    from tests.worker.llama_helpers import load_model

    reference, _, _ = load_model(name, kernels=KernelConfig(kernels="reference"))
    config = KernelConfig(regroup=regroup, fused_router=fused_router, fused_combine=fused_combine)
    fast, _, _ = load_model(name, kernels=config)
    if fast.kernels.decode is None or "triton" not in fast.kernels.name:
        return False, f"not the Triton kernel set: {fast.kernels.name}"
    SERVED.clear()
    steps, worst, prefill, prefill_err, reads = _fast_run(fast, reference)
    served = ", ".join(f"{label} {n}" for label, n in sorted(SERVED.items())) or "no fused form"
    moe = "gpt-oss" in name  # the one MoE file: its experts go through the grouped GEMM
    prefill_served = "prefill GEMM" in SERVED and (not moe or "prefill expert GEMM" in SERVED)
    # A MoE's decode experts through the MoE GEMV (gate, up and the SwiGLU in one launch), not declined.
    experts_served = not moe or "experts gate/up/SwiGLU" in SERVED
    # With `fused_router`, a MoE's decode steps routed in `moe_router`, not declined.
    router_served = not (moe and fused_router) or "router+top-k" in SERVED
    combine_served = not (moe and fused_combine) or "experts routed sum" in SERVED
    same_bits, regrouped_note = True, ""
    if moe and fused_combine:
        apart, _, _ = load_model(name, kernels=KernelConfig(regroup=regroup, fused_router=fused_router))
        apart_steps, _, _, _, _ = _fast_run(apart, reference)
        same_bits = all(map(torch.equal, steps, apart_steps))
        regrouped_note = "; " + (
            "the combine kernel's logits bit for bit" if same_bits else "NOT the combine kernel's logits"
        )
    if regroup:
        regrouped = [n for n in _regrouped(fast) if "exps" not in n]  # MXFP4 experts always are
        file_order, _, _ = load_model(name, kernels=KernelConfig(regroup=()))
        plain_steps, _, plain_prefill, _, _ = _fast_run(file_order, reference)
        same_bits = bool(regrouped) and all(map(torch.equal, steps, plain_steps))
        same_bits = same_bits and torch.equal(prefill, plain_prefill)
        regrouped_note = (
            f"; regrouped {len(regrouped)} matrices ({', '.join(regrouped[:3])}{', ...' if len(regrouped) > 3 else ''}), "
            + ("the file order's logits bit for bit" if same_bits else "NOT the file order's logits")
        )
    bucket = bucket_for(len(LONG_PROMPT))
    return (
        worst < FAST_LOGITS_TOL
        and prefill_err < PREFILL_LOGITS_TOL
        and prefill_served
        and experts_served
        and router_served
        and combine_served
        and same_bits
        and not reads.ops,
        f"worst relative logits error {worst:.1e} over {STEPS} steps, {prefill_err:.1e} after a "
        f"{len(LONG_PROMPT)}-token prefill padded to {bucket} (host reads: {dict(reads.ops) or 'none'}); "
        f"served: {served}{regrouped_note}",
    )


class HostReads(TorchDispatchMode):
    """Counts the ops that read a device value back to the host on CUDA (a scalar read, or an output
    sized by the data): a CUDA graph capture fails on any of them."""

    READS = ("_local_scalar_dense", "nonzero", "bincount", "unique", "masked_select", "is_nonzero", "equal")

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if any(read in name for read in self.READS):
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


# benchmarks.step_ab's kernel variants: those that change the GEMVs' launch shapes (its GEMV_SHAPE_RULES),
# those that call `rope_attention` with an option, and "router-apart" (`KernelConfig.fused_router` off).
GEMV_VARIANTS = ("ahead", "with-words", "plain", "round-trip-free")
ATTENTION_VARIANTS = {
    "retiled": {"retiled": True},
    "by-position": {"by_position": True},
    "merge-looped": {"unrolled_merge": False},
    "heads-apart": {"heads_apart": True},
}
ROUTER_VARIANTS = {"router-before": {"one_pass": False, "row_early": False}}  # `moe_router`'s options
VARIANTS = (*GEMV_VARIANTS, *ATTENTION_VARIANTS, *ROUTER_VARIANTS, "router-apart", "combine-in-down")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kernels.interpreted_model")
    parser.add_argument("--files", nargs="+", default=FILES)
    parser.add_argument("--variant", choices=VARIANTS, help="one of benchmarks.step_ab's kernel variants")
    parser.add_argument(
        "--regroup", nargs="+", default=None, metavar="TYPE", help="the worker's --regroup (e.g. q8_0 q6_k)"
    )
    args = parser.parse_args(argv)
    if not interpreter.ready():
        return 2
    from benchmarks.step_ab import gemv_launch_shapes
    from kernels import triton_decode, triton_gemv

    options = ATTENTION_VARIANTS.get(args.variant)
    if options:  # before the counting wrapper, as step_ab's kernel set passes it
        triton_decode.rope_attention = functools.partial(triton_decode.rope_attention, **options)
    router_options = ROUTER_VARIANTS.get(args.variant)
    if router_options:
        triton_decode.moe_router = functools.partial(triton_decode.moe_router, **router_options)
    _cuda_kernels_on_cpu()
    triton_gemv._sm_count = lambda index: 132  # the H200's SM count: the GPU's launch shapes
    shapes = args.variant if args.variant in GEMV_VARIANTS else ""
    router = args.variant != "router-apart"
    combine = args.variant == "combine-in-down"
    with gemv_launch_shapes(shapes):
        failed = interpreter.report(
            (name, *check_file(name, args.regroup and tuple(args.regroup), router, combine))
            for name in args.files
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
