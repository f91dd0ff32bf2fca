"""The worker's own numerical self-check command (`--selfcheck-cmd TEMPLATE`), run and its JSON verdict
read; the steps that judge it are in steps/step_defs/selfcheck.py, which says what the command prints.
Fixture `selfcheck_result`.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from steps.state import ScenarioState
from steps.targets import cuda_visible
from steps.verdicts import not_applicable

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
