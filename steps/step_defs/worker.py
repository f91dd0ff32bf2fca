"""Given steps that pick the worker a scenario talks to (steps/serving.py)."""

from __future__ import annotations

import shlex

from pytest_bdd import given, parsers

from steps.plugin import Harness
from steps.serving import serve_any, serve_role
from steps.state import ScenarioState


@given("a worker serving any model")
def worker_serving_any(harness: Harness, scenario_state: ScenarioState, request) -> None:
    serve_any(harness, scenario_state, request)


@given(parsers.re(r'a worker serving the (?P<model>.+?) model(?: started with "(?P<arguments>[^"]*)")?'))
def worker_serving(
    model: str, arguments: str | None, harness: Harness, scenario_state: ScenarioState, request
) -> None:
    """The worker arguments, shell-split, are extra ones for the spawned worker (a spawned worker is shared
    by the scenarios that ask for the same model and arguments)."""
    serve_role(model, tuple(shlex.split(arguments or "")), harness, scenario_state, request)
