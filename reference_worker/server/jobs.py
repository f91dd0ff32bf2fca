"""The single job slot (M0-W-1301): at most one inference runs; /cancel and shutdown reach it here."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from reference_worker.generation import CancelToken, ErrorCode


@dataclass
class ActiveJob:
    job_id: str
    correlation_id: str | None = None
    cancel: CancelToken = field(default_factory=CancelToken)


class JobSlot:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: ActiveJob | None = None

    @property
    def busy(self) -> bool:
        return self._active is not None

    @property
    def active_job_id(self) -> str | None:
        job = self._active
        return job.job_id if job else None

    def try_start(self, job_id: str, correlation_id: str | None = None) -> ActiveJob | None:
        """The new job, or None when another one holds the slot."""
        with self._lock:
            if self._active is not None:
                return None
            self._active = ActiveJob(job_id, correlation_id)
            return self._active

    def finish(self, job: ActiveJob) -> None:
        """Frees the slot; called when the engine's generator has really stopped."""
        with self._lock:
            if self._active is job:
                self._active = None

    def cancel(self, job_id: str) -> str:
        """`cancelling` when `job_id` is running (idempotent), else `not_running` (M0-W-1330)."""
        with self._lock:
            job = self._active
            if job is None or job.job_id != job_id:
                return "not_running"
            if not job.cancel.cancelled:
                job.cancel.cancel(ErrorCode.CANCELLED)
            return "cancelling"

    def cancel_active(self) -> None:
        """Shutdown: stop whatever runs."""
        with self._lock:
            if self._active is not None and not self._active.cancel.cancelled:
                self._active.cancel.cancel(ErrorCode.CANCELLED)
