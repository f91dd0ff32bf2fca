"""What the worker exposes (M0-W-1110, M0-W-1902; contract §2.1): the bind address, the routes, and error
bodies with stable codes and messages, never an exception's class, text, traceback or a file path."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import httpx
import pytest

from reference_worker.cli import parse_config
from reference_worker.logs import EventLog
from reference_worker.server import create_app
from tests.fuzz.inprocess import TINY_MODEL, load_tiny_worker
from tests.fuzz.process import worker_argv

ROUTES = {("POST", "/execute"), ("GET", "/health"), ("POST", "/cancel"), ("GET", "/metrics")}


def _argv(model: Path, *more: str) -> list[str]:
    return [*worker_argv(model, 8080), *more]


def test_the_worker_listens_on_all_interfaces_unless_told_otherwise(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    assert parse_config(_argv(model), cuda_device_count=0).host == "0.0.0.0"  # M0-W-1110
    assert parse_config(_argv(model, "--host", "127.0.0.1"), cuda_device_count=0).host == "127.0.0.1"


needs_tiny = pytest.mark.skipif(not TINY_MODEL.is_file(), reason=f"{TINY_MODEL} missing")


@needs_tiny
def test_only_the_four_routes_are_served() -> None:
    app = create_app(load_tiny_worker())
    served = {(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops}
    assert served == ROUTES

    async def probe() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
            paths = ["/openapi.json", "/docs", "/redoc", "/../etc/passwd", "/health/../../x", "/static/x"]
            return [(await client.get(p)).status_code for p in paths]

    assert set(asyncio.run(probe())) == {404}


@needs_tiny
def test_an_unexpected_failure_answers_a_stable_500_and_logs_the_cause() -> None:
    state = load_tiny_worker()
    logs = io.StringIO()
    state.log = EventLog(logs)

    def count_tokens(text: str) -> int:  # a failure with a path and a class name in it
        raise RuntimeError(f"cannot read /opt/secret/tokenizer.py for {text!r}")

    state.count_tokens = count_tokens

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(state), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
            return await client.post("/execute", json={"job_id": "j", "prompt": "p", "stop": ["PERIWINKLE"]})

    response = asyncio.run(post())
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "INTERNAL" and body["retriable"] is True
    assert (
        "RuntimeError" not in response.text
        and "/opt" not in response.text
        and "PERIWINKLE" not in response.text
    )
    (line,) = [json.loads(x) for x in logs.getvalue().splitlines() if '"error"' in x]
    assert line["exception"] == "RuntimeError" and line["path"] == "/execute"
    assert "PERIWINKLE" not in logs.getvalue()  # the failure is logged by class and route, not by its text
