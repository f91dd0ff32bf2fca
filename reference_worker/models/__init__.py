"""Model adapters per architecture (M0-W-1213/1214/1215) and the factory that picks one from the file.

Adapters are registered as "module:Class" and imported on first use, so one adapter's absence or import
error never breaks another architecture.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from kernels.backend import KernelConfig, kernel_set
from reference_worker.models.base import ModelAdapter, ModelConfigError, UnsupportedArchitecture

# `general.architecture` -> adapter. Real files say "llama" (SmolLM2), "qwen2", "phi3", "gpt-oss" (M0 §6).
ADAPTERS: dict[str, str] = {
    "llama": "reference_worker.models.llama:LlamaModel",
    "qwen2": "reference_worker.models.llama:LlamaModel",
    "phi3": "reference_worker.models.llama:LlamaModel",
    "gpt2": "reference_worker.models.gpt2:GPT2Model",
    "gpt-oss": "reference_worker.models.gpt_oss:GptOssModel",
}

__all__ = ["ADAPTERS", "ModelAdapter", "ModelConfigError", "UnsupportedArchitecture", "create_model"]


def adapter_class(architecture: str) -> type:
    if architecture not in ADAPTERS:
        raise UnsupportedArchitecture(architecture, list(ADAPTERS))
    module_name, class_name = ADAPTERS[architecture].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_model(
    gguf: Any,
    weights: dict[str, Any],
    device: torch.device | str,
    memory: Any,
    *,
    attention: str = "reference",
    kv_cache: str = "contiguous",
    kernels: KernelConfig | None = None,
) -> ModelAdapter:
    """The adapter for the file's `general.architecture`, built over the already loaded weights, with the
    matmul kernels `kernels` chooses (default `KernelConfig()`: the device's fast paths, if any)."""
    architecture = gguf.metadata.get("general.architecture")
    if not isinstance(architecture, str):
        raise ModelConfigError("GGUF metadata key 'general.architecture' is missing")
    cls = adapter_class(architecture)
    device = torch.device(device)
    chosen = kernel_set(kernels, device)
    # The fast kernels' storage order (CUDA: MXFP4 experts with their scales apart, the same bytes).
    chosen.pack_weights(weights)
    return cls.from_gguf(
        gguf, weights, device, memory, attention=attention, kv_cache=kv_cache, kernels=chosen
    )
