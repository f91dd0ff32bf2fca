"""HTTP/SSE layer of the reference worker (M0-W-1300..1340)."""

from .app import create_app
from .jobs import JobSlot
from .state import Limits, ModelInfo, WorkerState

__all__ = ["JobSlot", "Limits", "ModelInfo", "WorkerState", "create_app"]
