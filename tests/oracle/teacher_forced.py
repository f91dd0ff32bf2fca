"""Teacher-forced logit comparisons of the worker model against llama.cpp on real quantized files.

For each prompt, llama.cpp continues greedily on the quantized file; both llama.cpp references and the
worker model then see the same sequence (prompt + continuation), and the logits of the positions that
predict the continuation are compared:

- llama.cpp on the quantized file itself (it quantizes the activations to Q8 inside its quantized
  matmuls, so its logits are a tolerance oracle: near ties may flip);
- llama.cpp on the same weights dequantized to F32 by its own quantizer (`fixtures.dequantized`): float32
  arithmetic on exactly the values the worker dequantizes, so only the summation order differs.

llama.cpp runs as `llama_cpp_oracle` configures it (F32 KV cache, one thread, no weight repacking), on its
own tokenization of the prompt (the worker's tokenizer is tested elsewhere).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch

from fixtures.dequantized import dequantized_f32
from fixtures.paths import fixture_path
from kernels.backend import KernelConfig
from kernels.formats import GGMLType
from kernels.qtensor import QTensor
from reference_worker.config import WorkerConfig
from reference_worker.device_memory import DeviceMemory
from reference_worker.engine import InferenceEngine
from reference_worker.gguf import GGUFFile
from reference_worker.logs import EventLog
from reference_worker.models import create_model
from reference_worker.sampling import SamplingParams
from reference_worker.worker import load_worker
from tests.oracle.llama_cpp_oracle import greedy_continuation, llama_cpp_model, relative_rms
from tests.worker.llama_helpers import load_model, read_weights

N_CONTINUE = 32
PROMPTS = (
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colors are",
    "Water boils at a temperature of",
    "In machine learning, a neural network",
    "The quick brown fox",
    "My favourite recipe for pancakes starts with",
    "The first person to walk on the moon was",
    "List of planets in the solar system: Mercury,",
    "La capitale de l'Allemagne est",
    "import numpy as np\n\ndef softmax(x):",
)


@dataclass
class Continuation:
    prompt: str
    prompt_ids: list[int]
    tokens: list[int]  # llama.cpp's greedy continuation on the quantized file
    quantized: np.ndarray  # llama.cpp's logits there, at the positions predicting `tokens` (float32)
    dequantized: np.ndarray  # llama.cpp's logits on the F32 copy of the same weights, same positions

    @property
    def sequence(self) -> list[int]:
        return self.prompt_ids + self.tokens[:-1]

    def tail(self, logits: np.ndarray) -> np.ndarray:
        """The rows of whole-sequence logits that predict the continuation."""
        return logits[len(self.prompt_ids) - 1 :]


def llama_cpp_continuations(
    name: str, prompts: tuple[str, ...] = PROMPTS, n: int = N_CONTINUE, progress=None
) -> list[Continuation]:
    """llama.cpp's greedy continuation of each prompt on fixture `name`, with its logits there and on the
    F32 copy of the same weights (built on first use)."""
    f32_path = dequantized_f32(name, progress=progress)
    out = []
    with llama_cpp_model(fixture_path(name)) as m:
        for prompt in prompts:
            ids, tokens = greedy_continuation(m, prompt, n)
            logits = np.array(m.scores[len(ids) - 1 : len(ids) + n - 1], dtype=np.float32)
            out.append(Continuation(prompt, ids, tokens, logits, np.empty(0)))
    with llama_cpp_model(f32_path) as m:
        for c in out:
            m.reset()
            m.eval(c.sequence)
            c.dequantized = c.tail(np.array(m.scores[: len(c.sequence)], dtype=np.float32))
    return out


def reference_logits_along(name: str, continuations: list[Continuation]) -> list[np.ndarray]:
    """The reference path's (`--kernels reference`) logits along each continuation.

    The reference path dequantizes every weight tile by tile in each forward pass (~16 s per 40-token pass
    of a 0.5B model on two cores), so the first sequence runs through it as is, and all of them through
    the same model with each matrix dequantized once up front (the values the tiles dequantize to). Both
    must agree on the first sequence to float32 summation order."""
    reference = KernelConfig(kernels="reference")
    model, _, _ = load_model(name, kernels=reference)
    first = continuations[0]
    with torch.inference_mode():
        as_is = model.forward(torch.tensor(first.sequence), model.new_cache(len(first.sequence)))
        as_is = first.tail(as_is.float().numpy())
        del model
        gguf_file = GGUFFile.open(fixture_path(name))
        weights = {
            name: w if w.qtype == GGMLType.F32 else QTensor.from_float(w.dequantize(), name)
            for name, w in read_weights(gguf_file).items()
        }
        gguf_file.close()
        model = create_model(gguf_file, weights, torch.device("cpu"), DeviceMemory("cpu"), kernels=reference)
        out = [_along(model, c) for c in continuations]
    same = relative_rms(as_is.astype(np.float64), out[0].astype(np.float64)).max()
    assert same < 1e-5, f"reference path and its pre-dequantized weights differ: relative RMS {same:.2e}"
    return out


def worker_engine(name: str) -> InferenceEngine:
    """The inference engine the worker builds for fixture `name` on CPU with its default kernels
    (`load_worker` with `--kernels fast`: weights, CPU weight cache, model, engine), so what is checked
    is whatever the CPU fast path and the engine's decode step are, not a copy of today's choice."""
    config = WorkerConfig(worker_id="oracle", model=fixture_path(name), gpu_device=0, port=0, device="cpu")
    assert config.kernels == "fast"
    return load_worker(config, EventLog(io.StringIO())).engine


def fast_logits_along(engine: InferenceEngine, continuations: list[Continuation]) -> list[np.ndarray]:
    """The CPU fast path's logits along each continuation, each sequence in one forward (the prefill
    form: several rows per product, float32 on widened tiles of the float16 weight copies)."""
    with torch.inference_mode():
        return [_along(engine.model, c) for c in continuations]


def fast_step_logits_along(engine: InferenceEngine, continuations: list[Continuation]) -> list[np.ndarray]:
    """The logits the engine samples from when it generates each continuation: the prompt's prefill, then
    one decode step per token (on CPU the step form over static buffers, with the decode GEMV), fed
    llama.cpp's tokens instead of sampled ones."""
    out = []
    for c in continuations:
        session = engine.start(c.prompt_ids, len(c.tokens), SamplingParams(temperature=0.0))
        try:
            rows = [session._logits]  # the prefill's last position: it predicts the first token
            rows += [session.step(torch.tensor([token])) for token in c.tokens[:-1]]
        finally:
            session.free()
        out.append(torch.stack(rows).float().numpy())
    return out


def _along(model, c: Continuation) -> np.ndarray:
    logits = model.forward(torch.tensor(c.sequence), model.new_cache(len(c.sequence)))
    return c.tail(logits.float().numpy())


@dataclass(frozen=True)
class Agreement:
    """One prompt's logits against one reference, over the positions that predict the continuation."""

    prompt: str
    positions: int
    top1: float  # fraction of positions whose argmax equals the reference's
    rel_rms_mean: float  # relative RMS (RMS of the difference over RMS of the reference), per position
    rel_rms_max: float
    max_abs: float  # largest absolute logit difference
    worst_flip_gap: float  # largest reference margin of the reference's argmax over ours, where they differ

    @classmethod
    def of(cls, prompt: str, ours: np.ndarray, ref: np.ndarray) -> Agreement:
        assert ours.shape == ref.shape, (ours.shape, ref.shape)
        ours, ref = ours.astype(np.float64), ref.astype(np.float64)
        ours_top, ref_top = ours.argmax(-1), ref.argmax(-1)
        rel = relative_rms(ours, ref)
        gaps = ref.max(-1) - ref[np.arange(len(ref)), ours_top]
        return cls(
            prompt=prompt,
            positions=len(ref),
            top1=float((ours_top == ref_top).mean()),
            rel_rms_mean=float(rel.mean()),
            rel_rms_max=float(rel.max()),
            max_abs=float(np.abs(ours - ref).max()),
            worst_flip_gap=float(gaps.max()),
        )


def agreements(continuations: list[Continuation], ours: list[np.ndarray], reference: str) -> list[Agreement]:
    """Per prompt, `ours` against llama.cpp's `reference` logits ("quantized" or "dequantized")."""
    return [
        Agreement.of(c.prompt, o, getattr(c, reference)) for c, o in zip(continuations, ours, strict=True)
    ]


@dataclass(frozen=True)
class Summary:
    """All prompts together: the figures the tests bound."""

    positions: int
    top1: float
    rel_rms_mean: float
    rel_rms_max: float
    max_abs: float

    @classmethod
    def of(cls, rows: list[Agreement]) -> Summary:
        n = sum(r.positions for r in rows)
        return cls(
            positions=n,
            top1=sum(r.top1 * r.positions for r in rows) / n,
            rel_rms_mean=sum(r.rel_rms_mean * r.positions for r in rows) / n,
            rel_rms_max=max(r.rel_rms_max for r in rows),
            max_abs=max(r.max_abs for r in rows),
        )


def table(title: str, rows: list[Agreement]) -> str:
    """The figures as a Markdown table, one row per prompt and a total row (for -s runs and the docs)."""
    lines = [
        f"{title}",
        "",
        "| prompt | top-1 | rel. RMS mean | rel. RMS max | max abs diff | worst flip gap |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        flip = f"{r.worst_flip_gap:.3g}" if r.top1 < 1 else "-"
        lines.append(
            f"| `{r.prompt!r}` | {r.top1 * r.positions:.0f}/{r.positions} | {r.rel_rms_mean:.2e} | "
            f"{r.rel_rms_max:.2e} | {r.max_abs:.2e} | {flip} |"
        )
    s = Summary.of(rows)
    lines.append(
        f"| **all** | {s.top1 * s.positions:.0f}/{s.positions} ({s.top1:.2%}) | {s.rel_rms_mean:.2e} | "
        f"{s.rel_rms_max:.2e} | {s.max_abs:.2e} | |"
    )
    return "\n".join(lines)
