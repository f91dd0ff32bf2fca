"""A stub worker for the process and memory scenarios: CLI checks, GGUF checks, JSON logs, a device-memory
budget, VRAM_OOM, a residency fault hook and SIGTERM, over the HTTP stub of `stub_worker.py`.

The conforming stub must pass every scenario of features/process and features/memory; each `--fault`
must make the scenario that checks the broken rule fail with that rule's spec ID. Each `--variant`
behaves in another way the spec allows, and must pass as well:

    usage_exit_2         usage errors exit 2, as argparse and clap do (M0-W-1100, ERRATA E-26)
    host_memory_truth    on a machine without a GPU, /health says 0 device bytes and resident false

    python tests/harness/stubs/process_stub.py --worker-id UUID --model /abs/m.gguf --gpu-device 0 \
        --port P [--vram-budget-mb N] [--residency-fault] [--fault NAME] [--variant NAME]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import sys
import threading
import time
import uuid
from http.server import ThreadingHTTPServer
from pathlib import Path

import gguf
from stub_worker import TOKENS, Handler, JsonLog, StubWorker

FAULTS = (
    "none",
    "accept_bad_uuid",  # --worker-id is not checked (M0-W-1100)
    "usage_traceback",  # bad flags raise: a traceback on stderr (M0-W-1100)
    "accept_version_2",  # GGUF version 2 is served (M0-W-1210)
    "accept_any_architecture",  # any general.architecture is served (M0-W-1212)
    "no_progress",  # no model_load_progress logs (M0-W-1621)
    "log_without_worker_id",  # log lines lack worker_id (M0-W-1900)
    "not_resident",  # /health resident=false (M0-SYS-2.2.1)
    "vram_inflated",  # /health vram_bytes_used far above the file's tensors (M0-W-1201)
    "oom_exits",  # the process dies after sending VRAM_OOM (M0-W-1021)
    "insufficient_vague",  # insufficient memory without sizes or GPU id (M0-W-1020)
    "ignore_residency_fault",  # the residency fault hook changes nothing (M0-W-1012)
    "sigterm_exit_1",  # SIGTERM exits with code 1 (M0-W-1340)
    "sigterm_cuts_stream",  # SIGTERM exits at once, the running job's stream cut without a terminal event
    "ignore_timeout",  # --inference-timeout-sec is accepted and does nothing (M0-W-1101)
    "no_perf_fields",  # execute_end lacks tokens_in and first_token_ms, as in M0 (M0-W-1901)
    "log_prompt",  # execute_start logs the prompt itself (M0-W-1902)
    "log_output",  # execute_end logs the generated text (M0-W-1902)
    "eos_first_jobs",  # the first jobs end by EOS after two tokens, as a chat model may: conforming
    "eos_every_job",  # every job ends by EOS after two tokens: conforming, nothing runs past a timeout
    "eos_at_once_first_jobs",  # the first jobs end by EOS before any token (a first draw of EOS): conforming
)
VARIANTS = ("none", "usage_exit_2", "host_memory_truth")
ARCHITECTURES = ("llama", "qwen2", "phi3", "gpt2", "gpt-oss")
KV_BYTES_PER_POSITION = 8192
SHUTDOWN_GRACE_S = 2.0
MIB = 1 << 20


class StartupError(Exception):
    """One line for stderr, then exit 1."""


def process_log(args: argparse.Namespace) -> JsonLog:
    context = {"worker_id": args.worker_id, "model_ref": args.model, "gpu_device": args.gpu_device}
    if args.fault == "log_without_worker_id":
        del context["worker_id"]
    return JsonLog(context)


class UsageParser(argparse.ArgumentParser):
    exit_code = 1

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(self.exit_code)


def parse(argv: list[str]) -> argparse.Namespace:
    variant = argv[argv.index("--variant") + 1] if "--variant" in argv else "none"
    parser = UsageParser(description=__doc__)
    parser.exit_code = 2 if variant == "usage_exit_2" else 1
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--gpu-device", required=True, type=int)
    parser.add_argument("--port", required=True, type=int)
    for flag in ("--max-tokens-in", "--max-tokens-out", "--kv-cache-size-mb", "--vram-budget-mb"):
        parser.add_argument(flag, type=int)
    parser.add_argument("--inference-timeout-sec", type=float)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--residency-fault", action="store_true")
    parser.add_argument("--fault", choices=FAULTS, default="none")
    parser.add_argument("--variant", choices=VARIANTS, default="none")
    args = parser.parse_args(argv)
    problem = None
    if args.fault != "accept_bad_uuid":
        try:
            uuid.UUID(args.worker_id)
        except ValueError:
            problem = f"--worker-id must be a UUID (got {args.worker_id!r})"
    model = Path(args.model)
    if problem is None and not model.is_absolute():
        problem = f"--model must be an absolute path (got {args.model!r})"
    elif problem is None and model.suffix != ".gguf":
        problem = f"--model must name a .gguf file (got {args.model!r})"
    elif problem is None and not model.is_file():
        problem = f"--model {args.model!r}: no such file"
    elif problem is None and args.gpu_device != 0:
        problem = f"--gpu-device {args.gpu_device} is out of range (one device)"
    elif problem is None and not 1024 <= args.port <= 65535:
        problem = f"--port must be in 1024..65535 (got {args.port})"
    if problem is not None:
        if args.fault == "usage_traceback":
            raise ValueError(problem)
        parser.error(problem)
    return args


def check_model(path: Path, fault: str) -> tuple[gguf.GGUFReader, str]:
    head = path.read_bytes()[:24]
    if head[:4] != b"GGUF":
        raise StartupError(f"{path}: not a GGUF file (magic {head[:4]!r})")
    version = int.from_bytes(head[4:8], "little")
    if version != 3 and not (fault == "accept_version_2" and version == 2):
        raise StartupError(f"{path}: unsupported GGUF version {version} (need 3)")
    count = int.from_bytes(head[8:16], "little")
    if count >= 10_000:
        raise StartupError(f"{path}: {count} tensors (at most 9999)")
    try:
        reader = gguf.GGUFReader(path)
        for tensor in reader.tensors:
            if int(tensor.data_offset) + int(tensor.n_bytes) > path.stat().st_size:
                raise ValueError(f"tensor {tensor.name} ends beyond the end of the file")
    except (ValueError, IndexError) as exc:
        raise StartupError(f"{path}: truncated or malformed GGUF: {exc}") from None
    arch = str(reader.get_field("general.architecture").contents())
    if arch not in ARCHITECTURES and fault != "accept_any_architecture":
        raise StartupError(f"{path}: unsupported architecture {arch!r}")
    for key in ("context_length", "embedding_length", "block_count"):
        if fault != "accept_any_architecture" and reader.get_field(f"{arch}.{key}") is None:
            raise StartupError(f"{path}: missing required metadata key '{arch}.{key}'")
    return reader, arch


class ProcessWorker(StubWorker):
    def __init__(self, args: argparse.Namespace, log: JsonLog, weight_bytes: int) -> None:
        args.framing, args.token_delay_ms = "event", 1.0
        super().__init__(args)
        self.log = log
        self.weight_bytes = weight_bytes
        self.budget = None if args.vram_budget_mb is None else args.vram_budget_mb * MIB
        self.model_size = Path(args.model).stat().st_size
        self.resident = self.fault != "not_resident" and args.variant != "host_memory_truth"
        self.device_bytes = 0 if args.variant == "host_memory_truth" else weight_bytes
        self.healthy = True

    def health(self) -> dict:
        body = super().health()
        body["resident"] = self.resident
        body["status"] = "healthy" if self.healthy else "unhealthy"
        body["vram_bytes_used"] = self.device_bytes
        if self.fault == "vram_inflated":
            body["vram_bytes_used"] = 4 * self.model_size + 64 * MIB
        return body

    def fail_residency(self) -> None:
        if self.fault == "ignore_residency_fault":
            return
        self.resident, self.healthy = False, False
        self.log.event("residency_check_failed", level="critical", message="weights are no longer resident")


class ProcessHandler(Handler):
    def _stream(self, body: dict) -> None:
        worker = self.worker
        job_id = str(body.get("job_id", ""))
        prompt = str(body.get("prompt", ""))
        # M0-W-1902: the prompt's hash and length, not its text.
        redacted = {
            "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
            "prompt_chars": len(prompt),
        }
        if worker.fault == "log_prompt":
            redacted["prompt"] = prompt
        worker.log.event("execute_start", job_id=job_id, **redacted)
        max_tokens = body.get("max_tokens", 2048) if isinstance(body.get("max_tokens"), int) else 4
        tokens_in = len(prompt.split()) + 1
        positions = min(tokens_in + max_tokens, worker.facts["context_length"])
        if (
            worker.budget is not None
            and worker.weight_bytes + positions * KV_BYTES_PER_POSITION > worker.budget
        ):
            self._oom(job_id)
            return
        began = time.monotonic()
        super()._stream(body)
        elapsed_ms = round((time.monotonic() - began) * 1000)
        fields: dict[str, object] = {  # M0-W-1901
            "tokens_in": tokens_in,
            "tokens_out": max_tokens,
            "decode_time_ms": elapsed_ms,
            "first_token_ms": min(elapsed_ms, worker.token_delay_s * 1000),
            "vram_bytes": worker.weight_bytes,
        }
        if worker.fault == "no_perf_fields":
            del fields["tokens_in"], fields["first_token_ms"]
        if worker.fault == "log_output":
            fields["text"] = "".join(TOKENS[index % len(TOKENS)] for index in range(max_tokens))
        worker.log.event("execute_end", job_id=job_id, **fields)

    def _oom(self, job_id: str) -> None:
        self._begin_stream()
        self._started(job_id)
        self._event("error", {"code": "VRAM_OOM", "message": "KV cache does not fit", "retriable": True})
        self.close_connection = True
        self.worker.log.event("error", level="error", job_id=job_id, code="VRAM_OOM")
        if self.worker.fault == "oom_exits":
            threading.Timer(0.05, os._exit, args=(3,)).start()


def fail(log: JsonLog | None, message: str) -> None:
    if log is not None:
        log.event("error", level="error", message=message)
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def main() -> None:
    args = parse(sys.argv[1:])
    log = process_log(args)
    log.event("startup", port=args.port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("0.0.0.0", args.port))
    except OSError:
        fail(log, f"--port {args.port} is already in use")
    path = Path(args.model)
    try:
        reader, arch = check_model(path, args.fault)
    except StartupError as exc:
        fail(log, str(exc))
    weight_bytes = sum(int(tensor.n_bytes) for tensor in reader.tensors)
    if args.vram_budget_mb is not None and weight_bytes > args.vram_budget_mb * MIB:
        if args.fault == "insufficient_vague":
            fail(log, f"{path}: not enough device memory")
        fail(
            log,
            f"{path}: insufficient device memory on GPU {args.gpu_device}: need {weight_bytes} bytes, "
            f"{args.vram_budget_mb * MIB} bytes available",
        )
    log.event("model_load_start", architecture=arch)
    if args.fault != "no_progress":
        for percent in (0, 25, 50, 75, 100):
            log.event("model_load_progress", percent=percent)
    log.event("model_load_complete", vram_bytes=weight_bytes)
    worker = ProcessWorker(args, log, weight_bytes)
    sock.listen(16)
    server = ThreadingHTTPServer(("0.0.0.0", args.port), ProcessHandler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.daemon_threads = True
    server.worker = worker  # type: ignore[attr-defined]

    if args.fault == "ignore_timeout":
        worker.inference_timeout_s = None

    def on_sigterm(signum: int, frame: object) -> None:
        code = 1 if args.fault == "sigterm_exit_1" else 0
        if args.fault != "sigterm_cuts_stream":
            worker.stopping = True  # the running job ends with a terminal event first
            worker.job_done.wait(SHUTDOWN_GRACE_S)
        log.event("shutdown", exit_code=code)
        os._exit(code)

    signal.signal(signal.SIGTERM, on_sigterm)
    if args.residency_fault:
        threading.Timer(1.0, worker.fail_residency).start()
    log.event("ready", vram_bytes=worker.device_bytes)
    server.serve_forever()


if __name__ == "__main__":
    main()
