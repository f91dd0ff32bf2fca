"""Programmatic dependent launch (`kernels.dependent_launch`), what can be checked without a GPU.

- The context: a kernel's `PDL` constant and Triton's launch attribute come together or not at all, only
  inside `programmatic(True)`, only on the thread that entered it; `KernelConfig.dependent_launch_on`
  is off on CPU and without graphs.
- The source: every launch that passes `launch_kwargs()` launches a kernel that takes a `PDL` constant
  and whose first statement is `await_previous_grid(PDL)` (what that compiles to, the wait before any
  memory access in PTX and SASS, is checked in `test_triton_offline_compile.py` where Triton is installed;
  the replayed graph's logits against the graph without it in `tests/worker/test_decode_step.py` on CUDA).
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import torch

from kernels import dependent_launch
from kernels.backend import KernelConfig

KERNELS_DIR = Path(dependent_launch.__file__).parent


def test_the_launch_arguments_come_together_only_inside_the_context() -> None:
    assert dependent_launch.launch_kwargs() == {}
    with dependent_launch.programmatic(True):
        assert dependent_launch.launch_kwargs() == {"PDL": True, "launch_pdl": True}
        with dependent_launch.programmatic(False):
            assert dependent_launch.launch_kwargs() == {}
        assert dependent_launch.active()
        seen: list[dict] = []
        other = threading.Thread(target=lambda: seen.append(dependent_launch.launch_kwargs()))
        other.start()
        other.join()
        assert seen == [{}]  # another thread's launches (the residency check's) are not affected
    assert dependent_launch.launch_kwargs() == {}
    with dependent_launch.programmatic(False):
        assert dependent_launch.launch_kwargs() == {}


def test_dependent_launch_is_off_on_cpu_and_by_default() -> None:
    cpu = torch.device("cpu")
    assert not KernelConfig().dependent_launch
    assert not KernelConfig(dependent_launch=True).dependent_launch_on(cpu)
    assert not dependent_launch.supported(cpu)


def _early_launches(tree: ast.Module) -> list[tuple[str, int]]:
    """(kernel name, line) of every `kernel[grid](..., **dependent_launch.launch_kwargs())` in a module."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript)):
            continue
        spreads = [k.value for k in node.keywords if k.arg is None]
        if any(ast.unparse(v) == "dependent_launch.launch_kwargs()" for v in spreads):
            found.append((ast.unparse(node.func.value), node.lineno))
    return found


def _kernels(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _problems(source: str, filename: str) -> tuple[int, list[str]]:
    """(early launches, what is wrong with them) in one module's source."""
    tree = ast.parse(source)
    kernels = _kernels(tree)
    launches = _early_launches(tree)
    problems = []
    for name, line in launches:
        kernel = kernels.get(name)
        where = f"{filename}:{line} launches {name}"
        if kernel is None:
            problems.append(f"{where}, not defined in the module")
            continue
        params = [a.arg for a in kernel.args.args + kernel.args.kwonlyargs]
        body = [s for s in kernel.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
        first = ast.unparse(body[0]) if body else ""
        if "PDL" not in params:
            problems.append(f"{where}, which takes no PDL constant")
        elif first != "await_previous_grid(PDL)":
            problems.append(f"{where}, whose first statement is {first!r}, not await_previous_grid(PDL)")
    return len(launches), problems


def test_every_early_launch_is_of_a_kernel_that_waits_first() -> None:
    launches = 0
    problems = []
    for path in sorted(KERNELS_DIR.glob("*.py")):
        n, found = _problems(path.read_text(), path.name)
        launches += n
        problems += found
    assert not problems
    # The decode step's kernels: the GEMV, norm, RoPE + store, both attentions, the activation, routing,
    # combination (a launch that stopped passing the arguments would silently launch late: a lost gain).
    assert launches == 8


def test_the_source_check_fails_a_kernel_that_does_not_wait_first() -> None:
    late = """
@triton.jit
def _k(x_ptr, PDL: tl.constexpr = False):
    x = tl.load(x_ptr)
    await_previous_grid(PDL)

def launch(x):
    _k[(1,)](x, **dependent_launch.launch_kwargs())
"""
    assert _problems(late, "late.py")[1] == [
        "late.py:8 launches _k, whose first statement is 'x = tl.load(x_ptr)', not await_previous_grid(PDL)"
    ]
    no_constant = late.replace(", PDL: tl.constexpr = False", "")
    assert _problems(no_constant, "x.py")[1] == ["x.py:8 launches _k, which takes no PDL constant"]
    assert _problems(late.replace("_k[(1,)]", "_other[(1,)]"), "y.py")[1] == [
        "y.py:8 launches _other, not defined in the module"
    ]
