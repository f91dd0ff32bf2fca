"""Which worker a scenario talks to: the harness's worker target asked for a model role (spawned, or the
attached worker judged as the file it serves), with the scenario's markers deciding what is not applicable
here (`real_qwen` without the opt-in, `needs_real_weights` on a stand-in, `needs_full_shape` on a tiny file).
"""

from __future__ import annotations

import os

import pytest

from steps.hygiene import wait_idle
from steps.models import ModelFile, ModelSetupError
from steps.plugin import Harness, record_worker
from steps.report.provenance import run_provenance
from steps.state import ScenarioState
from steps.targets import AttachTarget, ModelNotServed, NotServedHere, WorkerHandle, WorkerStartError
from steps.verdicts import not_applicable

# "A worker serving any model": the scenarios whose checks hold for every model. Spawned, the harness starts
# the Qwen2.5 role (its stand-in without --model-dir); attached, the worker is taken as it is.
ANY_MODEL_SPAWNED = "Qwen2.5-0.5B-Instruct Q4_K_M"
REAL_QWEN_OPTION = "--real-qwen"
REAL_QWEN_ENV = "WORKER_ORCD_REAL_QWEN"  # =1 does the same, for `pytest tests/ features/` alike


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("worker-orcd").addoption(
        REAL_QWEN_OPTION,
        action="store_true",
        help="run the scenarios tagged real_qwen on the real Qwen2.5-Coder-0.5B-Instruct Q4_K_M file "
        f"(minutes on a CPU; not applicable without this option or {REAL_QWEN_ENV}=1)",
    )


def resolve_role(model: str, harness: Harness) -> ModelFile:
    try:
        return harness.catalogue.resolve(model)
    except ModelSetupError as exc:
        pytest.fail(f"setup error: {exc}", pytrace=False)


def serve_any(harness: Harness, state: ScenarioState, request) -> None:
    target = harness.target
    if not isinstance(target, AttachTarget):
        serve_role(ANY_MODEL_SPAWNED, (), harness, state, request)
        return
    try:
        worker = target.acquire_any(resolve_role(ANY_MODEL_SPAWNED, harness))
    except NotServedHere as exc:
        not_applicable(str(exc))
    finally:  # the served model and how it was determined, for the report
        run_provenance(request.config).record_worker(target.describe())
    _use(worker, worker.model, harness, state, request)


def serve_role(
    model: str, extra_args: tuple[str, ...], harness: Harness, state: ScenarioState, request
) -> None:
    opted_in = request.config.getoption("real_qwen") or os.environ.get(REAL_QWEN_ENV) == "1"
    if request.node.get_closest_marker("real_qwen") is not None and not opted_in:
        # Opt-in: loading and running a 0.5B model takes minutes on a two-core CPU.
        not_applicable(
            f"the real Qwen2.5-0.5B-shape file runs only with {REAL_QWEN_OPTION} (minutes on a CPU)"
        )
    model_file = resolve_role(model, harness)
    target = harness.target
    worker = (
        _attach(target, model, model_file, extra_args, request) if isinstance(target, AttachTarget) else None
    )
    judged = worker.model if worker is not None and worker.model is not None else model_file
    if judged.synthetic and request.node.get_closest_marker("needs_real_weights") is not None:
        not_applicable(f"needs real weights; {judged.path.name} is a synthetic stand-in (use --model-dir)")
    if request.node.get_closest_marker("needs_full_shape") is not None:
        model_file = judged = _full_shape(model, judged, worker is not None, harness)
    if worker is None:
        try:
            worker = target.acquire(model_file, extra_args)
        except WorkerStartError as exc:
            pytest.fail(f"setup error: {exc}", pytrace=False)
    _use(worker, judged, harness, state, request)


def _use(worker: WorkerHandle, judged: ModelFile, harness: Harness, state: ScenarioState, request) -> None:
    state.worker, state.model = worker, judged
    record_worker(request.node, worker)
    if harness.left_busy is not None:
        _wait_until_idle(harness, state)


def _full_shape(model: str, judged: ModelFile, attached: bool, harness: Harness) -> ModelFile:
    """The file a timing scenario times (issue 12 item 5): a tiny stand-in times nothing the targets are
    about, so the scenario is not applicable on one rather than passing or failing on it."""
    catalogue = harness.catalogue
    if attached:
        if catalogue.is_full_shape(judged):
            return judged
        not_applicable(
            f"timing needs a full-shape file; the worker is judged as {judged.path.name}, a tiny stand-in "
            "(name the served file with --worker-model, or give the real files with --model-dir)"
        )
    full = catalogue.full_shape(model)
    if full is None:
        not_applicable(
            f"timing needs a full-shape file; {judged.path.name} is a tiny stand-in "
            f"({catalogue.full_shape_hint(model)})"
        )
    return full


def _wait_until_idle(harness: Harness, state: ScenarioState) -> None:
    """An earlier scenario left the worker busy: judge this one only once the worker is idle again."""
    assert state.worker is not None
    idle, how = wait_idle(state.client, state.worker.base_url, harness.idle_wait_s, probe=True)
    if not idle:
        not_applicable(f"the worker is still busy ({how}) with what {harness.left_busy} left running")
    harness.left_busy = None


def _attach(
    target: AttachTarget, model: str, model_file: ModelFile, extra_args: tuple[str, ...], request
) -> WorkerHandle:
    """The attached worker, judged as the file it serves; not applicable when it cannot play the role."""
    try:
        return target.acquire(model_file, extra_args)
    except ModelNotServed as exc:
        not_applicable(str(exc.naming(model)))
    except NotServedHere as exc:
        not_applicable(str(exc))
    finally:  # the served model and how it was determined, for the report
        run_provenance(request.config).record_worker(target.describe())
    raise AssertionError("unreachable")
