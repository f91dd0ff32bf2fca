"""The device draw (`kernels.triton_sample`): its distribution against softmax in float64 (chi-square at a
fixed seed), plain and truncated by top-k, top-p and min-p (never an id the general path drops),
reproducible per seed, never an id past the vocabulary, the drawn id marked seen; on the GPU, and under
Triton's interpreter on CPU (`tests/kernels/sample_checks.py`). Where the sampler uses it."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from reference_worker.sampling import Sampler, SamplingParams, drawn_on_device
from tests.kernels.test_triton_interpreted import interpreted

needs_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton is not installed"
)
cuda = pytest.mark.cuda


@pytest.mark.parametrize(
    ("params", "served"),
    [
        (SamplingParams(temperature=1.0), True),
        (SamplingParams(temperature=0.7, repetition_penalty=1.3), True),
        (SamplingParams(temperature=1.0, top_k=4), True),
        (SamplingParams(temperature=1.0, top_p=0.9), True),
        (SamplingParams(temperature=1.0, min_p=0.05), True),
        (SamplingParams(temperature=0.9, top_k=40, top_p=0.9, min_p=0.05, repetition_penalty=1.1), True),
        (SamplingParams(temperature=0.0), False),  # greedy: the argmax
        (SamplingParams(temperature=0.0, top_k=4, repetition_penalty=1.2), False),
    ],
)
def test_the_device_draw_serves_every_draw_and_greedy_stays_the_argmax(params, served) -> None:
    assert drawn_on_device(params) is served


def test_the_sampler_hands_a_served_request_to_the_device_draw() -> None:
    calls = []

    class Recorded:
        def __init__(self, logits_size, vocab_size, seed, device) -> None:
            calls.append((logits_size, vocab_size, seed))

        def __call__(self, logits, seen, temperature, penalty, *, top_k, top_p, min_p):
            calls.append((temperature, penalty, top_k, top_p, min_p))
            return torch.tensor(3)

    sampler = Sampler(SamplingParams(temperature=0.5, seed=9), 12, logits_size=16, draw=Recorded)
    assert int(sampler.sample(torch.zeros(16))) == 3
    assert calls == [(16, 12, 9), (0.5, 1.0, 0, 1.0, 0.0)]
    truncated = SamplingParams(temperature=0.5, top_k=5, top_p=0.5, min_p=0.1, repetition_penalty=1.2, seed=3)
    Sampler(truncated, 12, logits_size=16, draw=Recorded).sample(torch.zeros(16))
    assert calls[2:] == [(16, 12, 3), (0.5, 1.2, 5, 0.5, 0.1)]
    greedy = Sampler(SamplingParams(temperature=0.0), 12, logits_size=16, draw=Recorded)
    greedy.sample(torch.zeros(16))
    assert len(calls) == 4  # greedy: the argmax, the draw never built


@needs_triton
def test_every_key_is_one_int64_argument_so_one_compiled_kernel_serves_every_step() -> None:
    from kernels.triton_sample import step_key

    keys = [step_key(seed, step) for seed in (0, 1, 2**64 - 1) for step in range(64)]
    assert all(2**62 <= key < 2**63 for key in keys)
    assert len(set(keys)) == len(keys)


@needs_triton
def test_the_interpreted_draw_has_the_softmax_distribution_and_is_reproducible() -> None:
    report = interpreted("tests.kernels.sample_checks", timeout_s=900)
    assert "chi2" in report and "seed 7 twice" in report


@cuda
def test_the_gpu_draw_has_the_softmax_distribution_and_is_reproducible() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from tests.kernels import sample_checks  # imports Triton

    sample_checks.check_distribution("cuda", n=20000)
    sample_checks.check_reproducible("cuda")


@cuda
def test_the_gpu_draw_over_a_real_vocabulary_keeps_to_it() -> None:
    """Qwen2.5's 151,646-token vocabulary in a 151,936-row output (several blocks of the first launch)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from kernels.triton_sample import GumbelDraw

    generator = torch.Generator(device="cuda").manual_seed(0)
    logits = torch.randn(151936, device="cuda", generator=generator) * 3
    logits[151646:] = 1e4  # padding rows that would win if they were drawn
    draw = GumbelDraw(151936, 151646, 5, torch.device("cuda"))
    seen = torch.zeros(151936, dtype=torch.bool, device="cuda")
    tokens = [int(draw(logits, seen, 1.0, 1.0)) for _ in range(2000)]
    assert max(tokens) < 151646
    probabilities = torch.softmax(logits[:151646].double(), dim=0)
    top = int(probabilities.argmax())
    share = tokens.count(top) / len(tokens)
    assert (
        abs(share - float(probabilities[top])) < 5 * math.sqrt(float(probabilities[top]) / len(tokens)) + 0.01
    )
