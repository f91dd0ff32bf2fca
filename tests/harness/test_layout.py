"""The harness's layout (docs/internals.md): step modules hold only decorated steps and import no other step
module; library modules import no step module."""

from __future__ import annotations

import ast
import re
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


# A check's spec ID comes from the scenario's tags (the `spec_ids` fixture). The IDs the code may still
# write, each for the reason given; a new literal fails here until it is taken from the tags instead.
SPEC_ID = re.compile(r"\b(?:M0|M05|M1)-[A-Z]+(?:-[A-Z0-9.]+)*\b")
ALLOWED_SPEC_IDS = {
    # The wire contract's rules (event stream, order, payloads, codes, UTF-8, job slot, cancel, /health's
    # model facts): checked
    # wherever a job's answer is read, whatever the scenario's own rule; named once as constants.
    "verdicts.py": 11,
    # A table from what serves a worker's port to the isolation rule that finding breaks.
    "side_by_side.py": 3,
    # Option help and capability descriptions that name the requirement to the user.
    "capabilities.py": 3,
    "readme.py": 1,
    # Step text: the feature's own words ("started with the optional flags of M0-W-1101").
    "step_defs/process.py": 1,
}


def _docstrings(tree: ast.Module) -> set[int]:
    owners = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, owners)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def spec_id_literals(source: str) -> list[str]:
    """The spec IDs written in a module's string literals (docstrings and comments are prose, not counted)."""
    tree = ast.parse(source)
    prose = _docstrings(tree)
    return [
        found
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose
        for found in SPEC_ID.findall(node.value)
    ]


@pytest.mark.parametrize("path", sorted(STEPS.rglob("*.py")), ids=lambda path: str(path.relative_to(STEPS)))
def test_spec_ids_come_from_the_scenarios_tags(path: Path):
    name = str(path.relative_to(STEPS))
    found = spec_id_literals(path.read_text(encoding="utf-8"))
    assert len(found) <= ALLOWED_SPEC_IDS.get(name, 0), (
        f"{name} writes the spec IDs {found}: take a check's ID from the scenario's tags (fixture `spec_ids`), "
        "or a wire rule's from steps/verdicts.py"
    )


def test_the_spec_id_check_finds_a_stray_literal():
    source = '"""Docs name M0-W-1300."""\nrequire(ok, "M0-W-1422", "stop string")  # M0-W-1422\n'
    assert spec_id_literals(source) == ["M0-W-1422"]
