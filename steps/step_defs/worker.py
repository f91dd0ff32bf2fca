"""Given steps that pick the worker a scenario talks to."""

from __future__ import annotations

import shlex

import pytest
from pytest_bdd import given, parsers

from steps.models import ModelSetupError
from steps.plugin import Harness, record_worker
from steps.state import ScenarioState
from steps.targets import WorkerStartError
from steps.verdicts import not_applicable


def _serve(model: str, extra_args: tuple[str, ...], harness: Harness, state: ScenarioState, request) -> None:
    try:
        model_file = harness.catalogue.resolve(model)
    except ModelSetupError as exc:
        pytest.fail(f"setup error: {exc}", pytrace=False)
    if model_file.synthetic and request.node.get_closest_marker("needs_real_weights") is not None:
        not_applicable(
            f"needs real weights; {model_file.path.name} is a synthetic stand-in (use --model-dir)"
        )
    try:
        worker = harness.target.acquire(model_file, extra_args)
    except WorkerStartError as exc:
        pytest.fail(f"setup error: {exc}", pytrace=False)
    state.worker, state.model = worker, model_file
    record_worker(request.node, worker)


@given(parsers.parse("a worker serving the {model} model"))
def worker_serving(model: str, harness: Harness, scenario_state: ScenarioState, request) -> None:
    _serve(model, (), harness, scenario_state, request)


@given(parsers.parse('a worker serving the {model} model started with "{arguments}"'))
def worker_serving_with(
    model: str, arguments: str, harness: Harness, scenario_state: ScenarioState, request
) -> None:
    _serve(model, tuple(shlex.split(arguments)), harness, scenario_state, request)
