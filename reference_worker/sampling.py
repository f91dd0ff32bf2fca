"""Token sampling (M0-W-1032, M0-W-1420, M0-W-1421).

The spec's order, applied to the logits of one position:
  1. temperature: logits / T (T = 0 selects greedy decoding, see below)
  2. repetition penalty over the token history (prompt + generated): a positive logit of a seen token is
     divided by the penalty, a negative one multiplied. For T > 0 steps 1 and 2 commute (both scale a
     logit by a positive factor that keeps its sign), so the order between them is immaterial.
  3. top-k: keep the k largest (0 = off)
  4. top-p: keep the smallest set, in descending probability, whose cumulative probability reaches top_p;
     the most likely token is always kept (1.0 = off)
  5. min-p: drop tokens whose probability is below min_p * (largest probability) (0.0 = off)
  6. T = 0: argmax of the penalized logits (top-k/top-p/min-p never remove the argmax, so they are
     skipped); otherwise draw one token from the renormalized distribution.
Ids at or beyond the tokenizer's vocabulary (padding rows of `output.weight`, M0 §6) get -inf first, so
they can never be chosen. Probabilities are computed in float64 from max-subtracted logits, so a
150k-entry vocabulary cannot underflow the normalization (M0 §6, softmax sum ~0.01 in float32 sums).

RNG: one `torch.Generator` per request on the logits' device, seeded with the request seed (a CPU
generator is a Mersenne Twister, a CUDA one Philox). The same seed, parameters and logits on the same
device and torch version give the same tokens; different devices need not agree. A device draw (`draw`,
CUDA: `kernels.triton_sample`) serves every draw (T > 0: the repetition penalty, top-k, top-p and min-p)
in a few kernels: the same distribution (Gumbel-max over the kept ids), its own tokens per seed,
reproducible like these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int = 0


class Sampler:
    """Picks one token per decode step; remembers the history for the repetition penalty."""

    def __init__(
        self,
        params: SamplingParams,
        vocab_size: int,
        *,
        logits_size: int | None = None,
        history: Sequence[int] = (),
        device: torch.device | str = "cpu",
        draw: Callable[..., Any] | None = None,
    ) -> None:
        """`vocab_size` is the tokenizer's; `logits_size` the model's (padded) output width. `draw`: the
        device's draw for the parameters it serves (`kernels.backend.DeviceKernels.sample`), or None."""
        self.params = params
        logits_size = vocab_size if logits_size is None else logits_size
        self.device = torch.device(device)
        self._vocab_size = vocab_size
        self._invalid = torch.arange(logits_size, device=self.device) >= vocab_size
        self._seen = torch.zeros(logits_size, dtype=torch.bool, device=self.device)
        if history:
            self._seen[torch.tensor(list(history), dtype=torch.long, device=self.device)] = True
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(params.seed % 2**64)
        self._draw = (
            draw(logits_size, vocab_size, params.seed % 2**64, self.device)
            if draw is not None and drawn_on_device(params)
            else None
        )

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        """Token id (a 0-d long tensor on the device) for `logits[logits_size]`; adds it to the history."""
        if self._draw is not None:  # marks the token seen itself
            p = self.params
            return self._draw(
                logits,
                self._seen,
                p.temperature,
                p.repetition_penalty,
                top_k=p.top_k,
                top_p=p.top_p,
                min_p=p.min_p,
            )
        token = self._choose(logits)
        self._seen.index_fill_(0, token.view(1), True)  # on the device: no host sync (see engine)
        return token

    def _choose(self, logits: torch.Tensor) -> torch.Tensor:
        p = self.params
        if p.temperature <= 0 and p.repetition_penalty == 1.0:
            # Greedy: the same index as below (the invalid ids are the tail; float64 keeps order and ties)
            # without the copies, the decode loop's cost on small models.
            return logits[: self._vocab_size].argmax()
        logits = logits.to(torch.float64).masked_fill(self._invalid, float("-inf"))
        if p.temperature > 0:
            logits = logits / p.temperature
        if p.repetition_penalty != 1.0:
            penalized = torch.where(logits > 0, logits / p.repetition_penalty, logits * p.repetition_penalty)
            logits = torch.where(self._seen, penalized, logits)
        if p.temperature <= 0:
            return logits.argmax()
        if 0 < p.top_k < logits.shape[0]:
            kth = torch.topk(logits, p.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            before = torch.cumsum(sorted_probs, dim=0) - sorted_probs  # mass of the tokens ranked above
            drop_sorted = before >= p.top_p
            drop_sorted[0] = False
            probs = probs.masked_fill(torch.empty_like(drop_sorted).scatter_(0, order, drop_sorted), 0.0)
        if p.min_p > 0.0:
            probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
        return torch.multinomial(probs / probs.sum(), 1, generator=self._generator)[0]


def drawn_on_device(params: SamplingParams) -> bool:
    """The parameters a device draw serves: every draw (T > 0), with or without the repetition penalty,
    top-k, top-p and min-p; greedy stays the argmax above."""
    return params.temperature > 0
