"""HTTP/1.1 on asyncio streams: POST /execute (SSE), GET /health, POST /cancel. One request per connection.

SSE framing of this worker: `data: <json>` lines only, the event type in the JSON's `type` field, CRLF
line endings, and two extra fields on every event (`worker`, `seq`).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from datetime import UTC, datetime

from tests.second_worker.engine import Cancelled, Engine, Finished, Piece, Sampling
from tests.second_worker.job_request import RequestError, read_job

REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           413: "Payload Too Large", 503: "Service Unavailable"}  # fmt: skip
MAX_BODY = 1 << 20


class Worker:
    def __init__(self, engine: Engine, log) -> None:  # noqa: ANN001 (cli.Log)
        self.engine = engine
        self.log = log
        self.busy = False
        self.jobs: dict[str, threading.Event] = {}  # running job -> its cancel flag
        self.started = time.monotonic()


async def serve(sock: socket.socket, engine: Engine, log, stopping: asyncio.Event) -> None:  # noqa: ANN001
    worker = Worker(engine, log)
    server = await asyncio.start_server(lambda r, w: handle(worker, r, w), sock=sock)
    async with server:
        await stopping.wait()
        for flag in worker.jobs.values():
            flag.set()


async def handle(worker: Worker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if length > MAX_BODY:
            await respond(writer, 413, problem("body", f"larger than {MAX_BODY} bytes"))
            return
        body = await reader.readexactly(length) if length else b""
        await route(worker, method, path.split("?")[0], body, writer)
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def route(worker: Worker, method: str, path: str, body: bytes, writer: asyncio.StreamWriter) -> None:
    routes = {"/execute": "POST", "/cancel": "POST", "/health": "GET"}
    if path not in routes:
        await respond(writer, 404, {"error": {"code": "NOT_FOUND", "message": f"no route {path}"}})
    elif method != routes[path]:
        await respond(writer, 405, {"error": {"code": "METHOD", "message": f"{path} takes {routes[path]}"}})
    elif path == "/health":
        await respond(writer, 200, health(worker))
    elif path == "/cancel":
        await cancel(worker, body, writer)
    else:
        await execute(worker, body, writer)


def problem(param: str, reason: str) -> dict:
    return {"error": {"code": "INVALID_REQUEST", "message": f"{param}: {reason}",
                      "details": [{"param": param, "reason": reason}]}}  # fmt: skip


async def respond(writer: asyncio.StreamWriter, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode("utf-8")
    writer.write(
        f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode("latin-1")
        + data
    )
    await writer.drain()


def health(worker: Worker) -> dict:
    facts = worker.engine.facts
    return {
        "status": "healthy",
        "resident": False,  # the weights live in host memory: nothing is resident on a device
        "quant_kind": facts.quant_kind,
        "vram_bytes_used": 0,
        "tokenizer_kind": "gguf-bpe",  # llama.cpp reads the vocabulary from the GGUF file
        "vocab_size": facts.vocab_size,
        "context_length": facts.context_length,
        "model": facts.name,
        "architecture": facts.architecture,
        "backend": "llama.cpp (CPU)",
        "uptime_s": round(time.monotonic() - worker.started, 1),
    }


async def cancel(worker: Worker, body: bytes, writer: asyncio.StreamWriter) -> None:
    try:
        job_id = json.loads(body or b"null")["job_id"]
    except (ValueError, TypeError, KeyError):
        await respond(writer, 400, problem("job_id", "a JSON body with the job_id to cancel is required"))
        return
    flag = worker.jobs.get(job_id) if isinstance(job_id, str) else None
    if flag is not None:
        flag.set()
    await respond(writer, 202, {"job_id": job_id, "cancelling": flag is not None})


async def execute(worker: Worker, body: bytes, writer: asyncio.StreamWriter) -> None:
    try:
        job_id, prompt, sampling = read_job(body, worker.engine)
    except RequestError as exc:
        await respond(writer, 400, problem(exc.param, exc.reason))
        return
    if worker.busy:
        await respond(writer, 503, {"error": {"code": "BUSY", "message": "a job is running; retry later"}})
        return
    worker.busy = True
    flag = worker.jobs[job_id] = threading.Event()
    try:
        await stream_job(worker, job_id, prompt, sampling, flag, writer)
    finally:
        worker.jobs.pop(job_id, None)
        worker.busy = False


async def stream_job(
    worker: Worker, job_id: str, prompt: str, sampling: Sampling, flag: threading.Event, writer
) -> None:  # noqa: ANN001
    seq = 0

    async def send(kind: str, **fields: object) -> None:
        nonlocal seq
        event = {"type": kind, **fields, "worker": "second", "seq": seq}
        seq += 1
        writer.write(b"data: " + json.dumps(event, ensure_ascii=False).encode("utf-8") + b"\r\n\r\n")
        try:
            await writer.drain()
        except ConnectionError:
            flag.set()  # the client went away: stop generating
            raise

    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-store\r\n"
        b"Connection: close\r\n\r\n"
    )
    worker.log("execute_start", job_id=job_id, prompt_chars=len(prompt))
    started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    await send(
        "started", job_id=job_id, model=worker.engine.facts.name, started_at=started_at, seed=sampling.seed
    )
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def produce() -> None:
        try:
            for item in worker.engine.generate(prompt, sampling, flag):
                loop.call_soon_threadsafe(queue.put_nowait, item)
        except Exception as exc:  # noqa: BLE001 (handed to the stream as an error event)
            loop.call_soon_threadsafe(queue.put_nowait, exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    index = 0
    outcome = "ERROR"
    try:
        while True:
            item = await queue.get()
            if isinstance(item, Piece):
                await send("token", t=item.text, i=index)
                index += 1
            elif isinstance(item, Finished):
                outcome = item.reason
                await send("end", tokens_out=index, decode_time_ms=round(item.decode_ms, 3),
                           stop_reason=item.reason, seed=sampling.seed)  # fmt: skip
                break
            elif isinstance(item, Cancelled):
                outcome = "CANCELLED"
                await send("error", code="CANCELLED", message="the job was cancelled", retriable=False)
                break
            else:
                await send("error", code="INTERNAL", message=f"generation failed: {item}", retriable=False)
                break
    except ConnectionError:
        outcome = "DISCONNECTED"
    finally:
        await asyncio.to_thread(thread.join)
        worker.log("execute_end", job_id=job_id, outcome=outcome)
