"""Tokenizers of the vendored vocabularies, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.vectors.sources import VOCAB_GGUF, gguf_metadata
from reference_worker.tokenizers import Tokenizer, load_tokenizer


@pytest.fixture(scope="session")
def qwen2() -> Tokenizer:
    return load_tokenizer(gguf_metadata(VOCAB_GGUF["qwen2"]), VOCAB_GGUF["qwen2"])


@pytest.fixture(scope="session")
def phi3() -> Tokenizer:
    return load_tokenizer(gguf_metadata(VOCAB_GGUF["phi3"]), VOCAB_GGUF["phi3"])


@pytest.fixture(scope="session")
def o200k(o200k_dir: Path) -> Tokenizer:
    # A model path next to the tokenizer.json selects hf-json; the GGUF itself is not read.
    return load_tokenizer({}, o200k_dir / "gpt-oss.gguf")
