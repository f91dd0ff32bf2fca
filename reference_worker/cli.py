"""Command line (M0-W-1100, M0-W-1101): parse, validate every value, bind the port before the model loads.

Every bad value ends the process with exit code 1 and one line on stderr naming the flag and the problem
(argparse's own usage errors too, which would otherwise exit 2).
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

from kernels.backend import KERNEL_CHOICES, REGROUP_CHOICES

from .config import DEFAULT_MAX_BODY_BYTES, MAX_QUEUE_DEPTH, WorkerConfig


class UsageError(Exception):
    """A bad command-line value; the message is the one line printed before exiting 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m reference_worker", description="Reference worker-orcd M0 worker.")
    p.add_argument("--worker-id", required=True, help="worker UUID")
    p.add_argument("--model", required=True, help="absolute path of a .gguf file")
    p.add_argument("--gpu-device", required=True, type=int, help="device index (0 on CPU runs)")
    p.add_argument("--port", required=True, type=int, help="HTTP port, 1024-65535, must be free")
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda if available"
    )
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument(
        "--context-length", "--max-tokens-in", dest="context_length", type=int, help="cap (default: model's)"
    )
    p.add_argument("--max-tokens-out", type=int, default=2048)
    p.add_argument(
        "--inference-timeout-sec",
        type=float,
        default=300.0,
        help="a job running longer ends with error INFERENCE_TIMEOUT",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="a larger request body is refused unread: 400 INVALID_REQUEST, field body",
    )
    p.add_argument(
        "--queue-depth",
        type=int,
        default=0,
        help="jobs that may wait while one runs (first come, first served); the next one gets 503 "
        "WORKER_BUSY. Default 0: the spec's single slot, a second job is refused at once (M0-W-1301)",
    )
    p.add_argument("--kv-cache-size-mb", type=int, help="KV cache size (default: sized for the context)")
    p.add_argument("--vram-budget-mb", type=int, help="device memory budget (default: the device's)")
    p.add_argument("--load-chunk-mb", type=float, default=1.0, help="host->device copy chunk (M0-W-1222)")
    p.add_argument("--residency-check-interval-sec", type=float, default=60.0)
    p.add_argument(
        "--inject-residency-fault-after-sec",
        type=float,
        help="conformance testing: after this many seconds one weight is recorded as evicted (M0-W-1012)",
    )
    p.add_argument("--callback-url", help="POST {worker_id, vram_bytes, uri, model_ref} here once ready")
    p.add_argument("--attention", choices=["reference", "sdpa"], default="reference")
    p.add_argument("--kv-cache", choices=["contiguous", "paged"], default="contiguous")
    p.add_argument(
        "--prefix-cache",
        action="store_true",
        help="keep the last prompt's KV cache after its request; a next prompt that starts with the same "
        "tokens prefills only the rest (M1-PREFIX-CACHE; default off: M0 frees it, M0-W-1420)",
    )
    add_kernel_arguments(p)
    return p


def add_kernel_arguments(p: argparse.ArgumentParser) -> None:
    """The performance flags (`KernelConfig`); the benchmarks take the same ones."""
    p.add_argument(
        "--kernels",
        choices=list(KERNEL_CHOICES),
        default="fast",
        help="matmul kernels: the device's fast paths (default) or the reference path only",
    )
    p.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="replay the decode step as a CUDA graph (CUDA with --kernels fast and a contiguous KV cache)",
    )
    p.add_argument(
        "--fused-decode",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fused kernels for the decode step's norms, RoPE + KV store, attention, activation (CUDA, --kernels fast)",
    )
    p.add_argument(
        "--decode-lookahead",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="enqueue the next decode step before the sampled token is read back, so the GPU never waits for the host (CUDA)",
    )
    p.add_argument(
        "--fused-prefill",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="prompt products with GEMMs that decode the packed weight tiles themselves; off: decode each "
        "weight into a float16 scratch for cuBLAS (CUDA, --kernels fast)",
    )
    p.add_argument(
        "--prefill-graphs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="prefill prompts of up to 512 tokens with CUDA graphs captured per length bucket (CUDA, "
        "--kernels fast, --fused-prefill; off with --vram-budget-mb or --kv-cache-size-mb)",
    )
    p.add_argument(
        "--dependent-launch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="programmatic dependent launch in the captured decode step: each kernel launched while the "
        "previous one finishes, waiting for it before any memory access (CUDA sm_90+, --cuda-graphs; "
        "default: on with the tensor-core GEMVs, whose splits then sum in thread-block clusters; without "
        "them, where the largest matrix of a block is at most 16 MiB, a step of short kernels)",
    )
    p.add_argument(
        "--weight-prefetch",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="each GEMV of the captured decode step asks L2 for its weight tile first: with --dependent-launch "
        "before it waits for the previous kernel, so the weights stream in meanwhile; without, all of the "
        "tile's lines at once (CUDA sm_90+, --cuda-graphs)",
    )
    p.add_argument(
        "--late-trigger",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --dependent-launch: a kernel lets the next one launch late (a GEMV once its weights are "
        "read, the others at exit) instead of right after it waits",
    )
    p.add_argument(
        "--fused-sampling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a sampled request (temperature > 0, with any repetition penalty, top-k, top-p and min-p) draws "
        "its token on the device in a few kernels (Gumbel-max over the kept ids: the same distribution, "
        "other tokens per seed than the general sampler) (CUDA, --kernels fast)",
    )
    p.add_argument(
        "--tensor-core-gemv",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the decode GEMVs of Q4_K and regrouped Q6_K matrices of at least 4 MiB on the tensor cores "
        "(mma.sync on codes decoded in registers) instead of the CUDA-core loop (CUDA sm_80+, --kernels fast)",
    )
    p.add_argument(
        "--fused-router",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a MoE decode step's router product and its top-k in one launch instead of a GEMV and the "
        "routing kernel (CUDA, --kernels fast)",
    )
    p.add_argument(
        "--fused-combine",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="a MoE decode step's routed sum (the experts' down products weighted by the router, plus the "
        "residual) formed in the down GEMV's epilogue instead of a kernel of its own; the same bits "
        "(CUDA, --kernels fast)",
    )
    p.add_argument(
        "--regroup",
        nargs="+",
        choices=(*REGROUP_CHOICES, NO_REGROUP),
        action=_RegroupAction,
        default=None,
        metavar="TYPE",
        help="store the 2-D matrices of these ggml types with every block's codes first, then every "
        "block's scale (the same bytes; the decode GEMV reads a row's codes with 16-byte loads): "
        f"{', '.join(REGROUP_CHOICES)}, or {NO_REGROUP} (CUDA, --kernels fast; MXFP4 expert tensors always "
        "are). Default: every Q8_0 matrix and the Q6_K ones of 8 MiB or more, where the step was timed faster",
    )


NO_REGROUP = "none"  # --regroup none: every 2-D matrix in the file's order


class _RegroupAction(argparse.Action):
    """--regroup TYPE...: the types once each, in order (a tuple); --regroup none: ()."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if NO_REGROUP in values and len(values) > 1:
            parser.error(f"--regroup {NO_REGROUP} stands alone (got {' '.join(values)})")
        setattr(namespace, self.dest, () if NO_REGROUP in values else tuple(dict.fromkeys(values)))


# The on/off performance flags of `add_kernel_arguments`, by destination (`--x-y` / `--no-x-y`).
KERNEL_SWITCHES = (
    "cuda_graphs", "fused_decode", "decode_lookahead", "fused_prefill", "prefill_graphs", "dependent_launch",
    "weight_prefetch", "late_trigger", "fused_sampling", "tensor_core_gemv", "fused_router",
    "fused_combine",
)  # fmt: skip


def kernel_argv(values: Any) -> list[str]:
    """The performance flags of `values` (parsed by `add_kernel_arguments`, or any object with the same
    attributes, e.g. a benchmark's options) as a worker's command line, every switch spelled out but those
    left to the worker (None: `--dependent-launch` by default)."""
    argv = ["--kernels", values.kernels]
    for dest in KERNEL_SWITCHES:
        flag, value = dest.replace("_", "-"), getattr(values, dest)
        if value is not None:
            argv.append(f"--{flag}" if value else f"--no-{flag}")
    if values.regroup is not None:  # None: the worker's choice by type and size
        argv += ["--regroup", *(values.regroup or (NO_REGROUP,))]
    return argv


def _positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise UsageError(f"{name} must be positive (got {value})")


def parse_config(argv: list[str], *, cuda_device_count: int | None = None) -> WorkerConfig:
    """Raises UsageError. `cuda_device_count` is queried from torch when not given."""
    args = build_parser().parse_args(argv)
    try:
        worker_id = str(uuid.UUID(args.worker_id))
    except ValueError:
        raise UsageError(f"--worker-id must be a UUID (got {args.worker_id!r})") from None
    model = Path(args.model)
    if not model.is_absolute():
        raise UsageError(f"--model must be an absolute path (got {args.model!r})")
    if model.suffix.lower() != ".gguf":
        raise UsageError(f"--model must name a .gguf file (got {args.model!r})")
    if not model.is_file():
        raise UsageError(f"--model {args.model!r}: no such file")
    if not os.access(model, os.R_OK):
        raise UsageError(f"--model {args.model!r}: not readable")
    if not 1024 <= args.port <= 65535:
        raise UsageError(f"--port must be in 1024..65535 (got {args.port})")
    if cuda_device_count is None:
        import torch

        cuda_device_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = args.device
    if device == "auto":
        device = "cuda" if cuda_device_count > 0 else "cpu"
    if device == "cuda" and cuda_device_count == 0:
        raise UsageError("--device cuda: no CUDA device is available")
    count = cuda_device_count if device == "cuda" else 1
    if not 0 <= args.gpu_device < count:
        where = f"{count} CUDA device(s)" if device == "cuda" else "a CPU run (only 0)"
        raise UsageError(f"--gpu-device {args.gpu_device} is out of range for {where}")
    for flag, value in [
        ("--context-length", args.context_length),
        ("--max-tokens-out", args.max_tokens_out),
        ("--inference-timeout-sec", args.inference_timeout_sec),
        ("--max-body-bytes", args.max_body_bytes),
        ("--kv-cache-size-mb", args.kv_cache_size_mb),
        ("--vram-budget-mb", args.vram_budget_mb),
        ("--load-chunk-mb", args.load_chunk_mb),
        ("--residency-check-interval-sec", args.residency_check_interval_sec),
        ("--inject-residency-fault-after-sec", args.inject_residency_fault_after_sec),
    ]:
        _positive(flag, value)
    if not 0 <= args.queue_depth <= MAX_QUEUE_DEPTH:
        raise UsageError(f"--queue-depth must be between 0 and {MAX_QUEUE_DEPTH} (got {args.queue_depth})")
    if args.callback_url is not None and not args.callback_url.startswith(("http://", "https://")):
        raise UsageError(f"--callback-url must be an http(s) URL (got {args.callback_url!r})")
    return WorkerConfig(
        worker_id=worker_id,
        model=model,
        gpu_device=args.gpu_device,
        port=args.port,
        device=device,
        host=args.host,
        context_length=args.context_length,
        max_tokens_out=args.max_tokens_out,
        inference_timeout_sec=args.inference_timeout_sec,
        max_body_bytes=args.max_body_bytes,
        queue_depth=args.queue_depth,
        kv_cache_size_mb=args.kv_cache_size_mb,
        vram_budget_mb=args.vram_budget_mb,
        load_chunk_mb=args.load_chunk_mb,
        residency_check_interval_sec=args.residency_check_interval_sec,
        inject_residency_fault_after_sec=args.inject_residency_fault_after_sec,
        callback_url=args.callback_url,
        attention=args.attention,
        kv_cache=args.kv_cache,
        prefix_cache=args.prefix_cache,
        kernels=args.kernels,
        cuda_graphs=args.cuda_graphs,
        fused_decode=args.fused_decode,
        decode_lookahead=args.decode_lookahead,
        fused_prefill=args.fused_prefill,
        prefill_graphs=args.prefill_graphs,
        dependent_launch=args.dependent_launch,
        weight_prefetch=args.weight_prefetch,
        late_trigger=args.late_trigger,
        fused_sampling=args.fused_sampling,
        tensor_core_gemv=args.tensor_core_gemv,
        fused_router=args.fused_router,
        fused_combine=args.fused_combine,
        regroup=args.regroup,
    )


def bind_port(host: str, port: int) -> socket.socket:
    """Binds the server socket now, so a busy port fails before the model loads (M0-W-1100)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio enables TCP_NODELAY only on sockets that say they are TCP; without it a
    # response written in two segments waits ~40 ms for the client's delayed ACK on keep-alive connections.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"--port {port} is already in use") from None
        raise UsageError(f"--port {port}: cannot bind {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


def fail(message: str) -> None:
    """The one-line error of the CLI contract, then exit 1."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)
