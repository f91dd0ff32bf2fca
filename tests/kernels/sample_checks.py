"""Checks of the device draw (`kernels.triton_sample`) on one device: run on a GPU by
tests/kernels/test_triton_sample.py, and under Triton's interpreter on CPU by
`TRITON_INTERPRET=1 python -m tests.kernels.sample_checks`.

The oracle is the distribution itself: softmax(penalized logits / T) in float64, truncated by the spec's
rules (M0-W-1421's order: top-k, top-p, min-p, each written out here in plain Python, apart from both
samplers), against which a few thousand draws are held with a chi-square test at a fixed seed (the draws
are reproducible, so the test is too), no draw ever falling on a dropped id; plus reproducibility per
seed, ids past the vocabulary never drawn, and the history marked.
"""

from __future__ import annotations

import math
import sys

import torch

from kernels.triton_sample import GumbelDraw, step_key

VOCAB, LOGITS = 12, 16  # 4 padding rows of the output matrix past the tokenizer's vocabulary
LOGIT_VALUES = [2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, 3.0, -2.0, 0.25, 1.25, -3.0, 9.0, 9.0, 9.0, 9.0]
# (temperature, penalty, seen ids, truncation) of the distribution checks
CASES = [
    (1.0, 1.0, set(), {}),
    (0.7, 1.0, set(), {}),
    (1.3, 1.5, {0, 7, 5}, {}),
    (1.0, 1.0, set(), {"top_k": 5}),
    (0.8, 1.0, set(), {"top_p": 0.7}),
    (1.2, 1.0, set(), {"min_p": 0.1}),
    (1.0, 1.3, {7}, {"top_k": 8, "top_p": 0.9, "min_p": 0.05}),
]


def chi2_quantile(df: int, q: float = 0.9999) -> float:
    """The chi-square distribution's q-quantile (bisection on its CDF, the regularized lower gamma)."""
    lo, hi = 0.0, 1000.0
    for _ in range(100):
        mid = (lo + hi) / 2
        cdf = float(torch.special.gammainc(torch.tensor(df / 2, dtype=torch.float64), torch.tensor(mid / 2)))
        lo, hi = (mid, hi) if cdf < q else (lo, mid)
    return hi


def expected(
    temperature: float, penalty: float, seen: set[int], top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0
) -> list[float]:
    """Each id's probability under the spec's rules (zero where a truncation drops it)."""
    scaled = []
    for i, x in enumerate(LOGIT_VALUES[:VOCAB]):
        if i in seen:
            x = x / penalty if x > 0 else x * penalty
        scaled.append(x / temperature)
    kept = set(range(VOCAB))
    if 0 < top_k < VOCAB:  # the k largest (ties with the k-th kept)
        kth = sorted(scaled, reverse=True)[top_k - 1]
        kept = {i for i in kept if scaled[i] >= kth}
    top = max(scaled)
    weights = {i: math.exp(scaled[i] - top) for i in kept}
    total = sum(weights.values())
    if top_p < 1.0:  # the most likely first, while the mass before an id is below top_p
        before, nucleus = 0.0, set()
        for i in sorted(kept, key=lambda i: -scaled[i]):
            if nucleus and before >= top_p:
                break
            nucleus.add(i)
            before += weights[i] / total
        kept = nucleus
    if min_p > 0.0:  # at least min_p times the most likely id's probability
        kept = {i for i in kept if weights[i] >= min_p * max(weights.values())}
    total = sum(weights[i] for i in kept)
    return [weights[i] / total if i in kept else 0.0 for i in range(VOCAB)]


def draws(
    device: str, n: int, temperature: float, penalty: float, seen: set[int], seed: int, **truncation: float
) -> list[int]:
    logits = torch.tensor(LOGIT_VALUES, dtype=torch.float32, device=device)
    draw = GumbelDraw(LOGITS, VOCAB, seed, torch.device(device))
    tokens = []
    for _ in range(n):
        mask = torch.zeros(LOGITS, dtype=torch.bool, device=device)
        if seen:
            mask[list(seen)] = True
        token = int(draw(logits, mask, temperature, penalty, **truncation))
        assert bool(mask[token]), f"token {token} was not marked seen"
        tokens.append(token)
    return tokens


def chi_square(tokens: list[int], probabilities: list[float]) -> float:
    """Over the ids of nonzero probability; a draw of any other id (dropped, or past the vocabulary) fails."""
    counts = [0] * VOCAB
    for token in tokens:
        assert 0 <= token < VOCAB, f"drew id {token}, past the vocabulary of {VOCAB}"
        assert probabilities[token] > 0, f"drew id {token}, which the truncation drops"
        counts[token] += 1
    n = len(tokens)
    return sum((counts[i] - n * p) ** 2 / (n * p) for i, p in enumerate(probabilities) if p > 0)


def check_distribution(device: str, n: int = 4000) -> list[str]:
    report = []
    for temperature, penalty, seen, truncation in CASES:
        tokens = draws(device, n, temperature, penalty, seen, seed=1234, **truncation)
        probabilities = expected(temperature, penalty, seen, **truncation)
        statistic = chi_square(tokens, probabilities)
        df = sum(p > 0 for p in probabilities) - 1
        line = (
            f"T={temperature} penalty={penalty} seen={sorted(seen)} {truncation or 'untruncated'}: "
            f"chi2 {statistic:.1f} ({df} degrees of freedom) over {n} draws"
        )
        assert statistic < chi2_quantile(df), line
        report.append(line)
    return report


def check_reproducible(device: str) -> list[str]:
    first = draws(device, 64, 1.0, 1.0, set(), seed=7)
    again = draws(device, 64, 1.0, 1.0, set(), seed=7)
    other = draws(device, 64, 1.0, 1.0, set(), seed=8)
    assert first == again, "the same seed drew other tokens"
    assert first != other, "two seeds drew the same 64 tokens"
    assert len({step_key(7, step) for step in range(4096)}) == 4096
    return ["seed 7 twice: the same 64 tokens; seed 8: others"]


def main() -> int:
    device = "cpu"
    for line in check_distribution(device) + check_reproducible(device):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
