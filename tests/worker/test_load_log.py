"""The model_load_complete log line says how the decode step will run, including what the worker chose by
the model's shape (dependent launch), so a benchmark over HTTP can tell which form it timed."""

from __future__ import annotations

import io
import json
import uuid

from fixtures.paths import fixture_path
from reference_worker.config import WorkerConfig
from reference_worker.logs import EventLog
from reference_worker.worker import load_worker


def test_the_load_log_says_how_the_decode_step_runs() -> None:
    stream = io.StringIO()
    config = WorkerConfig(
        worker_id=str(uuid.uuid4()),
        model=fixture_path("tiny/qwen2-q4_0.gguf"),
        gpu_device=0,
        port=8080,
        device="cpu",
    )
    load_worker(config, EventLog(stream))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    (done,) = [e for e in events if e["event"] == "model_load_complete"]
    # On CPU the step is not captured, so nothing launches early whatever the shape.
    assert done["decode_graphs"] is False and done["dependent_launch"] is False
    assert done["regrouped_matrices"] == 0  # none asked for (and --regroup is a CUDA layout)
    assert done["prefix_cache"] is False  # M0 frees a job's KV cache when it ends (--prefix-cache: M1)
    assert done["vram_bytes"] > 0
