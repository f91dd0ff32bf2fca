"""What a scenario measures from the outside and the arithmetic on it: /health samples, /metrics scrapes,
latencies, log lines per job, byte counts in error messages. Fixtures: `memory_state`, `measures`,
`log_state`.
"""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field

import pytest

from steps.envelope import MIB
from steps.jobs import JobRuns, finished_runs
from steps.state import ScenarioState
from steps.verdicts import require

# --- /health over time (M0-W-1002) ------------------------------------------------------------------


@dataclass
class HealthSample:
    at_s: float
    status_code: int | None
    body: object
    problem: str | None = None


@dataclass
class MemoryState:
    samples: list[HealthSample] = field(default_factory=list)
    jobs: list = field(default_factory=list)  # SSEStream of each job run while sampling
    budget_bytes: int | None = None


@pytest.fixture
def memory_state() -> MemoryState:
    return MemoryState()


# --- Latencies, /metrics and device memory around jobs -----------------------------------------------


@dataclass
class Measures:
    """What one performance scenario measured."""

    scrapes: list[tuple[int, str, str]] = field(default_factory=list)  # status, content type, body
    health_ms: list[float] = field(default_factory=list)
    health_while: str = "while the worker was idle"
    cancel_to_end_ms: float | None = None
    disconnect_to_start_ms: float | None = None
    vram_before: int | None = None

    def last_totals(self, spec_ids: str) -> dict[str, float]:
        """The metric totals of the last scrape, required to be Prometheus text with a 200."""
        require(self.scrapes, spec_ids, "/metrics was not scraped")
        status, content_type, body = self.scrapes[-1]
        require(
            status == 200,
            spec_ids,
            f"GET /metrics answered {status}, not 200 with Prometheus text: {body[:200]!r}",
        )
        require(
            content_type.startswith("text/plain") or "openmetrics" in content_type,
            spec_ids,
            f"GET /metrics Content-Type is {content_type!r}, not the Prometheus text format (text/plain)",
        )
        return metric_totals(body)

    def growth(self, name: str, spec_ids: str) -> float:
        """How much metric `name` (a counter, or a histogram's `_count`) grew from the first scrape to the last."""
        require(len(self.scrapes) >= 2, spec_ids, "/metrics needs a scrape before and after the job")
        after = self.last_totals(spec_ids)
        status, _, body = self.scrapes[0]
        require(status == 200, spec_ids, f"GET /metrics answered {status} before the job")
        before = metric_totals(body)
        key = name if name in after else f"{name}_count"
        require(key in after, spec_ids, f"/metrics has no {name}")
        return after[key] - before.get(key, 0.0)

    def time_health(self, state: ScenarioState, requirement: str) -> None:
        """One timed GET /health (M0-W-1604), required to answer 200."""
        started = time.perf_counter()
        response = state.client.get(state.url("/health"))
        self.health_ms.append((time.perf_counter() - started) * 1000)
        require(response.status_code == 200, requirement, f"GET /health answered {response.status_code}")


@pytest.fixture
def measures() -> Measures:
    return Measures()


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (p95: share 0.95)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(?P<value>\S+)")


def metric_totals(body: str) -> dict[str, float]:
    """Sum of the samples of each metric name in Prometheus text (labels summed over); histogram parts keep
    their suffix."""
    totals: dict[str, float] = defaultdict(float)
    for line in body.splitlines():
        match = _SAMPLE.match(line.strip())
        if match and not line.startswith("#"):
            try:
                totals[match["name"]] += float(match["value"])
            except ValueError:
                continue
    return dict(totals)


def timed_on(state: ScenarioState) -> str:
    """' on FILE': the file a timing figure was measured on (the report names it)."""
    return f" on {state.model.path.name}" if state.model is not None else ""


def has_fields(value: object, names: tuple[str, ...]) -> bool:
    """Some JSON object inside `value` has every one of `names` as a key."""
    if isinstance(value, dict):
        return set(names) <= set(value) or any(has_fields(child, names) for child in value.values())
    if isinstance(value, list):
        return any(has_fields(child, names) for child in value)
    return False


# --- Log lines per job (M0-SEAM-PURE-LOOP) --------------------------------------------------------------


@dataclass
class LoggedJob:
    max_tokens: int
    tokens: int
    new_lines: list[str]


@dataclass
class LogState:
    jobs: list[LoggedJob] = field(default_factory=list)


@pytest.fixture
def log_state() -> LogState:
    return LogState()


# --- Byte counts in an error message (M0-W-1020) ---------------------------------------------------------

_SIZE = re.compile(r"(\d[\d,_]*(?:\.\d+)?)\s*(bytes?|[KMGT]i?B|B)?\b", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "kb": 1000,
    "kib": 1 << 10,
    "mb": 1000**2,
    "mib": MIB,
    "gb": 1000**3,
    "gib": 1 << 30,
    "tb": 1000**4,
    "tib": 1 << 40,
}


def byte_counts(text: str) -> list[float]:
    """Every number in `text` as bytes, with its unit when it has one: "2.5 GiB" -> 2684354560."""
    found = []
    for number, unit in _SIZE.findall(text):
        try:
            value = float(number.replace(",", "").replace("_", ""))
        except ValueError:
            continue
        found.append(value * _UNITS.get((unit or "").lower(), 1))
    return found


def median_decode_rate(job_runs: JobRuns, spec_ids: str) -> float:
    """The median over the jobs of tokens after the first per second from the first token to the last, as
    the client sees them (a worker that streams in bursts is judged by its whole job)."""
    rates = []
    for run in finished_runs(job_runs.runs, spec_ids):
        tokens = run.stream.of_type("token")
        if len(tokens) >= 2 and tokens[-1].arrived_s > tokens[0].arrived_s:
            rates.append((len(tokens) - 1) / (tokens[-1].arrived_s - tokens[0].arrived_s))
    require(rates, spec_ids, "the jobs streamed too few tokens to measure a rate")
    return percentile(rates, 0.5)
