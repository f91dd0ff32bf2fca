"""QTensor: a weight kept in its stored ggml type on its device, dequantized only where it is used."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kernels.dequant import check_layout, dequantize
from kernels.formats import FORMATS, GGMLType, ggml_type, tensor_nbytes

# Plain float dtypes a QTensor can be built from, and their ggml types.
_FLOAT_TYPES: dict[torch.dtype, GGMLType] = {
    torch.float32: GGMLType.F32,
    torch.float16: GGMLType.F16,
    torch.bfloat16: GGMLType.BF16,
}

Rows = slice | torch.Tensor | None

# How `data` orders a tensor's blocks. GGML: as in the file, block after block. CODES_THEN_SCALES (the
# types of `SCALES`): per matrix (the whole tensor if 2-D, each expert if 3-D), every block's bytes but its
# scale ("codes"), then every block's scale: the same bytes, regrouped so the codes of a row start 16-byte
# aligned and a GEMV can read them with 16-byte loads (the file's 17-byte MXFP4 blocks only allow byte
# loads, its 34-byte Q8_0 and 210-byte Q6_K blocks halfword loads).
GGML = "ggml"
CODES_THEN_SCALES = "codes-then-scales"
# Where a block keeps the scale CODES_THEN_SCALES moves apart, (offset, bytes), by the types that have the
# layout: MXFP4's E8M0 byte before 16 bytes of 4-bit codes, Q8_0's float16 before 32 int8 codes, Q6_K's
# float16 `d` after its 208 bytes of ql, qh and 8-bit scales.
SCALES = {GGMLType.MXFP4: (0, 1), GGMLType.Q8_0: (0, 2), GGMLType.Q6_K: (208, 2)}


def code_bytes(qtype: GGMLType) -> int:
    """Bytes of a block of `qtype` that CODES_THEN_SCALES keeps with the codes."""
    return FORMATS[qtype].type_size - SCALES[qtype][1]


def codes_then_scales(data: torch.Tensor, n_matrices: int, qtype: GGMLType) -> torch.Tensor:
    """The CODES_THEN_SCALES bytes of `n_matrices` equal matrices of `qtype` stored in the file's order."""
    at, size = SCALES[qtype]
    blocks = data.view(n_matrices, -1, FORMATS[qtype].type_size)
    codes = torch.cat([blocks[:, :, :at], blocks[:, :, at + size :]], dim=2)
    scales = blocks[:, :, at : at + size]
    return torch.cat([codes.reshape(n_matrices, -1), scales.reshape(n_matrices, -1)], dim=1).reshape(-1)


def file_order(data: torch.Tensor, n_matrices: int, qtype: GGMLType) -> torch.Tensor:
    """The inverse of `codes_then_scales`: the file's block order again."""
    at, size = SCALES[qtype]
    per_matrix = data.view(n_matrices, -1)
    n_blocks = per_matrix.shape[1] // FORMATS[qtype].type_size
    all_codes = n_blocks * code_bytes(qtype)
    codes = per_matrix[:, :all_codes].reshape(n_matrices, n_blocks, code_bytes(qtype))
    scales = per_matrix[:, all_codes:].reshape(n_matrices, n_blocks, size)
    return torch.cat([codes[:, :, :at], scales, codes[:, :, at:]], dim=2).reshape(-1)


@dataclass(frozen=True)
class QTensor:
    """Packed ggml bytes plus what is needed to read them.

    `data` is 1-D uint8 holding the tensor exactly as stored in the GGUF file (for F32/F16/BF16 the
    little-endian values themselves). `shape` is PyTorch order: `(out_features, in_features)` for a
    matrix, `(n_expert, out, in)` for a 3-D expert tensor; the last dim is ggml's contiguous `ne0`.
    """

    data: torch.Tensor
    qtype: GGMLType
    shape: tuple[int, ...]
    name: str = ""
    layout: str = GGML  # the block order of `data` (GGML or CODES_THEN_SCALES, see above)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "qtype", check_layout(self.data, self.qtype, self.shape, name=self.name))
        if self.data.dim() != 1:
            raise ValueError(
                f"tensor {self.name!r}: packed data must be 1-D, got shape {tuple(self.data.shape)}"
            )
        if self.layout not in (GGML, CODES_THEN_SCALES) or (
            self.layout == CODES_THEN_SCALES and self.qtype not in SCALES
        ):
            raise ValueError(f"tensor {self.name!r}: layout {self.layout!r} is not one for {self.qtype.name}")

    @property
    def n_matrices(self) -> int:
        """Matrices of a CODES_THEN_SCALES tensor: each expert of a 3-D tensor, else the whole tensor."""
        return self.shape[0] if len(self.shape) == 3 else 1

    def codes_then_scales_in_place(self) -> QTensor:
        """This tensor's bytes regrouped CODES_THEN_SCALES in its own storage, one matrix at a time (a
        matrix-sized scratch, no second copy of the tensor); the returned QTensor reads them. This object
        must not be used afterwards: it still claims the file's order. A type of `SCALES` only."""
        if self.qtype not in SCALES or self.layout != GGML:
            names = ", ".join(t.name for t in SCALES)
            raise ValueError(f"tensor {self.name!r}: only a {names} tensor in file order can be regrouped")
        per_matrix = self.data.view(self.n_matrices, -1)
        for matrix in per_matrix:
            matrix.copy_(codes_then_scales(matrix, 1, self.qtype))
        return QTensor(self.data, self.qtype, self.shape, self.name, CODES_THEN_SCALES)

    def in_file_order(self) -> QTensor:
        """This tensor with its blocks in the file's order (itself when they are; else a copy)."""
        if self.layout == GGML:
            return self
        data = file_order(self.data, self.n_matrices, self.qtype)
        return QTensor(data, self.qtype, self.shape, self.name)

    @classmethod
    def from_bytes(
        cls,
        buffer: bytes | bytearray | memoryview | np.ndarray,
        qtype: GGMLType | int,
        shape: tuple[int, ...],
        name: str = "",
        device: torch.device | str = "cpu",
    ) -> QTensor:
        """Copy a tensor's file bytes (e.g. a zero-copy view over a GGUF mmap) onto `device`."""
        host = torch.frombuffer(bytearray(memoryview(buffer).cast("B")), dtype=torch.uint8)
        check_layout(host, qtype, tuple(shape), name=name)  # before any device allocation
        return cls(host.to(device), ggml_type(int(qtype), name=name), shape, name)

    @classmethod
    def from_float(cls, values: torch.Tensor, name: str = "") -> QTensor:
        """Wrap an F32/F16/BF16 tensor (same device, no conversion) as a QTensor of the matching type."""
        qtype = _FLOAT_TYPES.get(values.dtype)
        if qtype is None:
            raise ValueError(
                f"tensor {name!r}: {values.dtype} is not a ggml float type (float32/float16/bfloat16)"
            )
        data = values.contiguous().reshape(-1).view(torch.uint8)
        return cls(data, qtype, tuple(values.shape), name)

    @property
    def nbytes(self) -> int:
        return self.data.numel()

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def row_bytes(self) -> int:
        """Bytes of one index along the leading dim (a matrix row, or a whole expert of a 3-D tensor)."""
        return tensor_nbytes(self.qtype, self.shape[1:], name=self.name)

    def to(self, device: torch.device | str) -> QTensor:
        return QTensor(self.data.to(device), self.qtype, self.shape, self.name, self.layout)

    def dequantize(self, rows: Rows = None, *, checked: bool = True) -> torch.Tensor:
        """Float32 values of the whole tensor, or only of `rows` along the leading dim.

        `rows` is a slice (a zero-copy byte range) or a tensor of indices (gathered). The result has shape
        `(n_selected, *shape[1:])`. For F32 the result may alias `data`; treat it as read-only.
        `checked=False` skips the range check of index tensors, which reads them back to the host: for
        indices known to be in range (a sampled token id inside a CUDA graph).
        """
        if rows is None:
            if self.layout != GGML:
                return self.in_file_order().dequantize()
            return dequantize(self.data, self.qtype, self.shape, name=self.name)
        if len(self.shape) < 2:
            raise ValueError(
                f"tensor {self.name!r}: row selection needs at least 2 dims, shape is {self.shape}"
            )
        n_rows = self.shape[0]
        if isinstance(rows, slice):
            start, stop, step = rows.indices(n_rows)
            if step == 1:
                n = max(stop - start, 0)
                return self._dequantize_picked(self.rows_in_file_order(slice(start, start + n)), n)
            rows = torch.arange(start, stop, step)
        index = rows.to(device=self.device, dtype=torch.long).reshape(-1)
        if checked and index.numel() and (int(index.min()) < 0 or int(index.max()) >= n_rows):
            raise IndexError(f"tensor {self.name!r}: row index out of range [0, {n_rows})")
        return self._dequantize_picked(self.rows_in_file_order(index), index.numel())

    def rows_in_file_order(self, rows: slice | torch.Tensor) -> torch.Tensor:
        """The bytes of `rows` of the leading dim (a slice of step 1, zero-copy where the rows are
        contiguous, or an index tensor), one after another in the file's block order."""
        n_rows = self.shape[0]
        if self.layout == GGML:
            return self.data.view(n_rows, self.row_bytes)[rows].reshape(-1)
        if (rows.stop - rows.start if isinstance(rows, slice) else rows.numel()) == 0:
            return self.data[:0]
        if len(self.shape) == 3:  # an expert of a CODES_THEN_SCALES tensor: one self-contained matrix
            picked = self.data.view(n_rows, self.row_bytes)[rows]
            return file_order(picked.reshape(-1), picked.shape[0], self.qtype)
        # A 2-D CODES_THEN_SCALES matrix: a row's codes, and its scales after every row's codes. A row
        # read as a one-row matrix (its codes, then its scales) is put back in the file's order.
        codes_per_row = self.shape[1] // FORMATS[self.qtype].block_size * code_bytes(self.qtype)
        all_codes = n_rows * codes_per_row
        codes = self.data[:all_codes].view(n_rows, codes_per_row)[rows]
        scales = self.data[all_codes:].view(n_rows, -1)[rows]
        return file_order(torch.cat([codes, scales], dim=1).reshape(-1), codes.shape[0], self.qtype)

    def _dequantize_picked(self, picked: torch.Tensor, n: int) -> torch.Tensor:
        # n whole rows of the leading dim (whole experts of a 3-D tensor), in the file's block order.
        return dequantize(picked, self.qtype, (n, *self.shape[1:]), name=self.name)

    def expert(self, i: int) -> QTensor:
        """The `(out, in)` matrix of expert `i` of a 3-D expert tensor, as a zero-copy QTensor view."""
        if len(self.shape) != 3:
            raise ValueError(
                f"tensor {self.name!r}: expert() needs a 3-D expert tensor, shape is {self.shape}"
            )
        if not 0 <= i < self.shape[0]:
            raise IndexError(f"tensor {self.name!r}: expert {i} out of range [0, {self.shape[0]})")
        width = self.row_bytes
        return QTensor(
            self.data[i * width : (i + 1) * width],
            self.qtype,
            self.shape[1:],
            f"{self.name}[{i}]",
            self.layout,  # an expert of a CODES_THEN_SCALES tensor is one such matrix
        )

    def __repr__(self) -> str:
        return (
            f"QTensor({self.name!r}, {self.qtype.name}, shape={self.shape}, "
            f"{self.nbytes} bytes, device={self.device}"
            + (f", layout={self.layout}" if self.layout != GGML else "")
            + ")"
        )
