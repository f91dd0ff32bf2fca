"""llama.cpp's `llama-bench` on a GGUF file: the yardstick of decode parity (performance
bundle §M1, `features/performance/parity.feature`).

The harness runs the llama-bench named by `--llama-bench PATH` (or WORKER_ORCD_LLAMA_BENCH) on the
scenario's model file and GPU, once per file and GPU in a session, with the command of the recorded
benchmarks (`benchmarks/llamacpp.py` runs it through here): every layer on the GPU, FlashAttention on, its
JSON output parsed into one entry per test ("pp512", "tg128").
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

LLAMA_BENCH_OPTION = "--llama-bench"
LLAMA_BENCH_ENV = "WORKER_ORCD_LLAMA_BENCH"
DECODE_TOKENS = 128  # llama-bench's tg128: 128 tokens decoded from an empty context
REPETITIONS = 3
BENCH_TIMEOUT_S = 600.0
RATES_KEY = pytest.StashKey[dict[tuple[str, str], "DecodeRate"]]()


class LlamaBenchError(RuntimeError):
    """A llama-bench run failed or printed something else than its JSON; the message says which."""


def llama_bench_argv(exe: Path, model: Path, *, n_prompt: int, n_gen: int, reps: int) -> list[str]:
    return [str(exe), "-m", str(model), "-ngl", "99", "-fa", "1"] + [
        "-p", str(n_prompt), "-n", str(n_gen), "-r", str(reps), "-o", "json",
    ]  # fmt: skip


def parse_llama_bench(stdout: str) -> dict[str, Any]:
    """llama-bench `-o json` output -> {"tests": {"pp512": {...}, "tg128": {...}}} plus the build and model
    facts."""
    try:
        rows = json.loads(stdout)
    except json.JSONDecodeError as e:
        raise LlamaBenchError(f"llama-bench printed no JSON ({e}); output starts: {stdout[:200]!r}") from None
    tests = {}
    for row in rows:
        name = f"pp{row['n_prompt']}" if row["n_gen"] == 0 else f"tg{row['n_gen']}"
        tests[name] = {
            "avg_ts": row["avg_ts"],
            "stddev_ts": row["stddev_ts"],
            "samples_ts": row.get("samples_ts"),
            "n_depth": row.get("n_depth"),
        }
    first = rows[0] if rows else {}
    return {
        "tests": tests,
        "build_commit": first.get("build_commit"),
        "build_number": first.get("build_number"),
        "gpu_info": first.get("gpu_info"),
        "llama_model_type": first.get("model_type"),
        "llama_model_size": first.get("model_size"),
        "llama_model_n_params": first.get("model_n_params"),
    }


def run_llama_bench(
    exe: Path,
    model: Path,
    *,
    n_prompt: int = 512,
    n_gen: int = DECODE_TOKENS,
    reps: int = REPETITIONS,
    timeout_s: float = BENCH_TIMEOUT_S,
    env: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """Runs llama-bench on `model`; returns its command and its parsed output."""
    argv = llama_bench_argv(exe, model, n_prompt=n_prompt, n_gen=n_gen, reps=reps)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise LlamaBenchError(f"{model}: llama-bench ran past {timeout_s:.0f} s") from None
    except OSError as e:
        raise LlamaBenchError(f"{exe}: llama-bench does not start ({e})") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-15:])
        raise LlamaBenchError(f"{model}: llama-bench exited {done.returncode}:\n{tail}")
    return argv, parse_llama_bench(done.stdout)


# --- The harness's side: llama.cpp's decode rate on a scenario's file and GPU ---------------------------


@dataclass(frozen=True)
class DecodeRate:
    tokens_per_s: float
    stddev: float
    command: str

    def describe(self) -> str:
        return f"{self.tokens_per_s:.1f} ± {self.stddev:.1f} tokens/s (`{self.command}`)"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("worker-orcd").addoption(
        LLAMA_BENCH_OPTION,
        default=os.environ.get(LLAMA_BENCH_ENV),
        metavar="PATH",
        help="llama.cpp's llama-bench (a CUDA build): the decode-parity scenarios (features/performance/parity.feature) run it "
        f"on the scenario's file and GPU as the yardstick; without it they are not applicable (or {LLAMA_BENCH_ENV})",
    )


def llama_bench_exe(config: pytest.Config) -> Path | None:
    value = config.getoption("llama_bench")
    return Path(value) if value else None


def on_this_machine(url: str) -> bool:
    """The worker at `url` runs here (a loopback address or this host's name), so llama-bench runs on its GPU."""
    host = urllib.parse.urlsplit(url).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1") or host == socket.gethostname()


def llama_cpp_decode_rate(exe: Path, model: Path, gpu: int, config: pytest.Config) -> DecodeRate:
    """llama-bench's tg128 on `model` on GPU `gpu`, measured once per file and GPU in a session."""
    rates = config.stash.setdefault(RATES_KEY, {})
    key = (str(model), str(gpu))
    if key not in rates:
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu))
        argv, parsed = run_llama_bench(exe, model, n_prompt=0, env=env)
        test = parsed["tests"].get(f"tg{DECODE_TOKENS}")
        if test is None:
            raise LlamaBenchError(
                f"llama-bench reported no tg{DECODE_TOKENS} test: {sorted(parsed['tests'])}"
            )
        rates[key] = DecodeRate(float(test["avg_ts"]), float(test["stddev_ts"] or 0.0), " ".join(argv))
    return rates[key]
