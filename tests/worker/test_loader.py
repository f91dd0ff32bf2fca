"""The loader: bounded host->device chunks (M0-W-1222), progress logs (M0-W-1621), weights kept in their
stored types as QTensors, real copies (not views of the mmap), file unmapped afterwards (M0-W-1221)."""

from __future__ import annotations

import io
import json

import pytest
import torch

from kernels.formats import GGMLType
from kernels.qtensor import QTensor
from reference_worker import loader
from reference_worker.device_memory import WEIGHT_ALIGNMENT, DeviceMemory, VramOOM
from reference_worker.gguf import GGUFFile
from reference_worker.logs import EventLog
from tests.worker.gguf_builder import GGUFSpec


def _events(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


@pytest.mark.parametrize("chunk", [1, 100, 1 << 20])
def test_chunks_never_exceed_the_chunk_size(write_gguf, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    spec = GGUFSpec()
    _, data = spec.build()
    copies: list[int] = []
    real_copy = loader.copy_chunk

    def spy(dst: torch.Tensor, staging: torch.Tensor) -> None:
        copies.append(staging.numel())
        real_copy(dst, staging)

    monkeypatch.setattr(loader, "copy_chunk", spy)
    memory = DeviceMemory("cpu")
    gguf = GGUFFile.open(write_gguf(spec))
    weights = loader.load_weights(gguf, memory, EventLog(io.StringIO()), chunk_bytes=chunk)
    assert max(copies) <= chunk
    assert sum(copies) == sum(len(b) for b in data.values())
    for name, blob in data.items():
        q = weights[name]
        assert isinstance(q, QTensor) and q.name == name
        assert bytes(q.data.numpy()) == blob
        assert q.data.data_ptr() % WEIGHT_ALIGNMENT == 0
    assert weights["token_embd.weight"].qtype == GGMLType.Q8_0
    assert weights["token_embd.weight"].shape == (16, 32)
    assert weights["output_norm.weight"].qtype == GGMLType.F32


def test_file_is_unmapped_and_weights_are_real_copies(write_gguf) -> None:
    spec = GGUFSpec()
    _, data = spec.build()
    gguf = GGUFFile.open(write_gguf(spec))
    memory = DeviceMemory("cpu")
    weights = loader.load_weights(gguf, memory, EventLog(io.StringIO()))
    assert not gguf.is_open
    # Reading after the unmap would crash if the weights were views of the mapping.
    assert bytes(weights["blk.0.attn_q.weight"].data.numpy()) == data["blk.0.attn_q.weight"]
    assert memory.by_category["weights"] >= sum(len(b) for b in data.values())
    assert memory.residency_check()


def test_progress_events(write_gguf) -> None:
    buf = io.StringIO()
    loader.load_weights(
        GGUFFile.open(write_gguf()), DeviceMemory("cpu"), EventLog(buf, worker_id="w"), chunk_bytes=64
    )
    progress = [e for e in _events(buf) if e["event"] == "model_load_progress"]
    assert [e["percent"] for e in progress] == [0, 25, 50, 75, 100]
    assert all(e["worker_id"] == "w" and e["level"] == "info" for e in progress)
    assert progress[-1]["bytes_loaded"] == progress[-1]["bytes_total"]
    loaded = [e["bytes_loaded"] for e in progress]
    assert loaded == sorted(loaded)


def test_budget_too_small_raises_vram_oom(write_gguf) -> None:
    with pytest.raises(VramOOM):
        loader.load_weights(
            GGUFFile.open(write_gguf()), DeviceMemory("cpu", budget_bytes=1000), EventLog(io.StringIO())
        )


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_loads_onto_cuda(write_gguf) -> None:
    spec = GGUFSpec()
    _, data = spec.build()
    memory = DeviceMemory("cuda:0")
    weights = loader.load_weights(GGUFFile.open(write_gguf(spec)), memory, EventLog(io.StringIO()))
    for name, blob in data.items():
        assert weights[name].data.is_cuda
        assert bytes(weights[name].data.cpu().numpy()) == blob
    assert memory.residency_check()
