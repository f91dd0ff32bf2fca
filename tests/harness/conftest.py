"""Self-tests of the conformance harness: run the features against stub workers through pytester."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
STUB = Path(__file__).parent / "stubs" / "stub_worker.py"
STAND_IN = "tiny/qwen2-realvocab-q4_k_m.gguf"  # what the Qwen2.5 role resolves to without --model-dir
# The SmolLM2 role's fixture, which counts as real weights: a stand-in of it here (another architecture,
# vocabulary size and context than the Qwen stand-in, so an attached worker is told apart by /health).
SMOLLM2 = "real/SmolLM2-135M-Instruct.Q4_1.gguf"


def pytest_configure(config: pytest.Config) -> None:
    # The `pytester` fixture; `pytest_plugins` is only allowed in the top-level conftest.
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


def write_tiny_gguf(
    path: Path,
    *,
    arch: str = "qwen2",
    vocab: int = 300,
    context: int = 4096,
    file_type: gguf.LlamaFileType = gguf.LlamaFileType.MOSTLY_Q4_K_M,
) -> Path:
    """A metadata-complete GGUF with one small tensor: enough for gguf-py readers and the stub."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(context)
    writer.add_file_type(file_type)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok{i}" for i in range(vocab)])
    writer.add_tensor("token_embd.weight", np.zeros((vocab, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fixtures")
    write_tiny_gguf(root / STAND_IN)
    write_tiny_gguf(
        root / SMOLLM2, arch="llama", vocab=500, context=8192, file_type=gguf.LlamaFileType.MOSTLY_Q4_1
    )
    return root


@pytest.fixture(scope="session")
def stub_path() -> Path:
    return STUB


@pytest.fixture(scope="session")
def stub_command() -> Callable[..., str]:
    """`--worker-cmd` template of the stub worker with one fault (or none)."""

    def command(fault: str = "none", framing: str = "event") -> str:
        return shlex.join([sys.executable, str(STUB), "--fault", fault, "--framing", framing]) + (
            " --worker-id {worker_id} --model {model} --gpu-device {gpu} --port {port}"
        )

    return command


@pytest.fixture
def harness_dir(
    pytester: pytest.Pytester, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """A pytester directory with the project's features and manifests, and only the harness plugin."""
    shutil.copytree(REPO / "features", pytester.path / "features")
    pytester.makeconftest('pytest_plugins = ["steps.plugin"]\n')
    pytester.makeini("[pytest]\naddopts = --strict-markers -p no:cacheprovider\n")
    monkeypatch.setenv("WORKER_ORCD_FIXTURES_DIR", str(fixtures_dir))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return pytester
