"""The worker's numerical self-checks, run as a command that prints one JSON verdict.

    python -m reference_worker.selfcheck tokenizer-vectors --model PATH --vectors FILE [--device D]
    python -m reference_worker.selfcheck mxfp4-goldens --model PATH [--device D]

The conformance harness cannot see inside a worker; it runs this command and reads the verdict
(docs/harness.md, "self-check command"):
    {"check": NAME, "model": PATH, "device": D, "pass": bool, "cases": [{"name", "pass", ...}, ...]}
- `tokenizer-vectors` (M0-W-1363, M0-W-1821): loads the tokenizer exactly as the worker does for PATH
  (hf-json when a tokenizer.json sits next to it, else the GGUF vocabulary) and checks every vector of
  FILE: encode gives `expected_token_ids`, decode and the UTF-8-safe stream decoder give `expected_decoded`.
- `mxfp4-goldens` (M0-W-1822): the MXFP4 micro-goldens through the worker's kernels (`kernels.selfcheck`).
Exit status: 0 every case passes, 1 a case fails, 2 the check cannot run (the verdict's `error` says why).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

CHECKS = ("tokenizer-vectors", "mxfp4-goldens")


class CheckCannotRun(Exception):
    """A missing or unreadable input; the verdict carries the message and the exit status is 2."""


def tokenizer_vectors(model: Path, vectors_file: Path) -> list[dict[str, Any]]:
    from reference_worker.gguf import GGUFError, GGUFFile
    from reference_worker.tokenizers import StreamDecoder, TokenizerError, load_tokenizer

    try:
        vectors = json.loads(vectors_file.read_text(encoding="utf-8"))["vectors"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckCannotRun(f"{vectors_file}: not a vectors file ({exc})") from None
    try:
        with GGUFFile.open(model) as gguf:
            tokenizer = load_tokenizer(gguf.metadata, model)
    except (GGUFError, TokenizerError, OSError) as exc:
        raise CheckCannotRun(str(exc)) from None
    cases = []
    for number, vector in enumerate(vectors):
        ids = tokenizer.encode(
            vector["text"],
            add_special=vector.get("add_special", True),
            parse_special=vector.get("parse_special", True),
        )
        expected_ids = vector["expected_token_ids"]
        decoded = tokenizer.decode(expected_ids)
        stream = StreamDecoder(tokenizer, at_text_start=True)
        streamed = "".join([stream.push(i) for i in expected_ids] + [stream.flush()])
        problems = []
        if ids != expected_ids:
            problems.append(f"encode gave {_clip(ids)}, expected {_clip(expected_ids)}")
        if decoded != vector["expected_decoded"]:
            problems.append(f"decode gave {decoded[:80]!r}, expected {vector['expected_decoded'][:80]!r}")
        if streamed != vector["expected_decoded"]:
            problems.append(f"stream decode gave {streamed[:80]!r}")
        cases.append(
            {
                "name": f"{number:02d} {vector.get('description', '')}".strip(),
                "pass": not problems,
                **({"problem": "; ".join(problems)} if problems else {}),
            }
        )
    return cases


def _clip(ids: list[int], limit: int = 12) -> str:
    return str(ids) if len(ids) <= limit else f"{ids[:limit]}... ({len(ids)} ids)"


def mxfp4_goldens(device: str) -> list[dict[str, Any]]:
    import torch

    from kernels.selfcheck import GOLDENS_DIR, selfcheck

    if device == "cuda" and not torch.cuda.is_available():
        raise CheckCannotRun("--device cuda: no CUDA device is available")
    if not (GOLDENS_DIR / "manifest.json").is_file():
        raise CheckCannotRun(f"no MXFP4 goldens in {GOLDENS_DIR}")
    verdict = selfcheck(torch.device(device))
    return [
        {
            "name": check["case"],
            "pass": check["pass"],
            "max_rel_err": check["max_rel_err"],
            "tolerance": min(check["spec_tolerance"], check["strict_tolerance"]),
        }
        for check in verdict["checks"]
    ]


def run(check: str, model: Path, device: str, vectors: Path | None) -> tuple[dict[str, Any], int]:
    verdict: dict[str, Any] = {"check": check, "model": str(model), "device": device}
    try:
        if check == "tokenizer-vectors":
            if vectors is None:
                raise CheckCannotRun("tokenizer-vectors needs --vectors FILE")
            cases = tokenizer_vectors(model, vectors)
            verdict["vectors"] = str(vectors)
        else:
            cases = mxfp4_goldens(device)
    except CheckCannotRun as exc:
        return {**verdict, "pass": False, "error": str(exc), "cases": []}, 2
    passed = bool(cases) and all(case["pass"] for case in cases)
    return {**verdict, "pass": passed, "cases": cases}, 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_worker.selfcheck", description=__doc__)
    parser.add_argument("check", choices=CHECKS)
    parser.add_argument("--model", type=Path, required=True, help="the model file the worker would serve")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--vectors", type=Path, help="conformance vectors (tokenizer-vectors)")
    args = parser.parse_args(argv)
    verdict, status = run(args.check, args.model, args.device, args.vectors)
    print(json.dumps(verdict, indent=1, ensure_ascii=False))
    return status


if __name__ == "__main__":
    sys.exit(main())
