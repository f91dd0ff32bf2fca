"""What the no-GPU kernel checks share: running under Triton's interpreter, CUDA-only checks answered for
CPU tensors, and the report (one line a check, exit 1 if any failed).

The `tests/kernels/interpreted_*.py` modules run as `TRITON_INTERPRET=1 python -m tests.kernels.<module>`
(the interpreter must be chosen before the kernels are defined: a fresh process, which
`tests/kernels/test_triton_interpreted.py` starts for each).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

import numpy as np


def ready() -> bool:
    """Whether this process runs Triton's interpreter (if not, says so on stderr); if it does, patches the
    one conversion Triton 3.6's interpreter lacks: it holds a kernel's scalars as one-element arrays, and
    `range()` over them (the kernels' loop bounds) fails on NumPy's refusal to take int() of a 1-D array;
    the patch reads element 0 (which also lets a loop bound come from memory)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("error: run with TRITON_INTERPRET=1 in the environment (a fresh process)", file=sys.stderr)
        return False
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

    interpreter._patch_lang_tensor = patched
    return True


def as_if_cuda(fn):
    """`fn(w, **options)` (a layout or packing check that asks for CUDA tensors) answering for a CPU QTensor as it
    would for the same tensor on CUDA."""

    def call(w, **options):
        real = type(w.data).is_cuda
        type(w.data).is_cuda = property(lambda self: True)
        try:
            return fn(w, **options)
        finally:
            type(w.data).is_cuda = real

    return call


def report(results: Iterable[tuple[str, bool, str]]) -> int:
    """Prints `ok  ` or `FAIL` and each (check, passed, detail) as it comes; the number that failed."""
    failed = 0
    for check, ok, detail in results:
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {check}: {detail}", flush=True)
    return failed
