"""The conformance harness as a pytest plugin.

- Collects every `*.feature` file directly: each becomes a module whose test functions pytest-bdd's
  `scenarios()` generates, so no per-feature Python file exists.
- Turns Gherkin tags into strictly declared markers (spec IDs, gates, models, quants, milestones,
  capabilities); an undeclared tag is a collection error naming file, line and tag.
- Chooses the worker target (`--worker`, `--worker-cmd`, `--worker-url`), the model catalogue
  (`--model-dir`, fixtures) and stops every spawned worker at the end, whatever happened.
- Marks capability-tagged scenarios not applicable where they cannot be judged (attach mode, no GPU).
- Keeps a shared worker clean between scenarios: teardown cancels what a scenario left running and waits
  until the worker is idle (`steps/hygiene.py`).
- Exposes the worker and its logs of each scenario: `item.stash[WORKER_KEY]`, `item.user_properties`
  (`worker_stdout`, `worker_stderr`, `worker_command`, `model_file`), and log tails as report sections
  of failing scenarios.
"""

from __future__ import annotations

import shlex
import types
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from steps.hygiene import IDLE_WAIT_S, settle
from steps.models import ModelCatalogue
from steps.state import ScenarioState
from steps.targets import AttachTarget, SpawnConfig, SpawnTarget, WorkerHandle, WorkerTarget, cuda_visible
from steps.verdicts import CANCEL, JOB_SLOT, RequirementViolation
from steps.vocabulary import Vocabulary, VocabularyError, check_feature_tags

pytest_plugins = [
    # Library modules that define fixtures or options.
    "steps.capabilities",
    "steps.serving",
    "steps.processes",
    "steps.jobs",
    "steps.bad_requests",
    "steps.contention",
    "steps.process_tree",
    "steps.side_by_side",
    "steps.readme",
    "steps.gate_membership",
    "steps.measures",
    "steps.nvidia_smi",
    "steps.selfcheck",
    "steps.llama_bench",
    "steps.prefix_reuse",
    # Step modules: only decorated steps, never importing each other.
    "steps.step_defs.worker",
    "steps.step_defs.execute",
    "steps.step_defs.stream",
    "steps.step_defs.bounded",
    "steps.step_defs.health",
    "steps.step_defs.cancel",
    "steps.step_defs.process",
    "steps.step_defs.memory",
    "steps.step_defs.generation",
    "steps.step_defs.selfcheck",
    "steps.step_defs.seams",
    "steps.step_defs.prefix_cache",
    "steps.step_defs.lifecycle",
    "steps.step_defs.isolation",
    "steps.step_defs.docs",
    "steps.milestone",
    "steps.shards",
]

WORKER_KEY = pytest.StashKey[WorkerHandle]()
HARNESS_KEY = pytest.StashKey["Harness"]()
MANIFEST_FILE = "requirements.toml"


@dataclass
class Harness:
    """Session-wide state of the harness."""

    config: pytest.Config
    vocabularies: dict[Path, Vocabulary] = field(default_factory=dict)  # by manifest directory
    left_busy: str | None = None  # the scenario after which the worker stayed busy (steps/hygiene.py)
    _target: WorkerTarget | None = None
    _catalogue: ModelCatalogue | None = None

    @property
    def requirement_ids(self) -> set[str]:
        return {rid for vocabulary in self.vocabularies.values() for rid in vocabulary.requirements}

    def vocabulary_for(self, feature: Path) -> Vocabulary:
        """The manifests in the nearest directory above the feature file that holds requirements.toml."""
        for directory in feature.resolve().parents:
            if (directory / MANIFEST_FILE).is_file():
                if directory not in self.vocabularies:
                    self.load_vocabulary(directory)
                return self.vocabularies[directory]
        raise VocabularyError(f"{feature}: no {MANIFEST_FILE} in any directory above it")

    def load_vocabulary(self, directory: Path) -> None:
        vocabulary = Vocabulary.load(directory)
        self.vocabularies[directory] = vocabulary
        for name, description in vocabulary.markers().items():
            self.config.addinivalue_line("markers", f"{name}: {description}")

    @property
    def target(self) -> WorkerTarget:
        if self._target is None:
            self._target = _make_target(self.config, self.catalogue)
        return self._target

    @property
    def catalogue(self) -> ModelCatalogue:
        if self._catalogue is None:
            self._catalogue = ModelCatalogue.from_options(
                self.config.getoption("model_dir"), self.config.rootpath
            )
        return self._catalogue

    @property
    def idle_wait_s(self) -> float:
        return self.config.getoption("idle_wait")

    @property
    def attached(self) -> bool:
        return self.config.getoption("worker_url") is not None

    def close(self) -> None:
        if self._target is not None:
            self._target.close()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("worker-orcd", "worker-orcd conformance harness")
    group.addoption(
        "--worker",
        choices=["reference"],
        default="reference",
        help="worker to spawn when neither --worker-cmd nor --worker-url is given (default: reference)",
    )
    group.addoption(
        "--worker-cmd",
        metavar="TEMPLATE",
        help="spawn this command per model; placeholders {model} {port} {gpu} {worker_id} "
        "(without any, the M0 CLI flags are appended)",
    )
    group.addoption(
        "--worker-url",
        metavar="URL",
        help="attach to a running worker; process-level scenarios, and those of models it does not serve, "
        "become not applicable",
    )
    group.addoption(
        "--worker-model",
        metavar="FILE",
        help="with --worker-url: the model file the attached worker was started with (expectations and "
        "provenance come from it); without it the served model is detected from GET /health",
    )
    group.addoption(
        "--model-dir", metavar="DIR", help="directory with the real model files (see docs/harness.md)"
    )
    group.addoption(
        "--gpu",
        default="0",
        metavar="N[,N...]",
        help="GPU index given to spawned workers (--gpu-device); with -n, a list gives each shard its own GPU "
        "(gw0 the first, gw1 the second, ...)",
    )
    group.addoption(
        "--worker-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every spawned worker (repeatable; shell-split)",
    )
    group.addoption(
        "--worker-start-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long a spawned worker may take until GET /health answers 200 (default 120)",
    )
    group.addoption(
        "--idle-wait",
        type=float,
        default=IDLE_WAIT_S,
        metavar="SECONDS",
        help="how long a scenario's teardown waits, after cancelling its unfinished jobs, until the worker "
        f"is idle (default {IDLE_WAIT_S:.0f})",
    )
    group.addoption(
        "--worker-log-dir",
        metavar="DIR",
        help="where spawned workers' stdout/stderr go (default: <report dir>/workers, else reports/workers)",
    )


def _make_target(config: pytest.Config, catalogue: ModelCatalogue) -> WorkerTarget:
    url = config.getoption("worker_url")
    if url is not None:
        worker_model = config.getoption("worker_model")
        return AttachTarget(url, catalogue, Path(worker_model) if worker_model else None)
    template = config.getoption("worker_cmd")
    from steps.shards import shard_gpu  # imported here: pytest_plugins loads (and rewrites) it as a plugin

    if template is None:
        from steps.targets import reference_template

        template = reference_template()
    extra = tuple(arg for value in config.getoption("worker_arg") for arg in shlex.split(value))
    return SpawnTarget(
        SpawnConfig(
            template=template,
            gpu=shard_gpu(config),
            extra_args=extra,
            start_timeout_s=config.getoption("worker_start_timeout"),
            log_dir=_log_dir(config),
            cwd=config.rootpath,
        )
    )


def _log_dir(config: pytest.Config) -> Path:
    chosen = config.getoption("worker_log_dir")
    if chosen:
        return Path(chosen).resolve()
    report_dir = config.getoption("report_dir", None)  # defined by the report plugin when loaded
    base = Path(report_dir) if report_dir else config.rootpath / "reports"
    return (base / "workers").resolve()


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("worker_url") and config.getoption("worker_cmd"):
        raise pytest.UsageError("--worker-url and --worker-cmd exclude each other: attach or spawn, not both")
    worker_model = config.getoption("worker_model")
    if worker_model and not config.getoption("worker_url"):
        raise pytest.UsageError(
            "--worker-model names the file of an attached worker: give --worker-url too "
            "(spawned workers get their file from the scenario's model role)"
        )
    if worker_model and not Path(worker_model).is_file():
        raise pytest.UsageError(f"--worker-model {worker_model}: no such file")
    harness = Harness(config)
    config.stash[HARNESS_KEY] = harness
    features = config.rootpath / "features"
    if (features / MANIFEST_FILE).is_file():
        try:
            harness.load_vocabulary(features)
        except VocabularyError as exc:
            raise pytest.UsageError(str(exc)) from None


def pytest_unconfigure(config: pytest.Config) -> None:
    harness = config.stash.get(HARNESS_KEY, None)
    if harness is not None:
        harness.close()


def pytest_sessionfinish(session: pytest.Session) -> None:
    session.config.stash[HARNESS_KEY].close()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".feature":
        return FeatureModule.from_parent(parent, path=file_path)
    return None


class FeatureModule(pytest.Module):
    """A `.feature` file collected as if a test module had called `scenarios(<file>)`."""

    def _getobj(self) -> types.ModuleType:
        harness = self.config.stash[HARNESS_KEY]
        try:
            check_feature_tags(self.path, harness.vocabulary_for(self.path))
        except VocabularyError as exc:
            raise self.CollectError(str(exc)) from None
        module = types.ModuleType(f"feature_{_python_name(self.path)}")
        module.__file__ = str(self.path)
        # `scenarios()` puts the generated tests into its caller's namespace and resolves the file
        # relative to the caller's file: run it as module-level code "of" the feature file itself.
        code = compile(
            "from pytest_bdd import scenarios\nscenarios(__feature__, features_base_dir=__feature_dir__)\n",
            str(self.path),
            "exec",
        )
        namespace = module.__dict__
        namespace.update(__feature__=self.path.name, __feature_dir__=str(self.path.parent))
        try:
            exec(code, namespace)
        except Exception as exc:  # a Gherkin syntax error, a duplicate scenario name, ...
            raise self.CollectError(f"{self.path}: {type(exc).__name__}: {exc}") from None
        return module


def _python_name(path: Path) -> str:
    return "".join(char if char.isalnum() else "_" for char in str(path))


def pytest_runtest_setup(item: pytest.Item) -> None:
    harness = item.config.stash[HARNESS_KEY]
    if item.get_closest_marker("needs_spawn") is not None and harness.attached:
        pytest.skip("not applicable: attach mode (--worker-url): the harness cannot start or stop the worker")
    if item.get_closest_marker("needs_gpu") is not None and not cuda_visible():
        pytest.skip("not applicable: no CUDA GPU visible on this machine")


def record_worker(item: pytest.Item, worker: WorkerHandle) -> None:
    """Remember which worker a scenario talks to, for its report (logs, command, model file)."""
    item.stash[WORKER_KEY] = worker
    if worker.stdout_path is not None:
        item.user_properties.append(("worker_stdout", str(worker.stdout_path)))
        item.user_properties.append(("worker_stderr", str(worker.stderr_path)))
        item.user_properties.append(("worker_command", shlex.join(worker.command or [])))
    if worker.model is not None:
        item.user_properties.append(("model_file", str(worker.model.path)))
        item.user_properties.append(("model_synthetic", worker.model.synthetic))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None]:
    outcome = yield
    report = outcome.get_result()
    worker = item.stash.get(WORKER_KEY, None)
    if worker is None or call.when != "call":
        return
    died = worker.died()
    if died is not None and not worker.death_reported:
        # The worker went away while the scenario ran (a crash, the OOM killer, a SIGKILL from outside):
        # the scenario fails with that, whatever its steps saw, and the next one gets a fresh worker.
        worker.death_reported = True
        message = (
            f"harness: {worker.describe()} {died} during this scenario; "
            f"its output: {worker.stdout_path}, {worker.stderr_path}. "
            "The next scenario that needs this worker starts a fresh one."
        )
        report.sections.append(("worker exit", message))
        if report.passed:
            report.outcome, report.longrepr = "failed", message
        elif isinstance(report.longrepr, str) or report.longrepr is None:
            report.longrepr = f"{message}\n{report.longrepr or ''}"
    if report.failed:
        for name, text in worker.log_tail().items():
            report.sections.append((f"worker {name} (tail)", text))


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    """With --collect-only, list each scenario's spec IDs and gates (the marks a gate report uses)."""
    if not config.getoption("collectonly"):
        return []
    harness = config.stash[HARNESS_KEY]
    known = harness.requirement_ids
    lines = []
    for item in items:
        names = [mark.name for mark in item.iter_markers()]
        ids = sorted({name for name in names if name in known or name.startswith("gate_")})
        if ids:
            lines.append(f"{item.nodeid}  [{' '.join(ids)}]")
    return lines


@pytest.fixture(scope="session")
def harness(pytestconfig: pytest.Config) -> Harness:
    return pytestconfig.stash[HARNESS_KEY]


@pytest.fixture
def scenario_state(request: pytest.FixtureRequest, harness: Harness) -> Generator[ScenarioState]:
    state = ScenarioState()
    yield state
    try:
        settled = settle(state, harness.idle_wait_s)  # steps/hygiene.py: no scenario inherits this one's job
    finally:
        state.close()
    if not settled.idle and (harness.left_busy is None or state.jobs or state.cancels):
        # (a scenario that sent nothing to a worker already left busy by another is not to blame)
        harness.left_busy = request.node.nodeid
        jobs = f" and its jobs {', '.join(settled.cancelled)} were cancelled" if settled.cancelled else ""
        raise RequirementViolation(
            CANCEL if settled.cancelled or state.cancels else JOB_SLOT,
            f"the worker is still busy {settled.waited_s:.0f} s after this scenario ended{jobs} "
            f"({settled.how}); the scenarios after it may find it busy",
        )


@pytest.fixture
def spec_ids(request: pytest.FixtureRequest, harness: Harness) -> str:
    """The scenario's spec-ID tags, e.g. "M0-W-1330/M0-SYS-6.3.5", for checks shared by many requirements."""
    known = harness.requirement_ids
    ids = sorted({mark.name for mark in request.node.iter_markers() if mark.name in known})
    return "/".join(ids) or "untagged scenario"
