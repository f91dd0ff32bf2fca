"""A small worker that speaks the M0 HTTP contract without a model, optionally breaking one rule.

Used by the harness self-tests: the conforming stub must pass every HTTP scenario, and each `--fault`
must make the scenario that checks the broken rule fail with that rule's spec ID.

    python tests/harness/stubs/stub_worker.py --worker-id W --model M.gguf --gpu-device 0 --port P \
        [--fault NAME] [--framing event|data]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gguf

FAULTS = (
    "none",
    "no_terminal",  # the stream just stops after the tokens (M0-W-1311)
    "two_terminals",  # end followed by error (M0-W-1311)
    "tokens_before_started",  # the first token precedes `started` (M0-W-1311)
    "accept_invalid",  # invalid requests get 200 and a stream (M0-W-1302)
    "health_missing_field",  # /health lacks `resident` (M0-W-1320)
    "cancel_noop",  # /cancel answers 202 and does nothing (M0-W-1330)
    "invalid_utf8",  # a token carries half a UTF-8 character (M0-W-1824)
    "health_waits_for_job",  # /health answers only once the running job ends, not from cache (M0-W-1604)
    "crash_on_boolean",  # a JSON boolean in a number field gets 500 and a traceback (M0-W-1302, under fuzz)
    "tokenizer_process",  # each job starts a helper process that lives while the job runs (M0-W-1365)
    "sigkill_once",  # the first job of a run SIGKILLs the worker (marker file: $STUB_SIGKILL_MARKER)
    "vram_grows_each_job",  # every job leaves 4 KiB of device memory behind (M0-W-1830)
    "vram_built_by_first_job",  # the first job builds a 256 KiB buffer the worker keeps: conforming
    "eos_first_jobs",  # the first EOS_JOBS jobs end by EOS after two tokens, as a chat model may: conforming
    "eos_every_job",  # every job ends by EOS after two tokens: conforming, but nothing runs long enough to cancel
    "eos_at_once_first_jobs",  # the first EOS_JOBS jobs end by EOS before any token (a first draw of EOS): conforming
    "graphs_change_tokens",  # with --decode-graphs on, the fourth token differs from the eager one (M1-CUDA-GRAPHS)
)
EOS_JOBS = 2
SIGKILL_MARKER_ENV = "STUB_SIGKILL_MARKER"
TOKENS = ("Hello", ",", " 世界", " 🚀", " GPU", " computing")
FILE_TYPES = {15: "Q4_K_M", 38: "MXFP4", 2: "Q4_0", 3: "Q4_1", 1: "F16", 0: "F32", 7: "Q8_0", 8: "Q5_0"}


def read_model(path: str) -> dict:
    reader = gguf.GGUFReader(path)
    arch = reader.get_field("general.architecture").contents()
    context = reader.get_field(f"{arch}.context_length")
    file_type = reader.get_field("general.file_type")
    return {
        "model": path.rsplit("/", 1)[-1],
        "quant_kind": FILE_TYPES.get(file_type.contents() if file_type else -1, "UNKNOWN"),
        "vocab_size": len(reader.get_field("tokenizer.ggml.tokens").data),
        "context_length": context.contents() if context else None,
        "tokenizer_kind": "gguf-bpe",
    }


def validate(body: object, vocab_size: int) -> list[dict]:
    if not isinstance(body, dict):
        return [{"field": "body", "constraint": "json_object", "message": "body must be a JSON object"}]
    errors = []

    def bad(field: str, constraint: str, message: str) -> None:
        errors.append({"field": field, "constraint": constraint, "message": message})

    def number(field: str, low: float, high: float, default: float, integer: bool = False) -> None:
        value = body.get(field, default)
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            bad(field, "type", f"{field} must be a {'integer' if integer else 'number'}")
        elif not low <= value <= high:
            bad(field, f"range({low}..={high})", f"{field} must be in {low}..{high} (got {value})")

    for field in ("job_id", "prompt"):
        value = body.get(field)
        if value is None:
            bad(field, "required", f"{field} is required")
        elif not isinstance(value, str):
            bad(field, "type", f"{field} must be a string")
        elif not value:
            bad(field, "non_empty", f"{field} must not be empty")
    if isinstance(body.get("prompt"), str) and len(body["prompt"]) > 32768:
        bad("prompt", "length(1..=32768)", "prompt is too long")
    number("max_tokens", 1, 2048, 2048, integer=True)
    number("temperature", 0.0, 2.0, 1.0)
    number("top_p", 0.0, 1.0, 1.0)
    number("top_k", 0, vocab_size, 0, integer=True)
    number("repetition_penalty", 0.0, 2.0, 1.0)
    number("seed", 0, 2**64 - 1, 0, integer=True)
    stop = body.get("stop", [])
    if not isinstance(stop, list) or not all(isinstance(entry, str) for entry in stop):
        bad("stop", "type", "stop must be a list of strings")
    elif len(stop) > 4:
        bad("stop", "max_count(4)", "stop takes at most 4 entries")
    return errors


class JsonLog:
    """JSON log lines with the M0-W-1900 context on every event, written to stdout one at a time."""

    def __init__(self, context: dict[str, object]) -> None:
        self.context = context
        self.lock = threading.Lock()

    def event(self, event: str, level: str = "info", **fields: object) -> None:
        record = {
            "ts": datetime.now(UTC).isoformat(),
            "level": level,
            "event": event,
            **self.context,
            **fields,
        }
        with self.lock:
            print(json.dumps(record), flush=True)


def stub_arguments(description: str | None, faults: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    """The M0 CLI every stub takes (M0-W-1100), and the fault it breaks a rule with."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--gpu-device", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fault", choices=faults, default="none")
    return parser


def http_server(handler: type[BaseHTTPRequestHandler], worker: object, port: int) -> ThreadingHTTPServer:
    """A threading HTTP server on the loopback port, its handlers reaching `worker` as `self.worker`."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    server.worker = worker  # type: ignore[attr-defined]
    return server


class StubWorker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.fault = args.fault
        self.framing = args.framing
        self.token_delay_s = args.token_delay_ms / 1000
        self.started_at = time.monotonic()
        self.facts = read_model(args.model)
        self.cancelled: set[str] = set()
        self.lock = threading.Lock()
        self.job_done = threading.Event()
        self.job_done.set()
        self.stopping = False  # SIGTERM arrived: the running job ends with CANCELLED
        self.inference_timeout_s: float | None = getattr(args, "inference_timeout_sec", None)
        self.decode_graphs = getattr(args, "decode_graphs", "on") == "on"
        self.jobs_done = 0

    def vram_bytes_used(self) -> int:
        with self.lock:
            jobs = self.jobs_done
        if self.fault == "vram_grows_each_job":
            return 123456 + 4096 * jobs
        if self.fault == "vram_built_by_first_job" and jobs:
            return 123456 + 262144
        return 123456

    def health(self) -> dict:
        body = {
            "status": "healthy",
            "resident": True,
            "vram_bytes_used": self.vram_bytes_used(),
            "uptime_seconds": int(time.monotonic() - self.started_at),
            **self.facts,
        }
        if self.fault == "health_missing_field":
            del body["resident"]
        return body


class Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer
    protocol_version = "HTTP/1.1"

    @property
    def worker(self) -> StubWorker:
        return self.server.worker  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        print(format % args, flush=True)

    def _json(self, status: int, body: object, **headers: str) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(payload)

    def _begin_stream(self) -> None:
        """200 with an event stream that ends with the connection."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()

    def _started(self, job_id: object, **fields: object) -> None:
        started = {"job_id": job_id, "model": self.worker.facts["model"], **fields}
        self._event("started", {**started, "started_at": datetime.now(UTC).isoformat()})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_GET(self) -> None:
        if self.path == "/health":
            if self.worker.fault == "health_waits_for_job":
                self.worker.job_done.wait()
            self._json(200, self.worker.health())
        else:
            self._json(404, {"code": "NOT_FOUND", "message": self.path})

    def do_POST(self) -> None:
        raw = self._body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            body, problem = None, str(exc)
        else:
            problem = None
        if self.path == "/cancel":
            if not isinstance(body, dict) or not isinstance(body.get("job_id"), str):
                self._json(
                    400, {"errors": [{"field": "job_id", "constraint": "required", "message": "job_id"}]}
                )
                return
            if self.worker.fault != "cancel_noop":
                with self.worker.lock:
                    self.worker.cancelled.add(body["job_id"])
            self._json(202, {"status": "cancelling", "job_id": body["job_id"]})
        elif self.path == "/execute":
            if problem is not None:
                errors = [{"field": "body", "constraint": "valid_json", "message": problem}]
            else:
                errors = validate(body, self.worker.facts["vocab_size"])
            if self.worker.fault == "crash_on_boolean" and isinstance(body, dict):
                if any(isinstance(value, bool) for value in body.values()):
                    self._json(500, {"code": "INTERNAL", "message": "Traceback: TypeError: bool"})
                    return
            if errors and self.worker.fault != "accept_invalid":
                self._json(400, {"errors": errors})
                return
            self._stream(body if isinstance(body, dict) else {})
        else:
            self._json(404, {"code": "NOT_FOUND", "message": self.path})

    def _event(self, kind: str, payload: dict, raw_text: bytes | None = None) -> None:
        data = raw_text if raw_text is not None else json.dumps({"type": kind, **payload}).encode()
        head = f"event: {kind}\n".encode() if self.worker.framing == "event" else b""
        self.wfile.write(b": keep-alive\n\n" if kind == "started" else b"")
        self.wfile.write(head + b"data: " + data + b"\n\n")
        self.wfile.flush()

    def _stream(self, body: dict) -> None:
        worker = self.worker
        job_id = str(body.get("job_id", ""))
        max_tokens = body.get("max_tokens", 2048) if isinstance(body.get("max_tokens"), int) else 4
        max_tokens = max(1, min(max_tokens, 2048))
        if worker.fault == "sigkill_once":
            marker = os.environ[SIGKILL_MARKER_ENV]
            if not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
        helper = None
        if worker.fault == "tokenizer_process":
            helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
            time.sleep(0.2)  # the "tokenizer" answers
        self._begin_stream()
        worker.job_done.clear()
        try:
            if worker.fault == "tokens_before_started":
                self._event("token", {"t": TOKENS[0], "i": 0})
            self._started(job_id)
            began = time.monotonic()
            with worker.lock:
                eos_after = (
                    2
                    if worker.fault == "eos_every_job"
                    or (worker.fault == "eos_first_jobs" and worker.jobs_done < EOS_JOBS)
                    else 0
                    if worker.fault == "eos_at_once_first_jobs" and worker.jobs_done < EOS_JOBS
                    else None
                )
            if eos_after is not None and eos_after < max_tokens:
                for index in range(eos_after):
                    self._event("token", {"t": TOKENS[index], "i": index})
                self._event("end", {"tokens_out": eos_after, "decode_time_ms": 1, "stop_reason": "EOS"})
                return
            for index in range(max_tokens):
                timeout = worker.inference_timeout_s
                if timeout is not None and time.monotonic() - began > timeout:
                    message = {"code": "INFERENCE_TIMEOUT", "message": "job timed out", "retriable": True}
                    self._event("error", message)
                    return
                with worker.lock:
                    cancelled = job_id in worker.cancelled or worker.stopping
                if cancelled:
                    message = {"code": "CANCELLED", "message": "job cancelled", "retriable": False}
                    self._event("error", message)
                    return
                if worker.fault == "invalid_utf8" and index == 1:
                    self._event("token", {}, raw_text=b'{"type":"token","t":"\xe4\xb8","i":1}')
                elif worker.fault == "graphs_change_tokens" and worker.decode_graphs and index == 3:
                    self._event("token", {"t": " CPU", "i": index})
                else:
                    self._event("token", {"t": TOKENS[index % len(TOKENS)], "i": index})
                time.sleep(worker.token_delay_s)
            if worker.fault != "no_terminal":
                self._event(
                    "end", {"tokens_out": max_tokens, "decode_time_ms": 1, "stop_reason": "MAX_TOKENS"}
                )
            if worker.fault == "two_terminals":
                self._event("error", {"code": "INTERNAL", "message": "late error", "retriable": False})
        except (BrokenPipeError, ConnectionResetError):
            return  # the client went away; nothing to clean up in a stub
        finally:
            if helper is not None:
                helper.kill()
                helper.wait()
            with worker.lock:
                worker.jobs_done += 1
            worker.job_done.set()
            self.close_connection = True


def main() -> None:
    parser = stub_arguments(__doc__, FAULTS)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--framing", choices=("event", "data"), default="event")
    parser.add_argument("--token-delay-ms", type=float, default=5.0)
    # The decode step replayed as a graph or launched kernel by kernel (the cuda_graphs and eager_decode
    # capabilities): the same tokens either way, unless the fault says otherwise.
    parser.add_argument("--decode-graphs", choices=("on", "off"), default="on")
    args = parser.parse_args()
    server = http_server(Handler, StubWorker(args), args.port)
    print(f"stub worker ready on {args.port} (fault={args.fault})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
