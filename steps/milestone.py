"""Which failures fail the run: a scenario is judged by the level and milestone of its requirements.

A run judges a worker up to one milestone (`--milestone M0 | M0.5 | M1`, default M1: every milestone the
catalogue holds). A failed scenario fails the run only when one of its requirements binds this run: a MUST
(or a requirement without a level) of this milestone or an earlier one. Otherwise the failure is
*advisory*: pytest shows it as an expected failure (`x`, the reason starting with "advisory:") and the run
still passes. The reports keep it visible (docs/reports.md):

- a SHOULD or MAY requirement that is not met: verdict `advisory`, never a failure of any gate;
- a requirement of a later milestone (an M0 run meeting `/metrics`, M1): verdict `fail`, shown in that
  milestone's gate only, since those scenarios carry only its gate.

Setup errors are never advisory: a worker that does not start fails whatever the requirement.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from steps.report.catalogue import MILESTONES, Catalogue, CatalogueError, Requirement
from steps.report.results import first_line

ADVISORY_LEVELS = ("SHOULD", "MAY")
LEVEL = "level"  # report.advisory: a SHOULD/MAY not met
MILESTONE = "milestone"  # report.advisory: a requirement beyond the run's milestone
MANIFEST_FILE = "requirements.toml"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("worker-orcd").addoption(
        "--milestone",
        choices=MILESTONES,
        default=MILESTONES[-1],
        help="judge the worker up to this milestone: a failed scenario whose requirements are all of a "
        "later milestone, or all SHOULD/MAY, is advisory and does not fail the run "
        f"(default {MILESTONES[-1]}: every milestone)",
    )


@dataclass(frozen=True)
class Advisory:
    kind: str  # LEVEL or MILESTONE
    reason: str


def advisory_for(requirements: list[Requirement], milestone: str) -> Advisory | None:
    """None when a failure of a scenario with these requirements fails the run, else why it does not."""
    if not requirements:
        return None
    limit = MILESTONES.index(milestone)
    later = [r for r in requirements if MILESTONES.index(r.milestone) > limit]
    optional = [r for r in requirements if r.level in ADVISORY_LEVELS and r not in later]
    if len(later) + len(optional) < len(requirements):
        return None
    if not optional:
        ids = ", ".join(f"{r.id} ({r.milestone})" for r in later)
        return Advisory(MILESTONE, f"beyond milestone {milestone} of this run (--milestone): {ids}")
    ids = ", ".join(f"{r.id} ({r.level})" for r in optional)
    return Advisory(LEVEL, f"{ids} not met; a SHOULD or MAY requirement never fails a run")


@cache
def _catalogue(directory: Path) -> Catalogue | None:
    try:
        return Catalogue.load(directory)
    except CatalogueError:
        return None


def _catalogue_for(path: Path) -> Catalogue | None:
    for directory in path.resolve().parents:
        if (directory / MANIFEST_FILE).is_file():
            return _catalogue(directory)
    return None


def _requirements(item: pytest.Item) -> list[Requirement]:
    catalogue = _catalogue_for(item.path)
    if catalogue is None:
        return []
    names = {mark.name for mark in item.iter_markers()}
    return [requirement for rid, requirement in catalogue.requirements.items() if rid in names]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if call.when == "call" and report.failed:
        advisory = advisory_for(_requirements(item), item.config.getoption("milestone"))
        if advisory is not None:
            report.outcome = "skipped"
            report.wasxfail = f"advisory: {advisory.reason}: {first_line(report.longreprtext)}"
            report.advisory = advisory.kind
    return report
