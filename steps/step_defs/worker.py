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


@given(parsers.parse("a worker serving the {model} model"))
def worker_serving(model: str, harness: Harness, scenario_state: ScenarioState, request) -> None:
    serve_role(model, (), harness, scenario_state, request)


@given(parsers.parse('a worker serving the {model} model started with "{arguments}"'))
def worker_serving_with(
    model: str, arguments: str, harness: Harness, scenario_state: ScenarioState, request
) -> None:
    serve_role(model, tuple(shlex.split(arguments)), harness, scenario_state, request)
