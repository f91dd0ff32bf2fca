"""Which gates a scenario counts for, derived from `features/gates.toml` at collection.

A scenario counts for a gate when it carries one of the requirement IDs of the gate's items and matches the
gate's `scope` (a marker expression over the scenario's tags, as `-m` takes: `model_qwen and not real_qwen`;
no scope: every scenario). The harness adds the `gate_<id>` marker to it, so `-m gate_foundation` and the
gate reports see the same membership. A `@gate_<id>` tag written in a feature file still counts, for a
scenario the rule cannot place (a tiny stand-in of one architecture, tagged `model_tiny`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression

from steps.vocabulary import GATE_PREFIX, VocabularyError

GATES_FILE = "gates.toml"


@dataclass(frozen=True)
class GateRule:
    tag: str  # "gate_foundation"
    requirements: frozenset[str]
    scope: str | None  # a marker expression, or None for every scenario
    _expression: Expression | None

    def admits(self, markers: set[str]) -> bool:
        if not self.requirements & markers:
            return False
        return self._expression is None or self._expression.evaluate(lambda name, **_: name in markers)


def load_rules(features_dir: Path) -> list[GateRule]:
    path = features_dir / GATES_FILE
    try:
        gates = tomllib.loads(path.read_text(encoding="utf-8")).get("gate", [])
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise VocabularyError(f"{path}: cannot be read ({exc})") from None
    rules = []
    for gate in gates:
        scope = gate.get("scope")
        try:
            expression = Expression.compile(scope) if scope else None
        except SyntaxError as exc:  # what pytest raises for a malformed -m expression
            raise VocabularyError(
                f"{path}: gate {gate.get('id')}: scope {scope!r} is not a marker expression ({exc})"
            ) from None
        requirements = frozenset(rid for item in gate.get("item", []) for rid in item.get("requirements", []))
        rules.append(GateRule(GATE_PREFIX + gate["id"], requirements, scope, expression))
    return rules


def derived_gates(markers: set[str], rules: list[GateRule]) -> set[str]:
    return {rule.tag for rule in rules if rule.admits(markers)}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rules_by_dir: dict[Path, list[GateRule]] = {}
    for item in items:
        path = Path(str(item.path))
        if path.suffix != ".feature":
            continue
        features_dir = next((d for d in path.resolve().parents if (d / GATES_FILE).is_file()), None)
        if features_dir is None:
            continue
        if features_dir not in rules_by_dir:
            try:
                rules_by_dir[features_dir] = load_rules(features_dir)
            except VocabularyError as exc:
                raise pytest.UsageError(str(exc)) from None
        markers = {mark.name for mark in item.iter_markers()}
        for tag in sorted(derived_gates(markers, rules_by_dir[features_dir]) - markers):
            item.add_marker(tag)
