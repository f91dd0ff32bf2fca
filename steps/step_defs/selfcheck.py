"""Steps that run the worker's own numerical self-check command and judge its JSON verdict
(M0-W-1363, M0-W-1821 tokenizer vectors; M0-W-1822, M0-W-1435 MXFP4 micro-goldens).

What only the inside of a worker can compute (a tokenizer's ids, a kernel's numbers) is checked by a
command the worker declares: `--selfcheck-cmd TEMPLATE`, placeholders
    {python}  this interpreter       {check}   tokenizer-vectors | mxfp4-goldens
    {model}   the model file         {device}  cuda when a GPU is visible, else cpu
    {args}    the check's own arguments: `--vectors FILE` for tokenizer-vectors, nothing for mxfp4-goldens
The reference worker's command is built in. The command prints one JSON object,
    {"pass": bool, "cases": [{"name": str, "pass": bool, ...}, ...], "error": str (when it cannot run)}
and exits 0 (all pass), 1 (a case fails) or 2 (cannot run). Without a declared command (another worker
with no --selfcheck-cmd, or --worker-url) the scenarios are not applicable.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from pytest_bdd import parsers, then, when

from steps.state import ScenarioState
from steps.targets import cuda_visible
from steps.verdicts import not_applicable, require

REFERENCE_SELFCHECK = (
    "{python} -m reference_worker.selfcheck {check} --model {model} --device {device} {args}"
)
VECTORS_DIR = Path("fixtures") / "vectors"
SELFCHECK_TIMEOUT_S = 600.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("worker-orcd").addoption(
        "--selfcheck-cmd",
        metavar="TEMPLATE",
        help="the worker's self-check command; placeholders {python} {check} {model} {device} {args} "
        "(default: the reference worker's, when it is the worker under test)",
    )


def selfcheck_template(config: pytest.Config) -> str | None:
    declared = config.getoption("selfcheck_cmd")
    if declared:
        return declared
    if config.getoption("worker_cmd") is None and config.getoption("worker_url") is None:
        return REFERENCE_SELFCHECK
    return None


@dataclass
class SelfCheck:
    command: list[str]
    returncode: int
    verdict: dict | None
    output: str
    expected_cases: int | None  # the number of vectors handed to the check, when known


@pytest.fixture
def selfcheck_result() -> dict[str, SelfCheck]:
    return {}


def declared_template(request) -> str:
    template = selfcheck_template(request.config)
    if template is None:
        not_applicable(
            "the worker under test declares no self-check command (pass --selfcheck-cmd TEMPLATE); "
            "its internals cannot be checked over HTTP"
        )
    return template


def run_selfcheck(
    check: str, args: list[str], state: ScenarioState, request, expected_cases: int | None
) -> SelfCheck:
    template = declared_template(request)
    assert state.model is not None, "the scenario needs a 'Given a worker serving ...' step"
    values = {
        "{python}": shlex.quote(sys.executable),
        "{check}": check,
        "{model}": shlex.quote(str(state.model.path)),
        "{device}": "cuda" if cuda_visible() else "cpu",
        "{args}": shlex.join(args),
    }
    line = template
    for placeholder, value in values.items():
        line = line.replace(placeholder, value)
    command = shlex.split(line)
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=SELFCHECK_TIMEOUT_S,
            cwd=request.config.rootpath,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"setup error: self-check `{shlex.join(command)}` did not run: {exc}", pytrace=False)
    try:
        verdict = json.loads(done.stdout)
    except json.JSONDecodeError:
        verdict = None
    return SelfCheck(command, done.returncode, verdict, (done.stdout + done.stderr)[-3000:], expected_cases)


@when(parsers.parse('I run the worker\'s self-check "tokenizer-vectors" with the "{name}" vectors'))
def selfcheck_vectors(
    name: str, scenario_state: ScenarioState, selfcheck_result: dict[str, SelfCheck], request
) -> None:
    declared_template(request)
    path = request.config.rootpath / VECTORS_DIR / f"{name}.json"
    assert path.is_file(), f"no conformance vectors {path}"
    count = len(json.loads(path.read_text(encoding="utf-8"))["vectors"])
    selfcheck_result["last"] = run_selfcheck(
        "tokenizer-vectors", ["--vectors", str(path)], scenario_state, request, count
    )


@when('I run the worker\'s self-check "mxfp4-goldens"')
def selfcheck_mxfp4(scenario_state: ScenarioState, selfcheck_result: dict[str, SelfCheck], request) -> None:
    selfcheck_result["last"] = run_selfcheck("mxfp4-goldens", [], scenario_state, request, None)


@then("the self-check passes every case")
def selfcheck_passes(selfcheck_result: dict[str, SelfCheck], spec_ids: str) -> None:
    result = selfcheck_result.get("last")
    assert result is not None, "no self-check has run"
    command = shlex.join(result.command)
    verdict = result.verdict
    require(
        isinstance(verdict, dict) and isinstance(verdict.get("cases"), list),
        spec_ids,
        f"`{command}` printed no JSON verdict (exit {result.returncode}):\n{result.output}",
    )
    assert isinstance(verdict, dict)
    require(
        result.returncode != 2 and "error" not in verdict,
        spec_ids,
        f"the self-check could not run (exit {result.returncode}): {verdict.get('error', result.output)}",
    )
    cases = verdict["cases"]
    failed = [case for case in cases if not (isinstance(case, dict) and case.get("pass") is True)]
    require(
        not failed,
        spec_ids,
        f"{len(failed)} of {len(cases)} cases fail: "
        + "; ".join(f"{case.get('name')}: {case.get('problem', case)}" for case in failed[:5]),
    )
    require(cases, spec_ids, f"the self-check checked no case: {verdict}")
    if result.expected_cases is not None:
        require(
            len(cases) == result.expected_cases,
            spec_ids,
            f"the self-check reported {len(cases)} cases for {result.expected_cases} vectors",
        )
    require(
        verdict.get("pass") is True and result.returncode == 0,
        spec_ids,
        f"every case passed but the verdict says pass={verdict.get('pass')!r}, exit {result.returncode}",
    )
