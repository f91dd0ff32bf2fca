"""Where a decode step's device time goes: kernels by class, per token, from the PyTorch profiler.

    python -m benchmarks.profile_step --model /abs/model.gguf [--steps 32] [--prefill-tokens N] [--append FILE.md]

Loads the model the way the worker does (`load_worker`, default `--kernels fast --cuda-graphs`), prefills a
short prompt, then profiles `--steps` decode steps twice: replayed as the captured CUDA graph, and run
eagerly over the same static buffers. Each kernel is put in a class by its name (GEMV, attention, norms,
sampling and logits, elementwise and copies, other); the table gives, per token, the number of kernels
and their summed device time, next to the wall time per token. Device time summed over kernels is what
the GPU computed; wall time minus that is launch gaps and host time. `--prefill-tokens N` also profiles
prefills of an N-token prompt up to the first token (per prefill, with the heaviest kernels by name:
there the weight decoding runs in the same `_qgemv_kernel` and the matmuls are cuBLAS GEMMs). Prints the
Markdown and the JSON, and appends the Markdown to `--append`.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from reference_worker.cli import add_kernel_arguments, kernel_argv

# First match wins; names are CUDA kernel names as the profiler reports them.
KERNEL_CLASSES: list[tuple[str, re.Pattern[str]]] = [
    # the CUDA-core loop and the tensor-core Q4_K kernel (`kernels.tensor_core_gemv`, Gluon)
    ("GEMV (quantized, Triton)", re.compile(r"qgemv|tc_gemv")),
    ("attention", re.compile(r"softmax|attention|attn|sdpa|flash|bmm|gemm|gemv|cutlass|sm90_xmma|Kernel2")),
    ("norms (reductions)", re.compile(r"reduce|norm|mean")),
    ("sampling / argmax / top-k", re.compile(r"argmax|topk|sort|multinomial|radix|_draw_")),
    (
        "elementwise / copies / indexing",
        re.compile(r"elementwise|vectorized|index|copy|fill|cat|gather|scatter"),
    ),
]


def kernel_class(name: str) -> str:
    for label, pattern in KERNEL_CLASSES:
        if pattern.search(name):
            return label
    return "other"


# The kernel set's product methods whose calls `named_products` labels with the weights they read.
PRODUCT_METHODS = (
    "qmatmul", "qmatmuls", "qmatmul_add", "qmatmul_glu", "qmatmul_experts", "qmatmuls_experts",
)  # fmt: skip
PRODUCT_RANGE = "product:"
_LAYER_PREFIX = re.compile(r"^blk\.\d+\.")


def weight_label(weights: Any) -> str:
    """`attn_q`, `ffn_gate+ffn_up`, `output`: the tensor names a product reads, without the layer
    prefix and the `.weight` suffix (so a layer's products add up across layers)."""
    if isinstance(weights, (tuple, list)):
        return "+".join(weight_label(w) for w in weights)
    name = getattr(weights, "name", None) or type(weights).__name__
    return _LAYER_PREFIX.sub("", name).removesuffix(".weight")


@contextmanager
def named_products(kernel_set_type: type) -> Iterator[None]:
    """While inside, each outermost call of a `PRODUCT_METHODS` method of `kernel_set_type` runs in a
    profiler range `product:<weight_label>`, so the kernels it launches are counted under the weights it
    read (eager steps only: a replayed graph has no host ranges). The methods are restored on exit."""
    from torch.profiler import record_function

    depth = threading.local()
    saved = {
        name: getattr(kernel_set_type, name) for name in PRODUCT_METHODS if hasattr(kernel_set_type, name)
    }

    def labelled(method):
        def call(self, x, weights, *args, **kwargs):
            if getattr(depth, "n", 0):
                return method(self, x, weights, *args, **kwargs)  # inside another product: counted there
            depth.n = 1
            try:
                with record_function(PRODUCT_RANGE + weight_label(weights)):
                    return method(self, x, weights, *args, **kwargs)
            finally:
                depth.n = 0

        return call

    try:
        for name, method in saved.items():
            setattr(kernel_set_type, name, labelled(method))
        yield
    finally:
        for name, method in saved.items():
            setattr(kernel_set_type, name, method)


def products_by_weight(events: Any, steps: int) -> dict[str, dict[str, float]]:
    """Device µs and calls per token of each `product:` range (the kernels launched inside it)."""
    totals: dict[str, dict[str, float]] = defaultdict(lambda: {"calls": 0, "us": 0.0})
    for event in events:
        if event.name.startswith(PRODUCT_RANGE):
            label = event.name.removeprefix(PRODUCT_RANGE)
            totals[label]["calls"] += 1
            totals[label]["us"] += getattr(event, "device_time_total", 0.0)
    return {k: {"calls": v["calls"] / steps, "us": round(v["us"] / steps, 2)} for k, v in totals.items()}


def profile_steps(step, steps: int) -> dict[str, Any]:
    """Profiles `steps` calls of `step()`; kernels by class per token and wall ms per token (and, for
    steps run inside `named_products`, device time per weight)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    by_class: dict[str, dict[str, float]] = defaultdict(lambda: {"kernels": 0, "us": 0.0})
    by_name: dict[str, dict[str, float]] = defaultdict(lambda: {"kernels": 0, "us": 0.0})
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = event.device_time if hasattr(event, "device_time") else event.cuda_time
        for table, key in ((by_class, kernel_class(event.name)), (by_name, event.name[:90])):
            table[key]["kernels"] += 1
            table[key]["us"] += us
    per_token = {
        k: {"kernels": v["kernels"] / steps, "us": round(v["us"] / steps, 2)} for k, v in by_class.items()
    }
    top = sorted(by_name.items(), key=lambda kv: -kv[1]["us"])[:15]
    by_weight = products_by_weight(prof.events(), steps)
    return {
        "steps": steps,
        "wall_ms_per_token": round(wall / steps * 1e3, 3),
        "device_us_per_token": round(sum(v["us"] for v in per_token.values()), 1),
        "kernels_per_token": round(sum(v["kernels"] for v in per_token.values()), 1),
        "by_class": per_token,
        "top_kernels": [
            {"name": n, "kernels": v["kernels"] / steps, "us": round(v["us"] / steps, 2)} for n, v in top
        ],
        "by_weight": by_weight,
    }


def replay_split(session: Any, steps: int) -> dict[str, float]:
    """Where a graph-replayed token's wall time goes, without the profiler's overhead: `wall_ms` per
    `next_token` (replay, sampling, the host sync and the Python between tokens) and `replay_ms`, the
    device time of one replay measured over back-to-back replays with no host work between them (its
    kernels plus the gaps between the graph's nodes). Wall minus replay is the host's share per token."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        session.next_token()
    wall = (time.perf_counter() - start) / steps
    graph = session.step._graphs.step_for(session.cache).graph  # the graph the tokens above replayed
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(steps):
        graph.replay()  # same position each time: the same work, rewriting one KV entry
    end.record()
    torch.cuda.synchronize()
    return {"wall_ms": round(wall * 1e3, 4), "replay_ms": round(begin.elapsed_time(end) / steps, 4)}


def markdown(model: str, results: dict[str, dict[str, Any]]) -> str:
    lines = [f"### Decode step profile: {model}", ""]
    for mode, r in results.items():
        if mode == "replay split":
            lines += [
                f"**Replay split** (no profiler): {r['wall_ms']} ms per token wall, {r['replay_ms']} ms of "
                f"device time per back-to-back replay (kernels and the gaps between them): "
                f"{r['wall_ms'] - r['replay_ms']:.3f} ms of host time per token",
                "",
            ]
            continue
        lines += [
            f"**{mode}**: {r['wall_ms_per_token']} ms per token wall, {r['device_us_per_token']} µs of kernels "
            f"({r['kernels_per_token']} kernels) per token",
            "",
            "| kernel class | kernels / token | µs / token | share of kernel time |",
            "|---|---:|---:|---:|",
        ]
        total = r["device_us_per_token"] or 1.0
        for label, v in sorted(r["by_class"].items(), key=lambda kv: -kv[1]["us"]):
            lines.append(f"| {label} | {v['kernels']:.1f} | {v['us']:.1f} | {100 * v['us'] / total:.1f} % |")
        if r.get("by_weight"):
            weights_total = sum(v["us"] for v in r["by_weight"].values()) or 1.0
            lines += [
                "| products by weight | calls / token | µs / token | share of products |",
                "|---|---:|---:|---:|",
            ]
            for label, v in sorted(r["by_weight"].items(), key=lambda kv: -kv[1]["us"]):
                lines.append(
                    f"| {label} | {v['calls']:.1f} | {v['us']:.1f} | {100 * v['us'] / weights_total:.1f} % |"
                )
        if mode.startswith("prefill"):
            lines += ["| heaviest kernels | kernels | µs |", "|---|---:|---:|"]
            lines += [
                f"| `{k['name'][:70]}` | {k['kernels']:.0f} | {k['us']:.0f} |" for k in r["top_kernels"][:8]
            ]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--steps", type=int, default=32)
    add_kernel_arguments(p)  # the worker's performance flags (e.g. --dependent-launch), passed on to it
    p.add_argument("--prefill-tokens", type=int, default=0, help="also profile prefills of this many tokens")
    p.add_argument("--append", type=Path, help="append the Markdown table to this file")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: the profile needs a CUDA device", file=sys.stderr)
        return 2

    from reference_worker.cli import parse_config
    from reference_worker.decode_step import DecodeStep
    from reference_worker.logs import EventLog
    from reference_worker.sampling import SamplingParams
    from reference_worker.worker import load_worker

    argv_worker = [
        "--worker-id",
        str(uuid.uuid4()),
        "--model",
        str(args.model.resolve()),
        "--gpu-device",
        "0",
        "--port",
        "8080",
        "--device",
        "cuda",
        *kernel_argv(args),
    ]
    config = parse_config(argv_worker)
    state = load_worker(config, EventLog(io.StringIO()))
    engine = state.engine
    session = engine.start([1, 2, 3, 4], 3 * args.steps + 24, SamplingParams(temperature=0.0))
    try:
        results = {}
        session.next_token()
        for _ in range(8):  # capture (or compile) and warm up
            session.next_token()
        if session.step.uses_graph:
            results["CUDA graph replay"] = profile_steps(session.next_token, args.steps)
            results["replay split"] = replay_split(session, args.steps)
        session.step = DecodeStep(engine.model, session.cache, None, static=True)
        session.next_token()
        with named_products(type(engine.model.kernels)):
            results["eager (same static step, graphs off)"] = profile_steps(session.next_token, args.steps)
    finally:
        session.free()
    if args.prefill_tokens:
        prompt = [1 + (7 * i) % 97 for i in range(args.prefill_tokens)]

        def prefill() -> None:
            started = engine.start(prompt, args.prefill_tokens + 2, SamplingParams(temperature=0.0))
            try:
                started.next_token()  # the first token, sampled from the prefill's logits
            finally:
                started.free()

        prefill()  # warm-up: Triton compilation, cuBLAS handles
        results[f"prefill of {args.prefill_tokens} tokens (per prefill)"] = profile_steps(prefill, 2)
    text = markdown(args.model.name, results)
    print(text)
    print(json.dumps(results))
    if args.append:
        with open(args.append, "a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
