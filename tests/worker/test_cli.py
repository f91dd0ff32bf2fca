"""The process contract (M0-W-1100, M0-W-1101, M0-W-1111, M0-W-1210): every bad argument or model file
ends the process with exit code 1 and one clear line on stderr naming the problem, never a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reference_worker.cli import UsageError, bind_port, parse_config
from reference_worker.worker import main
from steps.ports import free_port
from tests.worker.gguf_builder import GGUFSpec

ROOT = Path(__file__).resolve().parents[2]
WORKER_ID = "6f1c2a4e-1d2b-4c3d-9e8f-0a1b2c3d4e5f"


@pytest.fixture
def model(write_gguf) -> Path:
    return write_gguf()


def args(model: Path | str, **overrides: str) -> list[str]:
    values = {
        "--worker-id": WORKER_ID,
        "--model": str(model),
        "--gpu-device": "0",
        "--port": str(free_port()),
    }
    values.update(overrides)
    return [x for k, v in values.items() if v is not None for x in (k, v)]


def test_valid_arguments(model: Path) -> None:
    config = parse_config(
        args(model, **{"--host": "127.0.0.1", "--vram-budget-mb": "512", "--attention": "sdpa"}),
        cuda_device_count=0,
    )
    assert config.worker_id == WORKER_ID and config.model == model and config.device == "cpu"
    assert config.max_tokens_out == 2048 and config.inference_timeout_sec == 300
    assert config.load_chunk_bytes == 1 << 20 and config.residency_check_interval_sec == 60
    assert (
        config.vram_budget_bytes == 512 << 20
        and config.attention == "sdpa"
        and config.kv_cache == "contiguous"
    )
    assert config.torch_device == "cpu" and config.uri.startswith("http://127.0.0.1:")


def test_the_performance_flags_reach_the_kernel_config(model: Path) -> None:
    """`--kernels`, `--cuda-graphs`, `--fused-decode`, `--decode-lookahead`, `--fused-prefill`,
    `--prefill-graphs`, `--dependent-launch`, `--weight-prefetch`, `--regroup`: the `KernelConfig` the
    model is built with (all on by default but the second and third last; by default `--regroup` leaves
    the choice to the worker, and `none` keeps every matrix in the file's order)."""
    from kernels.backend import KernelConfig

    assert parse_config(args(model), cuda_device_count=0).kernel_config == KernelConfig()
    flags = [
        "--no-cuda-graphs",
        "--no-fused-decode",
        "--no-decode-lookahead",
        "--no-fused-prefill",
        "--no-prefill-graphs",
    ]
    config = parse_config([*args(model, **{"--kernels": "reference"}), *flags], cuda_device_count=0)
    assert config.kernel_config == KernelConfig(
        kernels="reference",
        cuda_graphs=False,
        fused_decode=False,
        lookahead=False,
        fused_prefill=False,
        prefill_graphs=False,
    )
    early = parse_config([*args(model), "--dependent-launch", "--weight-prefetch"], cuda_device_count=0)
    assert early.kernel_config == KernelConfig(dependent_launch=True, weight_prefetch=True)
    regrouped = parse_config([*args(model), "--regroup", "q6_k", "q8_0", "q6_k"], cuda_device_count=0)
    assert regrouped.kernel_config == KernelConfig(regroup=("q6_k", "q8_0"))  # each type once
    file_order = parse_config([*args(model), "--regroup", "none"], cuda_device_count=0)
    assert file_order.kernel_config == KernelConfig(regroup=())
    with pytest.raises(UsageError, match="--regroup none stands alone"):
        parse_config([*args(model), "--regroup", "none", "q8_0"], cuda_device_count=0)
    # A VRAM budget keeps the prefill graphs' own cache out of it: no prefill graphs.
    budgeted = parse_config(args(model, **{"--vram-budget-mb": "512"}), cuda_device_count=0)
    assert budgeted.kernel_config == KernelConfig(prefill_graphs=False)


def test_auto_device_prefers_cuda(model: Path) -> None:
    config = parse_config(args(model, **{"--gpu-device": "1"}), cuda_device_count=2)
    assert config.device == "cuda" and config.torch_device == "cuda:1"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"--worker-id": "worker-7"}, "--worker-id must be a UUID"),
        ({"--model": "model.gguf"}, "absolute path"),
        ({"--model": "/nonexistent/model.gguf"}, "no such file"),
        ({"--model": "/etc/hostname"}, ".gguf"),
        ({"--gpu-device": "1"}, "out of range"),
        ({"--gpu-device": "-1"}, "out of range"),
        ({"--gpu-device": "zero"}, "invalid int value"),
        ({"--port": "80"}, "1024..65535"),
        ({"--port": "70000"}, "1024..65535"),
        ({"--port": None}, "required: --port"),
        ({"--device": "tpu"}, "invalid choice"),
        ({"--device": "cuda"}, "no CUDA device"),
        ({"--max-tokens-out": "0"}, "--max-tokens-out must be positive"),
        ({"--inference-timeout-sec": "-1"}, "--inference-timeout-sec must be positive"),
        ({"--load-chunk-mb": "0"}, "--load-chunk-mb must be positive"),
        ({"--callback-url": "ftp://x"}, "--callback-url"),
        ({"--kv-cache": "ring"}, "invalid choice"),
        ({"--regroup": "q4_k"}, "invalid choice"),
    ],
)
def test_bad_arguments(model: Path, overrides: dict, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        parse_config(args(model, **overrides), cuda_device_count=0)


def test_gpu_device_range_on_cuda(model: Path) -> None:
    with pytest.raises(UsageError, match="out of range for 2 CUDA"):
        parse_config(args(model, **{"--gpu-device": "2"}), cuda_device_count=2)


def test_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(UsageError, match="already in use"):
            bind_port("127.0.0.1", busy.getsockname()[1])
    sock = bind_port("127.0.0.1", free_port())
    sock.close()


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[dict]]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, err, [json.loads(line) for line in out.splitlines()]


def _spec(**changes) -> GGUFSpec:
    spec = GGUFSpec()
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


@pytest.mark.parametrize(
    ("spec", "truncate", "fragment"),
    [
        (_spec(magic=b"GGML"), None, "not a GGUF file"),
        (_spec(version=2), None, "unsupported GGUF version 2 (need 3)"),
        (None, 200, "truncated file"),
        (_spec(tensors=[("w", 99, (32,))]), None, "unknown ggml type id 99"),
        (_spec(metadata={"general.architecture": "llama"}), None, "missing required metadata key"),
    ],
)
def test_bad_model_file(
    write_gguf, capsys, spec: GGUFSpec | None, truncate: int | None, fragment: str
) -> None:
    path = write_gguf(spec, truncate=truncate)
    code, err, logs = run_main(args(path), capsys)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err and str(path) in err
    assert [e["event"] for e in logs] == ["startup", "error"]
    assert logs[1]["code"] == "MODEL_LOAD_FAILED" and logs[1]["worker_id"] == WORKER_ID


def test_unsupported_architecture(write_gguf, capsys) -> None:
    metadata = {
        "general.architecture": "mamba",
        "mamba.context_length": 64,
        "mamba.embedding_length": 32,
        "mamba.block_count": 1,
    }
    path = write_gguf(GGUFSpec(metadata=metadata))
    code, err, _ = run_main(args(path), capsys)
    assert code == 1 and "mamba" in err and str(path) in err and "Traceback" not in err


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        yield busy.getsockname()[1]


def run_process(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reference_worker", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "case", ["argparse", "bad-uuid", "relative-path", "missing-file", "port-in-use", "not-gguf"]
)
def test_process_exits_1_with_one_line(case: str, write_gguf, listening_port: int) -> None:
    model = write_gguf()
    argv = {
        "argparse": ["--model", str(model)],
        "bad-uuid": args(model, **{"--worker-id": "not-a-uuid"}),
        "relative-path": args(model, **{"--model": "fixtures/model.gguf"}),
        "missing-file": args(model, **{"--model": "/no/such/model.gguf"}),
        "port-in-use": args(model, **{"--port": str(listening_port)}),
        "not-gguf": args(write_gguf(_spec(magic=b"JUNK"), name="junk.gguf")),
    }[case]
    result = run_process(argv)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
