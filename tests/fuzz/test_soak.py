"""A bounded soak: every kind of request a few times against one worker under a device-memory budget;
the device-memory accounting ends where it started (the 1,000-request run is `python -m tests.fuzz.soak`)."""

from __future__ import annotations

import pytest

from .inprocess import TINY_MODEL
from .process import worker_process
from .soak import BUDGET_MB, KINDS, run_soak

pytestmark = pytest.mark.skipif(
    not TINY_MODEL.is_file(), reason=f"{TINY_MODEL} missing: run `python -m fixtures prepare --tiny`"
)


def test_mixed_requests_leave_the_worker_as_they_found_it() -> None:
    with worker_process("--vram-budget-mb", str(BUDGET_MB)) as worker:
        report, memory = run_soak(worker, requests=3 * len(KINDS), seed=1)
    assert report.failures == [], report.failures[:5]
    assert set(report.by_kind) == set(KINDS)
    assert {"VRAM_OOM", "CANCELLED", "left", "400"} <= set(report.by_outcome)
    assert memory["vram_by_category_after"] == memory["vram_by_category_before"]
