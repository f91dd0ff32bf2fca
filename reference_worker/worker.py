"""Startup orchestration (M0-W-1110, M0-W-1111): arguments -> port -> GGUF -> device memory -> tokenizer ->
weights -> model -> engine -> HTTP server -> ready -> optional callback; and shutdown on SIGTERM/SIGINT.

Logs in order: startup, model_load_start, model_load_progress..., model_load_complete, ready. Every startup
failure is one line on stderr naming the file or flag and the problem, an `error` log, and exit code 1.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from types import FrameType

import httpx
import torch
import uvicorn
from sse_starlette.sse import AppStatus

from kernels.formats import QuantFormatError
from kernels.qtensor import CODES_THEN_SCALES, QTensor

from .cli import UsageError, bind_port, fail, parse_config
from .config import MIB, WorkerConfig
from .device_memory import DeviceMemory, VramOOM
from .engine import InferenceEngine
from .generation import ErrorCode
from .gguf import GGUFError, GGUFFile, InsufficientDeviceMemory, validate
from .loader import load_weights
from .logs import EventLog
from .metrics import PrometheusMetrics
from .models import ModelConfigError, UnsupportedArchitecture, adapter_class, create_model
from .quant_kind import quant_kind
from .residency import ResidencyMonitor
from .server import JobSlot, Limits, ModelInfo, WorkerState, create_app
from .tokenizers.base import TokenizerError
from .tokenizers.loader import load_tokenizer
from .weight_cache import build_weight_cache

CALLBACK_TIMEOUT_SEC = 10.0
GRACEFUL_SHUTDOWN_SEC = 5  # M0-W-1630


# What a bad model file raises while it loads: exit 1 with one line naming the file and the problem.
MODEL_FILE_ERRORS = (GGUFError, TokenizerError, UnsupportedArchitecture, ModelConfigError, QuantFormatError)


def model_file_error(config: WorkerConfig, e: Exception) -> str:
    """The one line of a MODEL_FILE_ERRORS failure: the file, then the problem."""
    return str(e) if str(config.model) in str(e) else f"{config.model}: {e}"


class ShutdownRequested(Exception):
    """SIGTERM or SIGINT arrived."""


def _request_shutdown(sig: int, frame: FrameType | None) -> None:
    raise ShutdownRequested(signal.Signals(sig).name)


def _available_device_bytes(config: WorkerConfig) -> int | None:
    available = config.vram_budget_bytes
    if config.device == "cuda":
        free, _ = torch.cuda.mem_get_info(config.gpu_device)
        available = free if available is None else min(free, available)
    return available


def _model_info(config: WorkerConfig, gguf: GGUFFile, tokenizer, context_length: int) -> ModelInfo:
    sm = cuda_version = None
    if config.device == "cuda":
        major, minor = torch.cuda.get_device_capability(config.gpu_device)
        sm, cuda_version = f"{major}.{minor}", torch.version.cuda
    return ModelInfo(
        name=gguf.model_name,
        model_ref=str(config.model),
        architecture=gguf.architecture,
        quant_kind=quant_kind(gguf),
        tokenizer_kind=tokenizer.kind,
        vocab_size=tokenizer.vocab_size,
        context_length=context_length,
        device=config.torch_device,
        sm=sm,
        cuda_runtime_version=cuda_version,
    )


def load_worker(config: WorkerConfig, log: EventLog) -> WorkerState:
    """Everything up to a servable state. Raises the load errors `main` turns into exit 1."""
    gguf = GGUFFile.open(config.model)
    metrics = PrometheusMetrics(config.worker_id)  # fed by the engine's hooks, served by GET /metrics
    try:
        checked = validate(gguf, _available_device_bytes(config), gpu_device=config.gpu_device)
        for warning in checked.warnings:
            log.event("warning", warning, level="warning")
        arch = gguf.architecture
        adapter_class(arch)  # an unsupported architecture fails before anything is loaded (M0-W-1212)
        context_length = gguf.metadata[f"{arch}.context_length"]
        if config.context_length is not None:
            context_length = min(context_length, config.context_length)
        kv_limit = None if config.kv_cache_size_mb is None else config.kv_cache_size_mb * MIB
        memory = DeviceMemory(config.torch_device, config.vram_budget_bytes, kv_cache_limit_bytes=kv_limit)
        log.event(
            "model_load_start",
            "loading model",
            architecture=arch,
            tensors=len(gguf.tensors),
            weight_bytes=checked.weight_bytes,
        )
        tokenizer = load_tokenizer(gguf.metadata, config.model)
        weights = load_weights(gguf, memory, log, chunk_bytes=config.load_chunk_bytes)
        build_weight_cache(weights, memory, log, config.kernel_config)  # CPU only; accounted as weight_cache
        model = create_model(
            gguf,
            weights,
            config.torch_device,
            memory,
            attention=config.attention,
            kv_cache=config.kv_cache,
            kernels=config.kernel_config,
        )
        engine = InferenceEngine(
            model,
            tokenizer,
            metrics=metrics,
            max_context=context_length,
            device=config.torch_device,
            prefix_cache=config.prefix_cache,
        )
    finally:
        gguf.close()
    graphs = engine.graphs
    log.event(
        "model_load_complete",
        "model loaded",
        vram_bytes=memory.used_bytes,
        # The decode step as the worker will run it, including what it chose by the model's shape.
        decode_graphs=graphs is not None,
        dependent_launch=graphs is not None and graphs.dependent_launch.enabled,
        # 2-D matrices stored codes-then-scales (--regroup; MXFP4 expert tensors are not counted here).
        regrouped_matrices=sum(
            isinstance(w, QTensor) and w.layout == CODES_THEN_SCALES and len(w.shape) == 2
            for w in weights.values()
        ),
        prefix_cache=engine.prefix_cache is not None,  # a finished job's prompt KV kept for the next
    )

    def count_tokens(text: str) -> int:  # stop strings (M0-W-1422: at most 32 tokens each)
        return len(tokenizer.encode(text, add_special=False, parse_special=False))

    return WorkerState(
        engine=engine,
        count_tokens=count_tokens,
        model=_model_info(config, gguf, tokenizer, context_length),
        memory=memory,
        log=log,
        limits=Limits(config.max_tokens_out, config.inference_timeout_sec, config.max_body_bytes),
        slot=JobSlot(config.queue_depth),
        metrics=metrics,
    )


class _Server(uvicorn.Server):
    """uvicorn, plus: log `ready` and send the callback once listening; cancel the job on a signal."""

    def __init__(self, config: uvicorn.Config, worker: WorkerConfig, state: WorkerState) -> None:
        super().__init__(config)
        self.worker = worker
        self.state = state
        self.exit_code = 0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        vram = self.state.memory.used_bytes
        self.state.log.event(
            "ready", "worker ready", port=self.worker.port, vram_bytes=vram, uri=self.worker.uri
        )
        if self.worker.callback_url is not None:
            await self._callback(vram)

    async def _callback(self, vram_bytes: int) -> None:
        body = {
            "worker_id": self.worker.worker_id,
            "vram_bytes": vram_bytes,
            "uri": self.worker.uri,
            "model_ref": str(self.worker.model),
        }
        try:
            async with httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_SEC) as client:
                response = await client.post(self.worker.callback_url, json=body)
            response.raise_for_status()
        except httpx.HTTPError as e:
            message = f"ready callback to {self.worker.callback_url} failed: {e}"
            self.state.log.error(message, code=ErrorCode.INTERNAL.value)
            print(f"error: {message}", flush=True, file=sys.stderr)
            self.exit_code = 1
            self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.state.slot.cancel_active()  # the stream ends with error CANCELLED, then connections close
        super().handle_exit(sig, frame)


def serve(config: WorkerConfig, state: WorkerState, sock: socket.socket) -> int:
    # Streams end through the job's own CANCELLED event, not by sse-starlette cutting them.
    AppStatus.disable_automatic_graceful_drain()
    uv_config = uvicorn.Config(
        create_app(state),
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SEC,
    )
    monitor = ResidencyMonitor(
        state.memory.residency_check,
        config.residency_check_interval_sec,
        lambda: _residency_failed(state),
    )
    server = _Server(uv_config, config, state)
    fault = None
    if config.inject_residency_fault_after_sec is not None:
        fault = threading.Timer(config.inject_residency_fault_after_sec, state.memory.inject_residency_fault)
        fault.daemon = True
        fault.start()
    monitor.start()
    try:
        server.run(sockets=[sock])
    finally:
        monitor.stop()
        if fault is not None:
            fault.cancel()
    return server.exit_code


def _residency_failed(state: WorkerState) -> None:
    # M0-W-1012: critical log, unhealthy.
    state.resident = False
    state.mark_unhealthy("weights are no longer resident in device memory")
    state.log.event(
        "residency_check_failed", "weights are no longer resident in device memory", level="critical"
    )


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_config(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        fail(str(e))
    log = EventLog(worker_id=config.worker_id, model_ref=str(config.model), gpu_device=config.gpu_device)
    log.event("startup", "worker starting", port=config.port, device=config.torch_device, host=config.host)
    previous = {sig: signal.signal(sig, _request_shutdown) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        sock = bind_port(config.host, config.port)
        state = load_worker(config, log)
        code = serve(config, state, sock)
    except ShutdownRequested:
        code = 0
    except UsageError as e:
        log.error(str(e), code=ErrorCode.INVALID_REQUEST.value)
        fail(str(e))
    except InsufficientDeviceMemory as e:  # M0-W-1020
        log.error(
            str(e),
            code=ErrorCode.INSUFFICIENT_VRAM.value,
            required_bytes=e.required_bytes,
            available_bytes=e.available_bytes,
        )
        fail(str(e))
    except MODEL_FILE_ERRORS as e:
        message = model_file_error(config, e)
        log.error(message, code=ErrorCode.MODEL_LOAD_FAILED.value)
        fail(message)
    except VramOOM as e:
        message = f"{config.model}: {e} (GPU {config.gpu_device})"
        log.error(message, code=ErrorCode.INSUFFICIENT_VRAM.value)
        fail(message)
    except Exception as e:  # never a traceback to the user (M0-W-1111)
        message = f"{config.model}: startup failed: {type(e).__name__}: {e}"
        log.error(message, code=ErrorCode.INTERNAL.value)
        fail(message)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.event("shutdown", "worker stopped", exit_code=code)
    return code
