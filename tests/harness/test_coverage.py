"""Coverage honesty: every in-scope requirement is exercised by a scenario, waived, or listed as pending.

In scope: status "m0" or "deferred" (the M0.5 and M1 items included). A requirement counts as exercised
when at least one scenario in features/**/*.feature carries its ID as a tag (on the Feature, Rule,
Scenario or Examples). features/coverage-pending.toml is the reviewed list of what is not exercised yet;
these tests fail on a new gap, and on a pending entry or a waiver that a scenario has made obsolete.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from gherkin.parser import Parser

from steps.report.catalogue import Catalogue

FEATURES = Path(__file__).resolve().parents[2] / "features"


def _scenario_tags(node: dict, inherited: frozenset[str]) -> Iterator[frozenset[str]]:
    """Tags in force on each scenario (or each Examples table of an outline)."""
    tags = inherited | {tag["name"].lstrip("@") for tag in node.get("tags", [])}
    for child in node.get("children", []):
        if "rule" in child:
            yield from _scenario_tags(child["rule"], tags)
        elif "scenario" in child:
            scenario = child["scenario"]
            own = tags | {tag["name"].lstrip("@") for tag in scenario.get("tags", [])}
            examples = scenario.get("examples") or []
            if not examples:
                yield own
            for table in examples:
                yield own | {tag["name"].lstrip("@") for tag in table.get("tags", [])}


def feature_tags() -> dict[Path, list[frozenset[str]]]:
    parsed = {}
    for path in sorted(FEATURES.rglob("*.feature")):
        document = Parser().parse(path.read_text(encoding="utf-8"))
        feature = document.get("feature")
        parsed[path] = list(_scenario_tags(feature, frozenset())) if feature else []
    return parsed


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load(FEATURES)


@pytest.fixture(scope="module")
def exercised() -> set[str]:
    return {tag for scenarios in feature_tags().values() for tags in scenarios for tag in tags}


@pytest.fixture(scope="module")
def pending() -> dict[str, str]:
    data = tomllib.loads((FEATURES / "coverage-pending.toml").read_text(encoding="utf-8"))
    listed: dict[str, str] = {}
    for entry in data.get("pending", []):
        for rid in entry["ids"]:
            assert rid not in listed, f"coverage-pending.toml lists {rid} twice"
            listed[rid] = entry["area"]
    return listed


def _listing(ids: list[str], catalogue: Catalogue) -> str:
    return "\n".join(f"  {rid}  {catalogue.requirements[rid].title}" for rid in ids)


def test_every_in_scope_requirement_is_exercised_waived_or_pending(
    catalogue: Catalogue, exercised: set[str], pending: dict[str, str]
) -> None:
    gaps = [
        rid
        for rid, requirement in catalogue.requirements.items()
        if requirement.in_scope and rid not in exercised and not requirement.waiver and rid not in pending
    ]
    assert not gaps, (
        "requirements no scenario exercises, with no waiver and not in features/coverage-pending.toml:\n"
        + _listing(gaps, catalogue)
    )


def test_pending_list_holds_only_open_gaps(
    catalogue: Catalogue, exercised: set[str], pending: dict[str, str]
) -> None:
    unknown = [rid for rid in pending if rid not in catalogue.requirements]
    assert not unknown, f"coverage-pending.toml names IDs missing from requirements.toml: {unknown}"
    done = [rid for rid in pending if rid in exercised]
    assert not done, "now exercised by scenarios; remove from features/coverage-pending.toml:\n" + _listing(
        done, catalogue
    )
    waived = [rid for rid in pending if catalogue.requirements[rid].waiver]
    assert not waived, f"waived in requirements.toml and also pending: {waived}"
    out_of_scope = [rid for rid in pending if not catalogue.requirements[rid].in_scope]
    assert not out_of_scope, f"optional or removed, so never pending: {out_of_scope}"


def test_waived_requirements_have_no_scenario(catalogue: Catalogue, exercised: set[str]) -> None:
    stale = [rid for rid, r in catalogue.requirements.items() if r.waiver and rid in exercised]
    assert not stale, f"a scenario now exercises these; drop their waiver in requirements.toml: {stale}"


def test_feature_files_use_only_declared_tags(catalogue: Catalogue) -> None:
    problems = [
        f"{path.relative_to(FEATURES)}: @{tag}"
        for path, scenarios in feature_tags().items()
        for tag in sorted({tag for tags in scenarios for tag in tags})
        if not catalogue.known_tag(tag)
    ]
    assert not problems, "tags not in requirements.toml, gates.toml or tags.toml:\n  " + "\n  ".join(problems)


def test_pending_coverage_summary(catalogue: Catalogue, exercised: set[str], pending: dict[str, str]) -> None:
    """Prints the coverage picture (run with -s); fails only if the numbers stop adding up."""
    in_scope = [rid for rid, r in catalogue.requirements.items() if r.in_scope]
    covered = [rid for rid in in_scope if rid in exercised]
    waived = [rid for rid in in_scope if catalogue.requirements[rid].waiver]
    print(
        f"\nin scope {len(in_scope)}: exercised {len(covered)}, waived {len(waived)}, pending {len(pending)}"
    )
    by_area: dict[str, list[str]] = {}
    for rid, area in pending.items():
        by_area.setdefault(area, []).append(rid)
    for area, ids in by_area.items():
        print(f"  {len(ids):3d} pending  {area}: {' '.join(ids)}")
    assert len(covered) + len(waived) + len(pending) == len(in_scope)


def test_gate_tags_only_on_scenarios_that_test_an_item_of_the_gate(catalogue: Catalogue) -> None:
    """A scenario counts for a gate item when it carries the gate's tag and one of the item's spec IDs; a
    gate tag on a scenario that tests none of the gate's requirements would count for nothing and mislead
    the reader of the feature file. (Tags are per model, so the converse is not required: a Qwen scenario
    for M0-W-1230 rightly does not carry the Phi-3 gate.)"""
    gate_requirements = {
        gate.id: {rid for item in gate.items for rid in item.requirements}
        for gate in catalogue.gates.values()
    }
    stray = []
    for path, scenarios in feature_tags().items():
        for tags in scenarios:
            requirements = {tag for tag in tags if tag in catalogue.requirements}
            for tag in sorted(tags):
                gate = tag.removeprefix("gate_")
                if tag.startswith("gate_") and not gate_requirements.get(gate, set()) & requirements:
                    stray.append(f"  {path.relative_to(FEATURES)}: @{tag} with {sorted(requirements)}")
    assert not stray, "gate tags on scenarios that test none of the gate's items:\n" + "\n".join(stray)
