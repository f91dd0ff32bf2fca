"""The worker's HTTP app: /execute, /health, /cancel and /metrics over shared state (FastAPI "bigger
applications")."""

from __future__ import annotations

from fastapi import FastAPI

from . import cancel, errors, execute, health, metrics
from .correlation import CorrelationIdMiddleware
from .state import WorkerState


def create_app(state: WorkerState) -> FastAPI:
    app = FastAPI(title="reference worker (worker-orcd M0)", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = state
    app.include_router(execute.router)
    app.include_router(health.router)
    app.include_router(cancel.router)
    app.include_router(metrics.router)
    errors.install(app)
    app.add_middleware(CorrelationIdMiddleware)
    return app
