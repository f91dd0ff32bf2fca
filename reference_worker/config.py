"""The worker's configuration: everything the command line decides, validated (M0-W-1100, M0-W-1101)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kernels.backend import KernelConfig

MIB = 1 << 20
# A longest valid /execute body: 32768 code points each sent as a `\uXXXX\uXXXX` pair (12 bytes), stop
# strings and the other fields: under 400 KiB. The default leaves room above that and bounds what is read.
DEFAULT_MAX_BODY_BYTES = MIB
# A waiting job holds a connection and its request; a longer line than this is a mistake.
MAX_QUEUE_DEPTH = 1024


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    model: Path
    gpu_device: int
    port: int
    device: Literal["cpu", "cuda"]
    host: str = "0.0.0.0"
    context_length: int | None = None  # cap on the model's own context length
    max_tokens_out: int = 2048
    inference_timeout_sec: float = 300.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    queue_depth: int = 0  # jobs that may wait for the slot; 0: the spec's single slot (M0-W-1301)
    kv_cache_size_mb: int | None = None
    vram_budget_mb: int | None = None
    load_chunk_mb: float = 1.0
    residency_check_interval_sec: float = 60.0
    inject_residency_fault_after_sec: float | None = None  # conformance hook for M0-W-1012
    callback_url: str | None = None
    attention: Literal["reference", "sdpa"] = "reference"
    kv_cache: Literal["contiguous", "paged"] = "contiguous"
    prefix_cache: bool = False  # the last prompt's KV kept for a next prompt that shares its start (M1)
    kernels: Literal["reference", "fast"] = "fast"  # kernels.backend.KernelConfig
    cuda_graphs: bool = True  # decode step replayed as a CUDA graph (CUDA, fast kernels, contiguous cache)
    fused_decode: bool = True  # fused decode-step kernels (CUDA, fast kernels)
    decode_lookahead: bool = True  # the next step enqueued before a token is read back (CUDA)
    fused_prefill: bool = True  # prompt products decode the packed tiles inside the GEMM (CUDA, fast kernels)
    prefill_graphs: bool = True  # prompts prefilled by captured CUDA graphs, per length bucket (CUDA)
    # The captured decode step's kernels launched early (CUDA sm_90+); None: by the model's shape
    # (kernels.backend.KernelConfig.dependent_launch_mode).
    dependent_launch: bool | None = None
    weight_prefetch: bool = False  # with it: GEMVs prefetch their weight tile into L2 before they wait
    late_trigger: bool = True  # with it: the next kernel launched late (a GEMV's weights read, else exit)
    fused_sampling: bool = True  # a plain temperature draw in two kernels (CUDA, fast kernels)
    tensor_core_gemv: bool = True  # Q4_K, regrouped Q6_K decode GEMVs on the tensor cores (CUDA sm_80+, fast)
    fused_router: bool = True  # a MoE step's router product and top-k in one launch (CUDA, fast kernels)
    fused_combine: bool = False  # a MoE step's routed sum in the down GEMV's epilogue (CUDA, fast kernels)
    # 2-D matrices of these types stored codes, then scales (CUDA); None: by type and size, (): none
    regroup: tuple[str, ...] | None = None

    @property
    def torch_device(self) -> str:
        return f"cuda:{self.gpu_device}" if self.device == "cuda" else "cpu"

    @property
    def kernel_config(self) -> KernelConfig:
        return KernelConfig(
            kernels=self.kernels,
            cuda_graphs=self.cuda_graphs,
            fused_decode=self.fused_decode,
            lookahead=self.decode_lookahead,
            fused_prefill=self.fused_prefill,
            # The prefill graphs hold a cache of their own beside the requests': with a budget they stay
            # off, so the budget means what it meant before (reference_worker.prefill_graph).
            prefill_graphs=self.prefill_graphs
            and self.vram_budget_mb is None
            and self.kv_cache_size_mb is None,
            dependent_launch=self.dependent_launch,
            weight_prefetch=self.weight_prefetch,
            late_trigger=self.late_trigger,
            fused_sampling=self.fused_sampling,
            tensor_core_gemv=self.tensor_core_gemv,
            fused_router=self.fused_router,
            fused_combine=self.fused_combine,
            regroup=self.regroup,
        )

    @property
    def vram_budget_bytes(self) -> int | None:
        return None if self.vram_budget_mb is None else self.vram_budget_mb * MIB

    @property
    def load_chunk_bytes(self) -> int:
        return max(1, int(self.load_chunk_mb * MIB))

    @property
    def uri(self) -> str:
        host = "localhost" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"
