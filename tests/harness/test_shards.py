"""Sharded runs (`-n 2`, pytest-xdist) against the stub worker: the merged reports equal a serial run's,
each shard starts the workers of its groups once, and `--gpu 3,5` gives each shard its own GPU."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from steps.report.compare import compare, main
from steps.shards import parse_gpus

StubCommand = Callable[..., str]
FEATURES = (
    "features/http/health.feature",
    "features/http/health_delay.feature",
    "features/http/errors.feature",
)
DESELECT = "not describes_the_model_file"  # one scenario of each health feature stays not-run


@pytest.fixture
def two_groups(harness_dir: pytest.Pytester) -> pytest.Pytester:
    """health and errors share the worker of any model (the Qwen role's when spawned); health_delay needs
    one started with extra arguments."""
    health = (harness_dir.path / "features/http/health.feature").read_text(encoding="utf-8")
    delayed = health.replace(
        "Given a worker serving any model",
        'Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model started with "--token-delay-ms 1"',
    )
    assert delayed != health
    (harness_dir.path / "features/http/health_delay.feature").write_text(delayed, encoding="utf-8")
    return harness_dir


def _run(pytester: pytest.Pytester, stub: str, reports: str, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        *FEATURES,
        "-p",
        "steps.report.plugin",
        "--worker-cmd",
        stub,
        "--conformance-reports",
        reports,
        "-k",
        DESELECT,
        *args,
        timeout=240,
    )


def _junit_cases(path: Path) -> set[str]:
    root = ET.parse(path).getroot()
    return {f"{case.get('classname')}::{case.get('name')}" for case in root.iter("testcase")}


def _cucumber_scenarios(path: Path) -> set[str]:
    return {element["id"] for feature in json.loads(path.read_text()) for element in feature["elements"]}


def test_two_shards_reach_the_serial_verdicts_in_one_merged_report_set(
    two_groups: pytest.Pytester, stub_command: StubCommand
) -> None:
    root = two_groups.path
    _run(two_groups, stub_command(), "serial", "--worker-log-dir", "serial-logs").assert_outcomes(
        passed=3, deselected=2
    )
    sharded = _run(two_groups, stub_command(), "sharded", "-n", "2", "--worker-log-dir", "sharded-logs")
    sharded.assert_outcomes(passed=3)  # shards deselect on their own; xdist's summary does not count them

    assert compare(root / "serial/verdicts.json", root / "sharded/verdicts.json") == []
    serial_doc = json.loads((root / "serial/verdicts.json").read_text())
    sharded_doc = json.loads((root / "sharded/verdicts.json").read_text())
    order = [s["nodeid"] for s in serial_doc["scenarios"]]
    assert [s["nodeid"] for s in sharded_doc["scenarios"]] == order  # collection order, whoever ran what
    assert sorted(s["verdict"] for s in sharded_doc["scenarios"]) == ["not-run"] * 2 + ["pass"] * 3
    assert not any("@" in nodeid for nodeid in order)  # xdist's group suffix does not reach the reports
    assert _junit_cases(root / "sharded/junit.xml") == _junit_cases(root / "serial/junit.xml")
    assert _cucumber_scenarios(root / "sharded/cucumber.json") == _cucumber_scenarios(
        root / "serial/cucumber.json"
    )
    assert len(sharded_doc["run"]["worker"]["commands"]) == 2

    # Serially the plain worker starts twice (health, then health_delay's, then errors again); sharded, each
    # group runs on one shard, which starts its worker once, in its own process (its own log names).
    assert len(list((root / "serial-logs").glob("*.stdout.log"))) == 3
    sharded_logs = sorted((root / "sharded-logs").glob("*.stdout.log"))
    assert len(sharded_logs) == 2
    assert len({log.name.split("-")[1] for log in sharded_logs}) == 2  # two shard processes


def test_each_shard_takes_its_own_gpu(two_groups: pytest.Pytester, stub_command: StubCommand) -> None:
    result = _run(two_groups, stub_command(), "reports", "-n", "2", "--gpu", "3,5")
    result.assert_outcomes(passed=3)
    commands = json.loads((two_groups.path / "reports/verdicts.json").read_text())["run"]["worker"][
        "commands"
    ]
    assert sorted(command.split("--gpu-device ")[1].split()[0] for command in commands) == ["3", "5"]


def test_more_shards_than_listed_gpus_is_a_usage_error(
    two_groups: pytest.Pytester, stub_command: StubCommand
):
    result = two_groups.runpytest_subprocess("features/http/errors.feature", "-n", "3", "--gpu", "0,1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*names 2 GPUs for 3 shards*"])


def test_gpu_lists_parse_and_bad_values_are_usage_errors() -> None:
    assert parse_gpus("0") == (0,)
    assert parse_gpus("0,1,2") == (0, 1, 2)
    for bad in ("a", "0,,1", "-1"):
        with pytest.raises(pytest.UsageError):
            parse_gpus(bad)


def _verdicts(path: Path, verdicts: dict[str, str], gate: str) -> Path:
    scenarios = [{"nodeid": nodeid, "verdict": verdict} for nodeid, verdict in verdicts.items()]
    path.write_text(json.dumps({"scenarios": scenarios, "summary": {"gates": {"g": gate}}}))
    return path


def test_compare_names_each_differing_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    left = _verdicts(tmp_path / "a.json", {"t1": "pass", "t2": "pass"}, "pass")
    same = _verdicts(tmp_path / "b.json", {"t2": "pass", "t1": "pass"}, "pass")
    other = _verdicts(tmp_path / "c.json", {"t1": "fail", "t3": "pass"}, "fail")
    assert main([str(left), str(same)]) == 0
    assert main([str(left), str(other)]) == 1
    out = capsys.readouterr().out
    for line in ("scenario t1: pass | fail", "scenario t2: pass | (absent)", "scenario t3: (absent) | pass"):
        assert line in out
    assert "gate g: pass | fail" in out


def test_compare_refuses_what_is_not_a_verdicts_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.json").write_text("[]")
    assert main([str(tmp_path / "x.json"), str(tmp_path / "missing.json")]) == 2
    assert "not a conformance verdicts.json" in capsys.readouterr().err


def test_attached_worker_scenarios_stay_on_one_shard(two_groups: pytest.Pytester, fixtures_dir: Path) -> None:
    """One attached worker runs one job at a time: its scenarios must not run side by side."""
    from tests.harness.conftest import STAND_IN
    from tests.harness.test_attach import attached

    with attached(fixtures_dir / STAND_IN) as url:
        result = two_groups.runpytest_subprocess(*FEATURES, "--worker-url", url, "-n", "2", "-v", timeout=240)
    result.assert_outcomes(passed=3, skipped=2)  # health_delay needs a spawned worker: not applicable
    verdict_lines = [line for line in result.outlines if line.startswith("[gw") and " features/" in line]
    assert len(verdict_lines) == 5, result.outlines
    shards = {line.split("]")[0] for line in verdict_lines}
    assert len(shards) == 1, result.outlines


def test_a_crashed_shard_leaves_a_failed_verdict(
    two_groups: pytest.Pytester, stub_command: StubCommand
) -> None:
    two_groups.makeconftest(
        'import os\npytest_plugins = ["steps.plugin"]\n\n'
        "def pytest_runtest_call(item):\n"
        '    if "cancelled_job" in item.name:\n'
        "        os._exit(3)  # the shard process dies mid-scenario\n"
    )
    result = _run(two_groups, stub_command(), "reports", "-n", "2")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    scenarios = json.loads((two_groups.path / "reports/verdicts.json").read_text())["scenarios"]
    crashed = [s for s in scenarios if "cancelled_job" in s["nodeid"]]
    assert [(s["verdict"], "crashed" in s["reason"]) for s in crashed] == [("fail", True)], crashed
    assert not any("@" in s["nodeid"] for s in scenarios)
