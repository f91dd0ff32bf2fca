"""llama.cpp (llama-cpp-python 0.3.36) as a logits oracle, configured the one way our comparisons need.

- F32 KV cache (`type_k=type_v=0`): llama.cpp's default F16 cache alone moves logits by ~1e-3 relative.
- No extra weight buffer types (`use_extra_bufts=False`): ggml's AMX/AVX512 weight repacking is a
  CPU-specific alternative path, and on some virtual machines its AMX matmul crashes (general protection
  fault in libggml-cpu) on Q4_0/Q4_1/Q8_0/Q4_K weights. The plain CPU path computes the same graph.
  `Llama()` has no argument for it, so the model-params factory is wrapped during the load.
- One thread: OpenMP's spinning barriers make two threads ~20x slower on a busy two-core machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (pip install .[oracle])"
)


@contextmanager
def _without_weight_repacking() -> Iterator[None]:
    low = llama_cpp.llama_cpp
    default_params = low.llama_model_default_params

    def plain_params():
        params = default_params()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = plain_params
    try:
        yield
    finally:
        low.llama_model_default_params = default_params


@contextmanager
def llama_cpp_model(path: Path | str, n_ctx: int = 128, n_threads: int = 1) -> Iterator[llama_cpp.Llama]:
    with _without_weight_repacking():
        model = llama_cpp.Llama(
            model_path=str(path),
            logits_all=True,
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_threads=n_threads,
            type_k=0,
            type_v=0,
            verbose=False,
        )
    try:
        yield model
    finally:
        model.close()


def llama_cpp_logits(path: Path | str, ids: list[int], n_ctx: int = 128) -> np.ndarray:
    """float64 logits of every position of `ids`, shape (len(ids), n_vocab)."""
    with llama_cpp_model(path, n_ctx=max(n_ctx, len(ids))) as model:
        model.reset()
        model.eval(ids)
        return np.array(model.scores[: len(ids)], dtype=np.float64)


def greedy_continuation(model: llama_cpp.Llama, prompt: str, n: int) -> tuple[list[int], list[int]]:
    """(prompt ids, the `n` tokens llama.cpp picks greedily after them) on an open `model`; its `scores`
    then hold the logits of every position evaluated."""
    ids = model.tokenize(prompt.encode(), add_bos=True, special=False)
    model.reset()
    model.eval(ids)
    tokens: list[int] = []
    for _ in range(n):
        tokens.append(int(np.argmax(model.scores[model.n_tokens - 1])))
        model.eval([tokens[-1]])
    return ids, tokens


def relative_rms(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per position: RMS of the difference over RMS of the reference."""
    return np.sqrt(((ours - ref) ** 2).mean(-1) / (ref**2).mean(-1))
