"""QTensor: a weight kept in its stored ggml type on its device, dequantized only where it is used."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kernels.dequant import check_layout, dequantize
from kernels.formats import GGMLType, ggml_type, tensor_nbytes

# Plain float dtypes a QTensor can be built from, and their ggml types.
_FLOAT_TYPES: dict[torch.dtype, GGMLType] = {
    torch.float32: GGMLType.F32,
    torch.float16: GGMLType.F16,
    torch.bfloat16: GGMLType.BF16,
}

Rows = slice | torch.Tensor | None


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "qtype", check_layout(self.data, self.qtype, self.shape, name=self.name))
        if self.data.dim() != 1:
            raise ValueError(
                f"tensor {self.name!r}: packed data must be 1-D, got shape {tuple(self.data.shape)}"
            )

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
        return QTensor(self.data.to(device), self.qtype, self.shape, self.name)

    def dequantize(self, rows: Rows = None, *, checked: bool = True) -> torch.Tensor:
        """Float32 values of the whole tensor, or only of `rows` along the leading dim.

        `rows` is a slice (a zero-copy byte range) or a tensor of indices (gathered). The result has shape
        `(n_selected, *shape[1:])`. For F32 the result may alias `data`; treat it as read-only.
        `checked=False` skips the range check of index tensors, which reads them back to the host: for
        indices known to be in range (a sampled token id inside a CUDA graph).
        """
        if rows is None:
            return dequantize(self.data, self.qtype, self.shape, name=self.name)
        if len(self.shape) < 2:
            raise ValueError(
                f"tensor {self.name!r}: row selection needs at least 2 dims, shape is {self.shape}"
            )
        n_rows, width = self.shape[0], self.row_bytes
        if isinstance(rows, slice):
            start, stop, step = rows.indices(n_rows)
            if step == 1:
                n = max(stop - start, 0)
                picked = self.data[start * width : (start + n) * width]
                return dequantize(picked, self.qtype, (n, *self.shape[1:]), name=self.name)
            rows = torch.arange(start, stop, step)
        index = rows.to(device=self.device, dtype=torch.long).reshape(-1)
        if checked and index.numel() and (int(index.min()) < 0 or int(index.max()) >= n_rows):
            raise IndexError(f"tensor {self.name!r}: row index out of range [0, {n_rows})")
        picked = self.data.view(n_rows, width)[index].reshape(-1)
        return dequantize(picked, self.qtype, (index.numel(), *self.shape[1:]), name=self.name)

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
            self.data[i * width : (i + 1) * width], self.qtype, self.shape[1:], f"{self.name}[{i}]"
        )

    def __repr__(self) -> str:
        return (
            f"QTensor({self.name!r}, {self.qtype.name}, shape={self.shape}, "
            f"{self.nbytes} bytes, device={self.device})"
        )
