"""One sampled token in two launches (CUDA): the Gumbel-max draw over the whole vocabulary.

The sampler's general path (`reference_worker.sampling.Sampler`) runs a dozen small PyTorch kernels per
token for a plain temperature draw (float64 copy, masks, softmax, normalization, `torch.multinomial`),
measured at ~0.25 ms a token on an H100 (Qwen2.5-0.5B: 1.34 ms a sampled token against 1.08 ms a greedy
one). For the parameters it serves, temperature > 0 with the repetition penalty, without top-k, top-p or
min-p, this module draws the token as

    argmax_i (penalized(logit_i) / T + g_i),  g_i = -log(-log(u_i)),  u_i uniform in [0, 1)

which picks token i with probability softmax(penalized logits / T)_i (the Gumbel-max trick), so the
distribution is the general path's; its draws are not: a seed gives other tokens than there, and the
same tokens on every run (u_i from Philox, `tl.rand`, keyed by the request's seed and the step number).
Ids at or beyond the tokenizer's vocabulary are never drawn. float32 uniforms bound the noise by ~17, so
a token whose scaled logit trails the largest by more than that (probability below ~1e-7 of the
largest's) is never drawn.

The first launch reduces blocks of the vocabulary to (largest value, its id); the second picks the best
block and marks the drawn id as seen (the history of the repetition penalty), all on the device.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 4096  # vocabulary entries a program of the first launch reduces
# Every key in [2^62, 2^63): one int64 argument (a key that fits int32 would be typed, and compiled, apart).
_KEY_BITS = (1 << 62) - 1
_KEY_HIGH = 1 << 62
_GOLDEN = 0x9E3779B97F4A7C15  # Weyl increment: step k of a request draws with its own key


# `key` changes every call: unspecialized (Triton would compile a variant for key == 1 and for keys
# divisible by 16; measured on an H200, those compiles during a request cut Qwen2.5's sampled decode to
# 110.6 tok/s against 805.1 on the general path).
@triton.jit(do_not_specialize=["key"])
def _block_best(
    logits,
    seen,
    best_value,
    best_id,
    n_valid,
    inv_temperature,
    penalty,
    key,
    PENALIZE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    block = tl.program_id(0)
    ids = block * BLOCK + tl.arange(0, BLOCK)
    inside = ids < n_valid
    x = tl.load(logits + ids, mask=inside, other=0.0).to(tl.float32)
    if PENALIZE:  # M0-W-1421: a seen token's positive logit divided by the penalty, a negative one multiplied
        was_seen = tl.load(seen + ids, mask=inside, other=0) != 0
        x = tl.where(was_seen, tl.where(x > 0, x / penalty, x * penalty), x)
    u = tl.rand(key, ids)
    gumbel = -tl.log(-tl.log(u))
    y = tl.where(inside, x * inv_temperature + gumbel, float("-inf"))
    value, index = tl.max(y, axis=0, return_indices=True)
    tl.store(best_value + block, value)
    tl.store(best_id + block, block * BLOCK + index)


@triton.jit
def _pick(best_value, best_id, n_blocks, token, seen, BLOCKS: tl.constexpr):
    blocks = tl.arange(0, BLOCKS)
    values = tl.load(best_value + blocks, mask=blocks < n_blocks, other=float("-inf"))
    _, index = tl.max(values, axis=0, return_indices=True)
    chosen = tl.load(best_id + index)
    tl.store(token, chosen.to(tl.int64))
    tl.store(seen + chosen, 1)


def step_key(seed: int, step: int) -> int:
    """The Philox key of a request's step: distinct per (seed, step) within a request, in [2^62, 2^63)."""
    return ((seed * _GOLDEN + step + 1) & _KEY_BITS) | _KEY_HIGH


class GumbelDraw:
    """The draws of one request: its scratch, its seed and its step count. `logits_size` is the width of
    the logits it is given (`DeviceKernels.sample`'s signature); only their first `vocab_size` rows are
    read, the rest being the output matrix's padding."""

    def __init__(self, logits_size: int, vocab_size: int, seed: int, device: torch.device) -> None:
        self.n_valid = vocab_size
        self.n_blocks = triton.cdiv(vocab_size, BLOCK)
        self.best_value = torch.empty(self.n_blocks, dtype=torch.float32, device=device)
        self.best_id = torch.empty(self.n_blocks, dtype=torch.int32, device=device)
        self.seed = seed
        self.step = 0

    def __call__(
        self,
        logits: torch.Tensor,
        seen: torch.Tensor,
        temperature: float,
        penalty: float,
    ) -> torch.Tensor:
        """The drawn id (a 0-d long tensor on the device); marks it in `seen` (uint8 or bool)."""
        token = torch.empty((), dtype=torch.long, device=logits.device)
        seen_bytes = seen.view(torch.uint8)
        _block_best[(self.n_blocks,)](
            logits,
            seen_bytes,
            self.best_value,
            self.best_id,
            self.n_valid,
            1.0 / temperature,
            penalty,
            step_key(self.seed, self.step),
            PENALIZE=penalty != 1.0,
            BLOCK=BLOCK,
        )
        _pick[(1,)](
            self.best_value,
            self.best_id,
            self.n_blocks,
            token,
            seen_bytes,
            BLOCKS=triton.next_power_of_2(self.n_blocks),
        )
        self.step += 1
        return token

    @classmethod
    def warm_up(cls, logits_size: int, vocab_size: int, device: torch.device) -> None:
        """Compiles both kernels for this vocabulary, with and without the penalty, before any request:
        the first sampled token of a request would otherwise wait ~0.6 s for Triton (measured on an H100:
        a cold first run of 128 sampled Qwen2.5 tokens at 166 tok/s against 791 on the general path)."""
        draw = cls(logits_size, vocab_size, 0, device)
        logits = torch.zeros(logits_size, dtype=torch.float32, device=device)
        seen = torch.zeros(logits_size, dtype=torch.bool, device=device)
        for penalty in (1.0, 1.1):
            draw(logits, seen, 1.0, penalty)
