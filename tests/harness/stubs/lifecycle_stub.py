"""A stub worker for the lifecycle scenarios: a fresh start, JSON logs with the load flow in bytes, one job
at a time, SIGTERM, and a pretend GPU that `fake_nvidia_smi.py` shows, optionally breaking one rule.

It generates like `generation_stub.py` (greedy output is deterministic), streams tokens with a delay so
jobs overlap in time, logs one JSON line per event (never per token), refuses a second job with 503
(`--busy refuse`) or queues it (`--busy queue`), and on SIGTERM logs `shutdown` and exits 0. With
FAKE_GPU_APPS_DIR set it registers its pid and device memory there, as a CUDA context would show in
nvidia-smi. Each `--fault` breaks exactly one rule:

    greedy_drift            temperature 0 gives other tokens on every run (M0-W-1820)
    progress_backwards      model_load_progress bytes_loaded goes back once (M0-W-1410)
    log_per_token           one log line per generated token (M0-SEAM-PURE-LOOP)
    concurrent_jobs         no job slot: two jobs generate at once (M0-W-1301)
    health_device_cpu       /health device is "cpu" (M0-W-1400)
    weights_in_host_memory  the device context holds no memory for the weights (M0-W-1010)
    context_leak            a child process keeps a device context after the worker exits (M0-W-1401)
    mixed_streams           no job slot, and every stream carries the tokens of the latest job (M0-W-1301)
    busy_cut_short          a job sent while one runs gets a stream that breaks off without a terminal event
    ignore_disconnect       a job whose client went away keeps the slot until all its tokens are made (M0-W-1611)
    die_with_sibling        when another stub on the same pretend device dies, this one's streams break off
                            (M0-SYS-6.3.2)
    shared_server           the first stub on the pretend device also serves the ports of the ones started
                            after it, which only wait (M0-SYS-2.4.2)

    python tests/harness/stubs/lifecycle_stub.py --worker-id W --model M.gguf --gpu-device 0 --port P \
        [--fault NAME] [--busy refuse|queue] [--first-token-delay-s S]

`--first-token-delay-s`: the stub's first job streams its first token S seconds after `started`, as a
correct worker that compiles or captures a CUDA graph on its first job does (not a fault).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from generation_stub import GenerationStub
from stub_worker import Handler, JsonLog, http_server, stub_arguments

FAULTS = (
    "none",
    "greedy_drift",
    "progress_backwards",
    "log_per_token",
    "concurrent_jobs",
    "health_device_cpu",
    "weights_in_host_memory",
    "context_leak",
    "mixed_streams",
    "busy_cut_short",
    "ignore_disconnect",
    "die_with_sibling",
    "shared_server",
)
TOKEN_DELAY_S = 0.01
LEAKED_CONTEXT_S = 20.0  # the leaking child's lifetime: longer than the check waits
GPU_APPS_ENV = "FAKE_GPU_APPS_DIR"
MIB = 1 << 20


class LifecycleStub(GenerationStub):
    def __init__(self, args: argparse.Namespace, log: JsonLog) -> None:
        super().__init__(args)
        self.log = log
        self.busy_mode = args.busy
        self.slot = threading.Lock()
        self.greedy_runs = 0
        self.latest: list[str] = []  # the tokens of the latest job (fault mixed_streams)
        self.sibling_died = threading.Event()  # fault die_with_sibling
        self.first_token_delay_s = args.first_token_delay_s  # before the first job's first token

    def health(self) -> dict:
        body = super().health()
        body.update(device="cuda:0", sm="9.0", cuda_runtime_version="12.4")
        if self.fault == "health_device_cpu":
            body.update(device="cpu", sm=None, cuda_runtime_version=None)
        return body

    def generate(self, body: dict, seed: int) -> list[str]:
        if self.fault == "greedy_drift" and body.get("temperature", 1.0) == 0:
            self.greedy_runs += 1
            body = {**body, "prompt": f"{body['prompt']} {self.greedy_runs}"}
        return super().generate(body, seed)


class LifecycleHandler(Handler):
    def _stream(self, body: dict) -> None:
        worker = self.worker
        if worker.fault in ("concurrent_jobs", "mixed_streams"):
            self._run(body)
            return
        if not worker.slot.acquire(blocking=worker.busy_mode == "queue"):
            if worker.fault == "busy_cut_short":
                self._begin_stream()
                self._started(str(body.get("job_id", "")))
                self._event("token", {"t": "x", "i": 0})
                self.close_connection = True
                return
            self._json(503, {"code": "WORKER_BUSY", "message": "another job is running", "retriable": True})
            return
        try:
            self._run(body)
        finally:
            worker.slot.release()

    def _run(self, body: dict) -> None:
        worker = self.worker
        job_id = str(body.get("job_id", ""))
        worker.log.event("execute_start", job_id=job_id)
        tokens = worker.generate(body, body.get("seed", 1) if isinstance(body.get("seed"), int) else 1)
        worker.latest = tokens
        self._begin_stream()
        index = 0
        try:
            self._started(job_id)
            time.sleep(worker.first_token_delay_s)
            worker.first_token_delay_s = 0.0
            for index, piece in enumerate(tokens):
                time.sleep(TOKEN_DELAY_S)
                if worker.fault == "log_per_token":
                    worker.log.event("token", job_id=job_id, i=index)
                if worker.fault == "mixed_streams" and index < len(worker.latest):
                    piece = worker.latest[index]
                if worker.sibling_died.is_set():
                    return  # the stream breaks off
                self._event("token", {"t": piece, "i": index})
            self._event("end", {"tokens_out": len(tokens), "decode_time_ms": 1, "stop_reason": "MAX_TOKENS"})
        except (BrokenPipeError, ConnectionResetError):
            if worker.fault == "ignore_disconnect":
                time.sleep(TOKEN_DELAY_S * (len(tokens) - index))  # the job runs on, holding the slot
        finally:
            self.close_connection = True
            worker.log.event("execute_end", job_id=job_id, tokens_out=len(tokens))


def register_context(pid: int, used_bytes: int) -> None:
    """What nvidia-smi would list for a process holding a device context (read by fake_nvidia_smi.py)."""
    folder = os.environ.get(GPU_APPS_ENV)
    if folder:
        Path(folder, str(pid)).write_text(str(math.ceil(used_bytes / MIB)), encoding="utf-8")


def watch_siblings(worker: LifecycleStub) -> None:
    """Fault die_with_sibling: a stub registered beside this one (in FAKE_GPU_APPS_DIR) that dies breaks
    this one's streams, as a shared device context would."""
    folder = Path(os.environ[GPU_APPS_ENV])
    alive: set[int] = set()
    while True:
        pids = {int(entry.name) for entry in folder.glob("[0-9]*")} - {os.getpid()}
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.add(pid)
            except ProcessLookupError:
                if pid in alive:
                    worker.sibling_died.set()
        time.sleep(0.05)


def serve_for_siblings(worker: LifecycleStub, port: int) -> bool:
    """Fault shared_server: the first stub (the one that creates the marker) serves the ports the later
    ones write into FAKE_GPU_APPS_DIR/ports; True for the first one, False for a later one."""
    folder = Path(os.environ[GPU_APPS_ENV])
    ports = folder / "ports"
    ports.mkdir(exist_ok=True)
    try:
        (folder / "server").open("x").close()
    except FileExistsError:
        (ports / str(port)).touch()
        return False

    def serve_new_ports() -> None:
        served: set[str] = set()
        while True:
            for entry in ports.iterdir():
                if entry.name not in served:
                    served.add(entry.name)
                    extra = http_server(LifecycleHandler, worker, int(entry.name))
                    threading.Thread(target=extra.serve_forever, daemon=True).start()
            time.sleep(0.05)

    threading.Thread(target=serve_new_ports, daemon=True).start()
    return True


def load(log: JsonLog, tensor_bytes: int, fault: str) -> None:
    log.event("model_load_start")
    loaded = [0, tensor_bytes // 4, tensor_bytes // 2, 3 * tensor_bytes // 4, tensor_bytes]
    if fault == "progress_backwards":
        loaded[3] = loaded[1]
    for percent, done in zip((0, 25, 50, 75, 100), loaded, strict=True):
        log.event("model_load_progress", percent=percent, bytes_loaded=done, bytes_total=tensor_bytes)
    log.event("model_load_complete", vram_bytes=tensor_bytes)


def main() -> None:
    parser = stub_arguments(__doc__, FAULTS)
    parser.add_argument("--busy", choices=("refuse", "queue"), default="refuse")
    parser.add_argument("--goldens")
    parser.add_argument("--first-token-delay-s", type=float, default=0.0)
    args = parser.parse_args()
    args.framing, args.token_delay_ms = "event", 0.0
    log = JsonLog({"worker_id": args.worker_id, "model_ref": args.model, "gpu_device": args.gpu_device})
    log.event("startup", port=args.port)
    worker = LifecycleStub(args, log)
    tensor_bytes = worker.facts["vram_bytes_used"]
    load(log, tensor_bytes, args.fault)
    register_context(os.getpid(), 0 if args.fault == "weights_in_host_memory" else tensor_bytes)
    if args.fault == "context_leak":
        child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({LEAKED_CONTEXT_S})"])
        register_context(child.pid, tensor_bytes)
    if args.fault == "shared_server" and not serve_for_siblings(worker, args.port):
        while True:  # a later stub: the first one serves this port
            time.sleep(1)
    server = http_server(LifecycleHandler, worker, args.port)
    if args.fault == "die_with_sibling":
        threading.Thread(target=watch_siblings, args=(worker,), daemon=True).start()

    def on_sigterm(signum: int, frame: object) -> None:
        log.event("shutdown", exit_code=0)
        os._exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    log.event("ready", vram_bytes=tensor_bytes)
    server.serve_forever()


if __name__ == "__main__":
    main()
