"""Black-box tests of the conformance reports: a small fake catalogue and feature set run through pytester.

The fake gates are built so that each gate verdict appears once:
- `alpha`: every item passes (one item is waived)   -> green
- `beta`:  one scenario fails                        -> red
- `gamma`: one scenario is not applicable, one item has no scenario -> incomplete
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REQUIREMENTS = """
[[requirement]]
id = "M0-W-1300"
title = "POST /execute"
level = "MUST"
milestone = "M0"
status = "m0"
verify = ["http"]
section = "§7.1"

[[requirement]]
id = "M0-W-1311"
title = "Event Ordering"
level = "MUST"
milestone = "M0"
status = "m0"
verify = ["http"]
section = "§7.2"

[[requirement]]
id = "M0-W-1320"
title = "GET /health"
level = "MUST"
milestone = "M0"
status = "m0"
verify = ["http"]
section = "§7.3"

[[requirement]]
id = "M0-W-1330"
title = "POST /cancel"
level = "MUST"
milestone = "M0"
status = "m0"
verify = ["http", "gpu"]
section = "§7.4"

[[requirement]]
id = "M0-W-1621"
title = "Model Loading Progress"
level = "SHOULD"
milestone = "M0"
status = "m0"
verify = ["process"]
section = "§10.3"

[[requirement]]
id = "M0-W-1052"
title = "C API Interface"
level = "MUST"
milestone = "M0"
status = "m0"
verify = ["numeric"]
section = "§4.2"
waiver = "C API of a Rust + C++ worker; the suite checks what it carries end to end instead."
"""

GATES = """
[[gate]]
id = "alpha"
title = "Alpha gate"
milestone = "M0"
source = "alpha.md"
description = "All good."

[[gate.item]]
text = "Execute streams tokens"
requirements = ["M0-W-1300"]

[[gate.item]]
text = "Events come in order"
requirements = ["M0-W-1311"]

[[gate.item]]
text = "A C API joins the halves"
requirements = ["M0-W-1052"]

[[gate]]
id = "beta"
title = "Beta gate"
milestone = "M0"
source = "beta.md"
description = "Health is broken."

[[gate.item]]
text = "Health answers"
requirements = ["M0-W-1320"]

[[gate]]
id = "gamma"
title = "Gamma gate"
milestone = "M0"
source = "gamma.md"
description = "Cancel cannot be judged here; progress has no scenario."

[[gate.item]]
text = "Execute streams tokens"
requirements = ["M0-W-1300"]

[[gate.item]]
text = "Cancel stops a job"
requirements = ["M0-W-1330"]

[[gate.item]]
text = "Loading reports progress"
requirements = ["M0-W-1621"]
"""

TAGS = """
[models]
model_tiny = "tiny synthetic model"
[quants]
q8_0 = "Q8_0"
[milestones]
m0 = "M0"
[capabilities]
needs_gpu = "needs a GPU"
"""

EXECUTE_FEATURE = """\
@gate_alpha @m0
Feature: Execute
  @M0-W-1300 @gate_gamma @model_tiny @q8_0
  Scenario: Execute streams tokens
    Given a worker
    Then the stream is well formed

  @M0-W-1311
  Scenario: Events come in order
    Given a worker
    Then the stream is well formed
"""

HEALTH_FEATURE = """\
@gate_beta @m0
Feature: Health
  @M0-W-1320
  Scenario: Health reports residency
    Given a worker
    Then the health check fails
"""

CANCEL_FEATURE = """\
@gate_gamma @m0
Feature: Cancel
  @M0-W-1330 @needs_gpu
  Scenario: Cancel stops a running job
    Given a worker
    Then this needs a GPU
"""

STEPS = """\
import pytest
from pytest_bdd import given, scenarios, then

from steps.report.provenance import run_provenance

scenarios("features")


@given("a worker")
def worker(request):
    request.node.user_properties.append(("worker_stdout", {log!r}))
    request.node.user_properties.append(("worker_command", "stub-worker --port 4000"))
    request.node.user_properties.append(("model_file", {model!r}))
    request.node.user_properties.append(("model_synthetic", True))
    run_provenance(request.config).record_device("test device")


@then("the stream is well formed")
def well_formed():
    pass


@then("the health check fails")
def health_fails():
    raise AssertionError("M0-W-1320: /health lacks `resident`")


@then("this needs a GPU")
def needs_gpu():
    pytest.skip("not applicable: no CUDA GPU visible on this machine")
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    features = pytester.mkdir("features")
    (features / "requirements.toml").write_text(REQUIREMENTS, encoding="utf-8")
    (features / "gates.toml").write_text(GATES, encoding="utf-8")
    (features / "tags.toml").write_text(TAGS, encoding="utf-8")
    (features / "execute.feature").write_text(EXECUTE_FEATURE, encoding="utf-8")
    (features / "health.feature").write_text(HEALTH_FEATURE, encoding="utf-8")
    (features / "cancel.feature").write_text(CANCEL_FEATURE, encoding="utf-8")
    log = pytester.path / "worker.stdout.log"
    log.write_text("worker booted\nmodel_load_progress percent=100\nWORKER-LOG-MARKER\n", encoding="utf-8")
    model = pytester.path / "tiny-q8_0.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    pytester.makepyfile(test_suite=STEPS.format(log=str(log), model=str(model)))
    pytester.makeini("[pytest]\nfilterwarnings = ignore::pytest.PytestUnknownMarkWarning\n")
    return pytester


def run(suite: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, Path]:
    out = suite.path / "reports"
    result = suite.runpytest(
        "-p", "steps.report.plugin", "-p", "no:cacheprovider", "--conformance-reports", str(out), *args
    )
    return result, out


def verdicts(out: Path) -> dict:
    return json.loads((out / "verdicts.json").read_text(encoding="utf-8"))


def test_every_report_file_is_written(suite: pytest.Pytester) -> None:
    result, out = run(suite)
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    for name in ("index.html", "gate-alpha.html", "gate-beta.html", "gate-gamma.html", "verdicts.json"):
        assert (out / name).is_file(), name
    cases = ET.parse(out / "junit.xml").getroot().iter("testcase")
    assert len(list(cases)) == 4
    cucumber = json.loads((out / "cucumber.json").read_text(encoding="utf-8"))
    assert {feature["name"] for feature in cucumber} == {"Execute", "Health", "Cancel"}
    result.stdout.fnmatch_lines(["*conformance gates*", "GREEN*alpha", "RED*beta", "INCOMPLETE*gamma"])


def test_gate_verdicts_follow_the_scenarios(suite: pytest.Pytester) -> None:
    _, out = run(suite)
    data = verdicts(out)
    assert data["summary"]["gates"] == {"alpha": "green", "beta": "red", "gamma": "incomplete"}
    gates = {gate["id"]: gate for gate in data["gates"]}
    assert [item["verdict"] for item in gates["alpha"]["items"]] == ["pass", "pass", "waived"]
    assert [item["verdict"] for item in gates["beta"]["items"]] == ["fail"]
    assert [item["verdict"] for item in gates["gamma"]["items"]] == ["pass", "incomplete", "not-covered"]


def test_scenario_verdicts_carry_ids_reasons_and_logs(suite: pytest.Pytester) -> None:
    _, out = run(suite)
    scenarios = {s["name"]: s for s in verdicts(out)["scenarios"]}
    executed = scenarios["Execute streams tokens"]
    assert executed["verdict"] == "pass"
    assert executed["requirements"] == ["M0-W-1300"]
    assert executed["gates"] == ["alpha", "gamma"]  # feature tag + scenario tag, in manifest order
    assert (executed["models"], executed["quants"], executed["milestones"]) == (
        ["model_tiny"],
        ["q8_0"],
        ["m0"],
    )
    assert [step["status"] for step in executed["steps"]] == ["passed", "passed"]
    cancelled = scenarios["Cancel stops a running job"]
    assert cancelled["verdict"] == "not-applicable"
    assert cancelled["reason"] == "not applicable: no CUDA GPU visible on this machine"
    health = scenarios["Health reports residency"]
    assert health["verdict"] == "fail"
    assert "M0-W-1320: /health lacks `resident`" in health["reason"]
    assert health["worker_logs"][0]["label"] == "stdout"


def test_requirements_roll_up_across_gates(suite: pytest.Pytester) -> None:
    _, out = run(suite)
    requirements = verdicts(out)["requirements"]
    assert requirements["M0-W-1300"]["verdict"] == "pass"
    assert requirements["M0-W-1320"]["verdict"] == "fail"
    assert requirements["M0-W-1330"]["verdict"] == "not-applicable"
    assert requirements["M0-W-1621"]["verdict"] == "not-covered"
    assert requirements["M0-W-1052"]["verdict"] == "waived"
    assert verdicts(out)["uncovered"] == ["M0-W-1621"]


def test_gate_page_opens_with_the_checklist_and_ends_with_provenance(suite: pytest.Pytester) -> None:
    _, out = run(suite)
    page = (out / "gate-beta.html").read_text(encoding="utf-8")
    assert page.index("Gate checklist") < page.index("Results") < page.index("Run provenance")
    assert ">RED<" in page and "Health answers" in page and "M0-W-1320" in page
    assert "WORKER-LOG-MARKER" in page  # the worker log tail of the failing scenario
    assert "stub-worker --port 4000" in page and "test device" in page
    model = suite.path / "tiny-q8_0.gguf"
    assert hashlib.sha256(model.read_bytes()).hexdigest() in page
    assert "synthetic stand-in" in page
    gamma = (out / "gate-gamma.html").read_text(encoding="utf-8")
    assert "not applicable: no CUDA GPU visible on this machine" in gamma
    assert "No scenario exercises this requirement for this gate." in gamma
    alpha = (out / "gate-alpha.html").read_text(encoding="utf-8")
    assert "Waived: C API of a Rust" in alpha and ">GREEN<" in alpha
    assert "<script" not in alpha  # self-contained, static


def test_a_checklist_row_names_the_real_file_its_scenario_ran_on(suite: pytest.Pytester) -> None:
    """An item judged on a real file (the spec's model, or a real sibling of it: ERRATA E-31) names that file
    in its row, by name and SHA-256 prefix; a synthetic stand-in's row does not."""
    sibling = suite.path / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    sibling.write_bytes(b"GGUF" + bytes(range(60)))
    steps = (suite.path / "test_suite.py").read_text(encoding="utf-8")
    stand_in = str(suite.path / "tiny-q8_0.gguf")
    steps = steps.replace(f'("model_file", {stand_in!r})', f'("model_file", {str(sibling)!r})')
    (suite.path / "test_suite.py").write_text(
        steps.replace('("model_synthetic", True)', '("model_synthetic", False)')
    )
    _, out = run(suite)
    digest = hashlib.sha256(sibling.read_bytes()).hexdigest()
    alpha = (out / "gate-alpha.html").read_text(encoding="utf-8")
    checklist = alpha[alpha.index("Gate checklist") : alpha.index("Results")]
    row = checklist[checklist.index("Execute streams tokens") :].split("</li>")[0]
    assert "on the real file <span" in row and f"{sibling.name}</span>, sha256 {digest[:12]}…" in row
    executed = next(s for s in verdicts(out)["scenarios"] if s["name"] == "Execute streams tokens")
    assert (executed["model_file"], executed["model_synthetic"]) == (str(sibling), False)
    assert executed["model_sha256"] == digest


def test_a_checklist_row_of_a_synthetic_stand_in_names_no_file(suite: pytest.Pytester) -> None:
    _, out = run(suite)
    alpha = (out / "gate-alpha.html").read_text(encoding="utf-8")
    assert "on the real file" not in alpha[alpha.index("Gate checklist") : alpha.index("Results")]


def test_index_lists_gates_and_uncovered_requirements(suite: pytest.Pytester) -> None:
    (suite.path / "features" / "coverage-pending.toml").write_text(
        '[[pending]]\narea = "features/process: load progress logs"\nids = ["M0-W-1621"]\n', encoding="utf-8"
    )
    _, out = run(suite)
    index = (out / "index.html").read_text(encoding="utf-8")
    for gate in ("gate-alpha.html", "gate-beta.html", "gate-gamma.html"):
        assert gate in index
    assert "M0-W-1621" in index and "features/process: load progress logs" in index
    assert (
        verdicts(out)["requirements"]["M0-W-1621"]["pending_area"] == "features/process: load progress logs"
    )


def test_deselected_scenarios_are_not_run_and_keep_their_gate_incomplete(suite: pytest.Pytester) -> None:
    _, out = run(suite, "-k", "not order")
    data = verdicts(out)
    scenarios = {s["nodeid"]: s for s in data["scenarios"]}
    deselected = scenarios["test_suite.py::test_events_come_in_order"]
    assert (deselected["verdict"], deselected["name"]) == ("not-run", "events come in order")
    assert data["summary"]["gates"]["alpha"] == "incomplete"


def test_all_passing_makes_every_touched_gate_green(suite: pytest.Pytester) -> None:
    _, out = run(suite, "-k", "not health and not cancel")
    gates = verdicts(out)["summary"]["gates"]
    assert gates["alpha"] == "green"
    assert gates["beta"] == "incomplete"  # its only scenario was deselected: not run is not a pass


def test_html_report_gains_spec_id_and_gate_columns(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-p", "steps.report.plugin", "-p", "no:cacheprovider", "--html=report.html")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    html = (suite.path / "report.html").read_text(encoding="utf-8")
    assert "Spec IDs" in html and "Gates" in html
    assert "M0-W-1300" in html and "alpha gamma" in html


def test_missing_catalogue_is_a_clear_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest("-p", "steps.report.plugin", "--conformance-reports", "out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*needs the requirement catalogue*requirements.toml*missing*"])


def test_a_shards_group_suffix_is_not_part_of_the_scenario_id():
    """pytest-xdist's loadgroup scheduling names items `<nodeid>@<group>` (some versions before -k/-m
    deselect them); verdicts keep the scenario's own node ID so serial and sharded runs compare."""
    from steps.report.plugin import _without_group

    assert (
        _without_group("features/a.feature::test_x[m1]@worker-tiny_llama") == "features/a.feature::test_x[m1]"
    )
    assert (
        _without_group("features/a.feature::test_x[user@example.com]")
        == "features/a.feature::test_x[user@example.com]"
    )
    assert _without_group("features/a.feature::test_x") == "features/a.feature::test_x"
