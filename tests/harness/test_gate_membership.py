"""Gate membership derived from features/gates.toml (steps/gate_membership.py): a scenario counts for a
gate when it carries one of the gate's requirement IDs and matches the gate's scope."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.gate_membership import derived_gates, load_rules
from steps.vocabulary import VocabularyError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rules():
    return load_rules(REPO / "features")


def test_a_requirement_of_a_gate_in_its_scope_counts_for_it(rules):
    assert {"gate_foundation", "gate_foundation_w4", "gate_m0_complete"} <= derived_gates(
        {"M0-W-1311", "m0", "model_any"}, rules
    )


def test_a_model_gate_takes_only_its_models(rules):
    # M0-W-1214 is an item of llama_qwen, llama_phi3 and llama_kernels; on Phi-3 only the Phi-3 and kernel gates.
    assert derived_gates({"M0-W-1214", "m0", "model_phi3"}, rules) == {
        "gate_llama_phi3",
        "gate_llama_kernels",
    }
    assert "gate_llama_qwen" not in derived_gates({"M0-W-1214", "m0", "model_qwen", "real_qwen"}, rules)


def test_the_milestone_gates_take_their_milestones(rules):
    assert derived_gates({"M0-W-1311", "m0_5"}, rules) == {"gate_m0_5"}
    assert "gate_m1" in derived_gates({"M0-W-1630", "m1"}, rules)
    assert "gate_m1" not in derived_gates({"M0-W-1340", "m0"}, rules)


def test_without_a_requirement_of_the_gate_nothing_counts(rules):
    assert derived_gates({"M0-W-1040", "m0"}, rules) == set()


def test_a_malformed_scope_is_an_error_naming_the_gate(tmp_path: Path):
    (tmp_path / "gates.toml").write_text(
        '[[gate]]\nid = "x"\nscope = "m0 and and"\n[[gate.item]]\ntext = "t"\nrequirements = ["M0-W-1300"]\n'
    )
    with pytest.raises(VocabularyError, match="gate x: scope 'm0 and and' is not a marker expression"):
        load_rules(tmp_path)


UNTAGGED = """\
@m0 @model_any
Feature: A feature without gate tags

  @M0-W-1320
  Scenario: Health without gate tags
    Given a worker serving any model
    When I GET /health
    Then the response status is 200
"""


def test_gate_markers_select_scenarios_without_gate_tags(harness_dir: pytest.Pytester):
    harness_dir.makefile(".feature", **{"features/untagged": UNTAGGED})
    result = harness_dir.runpytest_subprocess(
        "features/untagged.feature", "--collect-only", "-q", "-m", "gate_foundation_w4", timeout=120
    )
    assert "1 test collected" in result.stdout.str(), result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*untagged.feature::*[[]M0-W-1320 gate_foundation gate_foundation_w4 gate_m0_complete[]]"]
    )
