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

from pytest_bdd import parsers, then, when

from steps.selfcheck import VECTORS_DIR, SelfCheck, declared_template, run_selfcheck
from steps.state import ScenarioState
from steps.verdicts import require


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
