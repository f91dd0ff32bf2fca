"""Greedy tokens of the worker (reference path and CPU fast path) against llama.cpp on the real Qwen file.

python -m benchmarks.qwen_greedy [--tokens 24] [--prompts short|oracle] [--out benchmarks/results/FILE.json]

For each prompt: llama.cpp's greedy continuation on the Q4_K_M file (F32 KV cache, one thread), the
worker model's own greedy continuation on both paths, and the argmax agreement of each path teacher-forced
along llama.cpp's greedy path.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from fixtures.paths import fixture_path
from tests.oracle.llama_cpp_oracle import greedy_continuation, llama_cpp_model
from tests.oracle.teacher_forced import PROMPTS as ORACLE_PROMPTS
from tests.worker.llama_helpers import load_model

QWEN = "real/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
PROMPTS = ("The capital of France is", "def fibonacci(n):")
# "oracle": the 12 prompts of the oracle tests (prose, code, a list, French), for the device check of
# `benchmarks.qwen_greedy_device` on the same prompts the CPU oracle figures come from.
PROMPT_SETS = {"short": PROMPTS, "oracle": ORACLE_PROMPTS}


def llama_cpp_greedy(path: Path, prompts: tuple[str, ...], n: int) -> list[tuple[list[int], list[int], str]]:
    out = []
    with llama_cpp_model(path, n_ctx=256) as m:
        for prompt in prompts:
            ids, tokens = greedy_continuation(m, prompt, n)
            out.append((ids, tokens, m.detokenize(tokens).decode("utf-8", "replace")))
            print(f"llama.cpp {prompt!r}: {out[-1][2]!r}", file=sys.stderr, flush=True)
    return out


def worker_paths(ids_and_tokens, n: int) -> dict[str, list[dict]]:
    results = {}
    for label, weight_cache in (("reference", False), ("fast", True)):
        model, _, _ = load_model(QWEN, weight_cache=weight_cache)
        rows = []
        with torch.inference_mode():
            for ids, ref_tokens in ids_and_tokens:
                cache = model.new_cache(len(ids) + n)
                logits = model.forward(torch.tensor(ids), cache, last_only=True)
                own = []
                for _ in range(n):
                    own.append(int(logits[-1].argmax()))
                    logits = model.forward(torch.tensor([own[-1]]), cache, last_only=True)
                seq = ids + ref_tokens[:-1]
                forced = model.forward(torch.tensor(seq), model.new_cache(len(seq)))
                argmax = forced[len(ids) - 1 :].argmax(-1).tolist()
                agree = float(np.mean([a == b for a, b in zip(argmax, ref_tokens, strict=True)]))
                rows.append(
                    {
                        "greedy_tokens": own,
                        "same_as_llama_cpp": own == ref_tokens,
                        "teacher_forced_top1": agree,
                    }
                )
        results[label] = rows
        print(f"{label} path: {rows}", file=sys.stderr, flush=True)
        del model
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.qwen_greedy", description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--prompts", choices=sorted(PROMPT_SETS), default="short")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    prompts = PROMPT_SETS[args.prompts]
    path = fixture_path(QWEN)
    if not path.is_file():
        print(f"error: {path} is missing; run `python -m fixtures prepare --real`", file=sys.stderr)
        return 2
    ref = llama_cpp_greedy(path, prompts, args.tokens)
    ours = worker_paths([(ids, tokens) for ids, tokens, _ in ref], args.tokens)
    report = {"file": QWEN, "tokens": args.tokens, "prompts": []}
    for i, (prompt, (_ids, tokens, text)) in enumerate(zip(prompts, ref, strict=True)):
        report["prompts"].append(
            {
                "prompt": prompt,
                "llama_cpp": {"tokens": tokens, "text": text},
                **{k: v[i] for k, v in ours.items()},
            }
        )
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
