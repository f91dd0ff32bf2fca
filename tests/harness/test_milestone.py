"""Which failures fail a run: the level and milestone rule (steps/milestone.py) and its gate rollup."""

from __future__ import annotations

from steps.milestone import LEVEL, MILESTONE, advisory_for
from steps.report.catalogue import Catalogue, Gate, GateItem, Labels, Requirement
from steps.report.results import ADVISORY, FAIL, PASS, ScenarioResult
from steps.report.rollup import GREEN, RED, gate_verdict


def requirement(rid: str, level: str = "MUST", milestone: str = "M0") -> Requirement:
    return Requirement(rid, rid, level, milestone, "m0", ("http",), "§0")


MUST_M0 = requirement("M0-W-1300")
SHOULD_M0 = requirement("M0-W-1621", level="SHOULD")
MAY_M0 = requirement("M0-W-1101", level="MAY")
MUST_M1 = requirement("M1-METRICS", milestone="M1")
SHOULD_M1 = requirement("M0-W-1350", level="SHOULD", milestone="M1")


def test_a_must_of_the_runs_milestone_binds():
    assert advisory_for([MUST_M0], "M0") is None
    assert advisory_for([MUST_M0, SHOULD_M0], "M0") is None
    assert advisory_for([MUST_M1], "M1") is None
    assert advisory_for([], "M0") is None  # an untagged check always binds


def test_should_and_may_are_advisory_at_every_milestone():
    for milestone in ("M0", "M0.5", "M1"):
        advisory = advisory_for([SHOULD_M0, MAY_M0], milestone)
        assert advisory is not None and advisory.kind == LEVEL
        assert "M0-W-1621 (SHOULD)" in advisory.reason and "M0-W-1101 (MAY)" in advisory.reason


def test_a_later_milestone_is_advisory_for_the_run():
    advisory = advisory_for([MUST_M1, SHOULD_M1], "M0")
    assert advisory is not None and advisory.kind == MILESTONE
    assert "beyond milestone M0" in advisory.reason and "M1-METRICS (M1)" in advisory.reason
    mixed = advisory_for([MUST_M1, SHOULD_M0], "M0")  # nothing binding: the SHOULD names the reason
    assert mixed is not None and mixed.kind == LEVEL


def scenario(nodeid: str, verdict: str, *ids: str, gate: str = "g") -> ScenarioResult:
    return ScenarioResult(nodeid, nodeid, "f", nodeid, Labels(requirements=ids, gates=(gate,)), verdict)


def catalogue(*items: tuple[str, ...]) -> tuple[Catalogue, Gate]:
    gate = Gate("g", "G", "M0", "test", "", tuple(GateItem(" ".join(ids), ids) for ids in items))
    requirements = {r.id: r for r in (MUST_M0, SHOULD_M0, MAY_M0)}
    return Catalogue(requirements, {"g": gate}), gate


def test_an_advisory_item_keeps_the_gate_green_and_visible():
    cat, gate = catalogue(("M0-W-1300",), ("M0-W-1621",))
    results = [scenario("a", PASS, "M0-W-1300"), scenario("b", ADVISORY, "M0-W-1621")]
    verdict = gate_verdict(cat, gate, results)
    assert verdict.verdict == GREEN
    assert [item.verdict for item in verdict.items] == [PASS, ADVISORY]


def test_a_failure_still_makes_the_gate_red():
    cat, gate = catalogue(("M0-W-1300",), ("M0-W-1621",))
    results = [scenario("a", FAIL, "M0-W-1300"), scenario("b", ADVISORY, "M0-W-1621")]
    assert gate_verdict(cat, gate, results).verdict == RED
