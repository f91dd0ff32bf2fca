"""Conformance vectors (M0-W-1363): the stored oracle ids and texts, checked against the worker's tokenizers.

The vectors come from llama.cpp (Qwen2, Phi-3) and tiktoken (o200k_harmony) through
fixtures/vectors/make_vectors.py; tests/oracle/test_tokenizer_oracles.py re-checks against the oracles live.
"""

from __future__ import annotations

import pytest

from fixtures.vectors.sources import load_vectors
from reference_worker.tokenizers import StreamDecoder

NAMES = ("qwen2", "phi3", "o200k_harmony")
FIXTURE_OF = {"qwen2": "qwen2", "phi3": "phi3", "o200k_harmony": "o200k"}


def _cases():
    return [
        pytest.param(name, vector, id=f"{name}-{i:02d}")
        for name in NAMES
        for i, vector in enumerate(load_vectors(name))
    ]


@pytest.mark.parametrize("name", NAMES)
def test_vector_files_cover_the_required_categories(name):
    vectors = load_vectors(name)
    assert 20 <= len(vectors) <= 30
    assert {"text", "expected_token_ids", "expected_decoded", "description"} <= set(vectors[0])
    assert any(v["text"] == "" for v in vectors)
    assert max(len(v["expected_token_ids"]) for v in vectors) > 1000


@pytest.mark.parametrize(("name", "vector"), _cases())
def test_encode_matches_the_oracle(name, vector, request):
    tokenizer = request.getfixturevalue(FIXTURE_OF[name])
    ids = tokenizer.encode(
        vector["text"], add_special=vector["add_special"], parse_special=vector["parse_special"]
    )
    assert ids == vector["expected_token_ids"], vector["description"]


@pytest.mark.parametrize(("name", "vector"), _cases())
def test_decode_and_stream_match_the_oracle(name, vector, request):
    tokenizer = request.getfixturevalue(FIXTURE_OF[name])
    ids = vector["expected_token_ids"]
    assert tokenizer.decode(ids) == vector["expected_decoded"], vector["description"]
    stream = StreamDecoder(tokenizer, at_text_start=True)
    chunks = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(chunks) == vector["expected_decoded"]
    assert "\ufffd" not in "".join(chunks)
    assert stream.dropped_bytes == 0


def test_o200k_gguf_vocabulary_gives_the_same_ids(o200k):
    """The gpt-oss GGUF vocabulary (pre "gpt-4o", gguf-bpe) agrees with tiktoken on every parsed vector.

    Vectors with parse_special=false are left out: llama.cpp's rules (which gguf-bpe follows) always
    parse the harmony markers <|start|>, <|message|>, <|channel|>, <|constrain|>.
    """
    from pathlib import Path

    from fixtures.o200k import o200k_gguf_tokenizer_metadata
    from reference_worker.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(o200k_gguf_tokenizer_metadata(), Path("/nonexistent/gpt-oss.gguf"))
    assert tokenizer.kind == "gguf-bpe"
    assert tokenizer.vocab_size == o200k.vocab_size == 201088
    for vector in load_vectors("o200k_harmony"):
        if vector["parse_special"]:
            assert tokenizer.encode(vector["text"], add_special=False) == vector["expected_token_ids"]
