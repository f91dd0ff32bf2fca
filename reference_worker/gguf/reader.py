"""A GGUF v3 reader over a read-only mmap: header, metadata, tensor infos, zero-copy tensor bytes.

Layout (little-endian): magic "GGUF", u32 version, u64 tensor_count, u64 kv_count; kv_count entries
`{string key, u32 value_type, value}`; tensor_count infos `{string name, u32 n_dims, u64 ne[n_dims],
u32 ggml_type, u64 offset}`; padding to `general.alignment` (default 32); tensor data. A string is
`{u64 length, utf-8 bytes}`; an array is `{u32 element_type, u64 count, elements}`.

Every length read from the file is checked against the file size before it is used, so a truncated or
corrupt file gives a `GGUFError` naming the file and the problem (M0-W-1210/1211), never an IndexError.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kernels.formats import GGMLType, QuantFormatError, ggml_type, tensor_nbytes

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSION = 3
MAX_TENSORS = 10_000  # M0-W-1210: tensor count < 10,000
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # M0-W-1211: dimensions[4]

# GGUF metadata value types.
(
    _UINT8,
    _INT8,
    _UINT16,
    _INT16,
    _UINT32,
    _INT32,
    _FLOAT32,
    _BOOL,
    _STRING,
    _ARRAY,
    _UINT64,
    _INT64,
    _FLOAT64,
) = range(13)
_SCALARS: dict[int, struct.Struct] = {
    _UINT8: struct.Struct("<B"),
    _INT8: struct.Struct("<b"),
    _UINT16: struct.Struct("<H"),
    _INT16: struct.Struct("<h"),
    _UINT32: struct.Struct("<I"),
    _INT32: struct.Struct("<i"),
    _FLOAT32: struct.Struct("<f"),
    _BOOL: struct.Struct("<?"),
    _UINT64: struct.Struct("<Q"),
    _INT64: struct.Struct("<q"),
    _FLOAT64: struct.Struct("<d"),
}
_NUMPY: dict[int, str] = {
    _UINT8: "<u1",
    _INT8: "<i1",
    _UINT16: "<u2",
    _INT16: "<i2",
    _UINT32: "<u4",
    _INT32: "<i4",
    _FLOAT32: "<f4",
    _BOOL: "?",
    _UINT64: "<u8",
    _INT64: "<i8",
    _FLOAT64: "<f8",
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HEADER = struct.Struct("<4sIQQ")


class GGUFError(ValueError):
    """The file cannot be used as a model. The message names the file and the problem."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    qtype: GGMLType
    shape: tuple[int, ...]  # PyTorch order: the last dim is ggml's contiguous ne0
    offset: int  # absolute, from the start of the file
    nbytes: int


class _Cursor:
    """Reads GGUF values from a buffer, checking every read against its end."""

    def __init__(self, buf: memoryview, path: Path) -> None:
        self.buf = buf
        self.size = len(buf)
        self.pos = 0
        self.path = path

    def fail(self, problem: str) -> GGUFError:
        return GGUFError(f"{self.path}: {problem}")

    def need(self, nbytes: int, what: str) -> None:
        if self.pos + nbytes > self.size:
            raise self.fail(
                f"truncated file: {what} at byte {self.pos} needs {nbytes} bytes, "
                f"only {self.size - self.pos} left (file size {self.size})"
            )

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def string(self, what: str) -> str:
        n = self.u64(f"length of {what}")
        self.need(n, what)
        start = self.pos
        self.pos += n
        return self._decode(start, n, what)

    def _decode(self, start: int, n: int, what: str) -> str:
        try:
            return str(self.buf[start : start + n], "utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} at byte {start} is not valid UTF-8 ({e.reason})") from None

    def value(self, vtype: int, what: str) -> Any:
        scalar = _SCALARS.get(vtype)
        if scalar is not None:
            self.need(scalar.size, what)
            (v,) = scalar.unpack_from(self.buf, self.pos)
            self.pos += scalar.size
            return v
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            return self.array(what)
        raise self.fail(f"{what} has unknown value type {vtype}")

    def array(self, what: str) -> list[Any]:
        etype = self.u32(f"element type of {what}")
        count = self.u64(f"length of {what}")
        if etype in _NUMPY:
            dtype = np.dtype(_NUMPY[etype])
            self.need(count * dtype.itemsize, f"{count} elements of {what}")
            values = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
            self.pos += count * dtype.itemsize
            return values.tolist()
        if etype == _STRING:
            return self._string_array(count, what)
        if etype == _ARRAY:
            return [self.array(f"{what}[{i}]") for i in range(count)]
        raise self.fail(f"{what} has unknown element type {etype}")

    def _string_array(self, count: int, what: str) -> list[str]:
        # The hot path for 150k-token vocabularies: one unpack and one decode per element, no calls.
        if count * 8 > self.size - self.pos:
            raise self.fail(f"truncated file: {what} claims {count} strings, more than the file can hold")
        buf, size, pos, unpack = self.buf, self.size, self.pos, _U64.unpack_from
        out: list[str] = [""] * count
        try:
            for i in range(count):
                (n,) = unpack(buf, pos)
                pos += 8
                end = pos + n
                if end > size:
                    self.pos = pos
                    raise self.fail(f"truncated file: {what}[{i}] at byte {pos} runs past the end ({size})")
                out[i] = str(buf[pos:end], "utf-8")
                pos = end
        except struct.error:
            raise self.fail(f"truncated file: length of {what} element at byte {pos}") from None
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} element at byte {pos} is not valid UTF-8 ({e.reason})") from None
        self.pos = pos
        return out


class GGUFFile:
    """An open GGUF file: parsed metadata and tensor infos, tensor bytes served from the mmap."""

    def __init__(
        self,
        path: Path,
        version: int,
        metadata: dict[str, Any],
        tensors: dict[str, TensorInfo],
        alignment: int,
        data_offset: int,
        file_size: int,
        mapping: mmap.mmap | None,
    ) -> None:
        self.path = path
        self.version = version
        self.metadata = metadata
        self.tensors = tensors
        self.alignment = alignment
        self.data_offset = data_offset
        self.file_size = file_size
        self._mmap = mapping

    @classmethod
    def open(cls, path: str | Path) -> GGUFFile:
        path = Path(path)
        try:
            with open(path, "rb") as f:
                size = f.seek(0, 2)
                if size < _HEADER.size:
                    raise GGUFError(f"{path}: not a GGUF file: {size} bytes is shorter than the GGUF header")
                mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise GGUFError(f"{path}: cannot read model file: {e.strerror or e}") from None
        try:
            with memoryview(mapping) as buf:
                return cls._parse(path, buf, mapping)
        except BaseException:
            try:
                mapping.close()
            except BufferError:  # a view still referenced by the traceback; the GC unmaps it later
                pass
            raise

    @classmethod
    def _parse(cls, path: Path, buf: memoryview, mapping: mmap.mmap) -> GGUFFile:
        magic, version, n_tensors, n_kv = _HEADER.unpack_from(buf, 0)
        if magic != GGUF_MAGIC:
            raise GGUFError(f"{path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
        if version != SUPPORTED_VERSION:
            raise GGUFError(f"{path}: unsupported GGUF version {version} (need {SUPPORTED_VERSION})")
        if n_tensors >= MAX_TENSORS:
            raise GGUFError(f"{path}: tensor count {n_tensors} is not below the limit of {MAX_TENSORS}")
        cur = _Cursor(buf, path)
        cur.pos = _HEADER.size
        # Each entry takes at least 13 bytes (empty key, type, one-byte value).
        if n_kv * 13 > cur.size - cur.pos:
            raise GGUFError(f"{path}: metadata count {n_kv} cannot fit in a file of {cur.size} bytes")
        metadata: dict[str, Any] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            vtype = cur.u32(f"value type of {key!r}")
            metadata[key] = cur.value(vtype, f"metadata {key!r}")
        infos = [cls._tensor_info(cur, i) for i in range(n_tensors)]
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & 7:
            raise GGUFError(f"{path}: general.alignment {alignment!r} is not a positive multiple of 8")
        data_offset = -(-cur.pos // alignment) * alignment
        tensors: dict[str, TensorInfo] = {}
        for name, qtype, shape, rel in infos:
            if name in tensors:
                raise GGUFError(f"{path}: tensor {name!r} appears twice")
            if rel % alignment:
                raise GGUFError(f"{path}: tensor {name!r} offset {rel} is not a multiple of {alignment}")
            try:
                nbytes = tensor_nbytes(qtype, shape, name=name)
            except QuantFormatError as e:
                raise GGUFError(f"{path}: {e}") from None
            start = data_offset + rel
            if start + nbytes > cur.size:
                raise GGUFError(
                    f"{path}: tensor {name!r} ({qtype.name}, {nbytes} bytes at byte {start}) runs past the "
                    f"end of the file ({cur.size} bytes): truncated file?"
                )
            tensors[name] = TensorInfo(name, qtype, shape, start, nbytes)
        return cls(path, version, metadata, tensors, alignment, data_offset, cur.size, mapping)

    @staticmethod
    def _tensor_info(cur: _Cursor, i: int) -> tuple[str, GGMLType, tuple[int, ...], int]:
        name = cur.string(f"name of tensor #{i}")
        n_dims = cur.u32(f"dimension count of tensor {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise cur.fail(f"tensor {name!r} has {n_dims} dimensions (1..{MAX_DIMS} supported)")
        ne = [cur.u64(f"dimensions of tensor {name!r}") for _ in range(n_dims)]
        if 0 in ne:  # ggml has no empty tensors; a 0 would also hide a wrong shape from the model's checks
            raise cur.fail(f"tensor {name!r} has a dimension of 0 ({ne}, innermost first)")
        type_id = cur.u32(f"type of tensor {name!r}")
        try:
            qtype = ggml_type(type_id, name=name)
        except QuantFormatError as e:
            raise cur.fail(str(e)) from None
        offset = cur.u64(f"offset of tensor {name!r}")
        return name, qtype, tuple(reversed(ne)), offset

    @property
    def architecture(self) -> str:
        return self.metadata.get("general.architecture", "")

    @property
    def model_name(self) -> str:
        """`general.name`, or the file stem when the file has none."""
        name = self.metadata.get("general.name")
        return name if isinstance(name, str) and name else self.path.stem

    @property
    def is_open(self) -> bool:
        return self._mmap is not None

    def tensor_bytes(self, name: str) -> memoryview:
        """The tensor's bytes, zero-copy over the mmap. Release the view before `close()`."""
        if self._mmap is None:
            raise GGUFError(f"{self.path}: file is closed; tensor {name!r} is no longer mapped")
        info = self.tensors[name]
        return memoryview(self._mmap)[info.offset : info.offset + info.nbytes]

    def close(self) -> None:
        """Unmaps the file; metadata and tensor infos stay available."""
        if self._mmap is not None:
            self._mmap.close()
            self._mmap = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
