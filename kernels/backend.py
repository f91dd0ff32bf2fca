"""Which matmul kernels a model uses: chosen once, explicitly, where the model is built.

`KernelConfig` is the performance decision (`kernels`: "reference" or "fast"; `cuda_graphs`: capture the
decode step as a CUDA graph). `kernel_set(config, device)` resolves it into a `KernelSet` for one device:
the ordered fast paths that may serve `qmatmul` / `qmatmul_experts` there, with the reference path
(`kernels.qmatmul`) behind them. Models call `kernels.qmatmul(...)` on the set they were given; nothing
is looked up in an environment variable or a global registry at call time.

A fast path is a `FastPath` (a `supports(x, w)` predicate and the function, same contract as
`reference_qmatmul`) or an `ExpertsFastPath`; it is tested against the reference path, never against
itself. `FAST_PATHS` lists them per device type: adding a device's implementation is one entry there.
The set also carries the device's kernels of the one-token decode step (`kernels.triton_decode` on CUDA,
`kernels.cpu_decode` on CPU), which the adapters use in their step form only (the captured CUDA step, the
CPU engine's static step; prefill keeps the plain ops).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from kernels import dependent_launch
from kernels.formats import GGMLType
from kernels.qmatmul import (
    ExpertsFastPath,
    FastPath,
    RMSNormed,
    qembedding,
    qmatmul,
    qmatmul_add_normed,
    qmatmul_experts,
    qmatmul_experts_glu,
    qmatmul_experts_routed_sum,
    qmatmul_glu,
    qmatmuls,
    qmatmuls_experts,
    qmatmuls_normed,
)
from kernels.qtensor import SCALES, QTensor

KernelChoice = Literal["reference", "fast"]
KERNEL_CHOICES: tuple[KernelChoice, ...] = ("reference", "fast")
# The types whose 2-D matrices `KernelConfig.regroup` may ask to be stored CODES_THEN_SCALES: those that
# have the layout (kernels.qtensor.SCALES).
REGROUP_CHOICES: tuple[str, ...] = tuple(t.name.lower() for t in SCALES)

__all__ = [
    "FAST_PATHS",
    "KERNEL_CHOICES",
    "REGROUP_CHOICES",
    "DeviceKernels",
    "ExpertsFastPath",
    "FastPath",
    "KernelConfig",
    "KernelSet",
    "kernel_set",
]


@dataclass(frozen=True)
class KernelConfig:
    """The performance choices of one model instance.

    `kernels="reference"` uses only the tiled reference path (the spec every fast path is tested
    against); "fast" lets the device's fast paths serve the calls they support. `cuda_graphs` captures
    the one-token decode step as a CUDA graph and replays it per token (CUDA with fast kernels only:
    the reference MoE path groups tokens by expert on the host, which a graph cannot hold).
    `fused_decode=False` keeps the fast matmuls but runs the decode step's other ops as the reference
    models write them (to measure or bisect the fused kernels). `lookahead` (CUDA) enqueues the step
    that forwards a sampled token before that token is read back to the host, so the GPU computes the
    next token while the host streams this one (`reference_worker.engine.DecodeSession`).
    `fused_prefill` (CUDA) multiplies the prompt's rows with GEMMs that decode the packed weight tiles on
    their way to the tensor cores (`kernels.triton_qgemm`, one launch a product); False decodes each
    weight into a float16 scratch for cuBLAS first (`kernels.triton_prefill`). `prefill_graphs` (CUDA, fast
    kernels with `fused_prefill`, whose products read nothing back to the host) captures the prefill of a
    prompt padded to a length bucket as a CUDA graph and replays it for later prompts of the bucket
    (`reference_worker.prefill_graph`). `dependent_launch` (CUDA sm_90+, with `cuda_graphs`) captures the
    decode step with programmatic dependent launch: each of its Triton kernels is launched while the
    previous one finishes and waits for it before touching memory (`kernels.dependent_launch`); None (the
    default) decides by the kernels and the model's shape (`dependent_launch.chosen_for`: on with the
    tensor-core GEMVs, whose splits of K then sum in thread-block clusters, else where the model's block
    matrices are small, so its step is many short kernels);
    `regroup` (CUDA, fast kernels): the 2-D matrices of these types stored CODES_THEN_SCALES at load
    (`kernels.qtensor`; the same bytes, a row's codes 16-byte aligned, read with 16-byte loads by the decode
    GEMV; MXFP4 expert tensors always are); None (the default) regroups by type and size where it was timed
    faster (`triton_gemv.regrouped_by_default`: every Q8_0 matrix, the larger Q6_K ones), () none.
    `weight_prefetch`: each GEMV of the captured step first asks L2 for its weight tile (with
    `dependent_launch`: before it waits, so a product's weights stream in while the previous kernel still
    runs; without: all of the tile's lines requested at once, not a loop step's at a time); `late_trigger`
    (with it, on by default): a kernel lets the next one launch late (a GEMV once its weights are read, the
    others at exit) instead of right after its wait. `fused_sampling` (CUDA, fast kernels): a sampled
    request (temperature > 0, with any repetition penalty, top-k, top-p and min-p) draws its token in two
    launches, four with a truncation (`kernels.triton_sample`, the Gumbel-max draw over the kept ids: the
    same distribution, other draws per seed) instead of the sampler's dozen PyTorch kernels.
    `tensor_core_gemv` (CUDA sm_80+, fast kernels): the decode GEMVs of Q4_K and regrouped Q6_K matrices of
    at least `triton_gemv.TENSOR_CORE_MIN_BYTES` on the tensor cores (`kernels.tensor_core_gemv`, mma.sync on the
    codes decoded in registers) instead of the CUDA-core loop. `fused_router` (CUDA, fused decode kernels): a MoE
    decode step's router product and its top-k in one launch (`triton_decode.moe_router`) instead of a
    GEMV and `moe_route` (GPT-OSS +1.0 % a token on an H100, 2026-12-06; `benchmarks.step_ab` "router and
    top-k apart" times the other way). `fused_combine` (CUDA, fused decode kernels; off until timed): a MoE
    decode step's routed sum (each expert's down product weighted by the router, plus the residual) formed
    by the down GEMV's epilogue (`triton_gemv.RoutedSum`: the last of a token's pairs to finish a row tile
    sums them) instead of `triton_decode.moe_combine`'s launch; the same bits.
    """

    kernels: KernelChoice = "fast"
    cuda_graphs: bool = True
    fused_decode: bool = True  # with kernels="fast": the device's fused decode-step kernels, if any
    lookahead: bool = True
    fused_prefill: bool = True
    prefill_graphs: bool = True
    dependent_launch: bool | None = None  # None: by the model's shape (`dependent_launch_mode`)
    weight_prefetch: bool = False
    late_trigger: bool = True
    fused_sampling: bool = True
    tensor_core_gemv: bool = True
    fused_router: bool = True
    fused_combine: bool = False
    # ggml type names, e.g. ("q8_0", "q6_k") (see REGROUP_CHOICES); None: by type and size
    regroup: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.kernels not in KERNEL_CHOICES:
            raise ValueError(f"kernels {self.kernels!r} is not one of {', '.join(KERNEL_CHOICES)}")
        unknown = [name for name in self.regroup or () if name not in REGROUP_CHOICES]
        if unknown:
            raise ValueError(f"regroup {unknown[0]!r} is not one of {', '.join(REGROUP_CHOICES)}")

    @property
    def regrouped_types(self) -> tuple[GGMLType, ...] | None:
        """The types whose 2-D matrices are regrouped; None: those `triton_gemv.regrouped_by_default` picks."""
        if self.regroup is None:
            return None
        return tuple(GGMLType[name.upper()] for name in self.regroup)

    def graphs_on(self, device: torch.device) -> bool:
        """Whether the decode step is captured as a CUDA graph on `device`."""
        return self.cuda_graphs and self.kernels == "fast" and device.type == "cuda"

    def prefill_graphs_on(self, device: torch.device) -> bool:
        """Whether prompts are prefilled by captured CUDA graphs on `device` (the float16-scratch prefill
        reads each product's expert counts back to the host, which a capture cannot hold)."""
        return self.prefill_graphs and self.fused_prefill and self.kernels == "fast" and device.type == "cuda"

    def dependent_launch_mode(
        self, device: torch.device, largest_block_matrix_bytes: int
    ) -> dependent_launch.DependentLaunch:
        """How the captured decode step's kernels launch on `device`: early with Hopper's programmatic
        dependent launch, or not (only a captured step, whose launches cost no host time, gains from it).
        Unless asked for either way, early with the tensor-core GEMVs (their splits summed in clusters) or
        where the model's largest block matrix (weight bytes) is small enough (`dependent_launch.chosen_for`)."""
        if not (self.graphs_on(device) and dependent_launch.supported(device)):
            return dependent_launch.OFF
        early = self.dependent_launch
        if early is None:
            # The tensor-core GEMVs sum their splits in clusters on sm_90+ (`GemvConfig.tc_cluster_splits`,
            # on by default), as dependent launch needs sm_90: with them, every shape launches early.
            early = dependent_launch.chosen_for(
                largest_block_matrix_bytes, clustered_splits=self.kernels == "fast" and self.tensor_core_gemv
            )
        return dependent_launch.DependentLaunch(early, self.weight_prefetch, self.late_trigger)

    def lookahead_on(self, device: torch.device) -> bool:
        """Whether a decode session runs one step ahead of the host on `device` (CUDA: launches are
        asynchronous; on CPU a step runs while it is called, so there is nothing to overlap)."""
        return self.lookahead and device.type == "cuda"


@dataclass(frozen=True)
class DeviceKernels:
    """What kernels="fast" brings on one device type: matmul fast paths (tried in order) and, optionally,
    the fused kernels of the one-token decode step (`kernels.triton_decode`'s functions)."""

    paths: tuple[FastPath, ...] = ()
    experts_paths: tuple[ExpertsFastPath, ...] = ()
    decode: Any = None
    # A request's device draw for the sampling parameters it serves (`kernels.triton_sample.GumbelDraw`):
    # called as draw(logits_size, vocab_size, seed, device), compiled ahead by draw.warm_up(logits_size,
    # vocab_size, device); None: the sampler's PyTorch path throughout.
    sample: Any = None
    # The storage order the fast paths read fastest: QTensor -> QTensor (the same bytes, regrouped in
    # place at load, e.g. `triton_gemv.pack`), or None to keep every weight as the file stores it.
    pack: Callable[[QTensor], QTensor] | None = None


def _cuda_kernels(config: KernelConfig) -> DeviceKernels:
    # Imported here so that machines without Triton (CPU-only wheels) never import it.
    if importlib.util.find_spec("triton") is None:
        return DeviceKernels()
    from kernels import triton_decode, triton_gemv, triton_moe, triton_prefill, triton_qgemm, triton_sample

    # Decode (few rows) takes the GEMVs; prefill (more rows) the float16 tensor-core matmuls.
    prefill = triton_qgemm if config.fused_prefill else triton_prefill
    return DeviceKernels(
        (
            triton_gemv.FAST_PATH if config.tensor_core_gemv else triton_gemv.CUDA_CORE_FAST_PATH,
            prefill.FAST_PATH,
        ),
        (triton_moe.EXPERTS_FAST_PATH, prefill.EXPERTS_FAST_PATH),
        triton_decode,
        pack=functools.partial(triton_gemv.pack, regroup=config.regrouped_types),
        sample=triton_sample.GumbelDraw,
    )


def _cpu_kernels(config: KernelConfig) -> DeviceKernels:
    # `kernels.cpu_native`: one-row products straight from the stored Q4_0/Q4_1/Q5_0/Q8_0/Q4_K blocks, where a C
    # compiler built it. The float16 weight copies of `kernels.cpu_dense` serve the other products of
    # matrices that have a copy (`reference_worker.weight_cache` builds them at load), everything else
    # stays on the reference path. `kernels.cpu_decode`: the decode step's other ops in fewer PyTorch calls.
    from kernels import cpu_decode, cpu_dense, cpu_native

    return DeviceKernels((cpu_native.FAST_PATH, cpu_dense.FAST_PATH), decode=cpu_decode)


# Device type -> what kernels="fast" uses there.
FAST_PATHS: dict[str, Callable[[KernelConfig], DeviceKernels]] = {
    "cuda": _cuda_kernels,
    "cpu": _cpu_kernels,
}


@dataclass(frozen=True)
class KernelSet:
    """The matmuls of one model on one device: its fast paths first, the reference path behind them."""

    config: KernelConfig
    device: torch.device
    paths: tuple[FastPath, ...] = ()
    experts_paths: tuple[ExpertsFastPath, ...] = ()
    decode: Any = None  # fused decode-step kernels (rms_norm, rope_store, decode_attention, ...) or None
    pack: Callable[[QTensor], QTensor] | None = None  # see DeviceKernels.pack
    sample: Any = None  # see DeviceKernels.sample

    def pack_weights(self, weights: dict[str, QTensor]) -> None:
        """Regroups the loaded weights, in place, into the order this set's fast paths read fastest
        (`DeviceKernels.pack`); a no-op for the reference path. Before the model uses any weight: the
        entries of `weights` are replaced, and the objects they held must not be used afterwards."""
        if self.pack is None:
            return
        for name, w in weights.items():
            if isinstance(w, QTensor):
                weights[name] = self.pack(w)

    @property
    def name(self) -> str:
        names = [p.name for p in (*self.paths, *self.experts_paths)]
        return f"{self.config.kernels} ({', '.join(names) or 'reference path'})"

    @property
    def norms_into_gemv(self) -> bool:
        """Whether a fast path forms rms_norm inside its GEMVs (`qmatmul_add` with `then_norm`, then
        `qmatmul(s)` of the `RMSNormed` it returns): a decode step can then run without norm kernels."""
        return any(p.qmatmul_add_normed is not None for p in self.paths)

    def qmatmul(
        self,
        x: torch.Tensor | RMSNormed,
        w: QTensor,
        bias: torch.Tensor | None = None,
        *,
        out_dtype=None,
    ) -> torch.Tensor:
        if isinstance(x, RMSNormed):
            return qmatmuls_normed(x, (w,), (bias,), paths=self.paths)[0]
        return qmatmul(x, w, bias, out_dtype=out_dtype, paths=self.paths)

    def qmatmuls(
        self,
        x: torch.Tensor | RMSNormed,
        weights: tuple[QTensor, ...],
        biases: tuple[torch.Tensor | None, ...] | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """One input through several weights (q/k/v, gate/up): one product where a fast path stores them
        together, else one `qmatmul` each. An `RMSNormed` input is normed inside the products where a
        fast path can, else formed first."""
        if isinstance(x, RMSNormed):
            return qmatmuls_normed(x, weights, biases, paths=self.paths)
        return qmatmuls(x, weights, biases, paths=self.paths)

    def qmatmul_add(
        self,
        x: torch.Tensor,
        w: QTensor,
        residual: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        then_norm: tuple[torch.Tensor, float] | None = None,
    ) -> torch.Tensor | RMSNormed:
        """`s = residual + qmatmul(x, w, bias)`. For one row and no bias the residual rides in as the bias:
        the same sum (IEEE addition commutes), one launch instead of two in the decode step. With
        `then_norm=(weight, eps)` returns `RMSNormed(s, s * weight, eps)` (the next rms_norm, unformed:
        from the same launch where a fast path serves it)."""
        if then_norm is not None:
            normed = qmatmul_add_normed(x, w, residual, *then_norm, bias=bias, paths=self.paths)
            if normed is not None:
                return normed
        if bias is None and residual.dim() == 2 and residual.shape[0] == 1 and residual.dtype == x.dtype:
            s = self.qmatmul(x, w, residual[0])
        else:
            s = residual + self.qmatmul(x, w, bias)
        if then_norm is None:
            return s
        weight, eps = then_norm
        return RMSNormed(s, s * weight, eps)

    def qmatmul_glu(
        self, h: torch.Tensor | RMSNormed, w_gate: QTensor, w_up: QTensor | None = None
    ) -> torch.Tensor | None:
        """silu(h @ gate.T) * (h @ up.T) in one call where a fast path serves it (`w_up` None: `w_gate`
        holds [gate; up]), else None: the caller takes the products and the activation apart."""
        return qmatmul_glu(h, w_gate, w_up, paths=self.paths)

    def qembedding(self, ids: torch.Tensor, w: QTensor, *, checked: bool = True) -> torch.Tensor:
        return qembedding(ids, w, checked=checked, paths=self.paths)

    def qmatmul_experts(
        self, x: torch.Tensor, w: QTensor, expert_ids: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return qmatmul_experts(x, w, expert_ids, bias, paths=self.paths, experts_paths=self.experts_paths)

    def qmatmul_experts_glu(
        self,
        x: torch.Tensor | RMSNormed,
        gate: QTensor,
        up: QTensor,
        expert_ids: torch.Tensor,
        biases: tuple[torch.Tensor | None, torch.Tensor | None],
        *,
        activation: tuple[float, float] | None = None,
    ) -> torch.Tensor | None:
        """A MoE's gate and up products and its gated activation in one call where a fast path serves it
        (`kernels.qmatmul.qmatmul_experts_glu`), else None: the caller takes them apart."""
        return qmatmul_experts_glu(
            x, gate, up, expert_ids, biases, activation=activation, experts_paths=self.experts_paths
        )

    def qmatmul_experts_routed_sum(
        self,
        x: torch.Tensor,
        w: QTensor,
        expert_ids: torch.Tensor,
        bias: torch.Tensor | None,
        route_weights: torch.Tensor,
        residual: torch.Tensor,
        *,
        then_norm: tuple[torch.Tensor, float] | None = None,
    ) -> torch.Tensor | RMSNormed | None:
        """A MoE's down products, their routed sum and the residual in one call where a fast path serves it
        (`kernels.qmatmul.qmatmul_experts_routed_sum`), else None: the caller takes them apart."""
        return qmatmul_experts_routed_sum(
            x, w, expert_ids, bias, route_weights, residual, then_norm=then_norm,
            experts_paths=self.experts_paths,
        )  # fmt: skip

    def qmatmuls_experts(
        self,
        x: torch.Tensor | RMSNormed,
        weights: tuple[QTensor, ...],
        expert_ids: torch.Tensor,
        biases: tuple[torch.Tensor | None, ...] | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """One input through several expert tensors with the same expert ids (a MoE's gate and up): one
        product where a fast path serves them together, else one `qmatmul_experts` each."""
        return qmatmuls_experts(
            x, weights, expert_ids, biases, paths=self.paths, experts_paths=self.experts_paths
        )


def kernel_set(config: KernelConfig | None, device: torch.device | str) -> KernelSet:
    """Resolves `config` (default: `KernelConfig()`) for `device`."""
    config = config or KernelConfig()
    device = torch.device(device)
    if config.kernels == "reference":
        return KernelSet(config, device)
    found = FAST_PATHS[device.type](config) if device.type in FAST_PATHS else DeviceKernels()
    decode = found.decode if config.fused_decode else None
    sample = found.sample if config.fused_sampling else None
    return KernelSet(
        config, device, tuple(found.paths), tuple(found.experts_paths), decode, found.pack, sample
    )
