"""Checks a parsed GGUF file before any device allocation (M0-W-1210, M0-W-1211, M0-W-1020).

The reader already refuses what it cannot parse (magic, version, truncation, tensor count, unknown
ggml types, tensors outside the file); this adds what a model needs: required keys and a budget check.
"""

from __future__ import annotations

from dataclasses import dataclass

from .reader import GGUFError, GGUFFile

# M0-W-1211 names `llama.*`; the prefix is the file's own architecture (qwen2.*, phi3.*, gpt-oss.*).
REQUIRED_ARCH_KEYS = ("context_length", "embedding_length", "block_count")


class InsufficientDeviceMemory(GGUFError):
    """The model does not fit the device memory available (M0-W-1020)."""

    def __init__(self, message: str, required_bytes: int, available_bytes: int) -> None:
        super().__init__(message)
        self.required_bytes = required_bytes
        self.available_bytes = available_bytes


@dataclass(frozen=True)
class Validated:
    weight_bytes: int
    warnings: tuple[str, ...]


def weight_bytes(gguf: GGUFFile, alignment: int = 256) -> int:
    """Device bytes the weights take at most: each tensor may need `alignment - 1` bytes to start aligned."""
    return sum(t.nbytes + alignment - 1 for t in gguf.tensors.values())


def validate(gguf: GGUFFile, device_budget_bytes: int | None, *, gpu_device: int = 0) -> Validated:
    """Raises GGUFError naming the file and the problem; returns the weight bytes and any warnings."""
    path = gguf.path
    arch = gguf.metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise GGUFError(f"{path}: missing required metadata key 'general.architecture'")
    for key in (f"{arch}.{suffix}" for suffix in REQUIRED_ARCH_KEYS):
        value = gguf.metadata.get(key)
        if value is None:
            raise GGUFError(f"{path}: missing required metadata key {key!r}")
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise GGUFError(f"{path}: metadata {key!r} must be a positive integer, got {value!r}")
    if not gguf.tensors:
        raise GGUFError(f"{path}: the file holds no tensors")
    warnings: list[str] = []
    if not gguf.metadata.get("general.name"):
        warnings.append(f"{path}: no 'general.name' in the metadata; using the file name {path.stem!r}")
    required = weight_bytes(gguf)
    if device_budget_bytes is not None and required > device_budget_bytes:
        raise InsufficientDeviceMemory(
            f"{path}: insufficient device memory on GPU {gpu_device}: the weights need {required} bytes, "
            f"{device_budget_bytes} bytes available",
            required,
            device_budget_bytes,
        )
    return Validated(required, tuple(warnings))
