"""The harness's layout (docs/internals.md): step modules hold only decorated steps and import no other step
module; library modules import no step module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

STEPS = Path(__file__).resolve().parents[2] / "steps"
STEP_MODULES = sorted(path for path in (STEPS / "step_defs").glob("*.py") if path.name != "__init__.py")
LIBRARY_MODULES = sorted(path for path in STEPS.rglob("*.py") if "step_defs" not in path.parts)
STEP_DECORATORS = {"given", "when", "then"}


def _imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


def _decorator_name(node: ast.expr) -> str:
    target = node.func if isinstance(node, ast.Call) else node
    return target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")


@pytest.mark.parametrize("path", STEP_MODULES, ids=lambda path: path.name)
def test_a_step_module_holds_only_decorated_steps(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    loose = [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
        and not any(_decorator_name(d) in STEP_DECORATORS for d in node.decorator_list)
    ]
    assert not loose, f"{path.name} defines {loose}: helpers, fixtures and hooks belong in a library module"
    assert not [name for name in _imports(tree) if name.startswith("steps.step_defs")], path.name


@pytest.mark.parametrize("path", LIBRARY_MODULES, ids=lambda path: str(path.relative_to(STEPS)))
def test_a_library_module_imports_no_step_module(path: Path):
    imported = [name for name in _imports(ast.parse(path.read_text(encoding="utf-8"))) if "step_defs" in name]
    assert not imported, f"{path.relative_to(STEPS)} imports {imported}"
