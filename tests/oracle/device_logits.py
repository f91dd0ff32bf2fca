"""llama.cpp's logits as an oracle on a machine where llama.cpp is not installed (the GPU machine).

    python -m tests.oracle.device_logits dump OUT.npz     # here, with llama-cpp-python: the oracle's logits
    python -m tests.oracle.device_logits check OUT.npz [--step]  # there: the worker's logits on its device

`dump` evaluates a fixed 20-token prompt (longer than the tiny gpt-oss sliding window) on every tiny fixture
named below with llama.cpp (F32 KV cache, see llama_cpp_oracle.py) and stores the logits with each file's
SHA-256. `check` rebuilds nothing: it loads each file through the worker's own path (GGUF reader, loader,
model registry) on `--device` (default cuda), refuses a file whose SHA-256 differs from the dump's, and
prints one JSON line per file with the relative RMS against llama.cpp (max over positions) and the top-1
agreement, judged with the tolerances of the CPU oracle tests (docs/models.md, docs/models-gpt.md).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np

ARCHS = ["llama", "qwen2", "phi3", "gpt2", "gpt-oss"]
QTYPES = ["f32", "f16", "q8_0", "q4_0", "q4_k_m"]
EXTRA = ["tiny/gpt-oss-mxfp4_moe.gguf"]
PROMPT_LENGTH = 20


def fixture_names() -> list[str]:
    return [f"tiny/{arch}-{q}.gguf" for arch in ARCHS for q in QTYPES] + EXTRA


def tolerance(name: str) -> float:
    # F32: both sides compute in float32; F16: llama.cpp rounds activations to F16 for F16 weights; gpt2:
    # llama.cpp's CPU GELU reads an fp16 table; quantized: llama.cpp quantizes activations to Q8 in its matmuls.
    if name.endswith("-f32.gguf"):
        return 1e-3 if "gpt2" in name else 1e-5
    if name.endswith("-f16.gguf"):
        return 2e-3
    return 3e-2


def prompt(vocab_size: int) -> list[int]:
    return [int(i) for i in np.random.default_rng(1).integers(0, vocab_size, PROMPT_LENGTH)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dump(out: Path) -> None:
    from fixtures.paths import fixture_path
    from tests.oracle.llama_cpp_oracle import llama_cpp_logits, llama_cpp_model

    arrays: dict[str, np.ndarray] = {}
    meta = {}
    for i, name in enumerate(fixture_names()):
        path = fixture_path(name)
        with llama_cpp_model(path, n_ctx=64) as model:
            vocab = model.n_vocab()
        ids = prompt(vocab)
        arrays[f"logits_{i}"] = llama_cpp_logits(path, ids, n_ctx=64).astype(np.float32)
        meta[name] = {"index": i, "sha256": sha256(path), "ids": ids}
        print(f"dumped {name}", file=sys.stderr)
    np.savez_compressed(out, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)


def check(dump_file: Path, device: str, step: bool) -> int:
    import torch

    from fixtures.paths import fixture_path
    from reference_worker.device_memory import DeviceMemory
    from reference_worker.gguf import GGUFFile
    from reference_worker.loader import load_weights
    from reference_worker.logs import EventLog
    from reference_worker.models import create_model

    data = np.load(dump_file)
    meta = json.loads(bytes(data["meta"]).decode())
    failures = 0
    for name, entry in meta.items():
        path = fixture_path(name)
        if sha256(path) != entry["sha256"]:
            print(json.dumps({"file": name, "verdict": "error", "reason": "fixture differs from the dump"}))
            failures += 1
            continue
        file = GGUFFile.open(path)
        memory = DeviceMemory(device)
        weights = load_weights(file, memory, EventLog(io.StringIO()))
        model = create_model(file, weights, torch.device(device), memory)
        ids = entry["ids"]
        tokens, cache = torch.tensor(ids, device=device), model.new_cache(len(ids))
        if step:  # one token at a time: the decode path (on CUDA the fused dequant-GEMV kernels)
            ours = torch.cat([model.forward(tokens[i : i + 1], cache) for i in range(len(ids))])
        else:  # the whole prompt at once: the prefill path
            ours = model.forward(tokens, cache)
        ours = ours.double().cpu().numpy()
        ref = data[f"logits_{entry['index']}"].astype(np.float64)
        rel = np.sqrt(((ours - ref) ** 2).mean(-1) / (ref**2).mean(-1))
        top1 = float((ours.argmax(-1) == ref.argmax(-1)).mean())
        ok = bool(
            rel.max() < tolerance(name) and (top1 >= 0.85 or name.endswith("-f32.gguf") and top1 == 1.0)
        )
        failures += not ok
        print(
            json.dumps(
                {
                    "file": name,
                    "device": device,
                    "path": "decode steps" if step else "prefill",
                    "max_relative_rms": float(rel.max()),
                    "tolerance": tolerance(name),
                    "top1_agreement": top1,
                    "verdict": "pass" if ok else "fail",
                }
            ),
            flush=True,
        )
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.oracle.device_logits", description=__doc__.splitlines()[0]
    )
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("dump").add_argument("out", type=Path)
    chk = sub.add_parser("check")
    chk.add_argument("dump", type=Path)
    chk.add_argument("--device", default="cuda")
    chk.add_argument("--step", action="store_true", help="feed the prompt one token at a time (decode path)")
    args = ap.parse_args(argv)
    if args.command == "dump":
        dump(args.out)
        return 0
    return check(args.dump, args.device, args.step)


if __name__ == "__main__":
    raise SystemExit(main())
