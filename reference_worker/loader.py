"""Weights from a GGUF file to device memory, in their stored ggml types (M0-W-1201, 1221, 1222, 1621).

Host I/O goes through the file's mmap (no full RAM copy); each tensor is allocated from `DeviceMemory`
(256-byte aligned) and filled by bounded chunk copies through one reusable host staging buffer, on CPU
devices too, so every run takes the same path and CPU weights are real copies, not views of the mmap.
The file is unmapped when the copy is done.
"""

from __future__ import annotations

import numpy as np
import torch

from kernels.qtensor import QTensor

from .device_memory import DeviceMemory, MemoryCategory
from .gguf import GGUFFile
from .logs import EventLog

DEFAULT_CHUNK_BYTES = 1 << 20  # M0-W-1222: 1 MiB
PROGRESS_STEPS = (0, 25, 50, 75, 100)  # M0-W-1621


def copy_chunk(dst: torch.Tensor, staging: torch.Tensor) -> None:
    """One bounded host->device copy (the unit M0-W-1222 bounds)."""
    dst.copy_(staging)


class _Progress:
    def __init__(self, total: int, log: EventLog, model: str) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.log = log
        self.model = model
        self.pending = list(PROGRESS_STEPS)

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        while self.pending and self.done * 100 >= self.pending[0] * self.total:
            percent = self.pending.pop(0)
            self.log.event(
                "model_load_progress",
                f"model loading {percent}% complete",
                percent=percent,
                model=self.model,
                bytes_loaded=self.done,
                bytes_total=self.total,
            )


def load_weights(
    gguf: GGUFFile,
    memory: DeviceMemory,
    log: EventLog,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> dict[str, QTensor]:
    """Copies every tensor of `gguf` to `memory.device`; unmaps the file when done. Raises VramOOM."""
    if chunk_bytes <= 0:
        raise ValueError(f"chunk size must be positive, got {chunk_bytes}")
    total = sum(t.nbytes for t in gguf.tensors.values())
    progress = _Progress(total, log, gguf.model_name)
    pin = memory.device.type == "cuda"
    staging = torch.empty(min(chunk_bytes, max(total, 1)), dtype=torch.uint8, pin_memory=pin)
    staging_np = staging.numpy()
    weights: dict[str, QTensor] = {}
    progress.advance(0)
    for info in gguf.tensors.values():
        raw = memory.allocate(MemoryCategory.WEIGHTS, info.nbytes)
        with gguf.tensor_bytes(info.name) as src:
            for start in range(0, info.nbytes, chunk_bytes):
                n = min(chunk_bytes, info.nbytes - start)
                staging_np[:n] = np.frombuffer(src, dtype=np.uint8, count=n, offset=start)
                copy_chunk(raw[start : start + n], staging[:n])
                progress.advance(n)
        weights[info.name] = QTensor(raw, info.qtype, info.shape, info.name)
    gguf.close()
    return weights
