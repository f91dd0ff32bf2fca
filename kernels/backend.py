"""The seam where fast quantized-matmul kernels plug in behind `kernels.qmatmul.qmatmul`.

A fast path (e.g. a fused dequant-GEMV for decode) registers a `FastPath`: the devices it runs on, a
`supports(x, w)` predicate (types, shapes, dtypes it handles) and the function itself, which must
compute what the reference path computes (it is tested against it). `qmatmul` asks `fast_path_for`
first and falls back to the reference path when nothing applies. Mixture-of-experts matmuls have the
same seam: an `ExpertsFastPath` serves `qmatmul_experts` (`experts_fast_path_for`).

The switch: `ORCD_KERNELS=reference` (environment) or `set_mode("reference")` forces the reference
path everywhere; `auto` (the default) takes a registered fast path when one supports the call.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from kernels.qtensor import QTensor

ENV_VAR = "ORCD_KERNELS"
Mode = Literal["auto", "reference"]
_MODES: tuple[Mode, ...] = ("auto", "reference")


class QMatmulFn(Protocol):
    def __call__(
        self, x: torch.Tensor, w: QTensor, bias: torch.Tensor | None, out_dtype: torch.dtype
    ) -> torch.Tensor: ...


class QMatmulExpertsFn(Protocol):
    def __call__(
        self,
        x: torch.Tensor,
        w: QTensor,
        expert_ids: torch.Tensor,
        bias: torch.Tensor | None,
        out_dtype: torch.dtype,
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class FastPath:
    name: str
    devices: tuple[str, ...]  # torch device types, e.g. ("cuda",)
    supports: Callable[[torch.Tensor, QTensor], bool]
    qmatmul: QMatmulFn


@dataclass(frozen=True)
class ExpertsFastPath:
    """A fast path for `qmatmul_experts(x (T, in), w (E, out, in), expert_ids (T, k), bias)`."""

    name: str
    devices: tuple[str, ...]
    supports: Callable[[torch.Tensor, QTensor, torch.Tensor], bool]
    qmatmul_experts: QMatmulExpertsFn


_registry: list[FastPath] = []
_experts_registry: list[ExpertsFastPath] = []
_mode_override: Mode | None = None
_builtin_loaded = False


def register(path: FastPath) -> Callable[[], None]:
    """Add a fast path (tried in registration order); returns a function that removes it again."""
    _registry.append(path)
    return lambda: _registry.remove(path)


def register_experts(path: ExpertsFastPath) -> Callable[[], None]:
    """Add a mixture-of-experts fast path; returns a function that removes it again."""
    _experts_registry.append(path)
    return lambda: _experts_registry.remove(path)


def set_mode(mode: Mode | None) -> None:
    """Override the environment switch for this process; `None` returns to the environment."""
    global _mode_override
    if mode is not None and mode not in _MODES:
        raise ValueError(f"kernel mode {mode!r} is not one of {_MODES}")
    _mode_override = mode


def mode() -> Mode:
    if _mode_override is not None:
        return _mode_override
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in _MODES:
        raise ValueError(f"{ENV_VAR}={value!r} is not one of {_MODES}")
    return value  # type: ignore[return-value]


def _load_builtin_paths() -> None:
    """Register the project's own CUDA kernels the first time a CUDA input arrives (Triton present)."""
    global _builtin_loaded
    _builtin_loaded = True
    if importlib.util.find_spec("triton") is not None:
        from kernels.triton_gemv import FAST_PATH
        from kernels.triton_moe import EXPERTS_FAST_PATH

        register(FAST_PATH)
        register_experts(EXPERTS_FAST_PATH)


def fast_path_for(x: torch.Tensor, w: QTensor) -> FastPath | None:
    """The first registered fast path that runs on `x`'s device and supports this call, if allowed."""
    if mode() == "reference":
        return None
    if x.is_cuda and not _builtin_loaded:
        _load_builtin_paths()
    for path in _registry:
        if x.device.type in path.devices and w.device == x.device and path.supports(x, w):
            return path
    return None


def experts_fast_path_for(x: torch.Tensor, w: QTensor, expert_ids: torch.Tensor) -> ExpertsFastPath | None:
    """The first registered experts fast path that runs on `x`'s device and supports this call, if allowed."""
    if mode() == "reference":
        return None
    if x.is_cuda and not _builtin_loaded:
        _load_builtin_paths()
    for path in _experts_registry:
        if x.device.type in path.devices and w.device == x.device and path.supports(x, w, expert_ids):
            return path
    return None
