"""pytest plugin: per-scenario verdicts with their spec IDs and gates, and the conformance report directory.

    pytest features/ --conformance-reports reports/

writes reports/index.html, reports/gate-<id>.html (one per gate in features/gates.toml),
reports/verdicts.json, reports/junit.xml and reports/cucumber.json. With pytest-html's `--html`, its table
gains "Spec IDs" and "Gates" columns. Only public hooks are used: pytest's runtest/report hooks, the
pytest-bdd scenario and step hooks, and pytest-html's table hooks and `extras`. Under pytest-xdist (`-n N`) the shards send their reports, and
through `workeroutput` their collection order and deselected scenarios, to the controller, which writes
the one report set.

Harness interface (read by this plugin, written by the harness core, steps/plugin.py):
- markers named exactly like the Gherkin tags (`M0-W-1300`, `gate_foundation`, `model_qwen`, `m0`, ...);
- `item.user_properties` entries `("worker_stdout", path)`, `("worker_stderr", path)` (or a generic
  `("worker_log", path)`): the tails of those files go into the report of a failing scenario;
  `("worker_command", command)`, `("model_file", path)`, `("model_synthetic", bool)`: run provenance;
- optionally `steps.report.provenance.run_provenance(config)` for facts no scenario carries (device).
"""

from __future__ import annotations

import datetime as dt
from html import escape
from pathlib import Path

import pytest

from steps.milestone import LEVEL
from steps.report.catalogue import Catalogue, CatalogueError, Labels
from steps.report.provenance import collect, run_provenance
from steps.report.results import NOT_RUN, RunResults, ScenarioResult, Step, first_line, skip_reason
from steps.report.rollup import all_gate_verdicts
from steps.report.writer import read_pending, write_reports

_SCENARIO = pytest.StashKey[dict]()
WORKER_LOGS = ("worker_log", "worker_stdout", "worker_stderr")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance reports")
    group.addoption(
        "--conformance-reports",
        dest="report_dir",  # steps/plugin.py puts worker logs under <report_dir>/workers
        metavar="DIR",
        default=None,
        help="write per-gate HTML reports, index.html, verdicts.json, junit.xml and cucumber.json into DIR",
    )
    group.addoption(
        "--conformance-catalogue",
        metavar="DIR",
        default=None,
        help="directory holding requirements.toml, gates.toml and tags.toml (default: <rootdir>/features)",
    )


@pytest.hookimpl(tryfirst=True)  # before junitxml and pytest-bdd read their output paths
def pytest_configure(config: pytest.Config) -> None:
    reporter = ConformanceReporter(config)
    config.pluginmanager.register(reporter, "conformance-reporter")
    if reporter.directory is None or hasattr(config, "workerinput"):
        return
    reporter.directory.mkdir(parents=True, exist_ok=True)
    reporter.load_catalogue()  # fail at startup, not after an hour of scenarios
    if not config.option.xmlpath:
        config.option.xmlpath = str(reporter.directory / "junit.xml")
    if hasattr(config.option, "cucumber_json_path") and not config.option.cucumber_json_path:
        config.option.cucumber_json_path = str(reporter.directory / "cucumber.json")


class ConformanceReporter:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        option = config.getoption("report_dir")
        self.directory = Path(option) if option else None
        catalogue_dir = config.getoption("conformance_catalogue")
        self.catalogue_dir = Path(catalogue_dir) if catalogue_dir else config.rootpath / "features"
        self.results = RunResults()
        self.started = dt.datetime.now(dt.UTC)
        self._catalogue: Catalogue | None = None
        self._catalogue_error: str | None = None
        self.gate_summary: dict[str, str] = {}
        self._order: dict[str, int] = {}  # node ID -> collection position, deselected items included
        self._deselected: list[tuple[str, dict]] = []

    def load_catalogue(self) -> Catalogue:
        try:
            self._catalogue = Catalogue.load(self.catalogue_dir)
        except CatalogueError as exc:
            raise pytest.UsageError(f"--conformance-reports needs the requirement catalogue: {exc}") from None
        return self._catalogue

    @property
    def catalogue(self) -> Catalogue | None:
        """The catalogue when one exists; runs without features/ (the project's own tests) have none."""
        if self._catalogue is None and self._catalogue_error is None:
            try:
                self._catalogue = Catalogue.load(self.catalogue_dir)
            except CatalogueError as exc:
                self._catalogue_error = str(exc)
        return self._catalogue

    # pytest-bdd: scenario identity and step outcomes -------------------------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_bdd_before_scenario(self, request, feature, scenario) -> None:
        request.node.stash[_SCENARIO] = {
            "name": scenario.name,
            "feature": feature.name,
            "location": f"{feature.rel_filename}:{scenario.line_number}",
            "steps": {step.line_number: [step.keyword, step.name, "not reached"] for step in scenario.steps},
        }

    def _step_status(self, request, step, status: str) -> None:
        info = request.node.stash.get(_SCENARIO, None)
        if info is not None and step.line_number in info["steps"]:
            info["steps"][step.line_number][2] = status

    @pytest.hookimpl(optionalhook=True)
    def pytest_bdd_after_step(self, request, feature, scenario, step, step_func, step_func_args) -> None:
        self._step_status(request, step, "passed")

    @pytest.hookimpl(optionalhook=True)
    def pytest_bdd_step_error(
        self, request, feature, scenario, step, step_func, step_func_args, exception
    ) -> None:
        self._step_status(request, step, "failed")

    @pytest.hookimpl(optionalhook=True)
    def pytest_bdd_step_func_lookup_error(self, request, feature, scenario, step, exception) -> None:
        self._step_status(request, step, "failed")

    # pytest: one verdict per scenario --------------------------------------------------------------

    def _describe(self, item: pytest.Item) -> dict:
        """What the report needs about an item, as plain data (it travels with reports under xdist)."""
        markers = sorted({mark.name for mark in item.iter_markers()})
        catalogue = self.catalogue
        labels = catalogue.classify(markers) if catalogue else Labels()
        info = item.stash.get(_SCENARIO, None)
        return {
            "name": (info["name"] + _params(item.name)) if info else _readable(item.name),
            "feature": info["feature"] if info else item.path.name,
            "location": info["location"] if info else item.nodeid,
            "labels": {name: list(getattr(labels, name)) for name in Labels.__dataclass_fields__},
            "steps": list(info["steps"].values()) if info else [],
            "worker_logs": [
                [k.removeprefix("worker_"), str(v)] for k, v in item.user_properties if k in WORKER_LOGS
            ],
            "worker_command": _property(item, "worker_command"),
            "model_file": _property(item, "model_file"),
            "model_synthetic": bool(_property(item, "model_synthetic")),
        }

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        report.conformance = self._describe(item)
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        info = getattr(report, "conformance", None)
        if info is None:
            if report.when == "???" and report.failed:  # xdist: the shard died while running it
                self._record_crash(report)
            return
        result = self.results.add(_new_result(report.nodeid, info))
        if info["steps"]:  # pytest-bdd named the scenario once it started: prefer that identity
            result.name, result.feature, result.location = info["name"], info["feature"], info["location"]
        result.steps = tuple(Step(*step) for step in info["steps"]) or result.steps
        result.worker_logs = tuple(tuple(log) for log in info["worker_logs"]) or result.worker_logs
        if info.get("model_file"):
            result.model_file, result.model_synthetic = str(info["model_file"]), info["model_synthetic"]
        self._record_provenance(info)
        advisory = getattr(report, "advisory", None)
        if advisory is not None:  # steps/milestone.py: a failure that does not fail the run
            outcome = "advisory" if advisory == LEVEL else "failed"
            text = report.longreprtext
            result.record_phase(report.when, outcome, report.wasxfail, text, report.duration)
            return
        if hasattr(report, "wasxfail") and report.skipped:
            result.record_phase(
                report.when, "failed", f"known failure: {report.wasxfail}", "", report.duration
            )
            return
        if report.skipped:
            reason = skip_reason(report.longrepr)
            result.record_phase(report.when, "skipped", reason, "", report.duration)
        elif report.failed:
            text = report.longreprtext
            result.record_phase(report.when, "failed", first_line(text), text, report.duration)
        else:
            result.record_phase(report.when, "passed", "", "", report.duration)

    def _record_crash(self, report: pytest.TestReport) -> None:
        """A scenario whose shard crashed has no report of its own: it fails, named as xdist names it
        (with the `@<group>` the scheduler knows it by, removed)."""
        nodeid = _without_group(report.nodeid)
        path, _, test = nodeid.partition("::")
        result = self.results.add(ScenarioResult(nodeid, _readable(test), Path(path).name, nodeid, Labels()))
        text = report.longreprtext
        result.record_phase("crash", "failed", first_line(text), text, report.duration)

    def _record_provenance(self, info: dict) -> None:
        provenance = run_provenance(self.config)
        if info.get("worker_command"):
            provenance.record_command(str(info["worker_command"]))
        if info.get("model_file"):
            role = " ".join(info["labels"].get("models", [])) or "model"
            provenance.record_model(
                {"role": role, "path": info["model_file"], "synthetic": info["model_synthetic"]}
            )

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        for item in items:
            self._deselect(item.nodeid, self._describe(item))

    def _deselect(self, nodeid: str, info: dict) -> None:
        nodeid = _without_group(nodeid)  # a shard deselects after xdist named the item by its group
        result = self.results.add(_new_result(nodeid, info))
        result.verdict = NOT_RUN
        result.reason = "deselected in this run (-k / -m)"
        if hasattr(self.config, "workerinput"):
            self._deselected.append((nodeid, info))

    @pytest.hookimpl(tryfirst=True)  # before -k/-m deselect and before xdist renames grouped items
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        self._order = {item.nodeid: index for index, item in enumerate(items)}

    # pytest-xdist: each shard collects, deselects and runs in its own process; the reports of what it
    # ran reach this controller through pytest_runtest_logreport, the rest through `workeroutput`.

    def _shard_output(self) -> dict:
        """What only a shard knows: collection order, deselected scenarios, provenance it recorded."""
        recorded = run_provenance(self.config)
        return {
            "order": list(self._order),
            "deselected": self._deselected,
            "worker": recorded.worker,
            "device": recorded.device,
        }

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        shard = getattr(node, "workeroutput", {}).get("conformance")
        if not shard:
            return
        if not self._order:
            self._order = {nodeid: index for index, nodeid in enumerate(shard["order"])}
        for nodeid, info in shard["deselected"]:
            if self.results.get(nodeid) is None:
                self._deselect(nodeid, info)
        recorded = run_provenance(self.config)
        recorded.record_worker(shard["worker"])
        if shard["device"] and not recorded.device:
            recorded.record_device(shard["device"])

    # the report directory ----------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)  # before pytest-html renders its summary
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput"):  # a shard: hand what the controller needs to it
            self.config.workeroutput["conformance"] = self._shard_output()
            return
        if self.directory is None or self._catalogue is None:
            return
        catalogue = self._catalogue
        last = len(self._order)  # scenarios in collection order, however the shards interleaved them
        scenarios = sorted(self.results.all(), key=lambda result: self._order.get(result.nodeid, last))
        provenance = collect(self.config, self.started)
        pending = read_pending(self.catalogue_dir / "coverage-pending.toml")
        write_reports(self.directory, catalogue, scenarios, provenance, pending)
        self.gate_summary = {gv.gate.id: gv.verdict for gv in all_gate_verdicts(catalogue, scenarios)}

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.gate_summary:
            return
        terminalreporter.section("conformance gates")
        for gate_id, verdict in self.gate_summary.items():
            terminalreporter.write_line(f"{verdict.upper():<11} {gate_id}")
        terminalreporter.write_line(f"reports: {self.directory / 'index.html'}")

    # pytest-html ------------------------------------------------------------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        cells.insert(2, "<th>Spec IDs</th>")
        cells.insert(3, "<th>Gates</th>")

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_row(self, report, cells: list[str]) -> None:
        labels = (getattr(report, "conformance", None) or {}).get("labels", {})
        cells.insert(2, f"<td>{escape(' '.join(labels.get('requirements', [])))}</td>")
        cells.insert(3, f"<td>{escape(' '.join(labels.get('gates', [])))}</td>")

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str], session
    ) -> None:
        if self.gate_summary:
            verdicts = ", ".join(f"{gate}: {verdict}" for gate, verdict in self.gate_summary.items())
            prefix.append(
                f"<p>Conformance gates — {escape(verdicts)}. Per-gate reports: "
                f"{escape(str(self.directory))}/index.html</p>"
            )


def _without_group(nodeid: str) -> str:
    """The scenario's node ID without the `@<group>` pytest-xdist's loadgroup scheduling appends."""
    head, at, group = nodeid.rpartition("@")
    return head if at and "::" not in group and "]" not in group else nodeid


def _new_result(nodeid: str, info: dict) -> ScenarioResult:
    return ScenarioResult(
        nodeid=nodeid,
        name=info["name"],
        feature=info["feature"],
        location=info["location"],
        labels=Labels(**{name: tuple(values) for name, values in info["labels"].items()}),
    )


def _property(item: pytest.Item, name: str) -> object | None:
    """The last value recorded under `name` in the item's user properties."""
    values = [value for key, value in item.user_properties if key == name]
    return values[-1] if values else None


def _readable(test_name: str) -> str:
    """`test_cancel_stops_a_job[q8_0]` -> `cancel stops a job [q8_0]`, for scenarios that never started."""
    base, bracket, params = test_name.partition("[")
    text = base.removeprefix("test_").replace("_", " ")
    return f"{text} [{params}" if bracket else text


def _params(test_name: str) -> str:
    """The example of a Scenario Outline, ` [max_tokens-0]`, so that outline rows stay distinguishable."""
    _, bracket, params = test_name.partition("[")
    return f" [{params}" if bracket else ""
