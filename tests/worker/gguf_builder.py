"""GGUF files built byte by byte for the worker's tests, so each can be broken in one precise place."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernels.formats import GGMLType, tensor_nbytes

_STRING, _ARRAY = 8, 9
_SCALAR_CODES = {bool: (7, "<?"), int: (4, "<I"), float: (6, "<f")}


def _string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _value(v: Any) -> tuple[int, bytes]:
    if isinstance(v, str):
        return _STRING, _string(v)
    if isinstance(v, list):
        etype, _ = _value(v[0])
        return _ARRAY, struct.pack("<IQ", etype, len(v)) + b"".join(_value(x)[1] for x in v)
    code, fmt = _SCALAR_CODES[type(v)]
    return code, struct.pack(fmt, v)


@dataclass
class GGUFSpec:
    """What `build` writes; tests change one field to break the file in one place."""

    metadata: dict[str, Any] = field(
        default_factory=lambda: {
            "general.architecture": "llama",
            "general.name": "tiny",
            "llama.context_length": 64,
            "llama.embedding_length": 32,
            "llama.block_count": 1,
            "general.file_type": 7,
        }
    )
    tensors: list[tuple[str, int, tuple[int, ...]]] = field(
        default_factory=lambda: [
            ("token_embd.weight", int(GGMLType.Q8_0), (16, 32)),
            ("output_norm.weight", int(GGMLType.F32), (32,)),
            ("blk.0.attn_q.weight", int(GGMLType.Q4_0), (32, 64)),
        ]
    )
    version: int = 3
    magic: bytes = b"GGUF"
    tensor_count: int | None = None  # header override
    kv_count: int | None = None  # header override
    offset_shift: int = 0  # added to the last tensor's offset
    alignment: int = 32
    seed: int = 0

    def build(self) -> tuple[bytes, dict[str, bytes]]:
        """The file's bytes and each tensor's data."""
        kv = b"".join(
            _string(k) + struct.pack("<I", _value(v)[0]) + _value(v)[1] for k, v in self.metadata.items()
        )
        rng = np.random.default_rng(self.seed)
        infos, blobs, data, offset = b"", b"", {}, 0
        for i, (name, type_id, shape) in enumerate(self.tensors):
            try:
                nbytes = tensor_nbytes(GGMLType(type_id), shape)
            except ValueError:  # an unknown type or a bad shape: the reader must refuse it first
                nbytes = 64
            blob = rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()
            if type_id == GGMLType.F32:  # finite floats
                blob = rng.standard_normal(nbytes // 4, dtype=np.float32).tobytes()
            data[name] = blob
            shift = self.offset_shift if i == len(self.tensors) - 1 else 0
            ne = tuple(reversed(shape))
            infos += _string(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, type_id, offset + shift)
            pad = -len(blob) % self.alignment
            blobs += blob + b"\0" * pad
            offset += len(blob) + pad
        header = struct.pack(
            "<4sIQQ",
            self.magic,
            self.version,
            len(self.tensors) if self.tensor_count is None else self.tensor_count,
            len(self.metadata) if self.kv_count is None else self.kv_count,
        )
        head = header + kv + infos
        return head + b"\0" * (-len(head) % self.alignment) + blobs, data
