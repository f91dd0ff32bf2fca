"""Loading a fixture model for the model, KV cache and engine tests (no HTTP, no CLI)."""

from __future__ import annotations

import io

import torch

from fixtures.paths import fixture_path
from kernels.backend import KernelConfig
from kernels.qtensor import QTensor
from reference_worker.device_memory import DeviceMemory
from reference_worker.gguf import GGUFFile
from reference_worker.loader import load_weights
from reference_worker.logs import EventLog
from reference_worker.models import create_model
from reference_worker.weight_cache import build_weight_cache


def read_weights(gguf: GGUFFile, device: str = "cpu") -> dict[str, QTensor]:
    """Every tensor as a QTensor, outside the memory accounting. Reads through a fresh mapping of the file,
    since the worker's loader unmaps the file it has loaded."""
    file = GGUFFile.open(gguf.path)
    return {
        name: QTensor.from_bytes(file.tensor_bytes(name), info.qtype, info.shape, name, device=device)
        for name, info in file.tensors.items()
    }


def load_model(
    name: str,
    *,
    budget_bytes: int | None = None,
    attention: str = "reference",
    kv_cache: str = "contiguous",
    device: str = "cpu",
    weight_cache: bool = False,
    kernels: KernelConfig | None = None,
):
    """(model, memory, gguf) for fixture `name`, e.g. "tiny/llama-f32.gguf", loaded by the worker's loader
    (weights accounted in `memory`, so a budget must leave room for them). The returned file is closed.
    `weight_cache` builds the CPU weight cache as the worker does (the CPU fast path then serves the
    matmuls); without it the model runs on the reference path on CPU. `kernels` defaults to
    `KernelConfig()` (fast paths where they apply)."""
    kernels = kernels or KernelConfig()
    gguf = GGUFFile.open(fixture_path(name))
    memory = DeviceMemory(device, budget_bytes)
    weights = load_weights(gguf, memory, EventLog(io.StringIO()))
    if weight_cache:
        build_weight_cache(weights, memory, EventLog(io.StringIO()), kernels)
    model = create_model(
        gguf, weights, torch.device(device), memory, attention=attention, kv_cache=kv_cache, kernels=kernels
    )
    return model, memory, gguf
