"""Launching a Triton kernel as thread-block clusters (Hopper and later) without Triton's `num_ctas`.

Why: a split-K GEMV's splits of one row tile can sum their partial sums through distributed shared memory
if they run as one cluster (`tensor_core_gemv`'s CLUSTER form), instead of through L2 with an arrival
counter. Triton's own `num_ctas` makes a cluster one program whose tensors are spread over its CTAs, which
asks every layout of a kernel for a CTA layout of that size (a power of two); the splits here are
independent programs of 1-8 (3 for Phi-3's q/k/v), so the kernel is compiled for one CTA a program and only
its launch carries the cluster dimension.

How: Triton's launcher already sets the cluster attribute (`CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION`, x only,
grid x multiplied by it) from the `num_ctas` of the compiled kernel's packed metadata (`num_warps, num_ctas,
shared`, `CUDABackend.pack_metadata`). `launch` compiles the kernel (`warmup`), sets that field of its
packed metadata to the cluster size and then launches it: the kernel then sees `program_id(0)` run over
grid x times the size, a cluster's programs consecutive (`%cluster_ctarank` = `program_id(0) % size`). A
kernel compiled for clusters must be told so by a constexpr of its own, so that the same compiled kernel
is never launched both ways (`tensor_core_gemv`'s CLUSTER). `packed_for_cluster` refuses a Triton whose
packed metadata is not that triple, and `supported` is False where the installed Triton's launcher does
not cluster that way (`launcher_clusters_by_num_ctas`), so the GEMV keeps its counters there.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

MAX_PORTABLE_SIZE = 8  # CTAs a cluster may hold on every sm_90+ GPU without the non-portable attribute


def supported(device: torch.device) -> bool:
    """Whether `device` launches clusters (sm_90 and later) and the installed Triton's launcher clusters by
    the packed `num_ctas` (`launcher_clusters_by_num_ctas`); where not, the caller keeps its own reduction.
    Asked at every GEMV launch: answered once a device."""
    return _supported_on(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=8)
def _supported_on(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] >= 9 and launcher_clusters_by_num_ctas()


@functools.cache
def launcher_clusters_by_num_ctas() -> bool:
    """What `launch` relies on, read once from the installed Triton: its CUDA backend packs a compiled
    kernel's launch metadata as (num_warps, num_ctas, shared), and its launcher multiplies grid x by that
    `num_ctas` and sets it as the cluster dimension."""
    try:
        from collections import namedtuple

        from triton.backends.nvidia import driver
        from triton.backends.nvidia.compiler import CUDABackend

        meta = namedtuple("Meta", "num_warps num_ctas shared")(4, 1, 4096)
        launcher = inspect.getsource(driver)
        return (
            CUDABackend.pack_metadata(None, meta) == (4, 1, 4096)
            and "clusterAttr.value.clusterDim.x = num_ctas;" in launcher
            and "config.gridDimX = gridX * num_ctas;" in launcher
        )
    except (ImportError, OSError, TypeError, AttributeError):
        return False


def packed_for_cluster(packed: tuple, num_ctas: int, size: int) -> tuple:
    """A compiled kernel's packed metadata (`num_warps, num_ctas, shared`) with clusters of `size` CTAs along
    grid x; `num_ctas` is the compiled kernel's own (1: one CTA a program)."""
    if not (isinstance(packed, tuple) and len(packed) == 3 and packed[1] == num_ctas):
        raise RuntimeError(
            "cluster_launch: this Triton's packed launch metadata is not (num_warps, num_ctas, shared): "
            f"{packed!r}; the clustered split-K reduction needs it"
        )
    if num_ctas != 1:
        raise ValueError(
            f"cluster_launch: a kernel compiled for {num_ctas} CTAs a program is clustered by Triton"
        )
    if not 1 <= size <= MAX_PORTABLE_SIZE:
        raise ValueError(f"cluster_launch: a cluster holds 1-{MAX_PORTABLE_SIZE} CTAs, not {size}")
    return (packed[0], size, packed[2])


def launch(kernel: Any, grid: tuple[int, ...], size: int, *args: Any, **kwargs: Any) -> None:
    """`kernel[grid](*args, **kwargs)` as clusters of `size` consecutive programs along grid x (grid x
    becomes grid[0] * size). The kernel's arguments must include a constexpr that only clustered launches
    pass, so that its compiled form is theirs alone."""
    compiled = kernel.warmup(*args, grid=grid, **kwargs)
    if hasattr(compiled, "result"):  # an asynchronous compile's future
        compiled = compiled.result()
    if compiled.packed_metadata[1] != size:
        compiled.packed_metadata = packed_for_cluster(
            compiled.packed_metadata, compiled.metadata.num_ctas, size
        )
    kernel[grid](*args, **kwargs)
