"""The job slot (M0-W-1301): at most one inference runs; /cancel and shutdown reach it here.

A job that finds the slot taken is refused at once (503 WORKER_BUSY), the spec's behaviour and the
default. With `--queue-depth N` up to N jobs wait in line, first come first served, and the next one past
them is refused: a bounded queue for deployments that send a worker more than one job at a time without
an orchestrator's placement. The slot is handed to the first waiter inside `finish`, under the lock, so a
newcomer can never overtake the line.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field

from reference_worker.generation import CancelToken, ErrorCode


@dataclass
class ActiveJob:
    job_id: str
    correlation_id: str | None = None
    cancel: CancelToken = field(default_factory=CancelToken)


@dataclass
class Admission:
    """A job let in: running now (`turn` is None) or waiting for `turn` (True: its turn, False: cancelled)."""

    job: ActiveJob
    turn: asyncio.Future[bool] | None = None


class JobSlot:
    def __init__(self, queue_depth: int = 0) -> None:
        if queue_depth < 0:
            raise ValueError(f"queue_depth must be >= 0 (got {queue_depth})")
        self.queue_depth = queue_depth
        self._lock = threading.Lock()
        self._active: ActiveJob | None = None
        self._waiting: deque[tuple[ActiveJob, asyncio.Future[bool]]] = deque()

    @property
    def busy(self) -> bool:
        return self._active is not None

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def active_job_id(self) -> str | None:
        job = self._active
        return job.job_id if job else None

    def try_start(self, job_id: str, correlation_id: str | None = None) -> ActiveJob | None:
        """The new job, running; None when the slot is taken or jobs wait for it."""
        with self._lock:
            if self._active is not None or self._waiting:
                return None
            self._active = ActiveJob(job_id, correlation_id)
            return self._active

    def admit(self, job_id: str, correlation_id: str | None = None) -> Admission | None:
        """Runs the job now, or puts it in line; None when the line already holds `queue_depth` jobs.
        Called on the event loop (the waiter's future belongs to it)."""
        with self._lock:
            job = ActiveJob(job_id, correlation_id)
            if self._active is None and not self._waiting:
                self._active = job
                return Admission(job)
            if len(self._waiting) >= self.queue_depth:
                return None
            turn: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._waiting.append((job, turn))
            return Admission(job, turn)

    async def wait_turn(self, admission: Admission) -> bool:
        """True once the admitted job holds the slot; False when it was cancelled while waiting. If the
        waiter goes away (the client disconnected), it leaves the line or passes the slot on."""
        if admission.turn is None:
            return True
        try:
            return await asyncio.shield(admission.turn)
        except asyncio.CancelledError:
            with self._lock:
                handed_over = self._active is admission.job  # its turn came; the news had not arrived
                if not handed_over:
                    self._waiting = deque(w for w in self._waiting if w[0] is not admission.job)
            if handed_over:
                self.finish(admission.job)  # pass the slot on to the next in line
            raise

    def finish(self, job: ActiveJob) -> None:
        """Frees the slot, or hands it to the first waiter; called when the engine has really stopped
        (from the engine's thread)."""
        with self._lock:
            if self._active is not job:
                return
            self._active = None
            if self._waiting:
                self._active, turn = self._waiting.popleft()
                _resolve(turn, True)

    def cancel(self, job_id: str) -> str:
        """`cancelling` when `job_id` runs or waits (idempotent), else `not_running` (M0-W-1330)."""
        with self._lock:
            job = self._active
            if job is not None and job.job_id == job_id:
                if not job.cancel.cancelled:
                    job.cancel.cancel(ErrorCode.CANCELLED)
                return "cancelling"
            for waiting, turn in list(self._waiting):
                if waiting.job_id == job_id:
                    waiting.cancel.cancel(ErrorCode.CANCELLED)
                    self._waiting.remove((waiting, turn))
                    _resolve(turn, False)
                    return "cancelling"
            return "not_running"

    def cancel_active(self) -> None:
        """Shutdown: stop whatever runs, and every job in line."""
        with self._lock:
            if self._active is not None and not self._active.cancel.cancelled:
                self._active.cancel.cancel(ErrorCode.CANCELLED)
            while self._waiting:
                waiting, turn = self._waiting.popleft()
                waiting.cancel.cancel(ErrorCode.CANCELLED)
                _resolve(turn, False)


def _resolve(turn: asyncio.Future[bool], value: bool) -> None:
    """Sets a waiter's future from any thread (the engine's thread calls `finish`)."""

    def set_result() -> None:
        if not turn.done():
            turn.set_result(value)

    try:
        turn.get_loop().call_soon_threadsafe(set_result)
    except RuntimeError:  # the event loop is gone (shutdown); nobody waits any more
        pass
