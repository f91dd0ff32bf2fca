"""What every model adapter offers the engine (`ModelAdapter`, M0-W-1213) and the errors of building one."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from kernels.backend import KernelSet, kernel_set
from kernels.qtensor import QTensor
from reference_worker.models.attention import attention_kernel
from reference_worker.models.kv_cache import KVCache, KVLayout, kv_cache_allocator


class UnsupportedArchitecture(ValueError):
    """The file's `general.architecture` has no adapter; the message names it and the supported ones."""

    def __init__(self, architecture: str, supported: list[str]) -> None:
        super().__init__(
            f"unsupported model architecture {architecture!r}; supported: {', '.join(sorted(supported))}"
        )
        self.architecture = architecture


class ModelConfigError(ValueError):
    """The file's metadata or tensors do not describe a model the adapter can run; names the key/tensor."""


class ModelAdapter(Protocol):
    architecture: str
    config: Any  # a dataclass read from the file's metadata; has at least vocab_size and context_length
    kernels: KernelSet  # the matmul kernels and decode-step choices this instance was built with

    @classmethod
    def from_gguf(
        cls,
        gguf: Any,
        weights: dict[str, Any],
        device: torch.device,
        memory: Any,
        *,
        attention: str,
        kv_cache: str,
        kernels: KernelSet | None = None,
    ) -> ModelAdapter:
        """Builds the adapter from a `GGUFFile` (metadata) and its loaded `QTensor` weights."""
        ...

    def new_cache(self, max_tokens: int) -> KVCache:
        """A KV cache for `max_tokens` positions (prompt + generated); may raise `VramOOM`."""
        ...

    def forward(
        self,
        tokens: torch.Tensor,
        cache: KVCache,
        *,
        last_only: bool = False,
        positions: torch.Tensor | None = None,
        last_row: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits float32 `[T, vocab]` (`[1, vocab]` with last_only) for T tokens appended to the cache.

        With `positions` (a device tensor, contiguous cache): the decode step. The tokens are written at
        those positions with `cache.write_at`, attention runs over the whole cache with later positions
        masked, nothing reads back to the host and `cache.length` is left to the caller, so the step can
        be captured as a CUDA graph (`reference_worker.decode_step`).

        With `last_row` (a device tensor of one row index): a prefill captured as a CUDA graph
        (`reference_worker.prefill_graph`): the logits of that row only (`[1, vocab]`), and the token ids
        are not read back to be range-checked (the caller checked them)."""
        ...


def metadata_value(metadata: dict[str, Any], key: str, default: Any = ..., *, source: str = "") -> Any:
    """A metadata value, or `default`; a missing required key is a `ModelConfigError` naming it (and the
    file, when `source` is given)."""
    if key in metadata:
        return metadata[key]
    if default is ...:
        where = f"{source}: " if source else ""
        raise ModelConfigError(f"{where}required GGUF metadata key {key!r} is missing")
    return default


class TensorTable:
    """The loaded weights by GGUF name; a missing or mis-shaped tensor is a `ModelConfigError` naming it."""

    def __init__(self, weights: dict[str, QTensor], source: str, device: torch.device) -> None:
        self.weights, self.source, self.device = weights, source, device

    def matrix(self, name: str, *shape: int) -> QTensor:
        tensor = self.weights.get(name)
        if tensor is None:
            raise ModelConfigError(f"{self.source}: required tensor {name!r} is missing")
        if tensor.shape != shape:
            raise ModelConfigError(
                f"{self.source}: tensor {name!r} has shape {tensor.shape}, expected {shape}"
            )
        return tensor

    def vector(self, name: str, *shape: int) -> torch.Tensor:
        """Norms, biases, sinks: small and stored F32 in the files llama.cpp writes; used as float32."""
        return self.matrix(name, *shape).dequantize().float().to(self.device)

    def optional_vector(self, name: str, *shape: int) -> torch.Tensor | None:
        """`vector`, or None when the file has no such tensor (biases some architectures carry)."""
        return self.vector(name, *shape) if name in self.weights else None

    def has(self, name: str) -> bool:
        return name in self.weights


def next_positions(cache: KVCache, n_tokens: int, context_length: int, device: torch.device) -> torch.Tensor:
    """Positions of `n_tokens` appended to `cache`; running past the context window is an error."""
    start = cache.length
    if start + n_tokens > context_length:
        raise ValueError(f"position {start + n_tokens} exceeds the context length {context_length}")
    return torch.arange(start, start + n_tokens, device=device)


def largest_block_matrix_bytes(model: Any) -> int:
    """The weight bytes of the largest matrix a transformer block of `model` multiplies by itself (its 2-D
    tensors; a 3-D expert tensor is read a few experts at a time): how long its longest decode GEMV runs,
    which decides how its decode step's kernels launch (`kernels.dependent_launch.chosen_for`)."""
    return max(
        (
            t.nbytes
            for layer in getattr(model, "layers", ())
            for t in vars(layer).values()
            if isinstance(t, QTensor) and len(t.shape) == 2
        ),
        default=0,
    )


class GGUFAdapter:
    """The prologue every adapter shares: its config read from the file (`config_type.from_metadata`),
    the KV cache layout and allocator that config implies, the attention kernel by name, and the cache of
    a request. An adapter sets `config_type` and takes `(config, weights, device, attention, kv_allocator,
    *, source, kernels)` in its constructor."""

    config_type: Any  # a dataclass with from_metadata(metadata, weights, source), n_layer, n_head_kv, ...

    def __init__(
        self,
        config: Any,
        device: torch.device,
        attention: Any,
        kv_allocator: Any,
        kernels: KernelSet | None,
    ) -> None:
        """The attributes every adapter keeps; `kernels` defaults to the device's fast paths."""
        self.config, self.device = config, device
        self.attention, self.kv_allocator = attention, kv_allocator
        self.kernels = kernels or kernel_set(None, device)

    @classmethod
    def from_gguf(
        cls,
        gguf: Any,
        weights: dict[str, Any],
        device: torch.device,
        memory: Any,
        *,
        attention: str,
        kv_cache: str,
        kernels: KernelSet | None = None,
    ) -> Any:
        source = str(gguf.path)
        config = cls.config_type.from_metadata(gguf.metadata, weights, source)
        layout = KVLayout(config.n_layer, config.n_head_kv, config.head_dim)
        allocator = kv_cache_allocator(kv_cache, layout, memory, max_positions=config.context_length)
        return cls(
            config, weights, device, attention_kernel(attention), allocator, source=source, kernels=kernels
        )

    def new_cache(self, max_tokens: int) -> KVCache:
        return self.kv_allocator.new_cache(max_tokens)
