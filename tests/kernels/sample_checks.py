"""Checks of the device draw (`kernels.triton_sample`) on one device: run on a GPU by
tests/kernels/test_triton_sample.py, and under Triton's interpreter on CPU by
`TRITON_INTERPRET=1 python -m tests.kernels.sample_checks`.

The oracle is the distribution itself: softmax(penalized logits / T) in float64, against which a few
thousand draws are held with a chi-square test at a fixed seed (the draws are reproducible, so the test
is too); plus reproducibility per seed, ids past the vocabulary never drawn, and the history marked.
"""

from __future__ import annotations

import math
import sys

import torch

from kernels.triton_sample import GumbelDraw, step_key

VOCAB, LOGITS = 12, 16  # 4 padding rows of the output matrix past the tokenizer's vocabulary
LOGIT_VALUES = [2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, 3.0, -2.0, 0.25, 1.25, -3.0, 9.0, 9.0, 9.0, 9.0]
CHI2_99_99 = {11: 35.6}  # chi-square 0.9999 quantile, 11 degrees of freedom


def expected(temperature: float, penalty: float, seen: set[int]) -> list[float]:
    scaled = []
    for i, x in enumerate(LOGIT_VALUES[:VOCAB]):
        if i in seen:
            x = x / penalty if x > 0 else x * penalty
        scaled.append(x / temperature)
    top = max(scaled)
    weights = [math.exp(v - top) for v in scaled]
    return [w / sum(weights) for w in weights]


def draws(device: str, n: int, temperature: float, penalty: float, seen: set[int], seed: int) -> list[int]:
    logits = torch.tensor(LOGIT_VALUES, dtype=torch.float32, device=device)
    draw = GumbelDraw(LOGITS, VOCAB, seed, torch.device(device))
    tokens = []
    for _ in range(n):
        mask = torch.zeros(LOGITS, dtype=torch.bool, device=device)
        if seen:
            mask[list(seen)] = True
        token = int(draw(logits, mask, temperature, penalty))
        assert bool(mask[token]), f"token {token} was not marked seen"
        tokens.append(token)
    return tokens


def chi_square(tokens: list[int], probabilities: list[float]) -> float:
    counts = [0] * VOCAB
    for token in tokens:
        assert 0 <= token < VOCAB, f"drew id {token}, past the vocabulary of {VOCAB}"
        counts[token] += 1
    n = len(tokens)
    return sum((counts[i] - n * p) ** 2 / (n * p) for i, p in enumerate(probabilities))


def check_distribution(device: str, n: int = 4000) -> list[str]:
    report = []
    for temperature, penalty, seen in ((1.0, 1.0, set()), (0.7, 1.0, set()), (1.3, 1.5, {0, 7, 5})):
        tokens = draws(device, n, temperature, penalty, seen, seed=1234)
        statistic = chi_square(tokens, expected(temperature, penalty, seen))
        line = f"T={temperature} penalty={penalty} seen={sorted(seen)}: chi2 {statistic:.1f} over {n} draws"
        assert statistic < CHI2_99_99[VOCAB - 1], line
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
