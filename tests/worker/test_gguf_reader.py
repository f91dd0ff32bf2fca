"""The worker's GGUF reader: agreement with gguf-py, speed on real vocabularies, and a clear GGUFError
naming the file for every way a file can be broken (M0-W-1200, M0-W-1210, M0-W-1211, M0-W-1020)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from kernels.formats import GGMLType
from reference_worker.gguf import GGUFError, GGUFFile, InsufficientDeviceMemory, validate
from reference_worker.quant_kind import quant_kind
from tests.worker.gguf_builder import GGUFSpec

ROOT = Path(__file__).resolve().parents[2]
VOCABS = [
    ROOT / "fixtures/vendor/llama.cpp/ggml-vocab-qwen2.gguf",
    ROOT / "fixtures/vendor/llama.cpp/ggml-vocab-phi-3.gguf",
]
REAL = ROOT / "fixtures/build/real/SmolLM2-135M-Instruct.Q4_1.gguf"
REAL_PARAM = pytest.param(
    REAL, marks=pytest.mark.skipif(not REAL.is_file(), reason=f"{REAL.name} not staged")
)


@pytest.mark.oracle
@pytest.mark.parametrize("path", [*VOCABS, REAL_PARAM], ids=lambda p: p.name)
def test_matches_gguf_py(path: Path) -> None:
    ref = gguf.GGUFReader(path)
    with GGUFFile.open(path) as ours:
        expected = {k: f.contents() for k, f in ref.fields.items() if not k.startswith("GGUF.")}
        assert ours.metadata == expected
        assert list(ours.metadata) == list(expected)
        assert ours.version == 3
        assert [t.name for t in ref.tensors] == list(ours.tensors)
        for t in ref.tensors:
            info = ours.tensors[t.name]
            assert info.qtype == GGMLType(int(t.tensor_type))
            assert info.shape == tuple(int(d) for d in reversed(t.shape))
            assert info.offset == t.data_offset
            assert info.nbytes == t.n_bytes
        for t in ref.tensors[:3] + ref.tensors[-3:]:
            with ours.tensor_bytes(t.name) as view:
                assert np.array_equal(
                    np.frombuffer(view, np.uint8), np.asarray(t.data).view(np.uint8).reshape(-1)
                )


def test_qwen2_vocabulary_parses_whole() -> None:
    """The 151k-token Qwen2 vocabulary reads completely (its parse time is a benchmark, not a test)."""
    f = GGUFFile.open(VOCABS[0])
    tokens = f.metadata["tokenizer.ggml.tokens"]
    f.close()
    assert len(tokens) > 150_000 and all(isinstance(t, str) for t in tokens[:100])


def test_tiny_file_round_trip(write_gguf) -> None:
    spec = GGUFSpec()
    path = write_gguf(spec)
    _, data = spec.build()
    with GGUFFile.open(path) as f:
        assert f.alignment == 32 and f.data_offset % 32 == 0
        assert f.model_name == "tiny" and f.architecture == "llama"
        for name, blob in data.items():
            with f.tensor_bytes(name) as view:
                assert bytes(view) == blob
        assert validate(f, None).warnings == ()


def test_custom_alignment(write_gguf) -> None:
    spec = GGUFSpec(alignment=64)
    spec.metadata["general.alignment"] = 64
    with GGUFFile.open(write_gguf(spec)) as f:
        assert f.alignment == 64 and f.data_offset % 64 == 0
        assert all(t.offset % 64 == 0 for t in f.tensors.values())


def test_metadata_arrays_of_numbers_and_nested_arrays(write_gguf) -> None:
    spec = GGUFSpec()
    spec.metadata["test.ints"] = [1, 2, 3]
    spec.metadata["test.floats"] = [0.5, 1.5]
    spec.metadata["test.nested"] = [["a", "b"], ["c"]]
    with GGUFFile.open(write_gguf(spec)) as f:
        assert f.metadata["test.ints"] == [1, 2, 3]
        assert f.metadata["test.floats"] == [0.5, 1.5]
        assert f.metadata["test.nested"] == [["a", "b"], ["c"]]


def _open_error(path: Path) -> str:
    with pytest.raises(GGUFError) as info:
        GGUFFile.open(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    assert "cannot read" in _open_error(tmp_path / "absent.gguf")


def test_not_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"\x7fELF" + b"\0" * 100)
    assert "not a GGUF file" in _open_error(path)
    path.write_bytes(b"GG")
    assert "not a GGUF file" in _open_error(path)


def test_version_2(write_gguf) -> None:
    assert "unsupported GGUF version 2 (need 3)" in _open_error(write_gguf(GGUFSpec(version=2)))


def test_too_many_tensors(write_gguf) -> None:
    assert "tensor count 10000" in _open_error(write_gguf(GGUFSpec(tensor_count=10_000)))


def test_insane_metadata_count(write_gguf) -> None:
    assert "metadata count" in _open_error(write_gguf(GGUFSpec(kv_count=1 << 40)))


def test_unknown_tensor_type(write_gguf) -> None:
    spec = GGUFSpec()
    spec.tensors[1] = ("output_norm.weight", 99, (32,))
    message = _open_error(write_gguf(spec))
    assert "unknown ggml type id 99" in message and "output_norm.weight" in message


def test_tensor_offset_outside_file(write_gguf) -> None:
    message = _open_error(write_gguf(GGUFSpec(offset_shift=1 << 20)))
    assert "blk.0.attn_q.weight" in message and "past the end" in message


def test_misaligned_tensor_offset(write_gguf) -> None:
    assert "not a multiple of 32" in _open_error(write_gguf(GGUFSpec(offset_shift=4)))


def test_bad_row_length_for_block_type(write_gguf) -> None:
    spec = GGUFSpec()
    spec.tensors[0] = ("token_embd.weight", int(GGMLType.Q8_0), (16, 33))
    assert "block size" in _open_error(write_gguf(spec))


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.2, 0.35, 0.5, 0.7, 0.9, 0.999])
def test_truncated_tiny_file(write_gguf, fraction: float) -> None:
    size = len(GGUFSpec().build()[0])
    message = _open_error(write_gguf(truncate=int(size * fraction)))
    assert "truncated" in message or "not a GGUF file" in message or "past the end" in message


@pytest.mark.parametrize("cut", [30, 1000, 200_000, 2_000_000, 5_000_000])
def test_truncated_real_vocabulary(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "vocab.gguf"
    path.write_bytes(VOCABS[0].read_bytes()[:cut])
    assert "truncated" in _open_error(path)


def test_truncated_tensor_data_of_real_model(tmp_path: Path) -> None:
    if not REAL.is_file():
        pytest.skip(f"{REAL.name} not staged")
    path = tmp_path / "cut.gguf"
    with open(REAL, "rb") as src:
        path.write_bytes(src.read(REAL.stat().st_size - 1000))
    assert "past the end" in _open_error(path)


@pytest.mark.parametrize(
    "key", ["general.architecture", "llama.context_length", "llama.embedding_length", "llama.block_count"]
)
def test_missing_required_key(write_gguf, key: str) -> None:
    spec = GGUFSpec()
    del spec.metadata[key]
    path = write_gguf(spec)
    with GGUFFile.open(path) as f, pytest.raises(GGUFError) as info:
        validate(f, None)
    assert str(path) in str(info.value) and key in str(info.value)


def test_missing_general_name_is_a_warning(write_gguf) -> None:
    spec = GGUFSpec()
    del spec.metadata["general.name"]
    with GGUFFile.open(write_gguf(spec, name="my-model.gguf")) as f:
        assert f.model_name == "my-model"
        (warning,) = validate(f, None).warnings
        assert "general.name" in warning


def test_model_larger_than_budget(write_gguf) -> None:
    path = write_gguf()
    with GGUFFile.open(path) as f, pytest.raises(InsufficientDeviceMemory) as info:
        validate(f, 1000, gpu_device=3)
    message = str(info.value)
    assert str(path) in message and "GPU 3" in message and "1000 bytes available" in message
    assert info.value.required_bytes > 1000 and info.value.available_bytes == 1000


def test_closed_file_keeps_metadata(write_gguf) -> None:
    f = GGUFFile.open(write_gguf())
    f.close()
    assert f.metadata["general.name"] == "tiny" and not f.is_open
    with pytest.raises(GGUFError, match="closed"):
        f.tensor_bytes("output_norm.weight")


@pytest.mark.parametrize(
    ("file_type", "kind"),
    [(0, "F32"), (2, "Q4_0"), (3, "Q4_1"), (15, "Q4_K_M"), (18, "Q6_K"), (32, "BF16"), (38, "MXFP4")],
)
def test_quant_kind_from_file_type(write_gguf, file_type: int, kind: str) -> None:
    spec = GGUFSpec()
    spec.metadata["general.file_type"] = file_type
    with GGUFFile.open(write_gguf(spec)) as f:
        assert quant_kind(f) == kind


def test_quant_kind_without_file_type_is_the_dominant_matrix_type(write_gguf) -> None:
    spec = GGUFSpec()
    del spec.metadata["general.file_type"]
    with GGUFFile.open(write_gguf(spec)) as f:
        assert quant_kind(f) == "Q4_0"  # 1152 bytes of Q4_0 vs 544 of Q8_0; the F32 norm is 1-D


def test_quant_kind_of_real_model() -> None:
    if not REAL.is_file():
        pytest.skip(f"{REAL.name} not staged")
    with GGUFFile.open(REAL) as f:
        assert quant_kind(f) == "Q4_1"
