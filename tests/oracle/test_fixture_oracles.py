"""llama.cpp as the oracle for the fixture files: every model loads and runs, and the Q4_K_M (and other)
per-tensor type mixes equal the ones llama.cpp's own quantizer picks from our F32 files."""

from __future__ import annotations

import ctypes
from pathlib import Path

import gguf
import numpy as np
import pytest

from fixtures.catalog import real_fixtures, tiny_fixtures
from fixtures.paths import fixture_path
from fixtures.quant_mix import FileType
from tests.oracle.llama_cpp_oracle import llama_cpp, llama_cpp_model

pytestmark = pytest.mark.oracle

MODEL_FILES = [fx.name for fx in (*tiny_fixtures(), *real_fixtures()) if fx.name.endswith(".gguf")]
SYNTHETIC_ARCHS = ["llama", "qwen2", "phi3", "gpt2", "gpt-oss"]


@pytest.mark.parametrize("name", MODEL_FILES, ids=lambda n: Path(n).stem)
def test_fixture_loads_in_llama_cpp_with_finite_logits(name: str) -> None:
    with llama_cpp_model(fixture_path(name), n_ctx=64) as model:
        ids = model.tokenize("Hello world, 東京 🙂!".encode(), add_bos=False, special=True)
        assert len(ids) >= 3
        model.eval(ids)
        logits = np.array(model.scores[: len(ids)])
        assert logits.shape == (len(ids), model.n_vocab())
        assert np.isfinite(logits).all()
        assert logits.std() > 0


def _tensor_types(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


def _cases() -> list[tuple[str, FileType]]:
    return [
        (arch, ft)
        for arch in SYNTHETIC_ARCHS
        for ft in FileType
        if ft not in (FileType.F32, FileType.F16) and (ft != FileType.MXFP4_MOE or arch == "gpt-oss")
    ]


@pytest.mark.parametrize(("arch", "ftype"), _cases(), ids=lambda v: v if isinstance(v, str) else v.label)
def test_type_mix_equals_llama_cpp_quantize(arch: str, ftype: FileType, tmp_path: Path) -> None:
    ours = fixture_path(f"tiny/{arch}-{ftype.label}.gguf")
    theirs = tmp_path / "llama-cpp.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype.llama_ftype)
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(
        str(fixture_path(f"tiny/{arch}-f32.gguf")).encode(), str(theirs).encode(), ctypes.byref(params)
    )
    assert rc == 0
    assert _tensor_types(ours) == _tensor_types(theirs)
