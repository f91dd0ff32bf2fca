"""POST /cancel {"job_id"} (M0-W-1330): 202, idempotent; the active stream ends with error CANCELLED."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from . import schemas
from .state import State

router = APIRouter()


_OPENAPI = schemas.openapi_operation(
    schemas.CancelBody,
    {
        "202": {
            "description": "cancelling (the running job) or not_running (any other id); idempotent",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)


@router.post("/cancel", status_code=202, openapi_extra=_OPENAPI)
async def cancel(request: Request, state: State) -> JSONResponse:
    body = await schemas.read_json_object(request, state.limits.max_body_bytes)
    job_id = schemas.cancel_job_id(body)
    status = state.slot.cancel(job_id)
    if status == "cancelling":
        state.log.bind(job_id=job_id, correlation_id=getattr(request.state, "correlation_id", None)).event(
            "cancel", "cancel requested"
        )
    return JSONResponse({"job_id": job_id, "status": status}, status_code=202)
