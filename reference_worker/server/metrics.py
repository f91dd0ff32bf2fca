"""GET /metrics (M1-METRICS, M0-W-1350): the worker's metrics in the Prometheus text format 0.0.4.

Answered from in-process counters, the memory accounting and the allocator's host-side counters, without device calls (as /health, M0-W-1604).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from reference_worker.metrics import CONTENT_TYPE

from .state import State

router = APIRouter()


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(state: State) -> Response:
    body = state.metrics.render(
        vram_bytes=state.memory.used_bytes,
        uptime_seconds=time.monotonic() - state.started_monotonic,
        allocator_bytes=state.memory.allocator_bytes(),
    )
    return Response(body, media_type=CONTENT_TYPE)
