"""What a model file says about the device memory a worker serving it may report, derived from the file
alone with gguf-py (M0-SYS-2.2.1, M0-W-1011, M0-W-1201, M0-W-1220).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

MIB = 1 << 20
WEIGHT_SLACK = 1.2  # device bytes for weights may exceed the file's tensor bytes by 20% (layout, padding)
WEIGHT_FLOOR = 0.95  # and must hold at least 95% of them
ALIGNMENT = 256  # M0-W-1220: per-tensor alignment padding
SCRATCH_POSITIONS = 512  # intermediates of one step over at most this many positions


@dataclass(frozen=True)
class MemoryEnvelope:
    """Device bytes a worker serving the file may report, derived from the file alone.

    lower: the tensors themselves (weights must be in device memory: M0-SYS-2.2.1, M0-W-1011).
    upper: the tensors in their stored types with 20% slack and alignment padding, plus a KV cache for
    the whole context in FP32 and the intermediates of one step over up to 512 positions. A full-precision
    copy of the weights (M0-W-1201) does not fit.
    """

    tensor_bytes: int
    tensors: int
    kv_cache_bytes: int
    scratch_bytes: int

    @property
    def lower(self) -> int:
        return int(self.tensor_bytes * WEIGHT_FLOOR)

    @property
    def upper(self) -> int:
        weights = int(self.tensor_bytes * WEIGHT_SLACK) + ALIGNMENT * self.tensors
        return weights + self.kv_cache_bytes + self.scratch_bytes

    def describe(self) -> str:
        return (
            f"tensors {self.tensor_bytes} bytes in {self.tensors} tensors, KV allowance {self.kv_cache_bytes}, "
            f"scratch allowance {self.scratch_bytes}: accepted {self.lower}..{self.upper}"
        )


@cache
def memory_envelope(path: Path) -> MemoryEnvelope:
    import gguf

    reader = gguf.GGUFReader(path)

    def number(key: str, default: int = 0) -> int:
        item = reader.get_field(key)
        return int(item.contents()) if item is not None else default

    arch = str(reader.get_field("general.architecture").contents())
    layers = number(f"{arch}.block_count")
    context = number(f"{arch}.context_length")
    embedding = number(f"{arch}.embedding_length")
    heads = max(1, number(f"{arch}.attention.head_count", 1))
    kv_heads = number(f"{arch}.attention.head_count_kv", heads)
    key_length = number(f"{arch}.attention.key_length", embedding // heads)
    value_length = number(f"{arch}.attention.value_length", embedding // heads)
    feed_forward = number(f"{arch}.feed_forward_length", 4 * embedding)
    tokens = reader.get_field("tokenizer.ggml.tokens")
    vocab = len(tokens.data) if tokens is not None else 0
    return MemoryEnvelope(
        tensor_bytes=sum(int(tensor.n_bytes) for tensor in reader.tensors),
        tensors=len(reader.tensors),
        kv_cache_bytes=layers * context * kv_heads * (key_length + value_length) * 4,
        scratch_bytes=min(context, SCRATCH_POSITIONS) * (embedding + feed_forward + vocab) * 4,
    )
