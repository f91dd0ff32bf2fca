"""Sampler semantics (M0-W-1032, M0-W-1421) on small hand-made logits."""

from __future__ import annotations

import math

import pytest
import torch

from reference_worker.sampling import Sampler, SamplingParams


def draws(params: SamplingParams, logits: list[float], n: int = 2000, **kw) -> torch.Tensor:
    """Counts per token over n independent single draws (the history is not updated between them)."""
    sampler = Sampler(params, len(logits), **kw)
    t = torch.tensor(logits)
    ids = torch.stack([sampler._choose(t) for _ in range(n)])
    return torch.bincount(ids, minlength=t.shape[0])


def test_temperature_zero_is_argmax():
    s = Sampler(SamplingParams(temperature=0.0), 5)
    assert int(s.sample(torch.tensor([0.1, 3.0, 2.9, -1.0, 0.0]))) == 1


def test_same_seed_same_tokens_other_seed_differs():
    logits = torch.randn(200, generator=torch.Generator().manual_seed(0))

    def run(seed: int) -> list[int]:
        s = Sampler(SamplingParams(temperature=1.0, seed=seed), 200)
        return [int(s.sample(logits)) for _ in range(50)]

    assert run(42) == run(42)
    assert run(42) != run(43)


def test_seed_accepts_the_full_uint64_range():
    s = Sampler(SamplingParams(seed=2**64 - 1), 3)
    assert 0 <= int(s.sample(torch.zeros(3))) < 3


def test_top_k_keeps_only_the_k_largest():
    counts = draws(SamplingParams(top_k=2), [1.0, 3.0, 2.0, 0.5])
    assert counts[0] == 0 and counts[3] == 0 and counts[1] > counts[2] > 0


def test_top_p_keeps_smallest_set_reaching_p():
    # probabilities 0.5, 0.3, 0.2: top_p 0.6 needs the first two (0.5 < 0.6 <= 0.8)
    logits = [math.log(0.5), math.log(0.3), math.log(0.2)]
    counts = draws(SamplingParams(top_p=0.6), logits)
    assert counts[2] == 0 and counts[0] > 0 and counts[1] > 0
    # exactly reaching p with the first token keeps only it
    assert draws(SamplingParams(top_p=0.5), logits)[1:].sum() == 0


def test_top_p_always_keeps_the_top_token():
    counts = draws(SamplingParams(top_p=0.0), [0.0, 1.0, 0.5], n=50)
    assert counts.tolist() == [0, 50, 0]


def test_min_p_drops_tokens_below_fraction_of_max():
    # probabilities 0.6, 0.3, 0.1; min_p 0.2 -> threshold 0.12 drops the last
    logits = [math.log(0.6), math.log(0.3), math.log(0.1)]
    counts = draws(SamplingParams(min_p=0.2), logits)
    assert counts[2] == 0 and counts[1] > 0


def test_filtered_distribution_is_renormalised():
    counts = draws(SamplingParams(top_k=2, seed=1), [math.log(0.4), math.log(0.4), math.log(0.2)], n=4000)
    assert counts[2] == 0
    assert abs(counts[0].item() / 4000 - 0.5) < 0.05


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    s = Sampler(SamplingParams(temperature=0.0, repetition_penalty=2.0), 3, history=[0, 2])
    # token 0: 3.0 -> 1.5 ; token 1 unseen: 2.0 ; token 2: -1.0 -> -2.0
    assert int(s.sample(torch.tensor([3.0, 2.0, -1.0]))) == 1
    s = Sampler(SamplingParams(temperature=0.0, repetition_penalty=2.0), 3, history=[1])
    assert int(s.sample(torch.tensor([-1.0, -0.6, -3.0]))) == 0  # -0.6 -> -1.2 falls below -1.0


def test_sampled_tokens_join_the_history():
    s = Sampler(SamplingParams(temperature=0.0, repetition_penalty=10.0), 2)
    assert int(s.sample(torch.tensor([2.0, 1.0]))) == 0
    assert int(s.sample(torch.tensor([2.0, 1.0]))) == 1  # 2.0 / 10 < 1.0


def test_temperature_sharpens_the_distribution():
    logits = [1.0, 0.0]
    hot = draws(SamplingParams(temperature=2.0, seed=3), logits, n=4000)[0].item() / 4000
    cold = draws(SamplingParams(temperature=0.25, seed=3), logits, n=4000)[0].item() / 4000
    assert abs(hot - 1 / (1 + math.exp(-0.5))) < 0.03
    assert abs(cold - 1 / (1 + math.exp(-4.0))) < 0.03


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_padded_vocabulary_rows_are_never_sampled(temperature):
    logits = torch.tensor([0.0, 0.0, 0.0, 50.0, 50.0])  # rows 3, 4: padding beyond a 3-token vocabulary
    s = Sampler(SamplingParams(temperature=temperature, seed=5), 3, logits_size=5)
    assert all(int(s.sample(logits)) < 3 for _ in range(200))


def test_huge_vocabulary_does_not_underflow():
    logits = torch.full((151936,), -1000.0)
    logits[123] = 80.0
    s = Sampler(SamplingParams(temperature=1.0, top_p=0.9, min_p=0.05), 151936)
    assert int(s.sample(logits)) == 123
