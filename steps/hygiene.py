"""Scenario hygiene on a shared worker: no scenario inherits another scenario's job.

A worker runs one job at a time (M0-W-1301) and is shared by many scenarios (always when attached, and
a spawned worker is reused by every scenario of its model). At teardown each scenario therefore

1. cancels the jobs it sent that have not ended (`POST /cancel`, M0-W-1330) and drops their streams;
2. waits, at most `IDLE_WAIT_S`, until the worker is idle.

Idle is read from `/health` `busy` when the worker reports that boolean (not a spec field, but common).
Otherwise, and only when the scenario cancelled or abandoned a job, a one-token probe job is sent: an
answer 503 means the worker is still busy (M0-W-1301 allows refusing with 503 or queueing); any other
answer, read to its end, means the job slot was free. A worker still busy after the wait is reported
against the scenario that left it so (a teardown error), and the next scenario that needs it waits again
and is not applicable if it stays busy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx

from steps.state import ScenarioState, new_job_id

IDLE_WAIT_S = 30.0  # a cancelled job ends within 5 s (M0-W-1330); the rest is slack for a slow worker
POLL_S = 0.25
PROBE = {"prompt": "Hello", "max_tokens": 1}


@dataclass
class Settled:
    """What teardown did and found."""

    idle: bool
    waited_s: float = 0.0
    cancelled: list[str] = field(default_factory=list)  # job ids cancelled at teardown
    how: str = ""  # how idleness was read, or why the worker counts as busy


def settle(state: ScenarioState, wait_s: float = IDLE_WAIT_S) -> Settled:
    """Cancel the scenario's unfinished jobs, then wait until its worker is idle."""
    worker = state.worker
    if worker is None or not worker.alive():
        return Settled(idle=True, how="no worker left to wait for")
    cancelled = [job.job_id for job in state.jobs if not job.ended]
    for job_id in cancelled:
        try:
            state.client.post(state.url("/cancel"), json={"job_id": job_id}, timeout=5.0)
        except httpx.HTTPError:
            pass  # the wait below tells whether the worker is still busy
    for job in state.jobs:
        if job.running is not None:
            job.running.close()
    probe = bool(cancelled or state.cancels)
    started = time.monotonic()
    idle, how = wait_idle(state.client, worker.base_url, wait_s, probe=probe)
    return Settled(idle, time.monotonic() - started, cancelled, how)


def wait_idle(client: httpx.Client, base_url: str, wait_s: float, *, probe: bool) -> tuple[bool, str]:
    """(idle, how it was read) within `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    how = "no answer yet"
    while True:
        busy, how = _busy_from_health(client, base_url)
        if busy is None and probe:
            busy, how = _busy_from_probe(client, base_url)
        if not busy:  # False, or None: nothing tells, and the scenario left no job that could run on
            return True, how
        if time.monotonic() >= deadline:
            return False, how
        time.sleep(POLL_S)


def _busy_from_health(client: httpx.Client, base_url: str) -> tuple[bool | None, str]:
    try:
        response = client.get(f"{base_url}/health", timeout=5.0)
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return None, "GET /health did not answer with JSON"
    busy = body.get("busy") if isinstance(body, dict) else None
    if isinstance(busy, bool):
        return busy, f"GET /health busy {str(busy).lower()}"
    return None, "GET /health reports no busy flag"


def _busy_from_probe(client: httpx.Client, base_url: str) -> tuple[bool, str]:
    body = {"job_id": new_job_id(), **PROBE}
    try:
        with client.stream("POST", f"{base_url}/execute", json=body, timeout=30.0) as response:
            if response.status_code == 503:
                return True, "a one-token probe job was refused with 503"
            for _ in response.iter_bytes():
                pass
    except httpx.HTTPError as exc:
        return True, f"a one-token probe job failed: {type(exc).__name__}"
    return False, f"a one-token probe job was answered {response.status_code}"
