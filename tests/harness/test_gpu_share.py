"""`steps.shards.gpu_share`: untimed scenarios share a GPU, a timed one has it alone, and one waiting for it
is not overtaken by scenarios that start after it (threads stand in for shards: each opens its own lock)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from steps.shards import gpu_share


def _hold(events: list[str], name: str, lock_dir: Path, exclusive: bool, seconds: float) -> threading.Thread:
    def run() -> None:
        with gpu_share(0, exclusive, lock_dir):
            events.append(f"{name} in")
            time.sleep(seconds)
            events.append(f"{name} out")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_untimed_scenarios_share_the_gpu(tmp_path: Path):
    events: list[str] = []
    threads = [_hold(events, name, tmp_path, False, 0.3) for name in ("a", "b")]
    for thread in threads:
        thread.join()
    assert events[:2] == ["a in", "b in"] or events[:2] == ["b in", "a in"], events


def test_a_timed_scenario_waits_for_the_running_ones_and_the_later_ones_wait_for_it(tmp_path: Path):
    events: list[str] = []
    first = _hold(events, "untimed", tmp_path, False, 0.5)
    time.sleep(0.1)
    timed = _hold(events, "timed", tmp_path, True, 0.3)
    time.sleep(0.1)
    later = _hold(events, "later", tmp_path, False, 0.1)
    for thread in (first, timed, later):
        thread.join()
    assert events == ["untimed in", "untimed out", "timed in", "timed out", "later in", "later out"], events


def test_gpus_are_held_apart(tmp_path: Path):
    with gpu_share(0, True, tmp_path), gpu_share(1, True, tmp_path):
        pass  # GPU 1's lock is free while GPU 0's is held
