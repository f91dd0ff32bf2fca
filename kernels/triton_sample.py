"""One sampled token on the device (CUDA): the Gumbel-max draw over the whole vocabulary, truncated or not.

The sampler's general path (`reference_worker.sampling.Sampler`) runs a dozen small PyTorch kernels per
token (float64 copy, masks, softmax, a float64 sort for top-p, normalization, `torch.multinomial`),
measured at ~0.25 ms a token on an H100 for a plain temperature draw (Qwen2.5-0.5B: 1.34 ms a sampled
token against 1.08 ms a greedy one). For every temperature > 0, with the repetition penalty, top-k, top-p
and min-p, this module draws the token as

    argmax_{i : s_i >= tau} (s_i + g_i),  s_i = penalized(logit_i) / T,  g_i = -log(-log(u_i)),  u_i in [0, 1)

which picks token i with probability softmax(s) renormalized over the kept ids {s_i >= tau} (the
Gumbel-max trick), so the distribution is the general path's; its draws are not: a seed gives other
tokens than there, and the same tokens on every run (u_i from Philox, `tl.rand`, keyed by the request's
seed and the step number). Ids at or beyond the tokenizer's vocabulary are never drawn. float32 uniforms
bound the noise by ~17, so a token whose scaled logit trails the largest by more than that (probability
below ~1e-7 of the largest's) is never drawn.

The truncations are one threshold tau on s (M0-W-1421's order, as the general path applies them):
top-k keeps s_i >= the k-th largest s (ties with it kept); top-p keeps the most likely ids, in descending
order, until the mass before the next one reaches top_p of the top-k-kept mass (the most likely always);
min-p keeps s_i >= max(s) + ln(min_p), which is p_i >= min_p * max(p). Each keeps a prefix of the ids by
descending s, so their intersection is the largest of the three thresholds. Where two ids tie exactly
at a top-k or top-p boundary, the general path keeps one of them by its sort and this draw both.

Launches: without truncation, the first reduces blocks of the vocabulary to (largest s + g, its id) and
the second picks the best block and marks the drawn id as seen (the history of the repetition penalty).
With truncation, a launch first writes s (and `torch.topk` / `torch.sort`, a float64 cumulative sum and
a max give tau, all on the device, no host read); the block reduction then reads s and skips ids below tau.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

BLOCK = 4096  # vocabulary entries a program of the first launch reduces
# Every key in [2^62, 2^63): one int64 argument (a key that fits int32 would be typed, and compiled, apart).
_KEY_BITS = (1 << 62) - 1
_KEY_HIGH = 1 << 62
_GOLDEN = 0x9E3779B97F4A7C15  # Weyl increment: step k of a request draws with its own key


@triton.jit
def _scaled_logits(logits, seen, ids, inside, inv_temperature, penalty, PENALIZE: tl.constexpr):
    """s = penalized(logit) / T of the ids inside the vocabulary (float32)."""
    x = tl.load(logits + ids, mask=inside, other=0.0).to(tl.float32)
    if PENALIZE:  # M0-W-1421: a seen token's positive logit divided by the penalty, a negative one multiplied
        was_seen = tl.load(seen + ids, mask=inside, other=0) != 0
        x = tl.where(was_seen, tl.where(x > 0, x / penalty, x * penalty), x)
    return x * inv_temperature


@triton.jit
def _draw_scale(
    logits, seen, scaled, n_valid, inv_temperature, penalty, PENALIZE: tl.constexpr, BLOCK: tl.constexpr
):
    """Writes s for the vocabulary: what the truncation thresholds are taken from, and what the block
    reduction then compares with them (the same values, not recomputed)."""
    ids = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = ids < n_valid
    s = _scaled_logits(logits, seen, ids, inside, inv_temperature, penalty, PENALIZE)
    tl.store(scaled + ids, s, mask=inside)


# `key` changes every call: unspecialized (Triton would compile a variant for key == 1 and for keys
# divisible by 16; measured on an H200, those compiles during a request cut Qwen2.5's sampled decode to
# 110.6 tok/s against 805.1 on the general path).
@triton.jit(do_not_specialize=["key"])
def _draw_block_best(
    logits,
    seen,
    scaled,
    threshold,
    best_value,
    best_id,
    n_valid,
    inv_temperature,
    penalty,
    key,
    PENALIZE: tl.constexpr,
    TRUNCATED: tl.constexpr,
    BLOCK: tl.constexpr,
):
    block = tl.program_id(0)
    ids = block * BLOCK + tl.arange(0, BLOCK)
    inside = ids < n_valid
    if TRUNCATED:  # s as `_draw_scale` wrote it, and only the ids at or above the threshold
        s = tl.load(scaled + ids, mask=inside, other=0.0)
        inside = inside & (s >= tl.load(threshold))
    else:
        s = _scaled_logits(logits, seen, ids, inside, inv_temperature, penalty, PENALIZE)
    u = tl.rand(key, ids)
    gumbel = -tl.log(-tl.log(u))
    y = tl.where(inside, s + gumbel, float("-inf"))
    value, index = tl.max(y, axis=0, return_indices=True)
    tl.store(best_value + block, value)
    tl.store(best_id + block, block * BLOCK + index)


@triton.jit
def _draw_pick(best_value, best_id, n_blocks, token, seen, BLOCKS: tl.constexpr):
    blocks = tl.arange(0, BLOCKS)
    values = tl.load(best_value + blocks, mask=blocks < n_blocks, other=float("-inf"))
    _, index = tl.max(values, axis=0, return_indices=True)
    chosen = tl.load(best_id + index)
    tl.store(token, chosen.to(tl.int64))
    tl.store(seen + chosen, 1)


def step_key(seed: int, step: int) -> int:
    """The Philox key of a request's step: distinct per (seed, step) within a request, in [2^62, 2^63)."""
    return ((seed * _GOLDEN + step + 1) & _KEY_BITS) | _KEY_HIGH


def truncation_threshold(scaled: torch.Tensor, top_k: int, top_p: float, min_p: float) -> torch.Tensor:
    """tau (a 0-d float32 tensor on s's device, no host read): the smallest s a truncated draw keeps, the
    largest of the thresholds that top-k (0: off), top-p (1.0: off) and min-p (0.0: off) set on s. The
    most likely id always stays: each threshold is at most max(s)."""
    top = scaled.max()
    thresholds = []
    ranked = None  # s in descending order, as far as top-p must look
    if top_k > 0:
        ranked = torch.topk(scaled, top_k, sorted=True).values
        thresholds.append(ranked[-1])
    if top_p < 1.0:
        if ranked is None:
            ranked = torch.sort(scaled, descending=True).values
        # The general path's rule on the top-k-kept probabilities, unnormalized: an id stays while the
        # mass ranked above it is below top_p of the whole (float64, as there).
        mass = torch.exp((ranked - top).double())
        before = torch.cumsum(mass, 0) - mass
        kept = (before < top_p * mass.sum()).sum().clamp(min=1)
        thresholds.append(ranked.gather(0, (kept - 1).view(1))[0])
    if min_p > 0.0:  # p_i >= min_p * max(p)  <=>  s_i >= max(s) + ln(min_p)
        thresholds.append(top + math.log(min_p))
    return torch.stack(thresholds).max()


class GumbelDraw:
    """The draws of one request: its scratch, its seed and its step count. `logits_size` is the width of
    the logits it is given (`DeviceKernels.sample`'s signature); only their first `vocab_size` rows are
    read, the rest being the output matrix's padding."""

    def __init__(self, logits_size: int, vocab_size: int, seed: int, device: torch.device) -> None:
        self.n_valid = vocab_size
        self.n_blocks = triton.cdiv(vocab_size, BLOCK)
        self.best_value = torch.empty(self.n_blocks, dtype=torch.float32, device=device)
        self.best_id = torch.empty(self.n_blocks, dtype=torch.int32, device=device)
        self.scaled: torch.Tensor | None = None  # s of a truncated draw (allocated at its first one)
        self.seed = seed
        self.step = 0

    def __call__(
        self,
        logits: torch.Tensor,
        seen: torch.Tensor,
        temperature: float,
        penalty: float,
        *,
        top_k: int = 0,
        top_p: float = 1.0,
        min_p: float = 0.0,
    ) -> torch.Tensor:
        """The drawn id (a 0-d long tensor on the device); marks it in `seen` (uint8 or bool). top_k 0 (or
        the whole vocabulary), top_p 1.0 and min_p 0.0 are off."""
        token = torch.empty((), dtype=torch.long, device=logits.device)
        seen_bytes = seen.view(torch.uint8)
        top_k = top_k if 0 < top_k < self.n_valid else 0
        truncated = top_k > 0 or top_p < 1.0 or min_p > 0.0
        threshold = self.best_value  # (unread without truncation)
        if truncated:
            if self.scaled is None:
                self.scaled = torch.empty(self.n_valid, dtype=torch.float32, device=logits.device)
            _draw_scale[(self.n_blocks,)](
                logits,
                seen_bytes,
                self.scaled,
                self.n_valid,
                1.0 / temperature,
                penalty,
                PENALIZE=penalty != 1.0,
                BLOCK=BLOCK,
            )
            threshold = truncation_threshold(self.scaled, top_k, top_p, min_p)
        _draw_block_best[(self.n_blocks,)](
            logits,
            seen_bytes,
            self.scaled if truncated else self.best_value,  # (unread without truncation)
            threshold,
            self.best_value,
            self.best_id,
            self.n_valid,
            1.0 / temperature,
            penalty,
            step_key(self.seed, self.step),
            PENALIZE=penalty != 1.0,
            TRUNCATED=truncated,
            BLOCK=BLOCK,
        )
        _draw_pick[(1,)](
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
        """Compiles the kernels for this vocabulary, with and without the penalty and the truncations,
        before any request: the first sampled token of a request would otherwise wait ~0.6 s for Triton
        (measured on an H100: a cold first run of 128 sampled Qwen2.5 tokens at 166 tok/s against 791 on
        the general path)."""
        draw = cls(logits_size, vocab_size, 0, device)
        logits = torch.zeros(logits_size, dtype=torch.float32, device=device)
        seen = torch.zeros(logits_size, dtype=torch.bool, device=device)
        for penalty in (1.0, 1.1):
            draw(logits, seen, 1.0, penalty)
            draw(logits, seen, 1.0, penalty, top_k=min(40, vocab_size - 1), top_p=0.9, min_p=0.05)
