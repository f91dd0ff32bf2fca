"""Decode benchmark of the reference worker on one GGUF file: load, memory, first token, tokens/s, bandwidth.

    python -m benchmarks.decode --model /abs/model.gguf [--http] [--out result.json]

The model is loaded by the worker's own startup path (`reference_worker.worker.load_worker`, the code
`python -m reference_worker` runs before it serves), in this process; with `--http` a real worker process
is started and driven through POST /execute and its SSE stream instead. Measured:
- load: process start -> ready, `load_worker` alone, and the weight copy alone (the loader's
  `model_load_progress` 0 % -> 100 % events);
- device memory after load: `torch.cuda.memory_allocated` and the worker's `DeviceMemory` accounting by
  category, next to the file's tensor bytes;
- first-token latency: prefill of prompts of each `--prompt-tokens` length plus the first sample;
- decode: tokens/s over `--decode-tokens` greedy steps after warm-up, median of `--runs`;
- achieved bandwidth: weight bytes one decoded token reads / time per token, and its share of the
  device-to-device copy bandwidth measured in the same run (gpt-fast's "Bandwidth achieved").
Writes one JSON record (`--out`) and prints a Markdown table (`benchmarks.report`).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks import report
from benchmarks.runinfo import REPO_ROOT, copy_bandwidth, run_info
from benchmarks.traffic import bandwidth_summary, weight_traffic
from reference_worker.cli import add_kernel_arguments, kernel_argv
from reference_worker.gguf import GGUFFile
from reference_worker.logs import EventLog
from steps.ports import free_port
from steps.sse import open_event_stream


class BenchmarkError(RuntimeError):
    """A benchmark that cannot go on; the message names the model and the problem."""


@dataclass(frozen=True)
class Options:
    model: Path
    device: str = "auto"
    gpu_device: int = 0
    prompt_tokens: tuple[int, ...] = (128, 512)
    decode_tokens: int = 128
    decode_prompt_tokens: int = 1  # llama-bench tg128 decodes from an (almost) empty context
    runs: int = 3
    warmup_tokens: int = 8
    time_budget_s: float = 240.0
    attention: str = "reference"
    kv_cache: str = "contiguous"
    kernels: str = "fast"
    cuda_graphs: bool = True
    fused_decode: bool = True
    decode_lookahead: bool = True
    fused_prefill: bool = True
    prefill_graphs: bool = True
    dependent_launch: bool | None = None  # None: the worker's choice by the model's shape
    weight_prefetch: bool = False
    late_trigger: bool = True
    fused_sampling: bool = True  # greedy here: the worker's sampled requests only
    tensor_core_gemv: bool = True
    fused_router: bool = True
    fused_combine: bool = False
    regroup: tuple[str, ...] | None = None  # None: the worker's choice by type and size
    http: bool = False
    ready_timeout_s: float = 900.0
    label: str = ""
    seed: int = 0


# ---------------------------------------------------------------------------------------------- timing helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _note(stream: Any, message: str) -> None:
    """A progress line on the log stream (stderr with --verbose), so a long run shows where it is."""
    if hasattr(stream, "write"):
        print(f"[decode] {message}", file=stream, flush=True)


def _process_age_s() -> float:
    """Seconds since this process started (the kernel's start time, so imports are counted)."""
    import psutil

    return time.time() - psutil.Process().create_time()


def plan_decode(opts: Options, seconds_per_token: float) -> tuple[int, int, bool]:
    """(runs, tokens) that fit `time_budget_s`, given a warm-up estimate; True when reduced."""
    runs, tokens = opts.runs, opts.decode_tokens
    if runs * tokens * seconds_per_token <= opts.time_budget_s:
        return runs, tokens, False
    runs = max(1, int(opts.time_budget_s / (tokens * seconds_per_token)))
    if runs * tokens * seconds_per_token > opts.time_budget_s:
        tokens = max(16, int(opts.time_budget_s / seconds_per_token))
    return runs, tokens, True


def decode_summary(per_run: list[list[float]], traffic: dict[str, Any], copy: dict | None) -> dict[str, Any]:
    """Per-token seconds of each run -> tok/s (median run), inter-token percentiles, bandwidth."""
    rates = [len(run) / sum(run) for run in per_run]
    tok_s = statistics.median(rates)
    every = [t for run in per_run for t in run]
    return {
        "tokens": len(per_run[0]),
        "runs": len(per_run),
        "tok_s": round(tok_s, 2),
        "tok_s_runs": [round(r, 2) for r in rates],
        "ms_per_token": round(1e3 / tok_s, 3),
        "inter_token_ms_p50": _ms(_percentile(every, 0.50)),
        "inter_token_ms_p95": _ms(_percentile(every, 0.95)),
        **bandwidth_summary(traffic["weight_bytes_per_token"], tok_s, copy),
    }


def baseline_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The four measures of the M0.5 baseline (M05-BENCH), taken from the detailed record: first-token
    latency of the shortest prompt, per-token latency and tokens/s of the timed decode, and load time."""
    first = min(result["prefill"], key=lambda p: p["prompt_tokens"]) if result.get("prefill") else {}
    load = result["load"]
    return {
        "first_token_ms": first.get("first_token_ms"),
        "first_token_prompt_tokens": first.get("prompt_tokens"),
        "per_token_ms": result["decode"]["ms_per_token"],
        "tokens_per_s": result["decode"]["tok_s"],
        "load_s": load.get("process_start_to_ready_s", load.get("load_worker_s")),
    }


# ---------------------------------------------------------------------------------------------- in-process


class RecordingLog(EventLog):
    """The worker's event log, plus the `perf_counter` time of every event (load phases are timed by them)."""

    def __init__(self, stream: Any, **context: Any) -> None:
        super().__init__(stream, **context)
        self.events: list[tuple[str, float, dict[str, Any]]] = []

    def event(self, event: str, message: str, *, level: str = "info", **fields: Any) -> None:
        self.events.append((event, time.perf_counter(), fields))
        super().event(event, message, level=level, **fields)

    def time_of(self, event: str, **match: Any) -> float:
        for name, stamp, fields in self.events:
            if name == event and all(fields.get(k) == v for k, v in match.items()):
                return stamp
        raise BenchmarkError(f"the worker logged no {event} {match or ''} event")


def _worker_argv(opts: Options, port: int) -> list[str]:
    return [
        "--worker-id",
        str(uuid.uuid4()),
        "--model",
        str(opts.model),
        "--gpu-device",
        str(opts.gpu_device),
        "--port",
        str(port),
        "--device",
        opts.device,
        "--attention",
        opts.attention,
        "--kv-cache",
        opts.kv_cache,
        *kernel_argv(opts),
    ]


def prompt_ids(tokenizer: Any, n: int, seed: int) -> list[int]:
    """`n` token ids drawn from the vocabulary (seeded), never an end-of-generation or BOS token."""
    banned = set(tokenizer.eog_ids) | {tokenizer.bos_id, tokenizer.eos_id}
    gen = torch.Generator().manual_seed(seed)
    ids: list[int] = []
    while len(ids) < n:
        draw = torch.randint(0, tokenizer.vocab_size, (2 * n,), generator=gen).tolist()
        ids += [i for i in draw if i not in banned]
    return ids[:n]


def _time_prefill(engine: Any, ids: list[int], params: Any, device: torch.device) -> float:
    """Seconds from the prompt's ids to the first sampled token (prefill + one sample, one host sync)."""
    _sync(device)
    start = time.perf_counter()
    session = engine.start(ids, 1, params)
    try:
        session.next_token()
        return time.perf_counter() - start
    finally:
        session.free()


def _time_decode(engine: Any, ids: list[int], n: int, params: Any, memory: Any) -> tuple[list[float], int]:
    """Per-token seconds of `n` decode steps (forward + sample, one host sync each); KV bytes."""
    session = engine.start(ids, n + 1, params)
    try:
        kv_bytes = memory.by_category.get("kv_cache", 0)
        session.next_token()  # the first token comes from the prefill's logits
        stamps = [time.perf_counter()]
        for _ in range(n):
            session.next_token()
            stamps.append(time.perf_counter())
    finally:
        session.free()
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)], kv_bytes


def bench_in_process(opts: Options, traffic: dict[str, Any], log_stream: Any) -> dict[str, Any]:
    from reference_worker.cli import parse_config
    from reference_worker.sampling import SamplingParams
    from reference_worker.worker import load_worker

    config = parse_config(_worker_argv(opts, 8080))  # the port is never bound here
    device = torch.device(config.torch_device)
    log = RecordingLog(log_stream, worker_id=config.worker_id, model_ref=str(config.model))
    start = time.perf_counter()
    state = load_worker(config, log)
    _sync(device)
    ready = time.perf_counter()
    process_to_ready = _process_age_s()
    loader_s = log.time_of("model_load_progress", percent=100) - log.time_of("model_load_progress", percent=0)
    load = {
        "process_start_to_ready_s": round(process_to_ready, 3),
        "load_worker_s": round(ready - start, 3),
        "loader_copy_s": round(loader_s, 3),
        "loader_gbps": round(traffic["tensor_bytes"] / loader_s / 1e9, 2) if loader_s > 0 else None,
    }
    memory = _memory_after_load(device, state.memory, traffic)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    engine, params = state.engine, SamplingParams(temperature=0.0, seed=opts.seed)  # greedy
    prompts = {n: prompt_ids(engine.tokenizer, n, opts.seed + n) for n in opts.prompt_tokens}
    decode_ids = prompt_ids(engine.tokenizer, opts.decode_prompt_tokens, opts.seed)

    # Warm-up: every prompt length once (kernel compilation, allocator growth), then a short decode.
    for ids in prompts.values():
        _time_prefill(engine, ids, params, device)
    warm, _ = _time_decode(engine, decode_ids, opts.warmup_tokens, params, state.memory)
    runs, tokens, reduced = plan_decode(opts, statistics.median(warm))
    _note(
        log_stream,
        f"loaded in {ready - start:.2f} s; warm-up {statistics.median(warm) * 1e3:.2f} ms/token; "
        f"timing {runs} runs x {tokens} tokens",
    )

    prefill = []
    for n, ids in prompts.items():
        times = [_time_prefill(engine, ids, params, device) for _ in range(opts.runs)]
        _note(log_stream, f"prefill {n} tokens: {[round(t * 1e3, 1) for t in times]} ms")
        first = statistics.median(times)
        prefill.append(
            {
                "prompt_tokens": n,
                "first_token_ms": _ms(first),
                "first_token_ms_runs": [_ms(t) for t in times],
                "prefill_tok_s": round(n / first, 1),
            }
        )
    per_run, kv_bytes = [], 0
    for _ in range(runs):
        run, kv_bytes = _time_decode(engine, decode_ids, tokens, params, state.memory)
        per_run.append(run)
        _note(log_stream, f"decode run: {len(run) / sum(run):.2f} tok/s")
    without_graphs = None
    if engine.graphs is not None:
        # The same decode with the step run eagerly (graphs off), on the same loaded model.
        graphs, engine.graphs = engine.graphs, None
        try:
            run, _ = _time_decode(engine, decode_ids, tokens, params, state.memory)
        finally:
            engine.graphs = graphs
        without_graphs = {"tok_s": round(len(run) / sum(run), 2), "ms_per_token": _ms(statistics.median(run))}
        _note(log_stream, f"decode run without graphs: {without_graphs['tok_s']:.2f} tok/s")
    # Sampled requests beside the greedy runs: temperature 1 (the API's default) and a truncated draw
    # (top-k 40, top-p 0.9, min-p 0.05), each with the device draw where the worker has one and with the
    # sampler's general path.
    sampled = {}
    draw = engine.device_draw
    paths = {"device_draw": draw} if draw is not None else {}
    kinds = {
        "": SamplingParams(temperature=1.0, seed=opts.seed),
        "truncated_": SamplingParams(temperature=1.0, top_k=40, top_p=0.9, min_p=0.05, seed=opts.seed),
    }
    for kind, params in kinds.items():
        for name, chosen in (paths | {"general_sampler": None}).items():
            engine.device_draw = chosen
            try:
                run, _ = _time_decode(engine, decode_ids, tokens, params, state.memory)
            finally:
                engine.device_draw = draw
            label = kind + name
            sampled[label] = {
                "tok_s": round(len(run) / sum(run), 2),
                "ms_per_token": _ms(statistics.median(run)),
            }
            _note(log_stream, f"decode run sampled ({label}): {sampled[label]['tok_s']:.2f} tok/s")
    if device.type == "cuda":
        memory["peak_allocated_bytes_during_runs"] = torch.cuda.max_memory_allocated(device)
    memory["kv_cache_bytes_during_decode"] = kv_bytes
    return {
        "mode": "in-process",
        "load": load,
        "memory": memory,
        "prefill": prefill,
        "decode": {
            "prompt_tokens": opts.decode_prompt_tokens,
            "warmup_ms_per_token": _ms(statistics.median(warm)),
            "reduced_to_fit_budget": reduced,
            "cuda_graphs": engine.graphs is not None,
            "graph_captures": engine.graphs.captures if engine.graphs is not None else 0,
            # What the worker chose where the options left it open (`--dependent-launch` by shape).
            "dependent_launch": engine.graphs is not None and engine.graphs.dependent_launch.enabled,
            "without_graphs": without_graphs,
            "sampled": sampled,
            **decode_summary(per_run, traffic, None),
        },
        "_device": device,
    }


def _memory_after_load(device: torch.device, memory: Any, traffic: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tensor_bytes_in_file": traffic["tensor_bytes"],
        "accounted_bytes": memory.used_bytes,
        "accounted_by_category": memory.by_category,
    }
    if device.type == "cuda":
        out["torch_allocated_bytes"] = torch.cuda.memory_allocated(device)
        out["torch_reserved_bytes"] = torch.cuda.memory_reserved(device)
    weights = memory.by_category.get("weights", 0)
    out["weights_over_file_tensors"] = round(weights / traffic["tensor_bytes"], 4)
    return out


# ---------------------------------------------------------------------------------------------- over HTTP


@dataclass
class _WorkerProcess:
    proc: subprocess.Popen
    spawned: float
    lines: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    def drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                continue
            self.lines.append((time.perf_counter(), record))
            if record.get("event") == "ready":
                self.ready.set()
        self.ready.set()  # EOF: the process ended; the caller checks why

    def stamp(self, event: str, **match: Any) -> tuple[float, dict[str, Any]]:
        for stamp, record in self.lines:
            if record.get("event") == event and all(record.get(k) == v for k, v in match.items()):
                return stamp, record
        raise BenchmarkError(f"the worker logged no {event} {match or ''} event")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _log_seconds(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


PASSAGE = (
    "The history of computing is a story of machines that learned to count, then to remember, and "
    "finally to speak. Each generation of hardware moved more bytes per second than the last. "
)


def _prompt_text(tokenizer: Any, n: int, variant: int = 0) -> str:
    """English text of about `n` tokens (BOS, when the tokenizer adds one, included); `variant` shifts it."""
    words = PASSAGE.split()
    text = " ".join(words[variant % len(words) :]) + " " + PASSAGE
    ids = tokenizer.encode(text, add_special=False, parse_special=False)
    while len(ids) < n:
        text += PASSAGE
        ids = tokenizer.encode(text, add_special=False, parse_special=False)
    return tokenizer.decode(ids[: max(1, n - int(tokenizer.add_bos))])


def execute_job(client: Any, url: str, prompt: str, max_tokens: int, seed: int) -> dict[str, Any]:
    """One /execute job, timed from the client: first token, each token, the end event."""
    body = {
        "job_id": str(uuid.uuid4()),
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "seed": seed,
    }
    stamps: list[float] = []  # seconds from the request to each token event
    started: dict[str, Any] = {}
    with open_event_stream(client, f"{url}/execute", json_body=body) as reader:
        if reader.stream.status_code != 200:
            raise BenchmarkError(
                f"/execute answered {reader.stream.status_code}: {reader.response.read().decode()}"
            )
        for event in reader:
            data = event.data or {}
            if event.type == "started":
                started = data
            elif event.type == "token":
                stamps.append(event.arrived_s)
            elif event.type == "error":
                raise BenchmarkError(f"/execute failed: {data.get('code')}: {data.get('message')}")
            elif event.type == "end":
                return {
                    "first_token_s": stamps[0] if stamps else None,
                    "inter_token_s": [b - a for a, b in zip(stamps, stamps[1:], strict=False)],
                    "prompt_tokens": started.get("prompt_tokens"),
                    "end": data,
                }
    raise BenchmarkError("the /execute stream ended without an end event")


def bench_http(opts: Options, traffic: dict[str, Any], log_stream: Any) -> dict[str, Any]:
    import httpx

    from reference_worker.tokenizers.loader import load_tokenizer

    with GGUFFile.open(opts.model) as gguf:
        tokenizer = load_tokenizer(gguf.metadata, opts.model)
    device = torch.device(
        opts.device if opts.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    )
    if device.type == "cuda":
        device = torch.device("cuda", opts.gpu_device)
        free_before, _ = torch.cuda.mem_get_info(device)
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "reference_worker", *_worker_argv(opts, port), "--host", "127.0.0.1"]
    spawned = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=log_stream, text=True
    )
    worker = _WorkerProcess(proc, spawned)
    threading.Thread(target=worker.drain, daemon=True).start()
    try:
        if not worker.ready.wait(opts.ready_timeout_s) or proc.poll() is not None:
            raise BenchmarkError(f"{opts.model}: the worker did not become ready (exit code {proc.poll()})")
        ready_at, _ = worker.stamp("ready")
        _, p0 = worker.stamp("model_load_progress", percent=0)
        _, p100 = worker.stamp("model_load_progress", percent=100)
        loader_s = _log_seconds(p100["ts"]) - _log_seconds(p0["ts"])  # log stamps: millisecond resolution
        load = {
            "process_start_to_ready_s": round(ready_at - spawned, 3),
            "loader_copy_s": round(loader_s, 3),
            "loader_gbps": round(traffic["tensor_bytes"] / loader_s / 1e9, 2) if loader_s > 0 else None,
        }
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=httpx.Timeout(opts.ready_timeout_s)) as client:
            health = client.get(f"{url}/health").json()
            memory: dict[str, Any] = {
                "tensor_bytes_in_file": traffic["tensor_bytes"],
                "accounted_bytes": health["vram_bytes_used"],
                "accounted_by_category": health["vram_bytes_by_category"],
                "weights_over_file_tensors": round(
                    health["vram_bytes_by_category"]["weights"] / traffic["tensor_bytes"], 4
                ),
            }
            if device.type == "cuda":
                free_after, _ = torch.cuda.mem_get_info(device)
                memory["worker_process_device_bytes"] = free_before - free_after  # CUDA context included
            prompts = {n: _prompt_text(tokenizer, n) for n in opts.prompt_tokens}
            for text in prompts.values():
                execute_job(client, url, text, 1, opts.seed)
            # Greedy decoding of random weights may pick EOS, which ends a job over HTTP: take the first
            # prompt variant whose warm-up runs its full length.
            for variant in range(8):
                decode_prompt = _prompt_text(
                    tokenizer, opts.decode_prompt_tokens + int(tokenizer.add_bos), variant
                )
                warm = execute_job(client, url, decode_prompt, opts.warmup_tokens + 1, opts.seed)[
                    "inter_token_s"
                ]
                if len(warm) == opts.warmup_tokens:
                    break
            runs, tokens, reduced = plan_decode(opts, statistics.median(warm) if warm else 1.0)
            prefill = []
            for n, text in prompts.items():
                jobs = [execute_job(client, url, text, 1, opts.seed) for _ in range(opts.runs)]
                first = statistics.median(j["first_token_s"] for j in jobs)
                counted = jobs[0]["prompt_tokens"] or n
                prefill.append(
                    {
                        "prompt_tokens": counted,
                        "first_token_ms": _ms(first),
                        "first_token_ms_runs": [_ms(j["first_token_s"]) for j in jobs],
                        "prefill_tok_s": round(counted / first, 1),
                    }
                )
            jobs = [execute_job(client, url, decode_prompt, tokens + 1, opts.seed) for _ in range(runs)]
            short = [j["end"]["tokens_out"] for j in jobs if j["end"]["tokens_out"] < tokens + 1]
            decode = {
                "prompt_tokens": jobs[0]["prompt_tokens"],
                "warmup_ms_per_token": _ms(statistics.median(warm)) if warm else None,
                "reduced_to_fit_budget": reduced,
                "ended_early_tokens_out": short,  # EOS before max_tokens (random weights can pick it)
                "worker_decode_time_ms": [j["end"]["decode_time_ms"] for j in jobs],
                **decode_summary([j["inter_token_s"] for j in jobs], traffic, None),
            }
    finally:
        worker.stop()
    return {
        "mode": "http",
        "load": load,
        "memory": memory,
        "prefill": prefill,
        "decode": decode,
        "_device": device,
    }


# ---------------------------------------------------------------------------------------------- main


def run(opts: Options, log_stream: Any) -> dict[str, Any]:
    if not opts.model.is_file():
        raise BenchmarkError(f"{opts.model}: no such model file")
    traffic = weight_traffic(opts.model)
    result = (bench_http if opts.http else bench_in_process)(opts, traffic, log_stream)
    device = result.pop("_device")
    copy = copy_bandwidth(device)
    result["decode"].update(
        bandwidth_summary(traffic["weight_bytes_per_token"], result["decode"]["tok_s"], copy)
    )
    result["baseline"] = baseline_summary(result)
    return {
        "kind": "worker-decode",
        "label": opts.label,
        **run_info(device),
        "copy_bandwidth": copy,
        "model": traffic,
        "settings": {
            "attention": opts.attention,
            "kv_cache": opts.kv_cache,
            "kernels": opts.kernels,
            "cuda_graphs": opts.cuda_graphs,
            "fused_decode": opts.fused_decode,
            "decode_lookahead": opts.decode_lookahead,
            "fused_prefill": opts.fused_prefill,
            "prefill_graphs": opts.prefill_graphs,
            "dependent_launch": opts.dependent_launch,
            "weight_prefetch": opts.weight_prefetch,
            "late_trigger": opts.late_trigger,
            "fused_sampling": opts.fused_sampling,
            "tensor_core_gemv": opts.tensor_core_gemv,
            "fused_router": opts.fused_router,
            "fused_combine": opts.fused_combine,
            "regroup": None if opts.regroup is None else list(opts.regroup),
            "greedy": True,
            "runs_requested": opts.runs,
            "decode_tokens_requested": opts.decode_tokens,
            "time_budget_s": opts.time_budget_s,
        },
        **result,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.decode", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, type=Path, help="GGUF file")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--gpu-device", type=int, default=0)
    p.add_argument(
        "--prompt-tokens", type=int, nargs="+", default=[128, 512], help="first-token prompt sizes"
    )
    p.add_argument("--decode-tokens", type=int, default=128, help="decode steps per run (tg128: 128)")
    p.add_argument("--decode-prompt-tokens", type=int, default=1, help="prompt before the decode runs")
    p.add_argument("--runs", type=int, default=3, help="timed runs; the median is reported")
    p.add_argument("--warmup-tokens", type=int, default=8)
    p.add_argument(
        "--time-budget-s",
        type=float,
        default=240.0,
        help="cap on the timed decode runs; fewer runs, then fewer tokens, when the warm-up says it won't fit",
    )
    p.add_argument("--attention", choices=["reference", "sdpa"], default="reference")
    p.add_argument("--kv-cache", choices=["contiguous", "paged"], default="contiguous")
    add_kernel_arguments(p)  # the worker's own flags; in process, graphs off is timed beside graphs on
    p.add_argument(
        "--http", action="store_true", help="start `python -m reference_worker`; time over HTTP/SSE"
    )
    p.add_argument("--label", default="", help="free text kept in the record, e.g. 'smoke'")
    p.add_argument("--out", type=Path, help="write the JSON record here")
    p.add_argument("--verbose", action="store_true", help="show the worker's own log lines (stderr)")
    return p


def options_from_args(args: argparse.Namespace) -> Options:
    """The benchmark's options from its parsed command line (the worker's switches passed on as given)."""
    return Options(
        model=args.model.resolve(),
        device=args.device,
        gpu_device=args.gpu_device,
        prompt_tokens=tuple(args.prompt_tokens),
        decode_tokens=args.decode_tokens,
        decode_prompt_tokens=args.decode_prompt_tokens,
        runs=args.runs,
        warmup_tokens=args.warmup_tokens,
        time_budget_s=args.time_budget_s,
        attention=args.attention,
        kv_cache=args.kv_cache,
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
        http=args.http,
        label=args.label,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    opts = options_from_args(args)
    log_stream = sys.stderr if args.verbose else (subprocess.DEVNULL if opts.http else io.StringIO())
    try:
        record = run(opts, log_stream)
    except BenchmarkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # one line naming the model; the traceback only when asked for (--verbose)
        if args.verbose:
            traceback.print_exc()
        print(f"error: {args.model}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(report.worker_markdown([record]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
