"""The CPU fast path: a dense half-precision copy of each quantized matrix, built once at load.

On CPU the reference path spends nearly all of a decode step dequantizing weight tiles that it throws
away again. This path dequantizes every quantized matrix once (with the reference dequantizers) into
float16 (`DenseCache`). A one-row product (decode) with a large matrix then reads the copy with
PyTorch's float16 GEMV (the row rounded to float16, float32 accumulation, the output rounded to float16
once: relative 2^-11 each); every other product widens bounded float16 tiles to float32 and multiplies
them in float32, as the reference path does. Embedding rows are gathered from the copy. Accumulation is
float32 throughout, and the stored bytes stay where they are (the reference path keeps reading them).

Why float16 and not float32: half the bytes to read per token (decode on CPU is memory-bound) and half
the memory held; the copy is reported in its own memory category, and a float32 copy of a 4-bit model
would not fit what M0-W-1201 allows a worker to hold. Precision: a dequantized value is a small integer
times an f16 scale (plus an f16 min), so float16 keeps it to within one rounding (relative 2^-11; exact
for most values); a tensor whose values float16 cannot hold (beyond +-65504) is left to the reference
path. F32/F16/BF16 tensors are not copied (the reference path reads them directly).

CPU only: on CUDA weights stay in their stored types and the Triton kernels serve them. The cache is
keyed by the storage of each `QTensor` and forgets an entry when the stored tensor is freed; a 3-D
expert tensor is cached whole and serves `QTensor.expert(i)` views. It is the CPU entry of
`kernels.backend.FAST_PATHS`: a model built with `KernelConfig(kernels="reference")` never uses it.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from kernels.formats import GGMLType
from kernels.qmatmul import FastPath
from kernels.qtensor import QTensor

CACHE_DTYPE = torch.float16
# Float32 bytes of one widened tile: fits a core's L2 cache, large enough that the per-tile overhead is
# small next to the multiply.
TILE_BYTES = 1 << 20
# Float32 bytes dequantized at a time while building the cache (bounds the transient memory of a load).
BUILD_TILE_BYTES = 4 << 20
# Weights from which a one-row product reads the float16 copy directly (PyTorch's float16 GEMV, float32
# accumulation): it reads half the bytes of a widened tile, which wins once the matrix is past the
# caches; below this, widening a tile and multiplying in float32 costs less per call (measured on AVX-512:
# 576x576 32 vs 61 us, 256x256 10 vs 7 us).
DIRECT_MIN_WEIGHTS = 1 << 18
# Types read directly by the reference path (no dequantization work to save).
PLAIN_TYPES = frozenset({GGMLType.F32, GGMLType.F16, GGMLType.BF16})

Allocate = Callable[[tuple[int, ...], torch.dtype], torch.Tensor]

_Key = tuple[int, tuple[int, ...], GGMLType]


@dataclass(frozen=True)
class _Entry:
    source: weakref.ref  # the stored bytes this copy was made from; dead -> the entry is stale
    dense: torch.Tensor  # (out, in) float16
    # Matrices of one input (q/k/v, gate/up) are copied one after another into one buffer, `block`;
    # `dense` is rows `rows` of it. None for a copy of its own.
    block: torch.Tensor | None = None
    rows: tuple[int, int] = (0, 0)


_table: dict[_Key, _Entry] = {}
_table_lock = threading.Lock()
_scratch = threading.local()


def _key(w: QTensor) -> _Key:
    return (w.data.data_ptr(), w.shape, w.qtype)


def cacheable(w: QTensor) -> bool:
    """A quantized 2-D matrix or 3-D expert tensor on the CPU."""
    return w.device.type == "cpu" and len(w.shape) in (2, 3) and w.qtype not in PLAIN_TYPES


def cache_nbytes(w: QTensor) -> int:
    """Bytes the dense copy of `w` holds."""
    n = 1
    for d in w.shape:
        n *= d
    return n * CACHE_DTYPE.itemsize


def dense_weight(w: QTensor) -> torch.Tensor | None:
    """The dense float16 `(out, in)` copy of matrix `w`, or None when it has none."""
    entry = _table.get(_key(w))
    if entry is None or entry.source() is None:
        return None
    return entry.dense


def _fill(dest: torch.Tensor, w: QTensor) -> bool:
    """Dequantizes `w` into `dest` tile by tile; False when a value does not fit float16.

    Each tile is dequantized (vectorised, the reference dequantizers) and rounded into its slice of
    `dest` in one pass; the range check then reads the float16 copy, half the bytes of the float32 tile:
    a value beyond float16's range became inf there, and inf or NaN in the file stay what they were."""
    rows, width = dest.shape
    step = max(1, BUILD_TILE_BYTES // (width * 4))
    for r0 in range(0, rows, step):
        r1 = min(r0 + step, rows)
        tile = dest[r0:r1]
        tile.copy_(w.dequantize(rows=slice(r0, r1)))
        if not bool(torch.isfinite(tile).all()):
            return False
    return True


def _remember(key: _Key, source: torch.Tensor, dense: torch.Tensor, **group) -> None:
    with _table_lock:
        _table[key] = _Entry(weakref.ref(source), dense, **group)
    weakref.finalize(source, _forget, key, dense)


def _forget(key: _Key, dense: torch.Tensor) -> None:
    with _table_lock:
        entry = _table.get(key)
        if entry is not None and entry.dense is dense:
            del _table[key]


@dataclass
class DenseCache:
    """What `build` made: the copies by tensor name, and the tensors left to the reference path."""

    tensors: dict[str, torch.Tensor]
    skipped: dict[str, str]  # name -> why

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


def _groupable(group: Sequence[QTensor]) -> bool:
    return (
        len(group) > 1
        and all(cacheable(w) and len(w.shape) == 2 and dense_weight(w) is None for w in group)
        and len({w.shape[1] for w in group}) == 1
        and len({_key(w) for w in group}) == len(group)
    )


def _build_group(group: Sequence[QTensor], allocate: Allocate, release, cache: DenseCache) -> bool:
    """Copies of the matrices of `group` (one input) one after another in one buffer, so that their
    products are one product; False (nothing kept) when a value does not fit float16."""
    block = allocate((sum(w.shape[0] for w in group), group[0].shape[1]), CACHE_DTYPE)
    bounds, r0 = [], 0
    for w in group:
        bounds.append((r0, r0 + w.shape[0]))
        if not _fill(block[r0 : r0 + w.shape[0]], w):
            release(block)
            return False
        r0 += w.shape[0]
    for w, rows in zip(group, bounds, strict=True):
        dense = block[rows[0] : rows[1]]
        _remember(_key(w), w.data, dense, block=block, rows=rows)
        cache.tensors[w.name] = dense
    return True


def build(
    weights: Iterable[QTensor],
    allocate: Allocate,
    *,
    release: Callable[[torch.Tensor], None],
    groups: Iterable[Sequence[QTensor]] = (),
) -> DenseCache:
    """Dense copies of every cacheable tensor of `weights`, each in memory from `allocate(shape, dtype)`
    (the caller's accounting); a copy that cannot be made is given back with `release`. Errors from
    `allocate` (e.g. a memory budget) propagate. Each of `groups` (matrices that multiply the same input,
    such as a layer's q, k and v) is copied into one buffer in its order, where they fit float16;
    `dense_qmatmuls` then serves them with one product."""
    cache = DenseCache({}, {})
    for group in groups:
        if _groupable(group):
            _build_group(group, allocate, release, cache)
    for w in weights:
        if not cacheable(w):
            continue
        if dense_weight(w) is not None or (len(w.shape) == 3 and dense_weight(w.expert(0)) is not None):
            continue  # already copied (e.g. a tied output matrix seen twice)
        dest = allocate(w.shape, CACHE_DTYPE)
        flat = dest.view(-1, w.shape[-1])
        rows = w if len(w.shape) == 2 else QTensor(w.data, w.qtype, (flat.shape[0], w.shape[-1]), w.name)
        if not _fill(flat, rows):
            release(dest)
            cache.skipped[w.name] = f"values beyond the {CACHE_DTYPE} range"
            continue
        if len(w.shape) == 2:
            _remember(_key(w), w.data, dest)
        else:
            for i in range(w.shape[0]):
                _remember(_key(w.expert(i)), w.data, dest[i])
        cache.tensors[w.name] = dest
    return cache


def _tile_buffer(n: int) -> torch.Tensor:
    """A float32 buffer of at least `n` elements, one per thread, reused across calls (widening into an
    existing buffer costs half of widening into a fresh tensor)."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.numel() < n:
        with torch.inference_mode(False):  # a normal tensor: writable inside and outside inference mode
            buf = _scratch.buf = torch.empty(n, dtype=torch.float32)
    return buf


def _product(x2: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """float32 `x2 @ dense.T`: float16 products accumulated in float32 for one row of a large matrix
    (decode), else float32 on widened tiles."""
    if x2.shape[0] == 1 and dense.numel() >= DIRECT_MIN_WEIGHTS:
        y = torch.nn.functional.linear(x2.to(CACHE_DTYPE), dense).float()
        if math.isfinite(y.sum().item()):  # else an input or output beyond float16's range (inf or NaN)
            return y
    return _tiled(x2.to(torch.float32), dense)


def dense_qmatmul(
    x: torch.Tensor, w: QTensor, bias: torch.Tensor | None, out_dtype: torch.dtype
) -> torch.Tensor:
    """`x @ W.T (+ bias)` from the float16 copy (`_product`)."""
    dense = dense_weight(w)
    assert dense is not None, "supports() admitted a tensor without a dense copy"
    out_features, in_features = w.shape
    y = _product(x.reshape(-1, in_features), dense)
    if bias is not None:
        y += bias.to(torch.float32)
    return y.view(*x.shape[:-1], out_features).to(out_dtype)


def dense_qmatmuls(
    x: torch.Tensor, weights: tuple[QTensor, ...], biases: tuple[torch.Tensor | None, ...]
) -> tuple[torch.Tensor, ...] | None:
    """`x @ W.T (+ b)` for each of `weights` as one product, when they were copied together, in this order
    (`build(groups=...)`); else None. The outputs are column slices of one float32 (x.dtype) buffer."""
    entries = [_table.get(_key(w)) for w in weights]
    block = entries[0].block if entries[0] is not None else None
    end = 0
    for e in entries:
        if e is None or e.block is not block or e.rows[0] != end or e.source() is None:
            return None
        end = e.rows[1]
    if block is None or end != block.shape[0]:
        return None
    y = _product(x.reshape(-1, block.shape[1]), block)
    outs = []
    for e, b in zip(entries, biases, strict=True):
        part = y[:, e.rows[0] : e.rows[1]]
        if b is not None:
            part += b.to(torch.float32)
        outs.append(part.view(*x.shape[:-1], part.shape[1]).to(x.dtype))
    return tuple(outs)


def _tiled(x2: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """float32 `x2 @ dense.T`, widening one bounded tile of rows at a time into a reused buffer."""
    out_features, in_features = dense.shape
    step = min(out_features, max(1, TILE_BYTES // (in_features * 4)))
    buf = _tile_buffer(step * in_features)
    if step == out_features:  # one tile (small matrices: the tiny models' decode): no output slicing
        tile = buf[: dense.numel()].view(dense.shape)
        tile.copy_(dense)
        return torch.mm(x2, tile.T)
    y = torch.empty(x2.shape[0], out_features, dtype=torch.float32)
    for r0 in range(0, out_features, step):
        r1 = min(r0 + step, out_features)
        tile = buf[: (r1 - r0) * in_features].view(r1 - r0, in_features)
        tile.copy_(dense[r0:r1])
        if x2.shape[0] == 1:  # decode: the output slice is contiguous, write it in place
            torch.mm(x2, tile.T, out=y[:, r0:r1])
        else:
            y[:, r0:r1] = x2 @ tile.T
    return y


def dense_embedding(ids: torch.Tensor, w: QTensor, *, checked: bool = True) -> torch.Tensor:
    """Rows `ids` of the embedding table `w` from its float16 copy, as float32 `(*ids.shape, dim)`."""
    dense = dense_weight(w)
    assert dense is not None, "supports() admitted a tensor without a dense copy"
    flat = ids.reshape(-1)
    if checked and flat.numel() and not bool(((flat >= 0) & (flat < dense.shape[0])).all()):
        raise IndexError(f"tensor {w.name!r}: token id out of range [0, {dense.shape[0]})")
    return dense[flat].float().view(*ids.shape, dense.shape[1])


def _supports(x: torch.Tensor, w: QTensor) -> bool:
    return dense_weight(w) is not None


FAST_PATH = FastPath(
    name="cpu-dense-f16",
    devices=("cpu",),
    supports=_supports,
    qmatmul=dense_qmatmul,
    qembedding=dense_embedding,
    qmatmuls=dense_qmatmuls,
)
