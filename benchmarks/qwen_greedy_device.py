"""The real Qwen file's greedy tokens on a device, against the tokens recorded on CPU (issue 12).

    python -m benchmarks.qwen_greedy_device [--model FILE] [--device cuda] [--recorded FILE.json] [--out FILE.json]

`benchmarks.qwen_greedy` records, per prompt, llama.cpp's greedy continuation and the worker's on its CPU
reference and fast paths (`results/2026-12-03-qwen-real-greedy.json`). This runs the same prompts through
the worker's model on `--device` the way the engine decodes there (on CUDA: fast kernels, the prefill on
tensor cores, the decode step as a CUDA graph; on CPU: the float16 weight cache and the static step) and
compares its tokens with the recorded CPU reference path's. Where they part, it reports the step and the
device's top-2 logit margin there, so that a near-tie can be told from a wrong token.
Needs neither llama.cpp nor the network: the GPU machine has neither. Exit code 0 when every prompt's
tokens equal the recorded reference tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from fixtures.paths import fixture_path
from kernels.backend import KernelConfig
from reference_worker.decode_step import DecodeGraphs, DecodeStep
from reference_worker.gguf import GGUFFile
from reference_worker.tokenizers.loader import load_tokenizer
from tests.worker.llama_helpers import load_model

QWEN = "real/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
RECORDED = Path(__file__).parent / "results" / "2026-12-03-qwen-real-greedy.json"


def greedy(model, ids: list[int], n: int, device: torch.device) -> tuple[list[int], list[float]]:
    """n greedy tokens after `ids` and each step's top-2 logit margin, decoding as the engine does."""
    cache = model.new_cache(len(ids) + n)
    graphs = DecodeGraphs(model) if model.kernels.config.graphs_on(device) else None
    try:
        logits = model.forward(torch.tensor(ids, device=device), cache, last_only=True)[0]
        step = DecodeStep(model, cache, graphs, static=graphs is None and device.type == "cpu")
        tokens, margins = [], []
        for _ in range(n):
            top2 = torch.topk(logits.float(), 2).values
            margins.append(float(top2[0] - top2[1]))
            token = logits.argmax()
            tokens.append(int(token))
            logits = step(token.view(1))
        return tokens, margins
    finally:
        cache.free()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.qwen_greedy_device", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--model", type=Path, help=f"the real Qwen file (default: the fixture {QWEN})")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--recorded", type=Path, default=RECORDED, help="the CPU record of benchmarks.qwen_greedy"
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    try:
        path = args.model or fixture_path(QWEN)
        recorded = json.loads(args.recorded.read_text())
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    tokenizer = load_tokenizer(GGUFFile.open(path).metadata, path)
    model, _, _ = load_model(
        str(path.resolve()), device=args.device, kernels=KernelConfig(), weight_cache=True
    )
    n = int(recorded["tokens"])
    report = {
        "file": str(path),
        "device": str(device),
        "tokens": n,
        "recorded": str(args.recorded),
        "prompts": [],
    }
    if device.type == "cuda":
        report["device_name"] = torch.cuda.get_device_name(device)
    all_same = True
    with torch.inference_mode():
        for row in recorded["prompts"]:
            ids = tokenizer.encode(row["prompt"], add_special=True, parse_special=False)
            tokens, margins = greedy(model, ids, n, device)
            want = row["reference"]["greedy_tokens"]
            first = next((i for i, (a, b) in enumerate(zip(tokens, want, strict=True)) if a != b), None)
            all_same &= first is None
            report["prompts"].append(
                {
                    "prompt": row["prompt"],
                    "prompt_ids": ids,
                    "greedy_tokens": tokens,
                    "same_as_recorded_reference": first is None,
                    "same_as_recorded_llama_cpp": tokens == row["llama_cpp"]["tokens"],
                    "first_difference": first,
                    "top2_margin_there": None if first is None else margins[first],
                    "smallest_top2_margin": min(margins),
                }
            )
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if all_same else 1


if __name__ == "__main__":
    sys.exit(main())
