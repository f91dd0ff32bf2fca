"""Roll scenario verdicts up to requirements, gate items and gates.

Rules (docs/reports.md):
- A scenario counts for gate G when it carries `gate_G`; for an item of G when it also carries one of
  the item's requirement IDs.
- Item: `fail` if any of its scenarios failed; `pass` if every non-waived requirement of the item has at
  least one scenario and every scenario passed; `advisory` if so, except that a SHOULD/MAY requirement
  was not met (an `advisory` scenario, steps/milestone.py); `not-covered` if no scenario exists; `waived` if all its
  requirements carry a waiver and none has a scenario; otherwise `incomplete` (something was not
  applicable, not run, or a requirement has no scenario).
- Gate: `red` if any item failed or any scenario tagged with the gate failed; `green` if every item is
  `pass`, `advisory` or `waived` (at least one `pass` or `advisory`); otherwise `incomplete`. A SHOULD or
  MAY item is never a failure of a gate; the gate page lists it as advisory.
- Requirement (whole run, all gates): like an item with one requirement; an optional or removed
  requirement with no scenario is `out-of-scope`.
"""

from __future__ import annotations

from dataclasses import dataclass

from steps.report.catalogue import Catalogue, Gate, GateItem, Requirement
from steps.report.results import ADVISORY, FAIL, NOT_APPLICABLE, PASS, ScenarioResult

GREEN = "green"
RED = "red"
INCOMPLETE = "incomplete"
NOT_COVERED = "not-covered"
WAIVED = "waived"
OUT_OF_SCOPE = "out-of-scope"


@dataclass(frozen=True)
class RequirementRow:
    requirement: Requirement
    scenarios: tuple[ScenarioResult, ...]
    verdict: str


@dataclass(frozen=True)
class ItemVerdict:
    item: GateItem
    rows: tuple[RequirementRow, ...]
    verdict: str

    @property
    def scenarios(self) -> tuple[ScenarioResult, ...]:
        seen: dict[str, ScenarioResult] = {}
        for row in self.rows:
            for scenario in row.scenarios:
                seen.setdefault(scenario.nodeid, scenario)
        return tuple(seen.values())


@dataclass(frozen=True)
class GateVerdict:
    gate: Gate
    items: tuple[ItemVerdict, ...]
    scenarios: tuple[ScenarioResult, ...]  # every scenario tagged with the gate
    verdict: str

    def count(self, verdict: str) -> int:
        return sum(1 for item in self.items if item.verdict == verdict)


def verdict_of(scenarios: tuple[ScenarioResult, ...], requirements: tuple[Requirement, ...]) -> str:
    """The verdict of a set of requirements judged by the given scenarios (an item, or one requirement)."""
    if any(scenario.verdict == FAIL for scenario in scenarios):
        return FAIL
    judged = [r for r in requirements if not r.waiver or _scenarios_for(r, scenarios)]
    if not judged:
        return WAIVED
    if not scenarios:
        return NOT_COVERED
    every_requirement_exercised = all(_scenarios_for(r, scenarios) for r in judged)
    if every_requirement_exercised and all(scenario.verdict in (PASS, ADVISORY) for scenario in scenarios):
        return ADVISORY if any(scenario.verdict == ADVISORY for scenario in scenarios) else PASS
    if all(scenario.verdict == NOT_APPLICABLE for scenario in scenarios):
        return NOT_APPLICABLE
    return INCOMPLETE


def _scenarios_for(
    requirement: Requirement, scenarios: tuple[ScenarioResult, ...]
) -> tuple[ScenarioResult, ...]:
    return tuple(s for s in scenarios if requirement.id in s.labels.requirements)


def requirement_rows(catalogue: Catalogue, scenarios: list[ScenarioResult]) -> dict[str, RequirementRow]:
    rows = {}
    for requirement in catalogue.requirements.values():
        mine = tuple(s for s in scenarios if requirement.id in s.labels.requirements)
        verdict = verdict_of(mine, (requirement,))
        if verdict == NOT_COVERED and not requirement.in_scope:
            verdict = OUT_OF_SCOPE
        rows[requirement.id] = RequirementRow(requirement, mine, verdict)
    return rows


def gate_verdict(catalogue: Catalogue, gate: Gate, scenarios: list[ScenarioResult]) -> GateVerdict:
    in_gate = tuple(s for s in scenarios if gate.id in s.labels.gates)
    items = []
    for item in gate.items:
        rows = []
        for rid in item.requirements:
            requirement = catalogue.requirements[rid]
            mine = tuple(s for s in in_gate if rid in s.labels.requirements)
            rows.append(RequirementRow(requirement, mine, verdict_of(mine, (requirement,))))
        item_scenarios = tuple({s.nodeid: s for row in rows for s in row.scenarios}.values())
        requirements = tuple(row.requirement for row in rows)
        verdict = verdict_of(item_scenarios, requirements)
        if verdict == NOT_APPLICABLE:
            verdict = INCOMPLETE  # an item nobody could judge here is not done
        items.append(ItemVerdict(item, tuple(rows), verdict))
    if any(item.verdict == FAIL for item in items) or any(s.verdict == FAIL for s in in_gate):
        overall = RED
    elif all(item.verdict in (PASS, ADVISORY, WAIVED) for item in items) and any(
        item.verdict in (PASS, ADVISORY) for item in items
    ):
        overall = GREEN
    else:
        overall = INCOMPLETE
    return GateVerdict(gate, tuple(items), in_gate, overall)


def all_gate_verdicts(catalogue: Catalogue, scenarios: list[ScenarioResult]) -> list[GateVerdict]:
    return [gate_verdict(catalogue, gate, scenarios) for gate in catalogue.gates.values()]
