"""GET /health (M0-W-1320, M0-W-1364, M0-W-1011): answered from cached state, no device calls (M0-W-1604)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from .state import State

router = APIRouter()


@router.get("/health")
async def health(state: State) -> dict[str, Any]:
    model = state.model
    return {
        "status": state.status,
        "model": model.name,
        "resident": state.resident,
        "quant_kind": model.quant_kind,
        "vram_bytes_used": state.memory.used_bytes,
        "vram_bytes_by_category": state.memory.by_category,
        "tokenizer_kind": model.tokenizer_kind,
        "vocab_size": model.vocab_size,
        "context_length": model.context_length,
        "uptime_seconds": int(time.monotonic() - state.started_monotonic),
        "architecture": model.architecture,
        "device": model.device,
        "sm": model.sm,
        "cuda_runtime_version": model.cuda_runtime_version,
        "busy": state.slot.busy,
        "queued": state.slot.queued,  # jobs waiting for the slot (always 0 without --queue-depth)
        "last_error": state.last_error,
    }
