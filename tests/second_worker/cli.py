"""Command line and start-up: arguments checked before anything loads, then llama.cpp, then HTTP."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

LOAD_FAILED = 1  # M0-W-1110/1210: initialisation and load failures
USAGE = 2  # a missing or malformed flag, as argparse reports it


class Log:
    """One JSON object per line on stdout, each with the worker's context (M0-W-1900)."""

    def __init__(self, worker_id: str, model: str, gpu: int) -> None:
        self.context = {"worker_id": worker_id, "model_ref": model, "gpu_device": gpu}

    def __call__(self, event: str, level: str = "INFO", **fields: object) -> None:
        record = {"ts": time.time(), "lvl": level, "event": event, **self.context, **fields}
        print(json.dumps(record, ensure_ascii=False), flush=True)


def _uuid(text: str) -> str:
    try:
        uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a UUID, got {text!r}") from None
    return text


def _model(text: str) -> Path:
    path = Path(text)
    if not path.is_absolute():
        raise argparse.ArgumentTypeError(f"expected an absolute path, got {text!r}")
    if path.suffix.lower() != ".gguf":
        raise argparse.ArgumentTypeError(f"expected a .gguf file, got {text!r}")
    return path


def _device(text: str) -> int:
    # This worker computes on the host; the one device it offers is number 0.
    if text != "0":
        raise argparse.ArgumentTypeError(f"only device 0 exists here, got {text!r}")
    return 0


def _port(text: str) -> int:
    if not text.isdigit() or not 1024 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in 1024..65535, got {text!r}")
    return int(text)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="second-worker", description="An M0 worker on llama.cpp (CPU).")
    parser.add_argument("--worker-id", required=True, type=_uuid)
    parser.add_argument("--model", required=True, type=_model)
    parser.add_argument("--gpu-device", required=True, type=_device)
    parser.add_argument("--port", required=True, type=_port)
    parser.add_argument("--callback-url", help="accepted and unused: no orchestrator in tests")
    return parser.parse_args(argv)


def bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(16)
    return sock


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    log = Log(args.worker_id, str(args.model), args.gpu_device)
    log("startup", port=args.port)
    try:
        sock = bind(args.port)  # a busy port is found before the model is loaded
    except OSError as exc:
        log("error", level="ERROR", code="INTERNAL", message=f"--port {args.port}: {exc.strerror}")
        print(f"second-worker: --port {args.port} cannot be used: {exc.strerror}", file=sys.stderr)
        sys.exit(LOAD_FAILED)

    from tests.second_worker.engine import Engine, LoadError
    from tests.second_worker.server import serve

    log("model_load_start", model=str(args.model))
    try:
        engine = Engine.load(args.model, on_progress=lambda p: log("model_load_progress", percent=p))
    except LoadError as exc:
        log("error", level="ERROR", code="MODEL_LOAD_FAILED", message=str(exc))
        print(f"second-worker: {exc}", file=sys.stderr)
        sys.exit(LOAD_FAILED)
    log("model_load_complete", vram_bytes=0)
    log("ready", vram_bytes=0, url=f"http://127.0.0.1:{args.port}")

    loop = asyncio.new_event_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.run_until_complete(serve(sock, engine, log, stopping))
    log("shutdown")
    sys.exit(0)
