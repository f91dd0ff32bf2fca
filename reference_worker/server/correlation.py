"""X-Correlation-Id: accepted when sane, generated otherwise, echoed on every response, logged."""

from __future__ import annotations

import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Correlation-Id"
MAX_LENGTH = 128


def accepted(value: str | None) -> str | None:
    """The client's id if it is 1..128 printable ASCII characters, else None."""
    if value is None or not 0 < len(value) <= MAX_LENGTH or not value.strip():
        return None
    return value if all(" " <= c <= "~" for c in value) else None


class CorrelationIdMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware), so SSE streams pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = dict(scope["headers"]).get(b"x-correlation-id")
        correlation_id = accepted(raw.decode("latin-1") if raw is not None else None) or str(uuid.uuid4())
        scope.setdefault("state", {})["correlation_id"] = correlation_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = correlation_id
            await send(message)

        await self.app(scope, receive, send_with_id)
