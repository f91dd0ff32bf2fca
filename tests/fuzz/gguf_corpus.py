"""A corpus of broken GGUF files, generated from a good one (never stored): each `Mutation` changes the
file in one place. The layout of the good file is read with gguf-py's `GGUFReader`, a parser apart from
the worker's, so the mutations hit real section boundaries and fields.

Kinds: truncation at every section boundary (and one byte before it), bit flips in the header, counts
and offsets past the end, absurd dimensions, duplicate tensor names, unknown tensor and metadata types,
huge metadata strings and arrays, misaligned tensor data.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gguf import GGUFReader, GGUFValueType

HEADER_BYTES = 24  # magic, version, tensor count, metadata count


@dataclass(frozen=True)
class Mutation:
    kind: str
    where: str
    apply: Callable[[bytes], bytes]

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.where}"


@dataclass(frozen=True)
class _Field:
    name: str
    start: int
    part_offsets: tuple[int, ...]  # absolute byte offset of each part
    end: int


def _field(name: str, offset: int, parts) -> _Field:
    offsets, pos = [], offset
    for part in parts:
        offsets.append(pos)
        pos += part.nbytes
    return _Field(name, offset, tuple(offsets), pos)


def _put(data: bytes, at: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


def _truncate(n: int) -> Callable[[bytes], bytes]:
    return lambda data: data[:n]


def _flip(byte: int, bit: int) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        out = bytearray(data)
        out[byte] ^= 1 << bit
        return bytes(out)

    return apply


def mutations(good: Path) -> Iterator[Mutation]:
    reader = GGUFReader(good)
    size = good.stat().st_size
    kvs = [_field(n, f.offset, f.parts) for n, f in reader.fields.items() if not n.startswith("GGUF.")]
    infos = [_field(t.name, t.field.offset, t.field.parts) for t in reader.tensors]
    value_types = {n: f.types for n, f in reader.fields.items()}

    # Truncation at every section boundary, and one byte short of it.
    boundaries = {4: "magic", 8: "version", 16: "tensor_count", HEADER_BYTES: "header"}
    boundaries |= {f.end: f"metadata {f.name}" for f in kvs}
    boundaries |= {f.end: f"tensor info {f.name}" for f in infos}
    boundaries[reader.data_offset] = "data start"
    for t in reader.tensors:
        boundaries[int(t.data_offset) + int(t.n_bytes)] = f"data of {t.name}"
    for at, what in sorted(boundaries.items()):
        if at < size:
            yield Mutation("truncate", f"after {what} ({at} bytes)", _truncate(at))
        yield Mutation("truncate", f"1 byte short of {what}", _truncate(at - 1))
    yield Mutation("truncate", "empty file", _truncate(0))

    # Every bit of the header.
    for byte in range(HEADER_BYTES):
        for bit in range(8):
            yield Mutation("header_bit_flip", f"byte {byte} bit {bit}", _flip(byte, bit))

    # Counts past the end.
    for count in (len(reader.tensors) + 1, 9_999, 1 << 32, (1 << 64) - 1):
        yield Mutation("tensor_count", str(count), lambda d, c=count: _put(d, 8, "<Q", c))
    for count in (len(kvs) + 1, 1 << 31, (1 << 64) - 1):
        yield Mutation("metadata_count", str(count), lambda d, c=count: _put(d, 16, "<Q", c))

    for f in infos:
        # parts: name length, name, n_dims, dims, type, offset
        n_dims_at, dims_at, type_at, offset_at = f.part_offsets[2:6]
        rel = size - reader.data_offset
        for offset, what in (
            (rel, "at the end"),
            (rel + (1 << 20), "past the end"),
            ((1 << 64) - 32, "2^64"),
        ):
            yield Mutation(
                "tensor_offset", f"{f.name} {what}", lambda d, a=offset_at, o=offset: _put(d, a, "<Q", o)
            )
        yield Mutation("misaligned", f"{f.name} +1", lambda d, a=offset_at: _put(d, a, "<Q", _get(d, a) + 1))
        for dim in (0, 1 << 40, (1 << 64) - 1):
            yield Mutation(
                "dimension", f"{f.name} ne0={dim}", lambda d, a=dims_at, v=dim: _put(d, a, "<Q", v)
            )
        for n in (0, 5, 1 << 31):
            yield Mutation("n_dims", f"{f.name} {n}", lambda d, a=n_dims_at, v=n: _put(d, a, "<I", v))
        for type_id in (4, 5, 99, 1 << 31):  # 4 and 5 are ggml's removed Q4_2/Q4_3
            yield Mutation(
                "tensor_type", f"{f.name} {type_id}", lambda d, a=type_at, v=type_id: _put(d, a, "<I", v)
            )
    for a, b in zip(infos, infos[1:], strict=False):
        if len(a.name) == len(b.name):  # same length: the file keeps its layout
            yield Mutation("duplicate_name", f"{b.name} -> {a.name}", _rename(b.part_offsets[1], a.name))

    for f in kvs:
        # parts: key length, key, value type, then the value (string: length, bytes; array: type, count, ...)
        type_at = f.part_offsets[2]
        yield Mutation("metadata_type", f"{f.name} 99", lambda d, a=type_at: _put(d, a, "<I", 99))
        first = value_types[f.name][0]
        if first == GGUFValueType.STRING:
            length_at = f.part_offsets[3]
            for n in (size, 1 << 40, (1 << 64) - 1):
                yield Mutation(
                    "huge_string", f"{f.name} {n}", lambda d, a=length_at, v=n: _put(d, a, "<Q", v)
                )
        elif first == GGUFValueType.ARRAY:
            elem_type_at, count_at = f.part_offsets[3], f.part_offsets[4]
            for n in (size, 1 << 40, (1 << 64) - 1):
                yield Mutation("huge_array", f"{f.name} {n}", lambda d, a=count_at, v=n: _put(d, a, "<Q", v))
            yield Mutation("array_type", f"{f.name} 99", lambda d, a=elem_type_at: _put(d, a, "<I", 99))
        yield Mutation("key_length", f"{f.name} 2^63", lambda d, a=f.start: _put(d, a, "<Q", 1 << 63))


def _get(data: bytes, at: int) -> int:
    return struct.unpack_from("<Q", data, at)[0]


def _rename(name_at: int, new: str) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        raw = new.encode()
        return data[:name_at] + raw + data[name_at + len(raw) :]

    return apply
