"""Every error body the HTTP layer sends is built here (M0-W-1302, M0-W-1500, §2.4/§2.9 of the contract).

Validation failures: 400 `{"code":"INVALID_REQUEST","errors":[{"field","constraint","message","value"?}]}`.
Other failures: `{"code","message","retriable"}` with the HTTP status of the contract's mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from reference_worker.generation import ErrorCode

BUSY_RETRY_AFTER_SEC = 1  # M0-W-1301: one job at a time; a second client retries shortly

# M0-W-1500 / contract §2.9: HTTP status per stable error code, for errors answered outside a stream.
HTTP_STATUS: dict[str, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.MODEL_LOAD_FAILED: 500,
    ErrorCode.INSUFFICIENT_VRAM: 503,
    ErrorCode.VRAM_OOM: 500,
    ErrorCode.CUDA_ERROR: 500,
    ErrorCode.INFERENCE_TIMEOUT: 504,
    ErrorCode.CANCELLED: 499,
    ErrorCode.INTERNAL: 500,
    "WORKER_BUSY": 503,
    "WORKER_UNHEALTHY": 503,
}


@dataclass(frozen=True)
class FieldError:
    field: str
    constraint: str
    message: str
    value: str | None = None  # as sent; omitted when None (prompt and stop values are never echoed)

    def body(self) -> dict[str, Any]:
        out = {"field": self.field, "constraint": self.constraint, "message": self.message}
        if self.value is not None:
            out["value"] = self.value
        return out


class InvalidRequest(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = errors


def invalid_request(errors: list[FieldError]) -> JSONResponse:
    return JSONResponse(
        {"code": ErrorCode.INVALID_REQUEST.value, "errors": [e.body() for e in errors]}, status_code=400
    )


def error_response(
    code: str,
    message: str,
    *,
    retriable: bool,
    status: int | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"code": str(code), "message": message, "retriable": retriable},
        status_code=status or HTTP_STATUS.get(code, 500),
        headers=headers,
    )


def worker_busy(job_id: str, queue_depth: int = 0) -> JSONResponse:
    why = (
        "another job is running"
        if queue_depth == 0
        else f"another job is running and {queue_depth} wait for it (the queue's limit)"
    )
    return error_response(
        "WORKER_BUSY",
        f"{why}; job {job_id!r} was not started (one inference at a time)",
        retriable=True,
        headers={"Retry-After": str(BUSY_RETRY_AFTER_SEC)},
    )


def worker_unhealthy(reason: str) -> JSONResponse:
    return error_response("WORKER_UNHEALTHY", f"worker is unhealthy: {reason}", retriable=False)


_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


async def _http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return error_response(code, message, retriable=False, status=exc.status_code, headers=exc.headers)


async def _invalid_request(request: Request, exc: InvalidRequest) -> JSONResponse:
    return invalid_request(exc.errors)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # A stable body: the exception's class, text and traceback stay in the worker's log (which never
    # holds prompt text: the failure is logged by type and location only).
    state = getattr(request.app.state, "worker", None)
    if state is not None:
        state.log.error(
            "unexpected failure while answering a request",
            code=ErrorCode.INTERNAL.value,
            path=request.url.path,
            exception=type(exc).__name__,
            correlation_id=getattr(request.state, "correlation_id", None),
        )
    return error_response(ErrorCode.INTERNAL, "internal error while answering the request", retriable=True)


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(InvalidRequest, _invalid_request)
    app.add_exception_handler(Exception, _unexpected)
