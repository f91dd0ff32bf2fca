"""One verdict per scenario, built from pytest's phase reports.

A scenario is one collected test item (a pytest-bdd scenario or outline example, or a plain test carrying
requirement markers). Verdicts: `pass`, `fail`, `advisory` (a SHOULD or MAY requirement not met: shown,
never a failure; `steps/milestone.py`), `not-applicable` (skipped, with the reason shown) and `not-run`
(deselected, so it exists but this run did not judge it). A skip is never a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from steps.report.catalogue import Labels

PASS = "pass"
FAIL = "fail"
NOT_APPLICABLE = "not-applicable"
NOT_RUN = "not-run"
ADVISORY = "advisory"
SCENARIO_VERDICTS = (PASS, FAIL, ADVISORY, NOT_APPLICABLE, NOT_RUN)
DETAIL_CHARS = 6000  # failure text kept per scenario; the JUnit XML keeps the full text


@dataclass(frozen=True)
class Step:
    keyword: str
    text: str
    status: str  # "passed" | "failed" | "not reached"


@dataclass
class ScenarioResult:
    nodeid: str
    name: str
    feature: str
    location: str
    labels: Labels
    verdict: str = PASS
    reason: str = ""  # skip reason, or the first line of the failure
    detail: str = ""  # failure text (assertion, traceback tail)
    duration_s: float = 0.0
    steps: tuple[Step, ...] = ()
    worker_logs: tuple[tuple[str, str], ...] = ()  # (label, path)
    model_file: str = ""  # the file the scenario's worker served, where one was recorded
    model_synthetic: bool = False

    def record_phase(self, when: str, outcome: str, reason: str, detail: str, duration_s: float) -> None:
        """Fold one phase report (setup/call/teardown) into the verdict: a failure anywhere wins."""
        self.duration_s += duration_s
        if self.verdict == FAIL:
            return
        if outcome == "advisory":
            self.verdict = ADVISORY
            self.reason = reason
            self.detail = detail[-DETAIL_CHARS:]
        elif outcome == "failed":
            self.verdict = FAIL
            prefix = "" if when == "call" else f"error in {when}: "
            self.reason = prefix + reason
            self.detail = detail[-DETAIL_CHARS:]
        elif outcome == "skipped" and self.verdict == PASS:  # a later skip keeps an advisory
            self.verdict = NOT_APPLICABLE
            self.reason = reason


@dataclass
class RunResults:
    """Everything the session saw, keyed by node id in collection order."""

    scenarios: dict[str, ScenarioResult] = field(default_factory=dict)

    def get(self, nodeid: str) -> ScenarioResult | None:
        return self.scenarios.get(nodeid)

    def add(self, result: ScenarioResult) -> ScenarioResult:
        return self.scenarios.setdefault(result.nodeid, result)

    def all(self) -> list[ScenarioResult]:
        return list(self.scenarios.values())


def skip_reason(longrepr: object) -> str:
    """The reason of a skip report: pytest stores (path, line, "Skipped: reason")."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr or "")


def first_line(text: str) -> str:
    """The most telling line of a failure: pytest's `E   ...` line, else the last non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("E "):
            return line[1:].strip()
    return lines[-1] if lines else ""
