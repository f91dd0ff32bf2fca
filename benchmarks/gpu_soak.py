"""The soak of `tests/fuzz/soak.py` against a worker on the GPU: jobs over the device-memory budget in a row,
then mixed requests, and the worker's device-memory accounting back at its baseline after each phase.

    python -m benchmarks.gpu_soak [--oom-jobs 20] [--requests 100] [--model tiny/gpt2-q4_0.gguf] [--budget-mb 3] [--out FILE.json]

The worker runs `--device cuda` (fast kernels, CUDA graphs: its defaults) under a budget that holds the
tiny fixture's weights and the KV cache of the soak's short jobs, so a job whose cache does not fit
(2,048 tokens, capped at the 512-position context) must end VRAM_OOM (M0-W-1021) and the next one must
still be served. After each phase the accounting must be back at its baseline, and PyTorch's allocated
bytes (the worker's `/metrics`) at theirs after two warm-up jobs; the driver's view (nvidia-smi) is
recorded beside them. The CPU soak's budget (`tests.fuzz.soak.BUDGET_MB`) also pays for the CPU weight cache,
which a GPU worker does not build: there it would leave room for the over-budget jobs. Exit code 0 only
when nothing failed.
"""

from __future__ import annotations

import random
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fixtures.paths import fixture_path
from steps.nvidia_smi import compute_apps
from tests.fuzz import record
from tests.fuzz.process import worker_process
from tests.fuzz.soak import one, request_for, run_soak

# With CUDA graphs the KV cache is sized in steps of 256 positions (`engine.GRAPH_CACHE_BUCKET`), float32:
# every soak job but the "oom" ones (at most 128 tokens + a short prompt) takes 256 positions, an "oom" job
# the whole 512-position context. The budget must lie between the two, in whole MiB (`--vram-budget-mb`).
# The tiny qwen2 fixture cannot do that: 0.75 MiB of weights and 2 KiB per position need 1.25 vs 1.75 MiB
# (a 2 MiB budget let its "oom" jobs run). The tiny gpt2 fixture (4 KV heads: 4 KiB per position, 1.5 MiB
# of weights) needs 2.5 vs 3.5 MiB: 3 MiB separates them with room for the step's scratch.
GPU_MODEL = "tiny/gpt2-q4_0.gguf"
WARM_UP = ("greedy", "sampled")
GPU_BUDGET_MB = 3


def device_views(worker) -> dict[str, object]:
    """Besides the worker's own accounting (`/health`): PyTorch's allocator as the worker exposes it in
    `/metrics` (`worker_device_allocator_bytes`) and the driver's view, nvidia-smi's memory of the
    worker's CUDA context (None when nvidia-smi cannot see the process, e.g. in another PID namespace)."""
    scrape = httpx.get(worker.url + "/metrics", timeout=10).text
    allocator = {
        sample.labels["pool"]: int(sample.value)
        for family in text_string_to_metric_families(scrape)
        if family.name == "worker_device_allocator_bytes"
        for sample in family.samples
    }
    try:
        driver = next((app.used_bytes for app in compute_apps() if app.pid == worker.popen.pid), None)
    except pytest.skip.Exception as exc:  # nvidia-smi missing or unreadable: `compute_apps` says why
        driver = f"not read: {exc}"
    return {"allocator_bytes": allocator, "driver_context_bytes": driver}


def main(argv: list[str] | None = None) -> int:
    parser = record.parser("benchmarks.gpu_soak", __doc__)
    parser.add_argument("--oom-jobs", type=int, default=20)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=GPU_MODEL, help=f"fixture name (default {GPU_MODEL})")
    parser.add_argument("--budget-mb", type=int, default=GPU_BUDGET_MB, help="the worker's --vram-budget-mb")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    failures: list[str] = []
    oom_outcomes: dict[str, int] = {}
    # The later --device wins over the CPU default of `worker_process`.
    model = fixture_path(args.model)
    with worker_process("--vram-budget-mb", str(args.budget_mb), "--device", "cuda", model=model) as worker:
        baseline = worker.wait_idle()["vram_bytes_by_category"]
        views = {"after_load": device_views(worker)}
        rng = random.Random(args.seed)
        with httpx.Client() as client:
            # Warm-up: the first jobs make PyTorch create what it keeps for the process's life (cuBLAS's
            # workspace per stream: the prefill's, the graph capture's warm-up and the capture's); from
            # then on the allocator must come back to the same bytes after every job.
            for i, kind in enumerate(WARM_UP):
                _, problems = one(worker, client, kind, request_for(kind, i, rng))
                failures += [f"warm-up {kind}: {p}" for p in problems]
                worker.wait_idle()
            views["after_warm_up"] = device_views(worker)
            for i in range(args.oom_jobs):
                outcome, problems = one(worker, client, "oom", request_for("oom", i, rng))
                worker.wait_idle()
                oom_outcomes[outcome] = oom_outcomes.get(outcome, 0) + 1
                failures += [f"oom #{i}: {p}" for p in problems]
        after_oom = worker.wait_idle()["vram_bytes_by_category"]
        views["after_oom_jobs"] = device_views(worker)
        if after_oom != baseline:
            failures.append(f"after the OOM jobs the accounting is {after_oom}, not {baseline}")
        report, memory = run_soak(worker, args.requests, args.seed)
        failures += report.failures
        health = worker.wait_idle()
        views["after_mixed"] = device_views(worker)
    allocated = {
        phase: view["allocator_bytes"].get("allocated")
        for phase, view in views.items()
        if phase != "after_load"
    }
    if len(set(allocated.values())) != 1:
        failures.append(f"PyTorch's allocated bytes moved after the warm-up: {allocated}")
    result = {
        "command": record.command("benchmarks.gpu_soak", argv),
        "device": "cuda",
        "model": args.model,
        "vram_budget_mb": args.budget_mb,
        "oom_jobs": args.oom_jobs,
        "oom_outcomes": oom_outcomes,
        "vram_by_category_baseline": baseline,
        "vram_by_category_after_oom_jobs": after_oom,
        "requests": report.requests,
        "by_kind": report.by_kind,
        "by_outcome": report.by_outcome,
        **memory,
        "device_views": views,
        "health_after": {k: health.get(k) for k in ("status", "vram_bytes_used", "resident")},
        "failures": len(failures),
        "first_failures": failures[:20],
        "seconds": round(time.perf_counter() - started, 1),
    }
    return record.finish(result, args.out, bool(failures))


if __name__ == "__main__":
    sys.exit(main())
