"""CPU decode speed of the reference worker beside llama.cpp, same file, same machine, same thread count.

    python -m benchmarks.cpu_decode [--model FILE ...] [--threads 2] [--tokens 64] [--rounds 5] [--out DIR]

For each model three runners generate greedily from the same text prompt:
- `worker`: the worker's own startup path (`reference_worker.worker.load_worker`) in this process, driven
  through its engine (`torch.set_num_threads(N)`);
- `worker-http`: a `python -m reference_worker --device cpu` process (`OMP_NUM_THREADS=N`), driven through
  POST /execute and its SSE stream;
- `llama.cpp`: `llama_cpp.Llama(FILE, n_threads=N, n_threads_batch=N)`, its own defaults otherwise, in a
  process of its own (sharing this one, its threads and PyTorch's slow each other down).
The measure is the decode rate after the first token: (tokens - 1) / (time of the last token - time of
the first), so prompt processing is left out. The machine may be shared with other work, so the runners
are interleaved (round r runs every runner on every model once) and the median over rounds is reported,
with each round's value and the load average before and after. Every runner is loaded once and warmed up
(one short generation) before the first round. Writes `cpu_decode.json` and `cpu_decode.md` to `--out`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.decode import _time_decode, _WorkerProcess, execute_job
from benchmarks.runinfo import REPO_ROOT, publish, run_info
from fixtures.paths import FixtureMissing, fixture_path
from steps.ports import free_port

DEFAULT_MODELS = (
    "real/SmolLM2-135M-Instruct.Q4_1.gguf",
    "tiny/llama-q4_k_m.gguf",
    "tiny/qwen2-q4_k_m.gguf",
    "tiny/phi3-q4_k_m.gguf",
)
PROMPT = (
    "The history of computing is a story of machines that learned to count, then to remember, and "
    "finally to speak. Each generation of hardware"
)
RUNNERS = ("worker", "worker-http", "llama.cpp")

Runner = Callable[[int], list[float]]  # tokens -> per-token timestamps (perf_counter)


def _argv(model: Path, port: int) -> list[str]:
    return [
        "--worker-id",
        str(uuid.uuid4()),
        "--model",
        str(model),
        "--gpu-device",
        "0",
        "--port",
        str(port),
        "--device",
        "cpu",
    ]


def in_process_runner(model: Path) -> Runner:
    from reference_worker.cli import parse_config
    from reference_worker.logs import EventLog
    from reference_worker.sampling import SamplingParams
    from reference_worker.worker import load_worker

    state = load_worker(parse_config(_argv(model, 8080)), EventLog(open(os.devnull, "w")))
    engine = state.engine
    ids = engine.tokenizer.encode(PROMPT, add_special=True, parse_special=False)
    params = SamplingParams(temperature=0.0, seed=0)

    def run(tokens: int) -> list[float]:
        gaps, _ = _time_decode(engine, ids, tokens - 1, params, state.memory)
        stamps = [0.0]
        for gap in gaps:
            stamps.append(stamps[-1] + gap)
        return stamps

    return run


def http_runner(model: Path, threads: int, stops: list[Callable[[], None]]) -> Runner:
    import httpx

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "reference_worker", *_argv(model, port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    worker = _WorkerProcess(proc, time.perf_counter())
    threading.Thread(target=worker.drain, daemon=True).start()
    stops.append(worker.stop)
    if not worker.ready.wait(600) or proc.poll() is not None:
        raise RuntimeError(f"{model}: the worker process did not become ready (exit code {proc.poll()})")
    client = httpx.Client(timeout=600)
    url = f"http://127.0.0.1:{port}"

    def run(tokens: int) -> list[float]:
        result = execute_job(client, url, PROMPT, tokens, seed=0)
        stamps = [0.0]
        for gap in result["inter_token_s"]:
            stamps.append(stamps[-1] + gap)
        return stamps

    return run


def _llama_cpp_serve(model: str, threads: int, conn: Any) -> None:
    """Child process: loads the file with llama.cpp, then answers each token count with the timestamps."""
    import llama_cpp

    llm = llama_cpp.Llama(model, n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    ids = llm.tokenize(PROMPT.encode(), add_bos=True, special=False)
    conn.send("ready")
    while (tokens := conn.recv()) is not None:
        llm.reset()
        stamps: list[float] = []
        for _ in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            stamps.append(time.perf_counter())
            if len(stamps) == tokens:
                break
        conn.send(stamps)


def llama_cpp_runner(model: Path, threads: int, stops: list[Callable[[], None]]) -> Runner:
    """llama.cpp in a process of its own: in this process its worker threads and PyTorch's would wait for
    each other (measured: the in-process worker at 0.2 tok/s instead of ~13 with two threads each)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=_llama_cpp_serve, args=(str(model), threads, child_conn), daemon=True)
    proc.start()

    def stop() -> None:
        if proc.is_alive():
            conn.send(None)
            proc.join(30)

    stops.append(stop)
    if not conn.poll(600) or conn.recv() != "ready":
        raise RuntimeError(f"{model}: llama.cpp did not load the file (exit code {proc.exitcode})")

    def run(tokens: int) -> list[float]:
        conn.send(tokens)
        return conn.recv()

    return run


def rate(stamps: list[float]) -> float | None:
    """Tokens per second after the first token."""
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        return None
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def bench(models: list[Path], threads: int, tokens: int, rounds: int, note: Callable[[str], None]) -> dict:
    torch.set_num_threads(threads)
    stops: list[Callable[[], None]] = []
    runners: dict[tuple[str, str], Runner] = {}
    results: dict[str, dict[str, Any]] = {}
    try:
        for model in models:
            note(f"loading {model.name}")
            runners[(model.name, "worker")] = in_process_runner(model)
            runners[(model.name, "worker-http")] = http_runner(model, threads, stops)
            runners[(model.name, "llama.cpp")] = llama_cpp_runner(model, threads, stops)
            for runner in RUNNERS:
                runners[(model.name, runner)](8)  # warm-up
            results[model.name] = {r: {"tok_s_rounds": [], "tokens_rounds": []} for r in RUNNERS}
        for r in range(rounds):
            for model in models:
                for runner in RUNNERS:
                    before = _load()
                    stamps = runners[(model.name, runner)](tokens)
                    entry = results[model.name][runner]
                    value = rate(stamps)
                    entry["tok_s_rounds"].append(None if value is None else round(value, 2))
                    entry["tokens_rounds"].append(len(stamps))
                    entry.setdefault("load_avg_rounds", []).append([before, _load()])
                    note(
                        f"round {r + 1}/{rounds} {model.name} {runner}: {value or 0:.2f} tok/s, {len(stamps)} tokens"
                    )
    finally:
        for stop in stops:
            stop()
    for per_runner in results.values():
        for entry in per_runner.values():
            values = [v for v in entry["tok_s_rounds"] if v is not None]
            entry["tok_s_median"] = round(statistics.median(values), 2) if values else None
        worker, http, ref = (per_runner[r]["tok_s_median"] for r in RUNNERS)
        per_runner["ratio_worker_to_llama_cpp"] = round(worker / ref, 3) if worker and ref else None
        per_runner["ratio_worker_http_to_llama_cpp"] = round(http / ref, 3) if http and ref else None
    return results


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def markdown(record: dict[str, Any]) -> str:
    info, opts = record["run"], record["options"]
    lines = [
        f"# CPU decode: reference worker vs llama.cpp ({info['date']}, commit {info['git_commit']})",
        "",
        f"Command: `{info['command']}`  ",
        f"Machine: {record['machine']['cpu']}, {record['machine']['cpus']} CPUs; torch {info['device']['torch']}, "
        f"llama-cpp-python {record['machine']['llama_cpp_python']}; {opts['threads']} threads each; greedy, "
        f"{opts['tokens']} tokens, decode rate after the first token, median of {opts['rounds']} interleaved "
        f"rounds (load average {record['machine']['load_avg_start']} at the start, "
        f"{record['machine']['load_avg_end']} at the end).",
        "",
        "| model | worker tok/s | worker over HTTP tok/s | llama.cpp tok/s | worker / llama.cpp | HTTP / llama.cpp |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in record["results"].items():
        lines.append(
            f"| {name} | {r['worker']['tok_s_median']} | {r['worker-http']['tok_s_median']} | "
            f"{r['llama.cpp']['tok_s_median']} | {r['ratio_worker_to_llama_cpp']} | "
            f"{r['ratio_worker_http_to_llama_cpp']} |"
        )
    lines += ["", "Per round (tok/s):", ""]
    for name, r in record["results"].items():
        for runner in RUNNERS:
            lines.append(f"- {name} {runner}: {r[runner]['tok_s_rounds']}")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_decode", description=__doc__.split("\n")[0])
    p.add_argument(
        "--model", action="append", help="a GGUF file, or a fixture name such as tiny/llama-q4_k_m.gguf"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=None, help="directory for cpu_decode.json and cpu_decode.md")
    return p


def resolve_model(name: str) -> Path | None:
    """A GGUF file path or a built fixture name -> its path; None when there is no such file."""
    path = Path(name)
    if path.is_file():
        return path
    try:
        return fixture_path(name)
    except FixtureMissing:
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads < 1 or args.tokens < 2 or args.rounds < 1:
        _parser().error("--threads and --rounds must be >= 1, --tokens >= 2")
    names = args.model or list(DEFAULT_MODELS)
    resolved = {name: resolve_model(name) for name in names}
    missing = [name for name, path in resolved.items() if path is None]
    if missing:
        _parser().error(
            f"no such model file: {', '.join(missing)} (run `python -m fixtures prepare --tiny --real`)"
        )
    models = [path for path in resolved.values() if path is not None]
    import llama_cpp

    machine = {"cpu": _cpu_name(), "cpus": os.cpu_count(), "llama_cpp_python": llama_cpp.__version__}
    machine["load_avg_start"] = _load()

    def note(message: str) -> None:
        print(f"[cpu_decode] {message}", file=sys.stderr, flush=True)

    results = bench(models, args.threads, args.tokens, args.rounds, note)
    machine["load_avg_end"] = _load()
    record = {
        "kind": "cpu-decode",
        "run": run_info(torch.device("cpu")),
        "machine": machine,
        "options": {"threads": args.threads, "tokens": args.tokens, "rounds": args.rounds, "prompt": PROMPT},
        "results": results,
    }
    publish(record, markdown(record), args.out, "cpu_decode")
    return 0


if __name__ == "__main__":
    sys.exit(main())
