"""A quick look at a GGUF header: the few keys that identify a model file, without reading its tensors.

gguf-py (which `steps.models` uses for every expectation) parses each vocabulary entry into Python
objects, seconds per file for a 150k-token vocabulary. Telling which catalogue file an attached worker
serves needs five values of every file, so this reader walks the key/value section with `struct` and
stops once it has them. It is only used to identify files, never to judge a worker.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

GGUF_MAGIC = b"GGUF"
# GGUF value types: fixed sizes in bytes; 8 = string, 9 = array.
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_FORMATS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
STRING, ARRAY = 8, 9


class GGUFPeekError(ValueError):
    """Not a GGUF v2/v3 file, or a truncated header."""


@dataclass(frozen=True)
class FileIdentity:
    architecture: str | None
    name: str | None  # general.name
    file_type: int | None  # general.file_type
    context_length: int | None
    vocab_size: int | None  # number of tokenizer.ggml.tokens


def peek(path: Path) -> FileIdentity:
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            return _scan(data)
        except (struct.error, IndexError, UnicodeDecodeError) as exc:
            raise GGUFPeekError(f"{path}: unreadable GGUF header ({exc})") from None


def _scan(data: mmap.mmap) -> FileIdentity:
    if data[:4] != GGUF_MAGIC:
        raise GGUFPeekError("not a GGUF file")
    version, _tensors, kv_count = struct.unpack_from("<IQQ", data, 4)
    if version < 2:
        raise GGUFPeekError(f"GGUF version {version} is not supported")
    offset = 24
    found: dict[str, object] = {}
    wanted = {"general.architecture", "general.name", "general.file_type", "tokenizer.ggml.tokens"}
    for _ in range(kv_count):
        key, offset = _string(data, offset)
        (kind,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if kind == ARRAY:
            (item_kind, count) = struct.unpack_from("<IQ", data, offset)
            offset += 12
            if key == "tokenizer.ggml.tokens":
                found[key] = count
            offset = _skip_array(data, offset, item_kind, count)
        else:
            value, offset = _value(data, offset, kind)
            found[key] = value
        architecture = found.get("general.architecture")
        context_key = f"{architecture}.context_length"
        if wanted <= found.keys() and context_key in found:
            break
    architecture = found.get("general.architecture")
    context = found.get(f"{architecture}.context_length")
    return FileIdentity(
        architecture=str(architecture) if architecture is not None else None,
        name=str(found["general.name"]) if "general.name" in found else None,
        file_type=int(found["general.file_type"]) if "general.file_type" in found else None,  # type: ignore[arg-type]
        context_length=int(context) if isinstance(context, int) else None,
        vocab_size=int(found["tokenizer.ggml.tokens"]) if "tokenizer.ggml.tokens" in found else None,  # type: ignore[arg-type]
    )


def _string(data: mmap.mmap, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<Q", data, offset)
    start = offset + 8
    return data[start : start + length].decode("utf-8"), start + length


def _value(data: mmap.mmap, offset: int, kind: int) -> tuple[object, int]:
    if kind == STRING:
        return _string(data, offset)
    (value,) = struct.unpack_from(_FORMATS[kind], data, offset)
    return value, offset + _FIXED[kind]


def _skip_array(data: mmap.mmap, offset: int, kind: int, count: int) -> int:
    if kind in _FIXED:
        return offset + _FIXED[kind] * count
    if kind == STRING:
        for _ in range(count):
            (length,) = struct.unpack_from("<Q", data, offset)
            offset += 8 + length
        return offset
    for _ in range(count):  # nested arrays
        (item_kind, inner) = struct.unpack_from("<IQ", data, offset)
        offset = _skip_array(data, offset + 12, item_kind, inner)
    return offset
