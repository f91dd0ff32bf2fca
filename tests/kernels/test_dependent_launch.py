"""Programmatic dependent launch (`kernels.dependent_launch`), what can be checked without a GPU.

- The context: a kernel's `PDL` constant and Triton's launch attribute come together or not at all, only
  inside `programmatic(mode)` with the mode on, only on the thread that entered it;
  `KernelConfig.dependent_launch_mode` is off on CPU and without graphs.
- The source: every launch that passes `launch_kwargs()` launches a kernel that takes a `PDL` constant
  and calls `await_previous_grid(PDL, ...)` in its body's top level after nothing but index arithmetic,
  but for weights asked for early behind a constexpr switch named `..._EARLY` (off by default): loads
  only, in an `if ..._EARLY:` block before the wait, or the wait handed to the walk as
  `await_previous_grid(0 if ..._EARLY else PDL)` (what that compiles to, the wait before any
  memory access in PTX and SASS, is checked in `test_triton_offline_compile.py` where Triton is installed;
  the replayed graph's logits against the graph without it in `tests/worker/test_decode_step.py` on CUDA).
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest
import torch

from kernels import dependent_launch
from kernels.backend import KernelConfig

KERNELS_DIR = Path(dependent_launch.__file__).parent


EARLY = dependent_launch.DependentLaunch(True)
PREFETCHING = dependent_launch.DependentLaunch(True, weight_prefetch=True)


def test_the_launch_arguments_come_together_only_inside_the_context() -> None:
    assert dependent_launch.launch_kwargs() == {}
    with dependent_launch.programmatic(EARLY):
        assert dependent_launch.launch_kwargs() == {"PDL": True, "launch_pdl": True}
        assert not dependent_launch.weight_prefetch()
        with dependent_launch.programmatic(dependent_launch.OFF):
            assert dependent_launch.launch_kwargs() == {}
        assert dependent_launch.active()
        seen: list[dict] = []
        other = threading.Thread(target=lambda: seen.append(dependent_launch.launch_kwargs()))
        other.start()
        other.join()
        assert seen == [{}]  # another thread's launches (the residency check's) are not affected
    assert dependent_launch.launch_kwargs() == {}
    with dependent_launch.programmatic(PREFETCHING):
        assert dependent_launch.weight_prefetch() and dependent_launch.active()
    with dependent_launch.programmatic(dependent_launch.DependentLaunch(True, late_trigger=True)):
        assert dependent_launch.launch_kwargs() == {"PDL": dependent_launch.TRIGGER_LATE, "launch_pdl": True}
    # Prefetch without early launch: the GEMVs ask for their tiles as their first statement, launched as usual.
    with dependent_launch.programmatic(dependent_launch.DependentLaunch(False, weight_prefetch=True)):
        assert dependent_launch.launch_kwargs() == {} and dependent_launch.weight_prefetch()


def test_dependent_launch_is_off_on_cpu_and_decided_by_shape_by_default() -> None:
    cpu = torch.device("cpu")
    assert KernelConfig().dependent_launch is None and not KernelConfig().weight_prefetch
    assert KernelConfig().late_trigger
    assert (
        KernelConfig(dependent_launch=True, weight_prefetch=True).dependent_launch_mode(cpu, 0)
        == dependent_launch.OFF
    )
    assert not dependent_launch.supported(cpu)


@pytest.mark.parametrize(
    ("asked", "largest", "early"),
    [
        (None, 3_567_616, True),  # Qwen2.5-0.5B's ffn_down (Q6_K 896 x 4864)
        (None, 12_533_760, True),  # GPT-OSS-20B's attn_q (Q8_0 4096 x 2880)
        (None, 28_311_552, False),  # Phi-3-mini's fused ffn_up (Q4_K 16384 x 3072)
        (None, dependent_launch.EARLY_LAUNCH_MAX_MATRIX_BYTES, True),
        (None, dependent_launch.EARLY_LAUNCH_MAX_MATRIX_BYTES + 1, False),
        (True, 28_311_552, True),  # asked for: whatever the shape
        (False, 3_567_616, False),
    ],
)
def test_the_decode_step_launches_early_where_asked_or_where_the_blocks_matrices_are_small(
    monkeypatch: pytest.MonkeyPatch, asked: bool | None, largest: int, early: bool
) -> None:
    """Without the tensor-core GEMVs (their splits summed in clusters), by the largest block matrix."""
    monkeypatch.setattr(dependent_launch, "supported", lambda device: True)  # as on sm_90
    config = KernelConfig(dependent_launch=asked, tensor_core_gemv=False)
    mode = config.dependent_launch_mode(torch.device("cuda", 0), largest)
    assert mode == dependent_launch.DependentLaunch(early, weight_prefetch=False, late_trigger=True)


@pytest.mark.parametrize("largest", [3_567_616, 28_311_552])
def test_with_clustered_splits_every_shape_launches_early_by_default(
    monkeypatch: pytest.MonkeyPatch, largest: int
) -> None:
    """The default kernels (the tensor-core GEMVs, their splits summed in clusters on sm_90+): early with
    the late trigger whatever the shape, Phi-3-mini's 28.3 MB matrices too; unless asked otherwise."""
    monkeypatch.setattr(dependent_launch, "supported", lambda device: True)  # as on sm_90
    cuda = torch.device("cuda", 0)
    assert KernelConfig().dependent_launch_mode(cuda, largest) == dependent_launch.DependentLaunch(
        True, weight_prefetch=False, late_trigger=True
    )
    assert not KernelConfig(dependent_launch=False).dependent_launch_mode(cuda, largest).enabled


def test_the_largest_block_matrix_is_a_2d_tensor_of_a_layer() -> None:
    import types

    from kernels.formats import GGMLType
    from kernels.qtensor import QTensor
    from reference_worker.models.base import largest_block_matrix_bytes

    def tensor(nbytes: int, shape: tuple[int, ...]) -> QTensor:
        return QTensor(torch.zeros(nbytes, dtype=torch.uint8), GGMLType.Q8_0, shape)

    layer = types.SimpleNamespace(
        wq=tensor(340, (10, 32)),
        w_up=tensor(680, (20, 32)),
        experts=tensor(6800, (10, 20, 32)),  # read a few experts at a time: not counted
        norm=torch.zeros(32),
    )
    assert largest_block_matrix_bytes(types.SimpleNamespace(layers=[layer])) == 680
    assert largest_block_matrix_bytes(types.SimpleNamespace()) == 0


def _early_launches(tree: ast.Module) -> list[tuple[str, int]]:
    """(kernel name, line) of every `kernel[grid](..., **dependent_launch.launch_kwargs())` in a module, and
    of every `cluster_launch.launch(kernel, grid, size, ..., **dependent_launch.launch_kwargs())`."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        spreads = [k.value for k in node.keywords if k.arg is None]
        if not any(ast.unparse(v) == "dependent_launch.launch_kwargs()" for v in spreads):
            continue
        if isinstance(node.func, ast.Subscript):
            found.append((ast.unparse(node.func.value), node.lineno))
        elif ast.unparse(node.func) == "cluster_launch.launch" and node.args:
            found.append((ast.unparse(node.args[0]), node.lineno))
    return found


def _kernels(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


# What a kernel may do before it waits: index arithmetic on its program ids and arguments. Any other call
# (a load, a store, an atomic, a helper that may do one) must come after `await_previous_grid`.
_BEFORE_WAIT = {
    "tl.program_id", "tl.num_programs", "tl.arange", "tl.where", "tl.minimum", "tl.maximum", "tl.cdiv",
    "tl.multiple_of", "tl.pointer_type",
    # the same in a Gluon kernel (`kernels.tensor_core_gemv`), and its layouts
    "gl.program_id", "gl.num_programs", "gl.arange", "gl.where", "gl.minimum", "gl.maximum", "gl.expand_dims",
    "gl.SliceLayout",
    "segment_of",  # `triton_common.segment_of`: a segment launch's index arithmetic
    "tl.static_assert", "gl.static_assert",  # checked while compiling: no code
}  # fmt: skip


# What a kernel may do before it waits inside an `if ..._EARLY:` block: load (weights, which no kernel of a
# step writes; the offline checks see that nothing else touches memory there in PTX and SASS).
_EARLY_LOADS = {"tl.load", "gl.load"}


def _early_switch(test: ast.expr) -> bool:
    """A constexpr switch for weights asked for before the wait: a bare name ending in `_EARLY`."""
    return isinstance(test, ast.Name) and test.id.endswith("_EARLY")


def _waits(statement: ast.stmt) -> bool:
    """`await_previous_grid(PDL, ...)`, or `await_previous_grid(0 if X_EARLY else PDL, ...)`: with the
    switch on, the kernel's walk waits once it has asked for its first weights."""
    if not (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Call)
        and ast.unparse(statement.value.func) == "await_previous_grid"
        and statement.value.args
    ):
        return False
    mode = statement.value.args[0]
    if isinstance(mode, ast.IfExp):
        return (
            _early_switch(mode.test) and ast.unparse(mode.body) == "0" and ast.unparse(mode.orelse) == "PDL"
        )
    return ast.unparse(mode) == "PDL"


def _touches_memory(statement: ast.stmt) -> str | None:
    """The first call in `statement` that is not index arithmetic, or a return, else None; in an
    `if ..._EARLY:` block with no else, loads are allowed too."""
    allowed = _BEFORE_WAIT
    if isinstance(statement, ast.If) and _early_switch(statement.test) and not statement.orelse:
        allowed = _BEFORE_WAIT | _EARLY_LOADS
    for node in ast.walk(statement):
        if isinstance(node, ast.Return):
            return "return"
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            method = isinstance(node.func, ast.Attribute) and node.func.attr == "to"
            if name not in allowed and not method:
                return name
    return None


def _problems(source: str, filename: str) -> tuple[int, list[str]]:
    """(early launches, what is wrong with them) in one module's source: each early launch must be of a
    kernel of the module that takes a `PDL` constant and calls `await_previous_grid(PDL, ...)` in its
    body's top level (every program reaches it), after nothing but index arithmetic."""
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
        if "PDL" not in [a.arg for a in kernel.args.args + kernel.args.kwonlyargs]:
            problems.append(f"{where}, which takes no PDL constant")
            continue
        wait = next((i for i, s in enumerate(kernel.body) if _waits(s)), None)
        if wait is None:
            problems.append(f"{where}, which does not call await_previous_grid(PDL) in its top level")
            continue
        early = [call for s in kernel.body[:wait] if (call := _touches_memory(s))]
        if early:
            problems.append(f"{where}, which calls {early[0]} before await_previous_grid(PDL)")
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
    # the router with its routing (`moe_router`), combination, the tensor-core GEMV and the fused attention,
    # each launched plain or as clusters (a launch that stopped passing the arguments would silently launch
    # late: a lost gain).
    assert launches == 12


def test_the_source_check_fails_a_kernel_that_does_not_wait_first() -> None:
    late = """
@triton.jit
def _k(x_ptr, PDL: tl.constexpr = False):
    i = tl.program_id(0).to(tl.int64)
    x = tl.load(x_ptr + i)
    await_previous_grid(PDL)

def launch(x):
    _k[(1,)](x, **dependent_launch.launch_kwargs())
"""
    assert _problems(late, "late.py") == (
        1,
        ["late.py:9 launches _k, which calls tl.load before await_previous_grid(PDL)"],
    )
    fine = late.replace("    x = tl.load(x_ptr + i)\n", "")
    assert _problems(fine, "fine.py") == (1, [])
    nested = fine.replace("    await_previous_grid(PDL)", "    if i > 0:\n        await_previous_grid(PDL)")
    assert _problems(nested, "n.py")[1] == [
        "n.py:9 launches _k, which does not call await_previous_grid(PDL) in its top level"
    ]
    helper = fine.replace("tl.program_id(0)", "_first(x_ptr)")
    assert _problems(helper, "h.py")[1] == [
        "h.py:8 launches _k, which calls _first before await_previous_grid(PDL)"
    ]
    # Weights asked for early: loads in an `if ..._EARLY:` block pass; anything else there, or a load
    # behind another switch, does not; the wait handed to the walk by an `_EARLY` switch passes.
    loads_early = fine.replace(
        "    await_previous_grid(PDL)",
        "    if ROW_EARLY:\n        w = tl.load(x_ptr + i)\n    await_previous_grid(PDL)",
    )
    assert _problems(loads_early, "e.py") == (1, [])
    stores_early = loads_early.replace("w = tl.load(x_ptr + i)", "tl.store(x_ptr + i, 0.0)")
    assert _problems(stores_early, "s.py")[1] == [
        "s.py:10 launches _k, which calls tl.store before await_previous_grid(PDL)"
    ]
    other_switch = loads_early.replace("if ROW_EARLY:", "if SPLIT:")
    assert _problems(other_switch, "o.py")[1] == [
        "o.py:10 launches _k, which calls tl.load before await_previous_grid(PDL)"
    ]
    clustered = fine.replace(
        "_k[(1,)](x, **dependent_launch.launch_kwargs())",
        "cluster_launch.launch(_k, (1,), 2, x, **dependent_launch.launch_kwargs())",
    )
    assert _problems(clustered, "c.py") == (1, [])
    assert _problems(clustered.replace("    await_previous_grid(PDL)\n", ""), "c2.py")[1] == [
        "c2.py:7 launches _k, which does not call await_previous_grid(PDL) in its top level"
    ]
    handed = fine.replace("await_previous_grid(PDL)", "await_previous_grid(0 if WORDS_EARLY else PDL)")
    assert _problems(handed, "h2.py") == (1, [])
    wrong_way = fine.replace("await_previous_grid(PDL)", "await_previous_grid(PDL if WORDS_EARLY else 0)")
    assert _problems(wrong_way, "w.py")[1] == [
        "w.py:8 launches _k, which does not call await_previous_grid(PDL) in its top level"
    ]
    no_constant = fine.replace(", PDL: tl.constexpr = False", "")
    assert _problems(no_constant, "x.py")[1] == ["x.py:8 launches _k, which takes no PDL constant"]
    assert _problems(fine.replace("_k[(1,)]", "_other[(1,)]"), "y.py")[1] == [
        "y.py:8 launches _other, not defined in the module"
    ]
