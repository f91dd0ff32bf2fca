"""Which model an attached worker serves: the quick GGUF header read and the matching rules (steps/served.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import pytest

from steps.gguf_peek import GGUFPeekError, peek
from steps.models import ModelCatalogue, read_facts
from steps.served import from_file, from_health
from tests.harness.conftest import write_tiny_gguf

QWEN_STAND_IN = "tiny/qwen2-realvocab-q4_k_m.gguf"
SMOLLM2 = "real/SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_LLAMA = "tiny/llama-q4_0.gguf"


@pytest.fixture
def catalogue(tmp_path: Path) -> ModelCatalogue:
    fixtures = tmp_path / "fixtures"
    write_tiny_gguf(fixtures / QWEN_STAND_IN, vocab=300, context=4096)
    write_tiny_gguf(
        fixtures / SMOLLM2, arch="llama", vocab=500, context=8192, file_type=gguf.LlamaFileType.MOSTLY_Q4_1
    )
    write_tiny_gguf(
        fixtures / TINY_LLAMA, arch="llama", vocab=64, context=512, file_type=gguf.LlamaFileType.MOSTLY_Q4_0
    )
    return ModelCatalogue(None, fixtures)


def health(**fields: object) -> dict:
    return {"status": "healthy", "resident": True, **fields}


def test_the_header_read_agrees_with_gguf_py(catalogue: ModelCatalogue):
    for model in catalogue.available():
        seen, facts = peek(model.path), read_facts(model.path)
        assert (seen.architecture, seen.vocab_size, seen.context_length) == (
            facts.architecture,
            facts.vocab_size,
            facts.context_length,
        )


def test_the_header_read_refuses_what_is_not_gguf(tmp_path: Path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGML" + bytes(40))
    with pytest.raises(GGUFPeekError, match="not a GGUF file"):
        peek(path)


def test_detected_by_the_file_name(catalogue: ModelCatalogue):
    served = from_health(health(model="SmolLM2-135M-Instruct.Q4_1", quant_kind="Q4_1"), catalogue)
    assert served.roles == {"smollm2-135m-instruct-q4_1"}
    assert "is the name of SmolLM2-135M-Instruct.Q4_1.gguf" in served.determined_by


def test_detected_by_the_facts(catalogue: ModelCatalogue):
    facts = {"vocab_size": 64, "quant_kind": "Q4_0", "context_length": 512, "architecture": "llama"}
    served = from_health(health(model="my-model", **facts), catalogue)
    assert served.roles == {"tiny-llama-q4_0"} and served.label == "my-model"
    assert "matches the facts of llama-q4_0.gguf" in served.determined_by


@pytest.mark.parametrize(
    "wrong",
    [{"architecture": "qwen2"}, {"quant_kind": "Q4_K_M"}, {"vocab_size": 65}, {"context_length": 1024}],
    ids=["architecture", "quant_kind", "vocab_size", "context_beyond_the_file"],
)
def test_one_wrong_fact_matches_no_file(catalogue: ModelCatalogue, wrong: dict):
    facts = {"vocab_size": 64, "quant_kind": "Q4_0", "context_length": 512, "architecture": "llama", **wrong}
    served = from_health(health(model="my-model", **facts), catalogue)
    assert served.roles == frozenset()
    assert "matches no model file of the catalogue; name the file with --worker-model" in served.determined_by


def test_a_context_capped_below_the_files_still_matches(catalogue: ModelCatalogue):
    served = from_health(health(vocab_size=64, quant_kind="Q4_0", context_length=256), catalogue)
    assert served.roles == {"tiny-llama-q4_0"}


def test_worker_model_plays_the_role_of_its_real_file_name(catalogue: ModelCatalogue, tmp_path: Path):
    real = write_tiny_gguf(tmp_path / "models" / "qwen2.5-0.5b-instruct-q4_k_m.gguf", vocab=320)
    served = from_file(real, catalogue)
    assert served.roles == {"qwen2.5-0.5b-instruct-q4_k_m"}
    assert served.file is not None and not served.file.synthetic
    judged = served.judged_file(catalogue.resolve("Qwen2.5-0.5B-Instruct Q4_K_M"))
    assert judged.path == real.resolve() and judged.role == "qwen2.5-0.5b-instruct-q4_k_m"
    assert served.describe()["served model sha256"] == judged.sha256


def test_worker_model_plays_a_tiny_role_only_with_the_same_bytes(catalogue: ModelCatalogue, tmp_path: Path):
    copy = tmp_path / "copy.gguf"
    shutil.copy(catalogue.fixtures_dir / TINY_LLAMA, copy)
    assert from_file(copy, catalogue).roles == {"tiny-llama-q4_0"}
    other = write_tiny_gguf(
        tmp_path / "other.gguf", arch="llama", vocab=64, context=256, file_type=gguf.LlamaFileType.MOSTLY_Q4_0
    )
    assert from_file(other, catalogue).roles == frozenset()


def test_a_fixture_file_is_synthetic_and_the_shipped_real_one_is_not(catalogue: ModelCatalogue):
    assert from_file(catalogue.fixtures_dir / QWEN_STAND_IN, catalogue).file.synthetic
    assert not from_file(catalogue.fixtures_dir / SMOLLM2, catalogue).file.synthetic
