"""GGUF v3 files: the reader (mmap, own parser) and the checks run before loading (M0-W-1200..1211)."""

from .reader import GGUFError, GGUFFile, TensorInfo
from .validate import InsufficientDeviceMemory, Validated, validate, weight_bytes

__all__ = [
    "GGUFError",
    "GGUFFile",
    "InsufficientDeviceMemory",
    "TensorInfo",
    "Validated",
    "validate",
    "weight_bytes",
]
