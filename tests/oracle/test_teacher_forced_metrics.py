"""The figures the real-weights oracle bounds (teacher_forced.Agreement / Summary), on made-up logits whose
answers are known: each figure moves when the logits do."""

from __future__ import annotations

import numpy as np
import pytest

from tests.oracle.teacher_forced import Agreement, Summary, table

pytestmark = pytest.mark.oracle


def _logits(seed: int = 0, positions: int = 8, vocab: int = 50) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 3.0, (positions, vocab)).astype(np.float32)


def test_identical_logits_agree_everywhere():
    ref = _logits()
    a = Agreement.of("p", ref.copy(), ref)
    assert (a.top1, a.rel_rms_max, a.max_abs, a.worst_flip_gap) == (1.0, 0.0, 0.0, 0.0)


def test_a_flip_counts_with_the_reference_margin_it_overrides():
    ref = _logits()
    ours = ref.copy()
    top, second = np.argsort(ref[3])[-1], np.argsort(ref[3])[-2]
    ours[3, second] = ref[3, top] + 1.0  # position 3 now prefers the reference's second choice
    a = Agreement.of("p", ours, ref)
    assert a.top1 == 7 / 8
    assert a.worst_flip_gap == pytest.approx(ref[3, top] - ref[3, second], rel=1e-6)
    assert a.max_abs == pytest.approx(ref[3, top] + 1.0 - ref[3, second], rel=1e-6)


def test_relative_rms_scales_with_the_error():
    ref = _logits()
    noise = _logits(seed=1)
    small, large = Agreement.of("p", ref + 1e-6 * noise, ref), Agreement.of("p", ref + 1e-3 * noise, ref)
    assert 5e-7 < small.rel_rms_mean < 2e-6
    assert large.rel_rms_mean == pytest.approx(1000 * small.rel_rms_mean, rel=0.05)


def test_logits_one_position_off_fail_the_agreement():
    ref = _logits(positions=32)
    assert Agreement.of("p", np.roll(ref, 1, axis=0), ref).top1 < 0.2


def test_summary_weights_prompts_by_positions_and_table_has_a_row_each():
    ref = _logits(positions=4)
    ours = ref.copy()
    ours[0] = -ref[0]
    rows = [Agreement.of("a", ours, ref), Agreement.of("b", _logits(positions=12), _logits(positions=12))]
    s = Summary.of(rows)
    assert s.positions == 16 and s.top1 == pytest.approx(15 / 16)
    assert s.rel_rms_max == max(r.rel_rms_max for r in rows)
    text = table("t", rows)
    assert "| `'a'` | 3/4 |" in text and "| **all** | 15/16 (93.75%) |" in text
