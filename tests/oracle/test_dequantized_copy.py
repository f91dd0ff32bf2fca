"""The derived F32 copy (fixtures/dequantized.py) on a tiny Q4_K_M file: what llama.cpp writes, the
cache, and the errors. Needs llama-cpp-python (the `oracle` extra)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import gguf
import numpy as np
import pytest

from fixtures import dequantized
from fixtures.dequantized import DequantizeError, dequantized_f32, derived_name
from fixtures.paths import ENV_DIR, FixtureMissing, fixture_path

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install .[oracle])")
pytestmark = pytest.mark.oracle

SOURCE = "tiny/qwen2-q4_k_m.gguf"
OTHER = "tiny/qwen2-q4_0.gguf"


@pytest.fixture
def build_dir(tmp_path: Path, monkeypatch) -> Path:
    """A build directory holding only copies of SOURCE and OTHER."""
    (tmp_path / "tiny").mkdir()
    for name in (SOURCE, OTHER):
        shutil.copy(fixture_path(name), tmp_path / name)
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    return tmp_path


def test_copy_is_every_tensor_dequantized_to_f32(build_dir):
    copy = dequantized_f32(SOURCE)
    assert copy == build_dir / derived_name(SOURCE)
    source, written = gguf.GGUFReader(build_dir / SOURCE), gguf.GGUFReader(copy)
    assert written.fields["general.file_type"].contents() == gguf.LlamaFileType.ALL_F32
    assert {t.tensor_type for t in source.tensors} != {gguf.GGMLQuantizationType.F32}
    theirs = {t.name: t for t in written.tensors}
    assert set(theirs) == {t.name for t in source.tensors}
    for t in source.tensors:
        assert theirs[t.name].tensor_type == gguf.GGMLQuantizationType.F32
        expected = gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1)
        assert np.array_equal(
            np.asarray(theirs[t.name].data).reshape(-1).view(np.uint32), expected.view(np.uint32)
        )
    assert not list(copy.parent.glob("*.partial"))


def test_copy_is_cached_and_rebuilt_when_the_source_changes(build_dir):
    copy = dequantized_f32(SOURCE)
    built = copy.stat().st_mtime_ns
    heard = []
    assert dequantized_f32(SOURCE, progress=heard.append) == copy
    assert copy.stat().st_mtime_ns == built and heard == []
    shutil.copy(build_dir / OTHER, build_dir / SOURCE)  # another file under that name
    dequantized_f32(SOURCE, progress=heard.append)
    assert len(heard) == 1 and "llama_model_quantize" in heard[0]
    assert gguf.GGUFReader(copy).tensors[0].n_elements > 0
    assert copy.stat().st_mtime_ns != built


def test_missing_source_names_the_command_that_builds_it(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    with pytest.raises(FixtureMissing, match="python -m fixtures prepare --tiny"):
        dequantized_f32(SOURCE)


def test_too_little_disk_is_a_clear_error(build_dir, monkeypatch):
    monkeypatch.setattr(dequantized.shutil, "disk_usage", lambda _: SimpleNamespace(free=1000))
    with pytest.raises(DequantizeError, match=r"needs 0\.\d GB in .*only 0\.0 GB are free"):
        dequantized_f32(SOURCE)
    assert not (build_dir / derived_name(SOURCE)).exists()


def test_quantizer_failure_is_a_clear_error_and_leaves_no_file(build_dir, monkeypatch):
    def failing(cmd, **_):
        Path(cmd[-1]).write_bytes(b"half a file")
        return subprocess.CompletedProcess(cmd, 1, "", "llama_model_quantize: failed to quantize: boom")

    monkeypatch.setattr(dequantized.subprocess, "run", failing)
    with pytest.raises(DequantizeError, match="exit 1.*boom"):
        dequantized_f32(SOURCE)
    assert list((build_dir / "derived").iterdir()) == []
