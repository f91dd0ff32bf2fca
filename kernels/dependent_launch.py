"""Programmatic dependent launch (Hopper and later) for the kernels of a captured decode step.

A decode token of a small model is ~130 short kernels, each a few microseconds: the gap between two of
them (the next grid's launch and its programs' start, after the previous grid has drained) is a large
share of the token. With programmatic dependent launch the next kernel is launched while the previous
one still runs: its programs become resident, then block at `griddepcontrol.wait` until the previous
grid has completed and its writes are visible, then signal that the kernel after them may launch in
turn. CUDA graphs captured from such launches keep them as programmatic edges. With `weight_prefetch`
the GEMVs also ask L2 for their weight tile before they wait: weights are never written during a step,
so the next product's weights stream in while the previous kernel (an attention, a norm, a small GEMV
that leaves the memory bus idle) still runs.

Why a context and not an argument: whether kernels may overlap is a property of how a graph's kernels
follow each other, decided where the graph is captured (`reference_worker.decode_step.capture_graph`,
from `KernelConfig.dependent_launch_mode`), not by each of the ~20 call sites between the model and a
launch. The kernels that take part read it at launch through `launch_kwargs()`: the kernel's `PDL`
constant (its prologue waits for the previous grid before any memory access, `triton_gemv.
await_previous_grid`) and the launch attribute come from that one function, so a kernel is never
launched early without the wait. Kernels that do not take part (PyTorch's, and any Triton kernel not
launched with these arguments) launch as before and serialise fully, which is always safe.

This module imports no Triton: the worker's CPU path reads `supported` and `programmatic` too.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DependentLaunch:
    """How the kernels that take part are launched inside `programmatic`."""

    enabled: bool = False  # early, each waiting for the previous grid before touching memory
    # The GEMVs ask L2 for their weight tile first (launched early: before they wait).
    weight_prefetch: bool = False
    # When a kernel lets the next one launch: False, each program as soon as its wait returns; True, a
    # GEMV's program once its weight walk is done and the other kernels at exit, so the next kernel's
    # waiting programs do not sit beside a long GEMV's for its whole run.
    late_trigger: bool = False


OFF = DependentLaunch()

# Where dependent launch is on by default (`KernelConfig.dependent_launch` None) without the tensor-core
# GEMVs' clustered splits (`chosen_for`): in a model whose largest block matrix holds at most this many
# bytes. Launching early hides a few microseconds of launch and ramp-up per kernel, a large share of a
# step of short kernels; beside a long GEMV the next kernel's waiting programs cost more than that.
# Measured with the late trigger (2026-12-05): Qwen2.5-0.5B (largest block matrix 3.6 MB) +4.5 %,
# GPT-OSS-20B (12.5 MB; its experts are one launch of 4 of 32) +2.6 %, Phi-3-mini (28.3 MB) -0.8 % on an
# H100 and -3.1 % on an H200; the bound lies between them.
EARLY_LAUNCH_MAX_MATRIX_BYTES = 16 << 20


def chosen_for(largest_block_matrix_bytes: int, *, clustered_splits: bool = False) -> bool:
    """Whether a model whose largest block matrix has this many bytes launches its decode step early by
    default: where its GEMVs' splits of K are summed in thread-block clusters (`clustered_splits`, the
    tensor-core GEMVs on sm_90+, `GemvConfig.tc_cluster_splits`), whatever the size; otherwise up to
    `EARLY_LAUNCH_MAX_MATRIX_BYTES`. Measured on an H100 (2026-12-07, `benchmarks.step_ab`): Phi-3-mini
    (28.3 MB) with clustered splits and dependent launch (late trigger) +4.0 % a token against the step
    without either, where dependent launch with the counters' split tails costs it 4.6 %; Qwen2.5-0.5B
    and GPT-OSS-20B, launched early below the bound already, take the clusters at ±0.1 %."""
    return clustered_splits or largest_block_matrix_bytes <= EARLY_LAUNCH_MAX_MATRIX_BYTES


_MODE: contextvars.ContextVar[DependentLaunch | None] = contextvars.ContextVar(
    "programmatic_dependent_launch", default=None
)

# Triton's CPU interpreter runs no inline PTX; under it the kernels run without the prologue.
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def supported(device: torch.device) -> bool:
    """Whether `device` has programmatic dependent launch (`griddepcontrol`: sm_90 and later)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


@contextlib.contextmanager
def programmatic(mode: DependentLaunch) -> Iterator[None]:
    """How kernels launched by this thread inside the block (the ones that take part) follow the previous
    kernel of their stream; `OFF`: as without the block."""
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)


def _mode() -> DependentLaunch:
    return _MODE.get() or OFF


def active() -> bool:
    return _mode().enabled and not _INTERPRETED


def interpreted() -> bool:
    """Whether Triton's CPU interpreter runs the kernels (it runs no inline PTX: no hints, no waits)."""
    return _INTERPRETED


def weight_prefetch() -> bool:
    """Whether a GEMV launched now asks L2 for its weight tile first (launched early: before it waits for
    the previous grid; otherwise as its first statement, so all of a tile's lines are requested at once
    instead of one loop step's at a time)."""
    return _mode().weight_prefetch and not _INTERPRETED


# A kernel's `PDL` constant: 0 (or False) launched as usual; otherwise launched early and waiting first,
# and it lets the next kernel launch right after its wait (TRIGGER_AT_WAIT) or late (TRIGGER_LATE: a GEMV
# after its weight walk, any other kernel at exit).
TRIGGER_AT_WAIT = 1
TRIGGER_LATE = 2


def launch_kwargs() -> dict[str, int | bool]:
    """The launch arguments of a kernel that takes part: its `PDL` constant (the prologue that waits for
    the previous grid, and where it lets the next one launch) and Triton's launch attribute, both or
    neither."""
    if not active():
        return {}
    return {"PDL": TRIGGER_LATE if _mode().late_trigger else TRIGGER_AT_WAIT, "launch_pdl": True}
