"""Sharded runs: `pytest features/ -n N` (pytest-xdist) spreads the scenarios over N processes.

- Scenarios that talk to the same spawned worker (same model role, same extra arguments) carry one
  `xdist_group`, and `--dist loadgroup` is the default distribution when `-n` is given, so each shard
  starts each worker it needs once, not once per scenario. Scenarios without a shared worker (process
  scenarios start their own) are balanced one by one. With `--worker-url` every scenario talks to the
  one attached worker, so all of them form one group: `-n` then runs them on one shard, as serially.
- Each shard is a separate pytest process with its own `SpawnTarget`: workers get free ports and log
  files named after the shard's process id, so shards never clash.
- `--gpu 0,1` gives each shard its own GPU: gw0 the first, gw1 the second, ... (a single value is shared
  by all shards, as on a CPU-only machine).
- xdist's loadgroup appends `@<group>` to node IDs so that its scheduler can see the groups; once the
  scheduler has them, the original IDs are put back, so reports, JUnit and Cucumber JSON name every
  scenario exactly as a serial run does.
- Timing shares no GPU: a scenario that times the worker (`@timed`) runs alone on its GPU, the
  other scenarios on that GPU, of every shard and every session on this machine, waiting until it is done
  and it until they are (`gpu_share`, a reader-writer file lock per GPU index; only where a CUDA GPU is
  visible). Another shard's job decoding on the same GPU would slow the timed worker, and llama-bench
  beside it, by a share that says nothing of either.
- pytest-bdd keeps the scenario of each report (what its Cucumber JSON is written from) beside the report
  object, which does not travel from a shard to the controller: the shard attaches it to the report as
  plain data and the controller puts it back where pytest-bdd looks for it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import re
import tempfile
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from steps.targets import cuda_visible

GROUP_MARKER = "xdist_group"
# steps/step_defs/worker.py: the steps that acquire a shared spawned worker
WORKER_STEP = re.compile(r'^a worker serving the (?P<model>.+?) model(?: started with "(?P<arguments>.*)")?$')
ANY_MODEL_STEP = (
    "a worker serving any model"  # spawned, it starts the same worker as ANY_MODEL_SPAWNED's role
)
_SERIAL_NODEID = pytest.StashKey[str]()
DIST_INPUT = "conformance_dist"
ATTACHED_GROUP = "attached-worker"  # one worker, one job at a time (M0): its scenarios stay on one shard
BDD_CONTEXT = "bdd_context"  # report attribute carrying pytest-bdd's report context from a shard


def parse_gpus(value: str) -> tuple[int, ...]:
    """`--gpu` value: one index, or a comma-separated list of them, one per shard."""
    try:
        gpus = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise pytest.UsageError(f"--gpu {value!r}: expected a GPU index or a list like 0,1") from None
    if any(gpu < 0 for gpu in gpus):
        raise pytest.UsageError(f"--gpu {value!r}: GPU indices are not negative")
    return gpus


def shard_index(config: pytest.Config) -> int | None:
    """0 for xdist's gw0, 1 for gw1, ...; None in a serial run (and on the xdist controller)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return None
    return int(str(workerinput["workerid"]).removeprefix("gw"))


def shard_gpu(config: pytest.Config) -> int:
    """The GPU this process gives its spawned workers."""
    gpus = parse_gpus(str(config.getoption("gpu")))
    index = shard_index(config) or 0
    return gpus[index % len(gpus)]


TIMING_MARKER = "timed"  # the scenarios that time the worker (features/tags.toml)


@contextmanager
def gpu_share(gpu: int, exclusive: bool, lock_dir: Path | None = None) -> Iterator[None]:
    """Holds GPU `gpu` for a scenario: shared with other untimed scenarios, or alone (`exclusive`). A
    waiting exclusive holder keeps the turnstile, so scenarios that start after it wait behind it rather
    than keep the GPU shared for ever."""
    base = (lock_dir or Path(tempfile.gettempdir())) / f"worker-orcd-gpu{gpu}"
    with open(f"{base}.turnstile", "a") as turnstile, open(f"{base}.lock", "a") as lock:
        if exclusive:
            fcntl.flock(turnstile, fcntl.LOCK_EX)
            fcntl.flock(lock, fcntl.LOCK_EX)
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        else:
            fcntl.flock(turnstile, fcntl.LOCK_SH)
            fcntl.flock(lock, fcntl.LOCK_SH)
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None]:
    if not cuda_visible():
        return (yield)
    exclusive = item.get_closest_marker(TIMING_MARKER) is not None
    with gpu_share(shard_gpu(item.config), exclusive):
        return (yield)


def worker_group(item: pytest.Item) -> str | None:
    """The shared worker a scenario asks for, as a group name: `worker-<model>[-<arguments>]`."""
    from pytest_bdd.scenario import scenario_wrapper_template_registry

    template = scenario_wrapper_template_registry.get(getattr(item, "obj", None))
    if template is None:
        return None
    callspec = getattr(item, "callspec", None)
    example = callspec.params.get("_pytest_bdd_example", {}) if callspec is not None else {}
    from steps.serving import ANY_MODEL_SPAWNED

    for step in template.render(example).steps:
        if step.name == ANY_MODEL_STEP:
            return _group_name(ANY_MODEL_SPAWNED, None)
        match = WORKER_STEP.match(step.name)
        if match:
            return _group_name(match["model"], match["arguments"])
    return None


def _group_name(model: str, arguments: str | None) -> str:
    name = "worker-" + model + (f"-{arguments}" if arguments else "")
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name)  # no '@': xdist splits node IDs there


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns -n into --dist load
def pytest_cmdline_main(config: pytest.Config) -> None:
    if getattr(config.option, "numprocesses", None) and config.option.dist == "no":
        config.option.dist = "loadgroup"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist: shards parse the command line anew, without the --dist chosen above; pass it on."""
    node.workerinput[DIST_INPUT] = node.config.option.dist


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and workerinput.get(DIST_INPUT) == "loadgroup":
        config.option.loadgroup = True  # xdist's shard-side switch that appends the groups to node IDs
    gpus = parse_gpus(str(config.getoption("gpu")))
    shards = getattr(config.option, "numprocesses", None)
    if len(gpus) > 1 and isinstance(shards, int) and shards > len(gpus):
        raise pytest.UsageError(
            f"--gpu {config.getoption('gpu')} names {len(gpus)} GPUs for {shards} shards (-n): "
            "give each shard its own GPU, or one index for all"
        )


@pytest.hookimpl(wrapper=True, tryfirst=True)  # around xdist's hook, which appends the groups to node IDs
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Generator[None]:
    attached = config.getoption("worker_url") is not None
    for item in items:
        item.stash[_SERIAL_NODEID] = item.nodeid
        if item.get_closest_marker(GROUP_MARKER) is None:
            group = ATTACHED_GROUP if attached else worker_group(item)
            if group is not None:
                item.add_marker(pytest.mark.xdist_group(group))
    yield
    # xdist sets `item._nodeid`; pytest >= 9.2 keeps the ID elsewhere: make sure the scheduler sees groups.
    if getattr(config.option, "loadgroup", False):
        for item in items:
            groups = sorted({str(mark.args[0]) for mark in item.iter_markers(GROUP_MARKER) if mark.args})
            suffix = "@" + "_".join(groups)
            if groups and not item.nodeid.endswith(suffix):
                _set_nodeid(item, item.nodeid + suffix)


@pytest.hookimpl(trylast=True)  # after xdist has sent the grouped IDs to its scheduler
def pytest_collection_finish(session: pytest.Session) -> None:
    for item in session.items:
        serial = item.stash.get(_SERIAL_NODEID, None)
        if serial is not None and item.nodeid != serial:
            _set_nodeid(item, serial)  # reports must name the scenario as written


def _set_nodeid(item: pytest.Item, nodeid: str) -> None:
    """Renames a collected item, as xdist's loadgroup does (pytest has no public way to)."""
    if hasattr(item, "_id"):  # pytest >= 9.2
        from _pytest.nodeid import NodeId

        item._id = NodeId.parse(nodeid)
    else:
        item._nodeid = nodeid


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: pytest-bdd's own wrapper has run by now
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None]:
    report = yield
    if hasattr(item.config, "workerinput"):
        from pytest_bdd.reporting import test_report_context_registry

        context = test_report_context_registry.get(report)
        if context is not None:
            setattr(report, BDD_CONTEXT, dataclasses.asdict(context))
    return report


@pytest.hookimpl(tryfirst=True)  # before pytest-bdd's Cucumber JSON writer reads it
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    context = getattr(report, BDD_CONTEXT, None)
    if context is not None:
        from pytest_bdd.reporting import ReportContext, test_report_context_registry

        test_report_context_registry.setdefault(report, ReportContext(**context))
