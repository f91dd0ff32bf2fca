"""Backend selection (M0-W-1360), exposed properties (M0-W-1361, M0-W-1364) and load errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from fixtures.vectors.sources import VOCAB_GGUF, gguf_metadata
from reference_worker.tokenizers import Tokenizer, TokenizerError, load_tokenizer


def test_qwen2_vocabulary_properties(qwen2):
    assert isinstance(qwen2, Tokenizer)
    assert (qwen2.kind, qwen2.vocab_size, qwen2.add_bos) == ("gguf-bpe", 151936, False)
    assert (qwen2.bos_id, qwen2.eos_id) == (151643, 151643)
    assert {151643, 151645} <= qwen2.eog_ids  # <|endoftext|>, <|im_end|>
    assert qwen2.model_max_context == 32768
    assert "<|im_start|>" in qwen2.chat_template
    assert qwen2.encode("<|im_start|>user", add_special=False) == [151644, 872]


def test_phi3_vocabulary_properties(phi3):
    assert (phi3.kind, phi3.vocab_size, phi3.add_bos) == ("gguf-bpe", 32064, True)
    assert (phi3.bos_id, phi3.eos_id) == (1, 32000)
    assert phi3.eog_ids == {2, 32000, 32007}  # </s>, <|endoftext|>, <|end|>
    assert phi3.model_max_context == 4096
    assert phi3.encode("Hi")[0] == 1


def test_o200k_hf_json_properties(o200k):
    assert (o200k.kind, o200k.vocab_size, o200k.add_bos) == ("hf-json", 201088, False)
    assert o200k.bos_id == 199998
    # <|return|> and <|call|> end generation; <|end|> only closes a harmony message.
    assert {200002, 200012} <= o200k.eog_ids and 200007 not in o200k.eog_ids


def test_qwen2_vocabulary_loads(record_property):
    """The full Qwen2 vocabulary builds a tokenizer; its build time is recorded, not asserted."""
    metadata = gguf_metadata(VOCAB_GGUF["qwen2"])
    start = time.perf_counter()
    tokenizer = load_tokenizer(metadata, VOCAB_GGUF["qwen2"])
    seconds = time.perf_counter() - start
    record_property("qwen2_tokenizer_build_s", round(seconds, 3))
    assert tokenizer.vocab_size == 151_936


def _tiny_tokenizer_json(directory: Path) -> None:
    vocab = {"a": 0, "b": 1, "ab": 2, "<eos>": 3}
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[("a", "b")]))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.add_special_tokens(["<eos>"])
    hf.save(str(directory / "tokenizer.json"))


def test_tokenizer_json_next_to_the_model_selects_hf_json(tmp_path):
    _tiny_tokenizer_json(tmp_path)
    metadata = {
        "general.architecture": "gpt-oss",
        "gpt-oss.context_length": 8192,
        "tokenizer.ggml.eos_token_id": 3,
    }
    tokenizer = load_tokenizer(metadata, tmp_path / "model.gguf")
    assert tokenizer.kind == "hf-json"
    assert tokenizer.encode("ab<eos>") == [2, 3]
    assert tokenizer.encode("ab<eos>", parse_special=False) != [2, 3]
    assert tokenizer.eos_id == 3 and tokenizer.model_max_context == 8192
    assert tokenizer.decode([2, 3]) == "ab"


def test_tokenizer_config_sets_eos_and_context(tmp_path):
    _tiny_tokenizer_json(tmp_path)
    config = {"eos_token": {"content": "<eos>"}, "model_max_length": 2048, "chat_template": "{{ x }}"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = load_tokenizer({}, tmp_path / "model.gguf")
    assert (tokenizer.eos_id, tokenizer.model_max_context, tokenizer.chat_template) == (3, 2048, "{{ x }}")


def test_unsupported_tokenizer_model_names_file_and_value():
    with pytest.raises(TokenizerError, match=r"m\.gguf.*unsupported tokenizer\.ggml\.model 'bert'"):
        load_tokenizer({"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]}, Path("/x/m.gguf"))


def test_unsupported_pre_tokenizer_is_refused():
    metadata = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "klingon",
                "tokenizer.ggml.tokens": ["a", "b", "ab"], "tokenizer.ggml.merges": ["a b"]}  # fmt: skip
    with pytest.raises(TokenizerError, match="unsupported tokenizer.ggml.pre 'klingon'"):
        load_tokenizer(metadata, Path("/x/m.gguf"))


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({"tokenizer.ggml.model": "gpt2"}, "tokenizer.ggml.tokens is missing"),
        (
            {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"]},
            "tokenizer.ggml.merges is missing",
        ),
        ({}, "unsupported tokenizer.ggml.model None"),
    ],
)
def test_missing_vocabulary_keys_are_named(metadata, problem):
    with pytest.raises(TokenizerError, match=problem):
        load_tokenizer(metadata, Path("/x/m.gguf"))


def test_malformed_tokenizer_json_is_a_tokenizer_error(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        load_tokenizer({}, tmp_path / "model.gguf")


def test_phi3_special_tokens_strip_following_whitespace_like_llama_cpp(phi3):
    # llama.cpp marks Phi-3's special tokens RSTRIP (keyed on general.name): "\n" after <|user|> vanishes.
    assert phi3.encode("<|user|>\nHi", add_special=False) == phi3.encode("<|user|>Hi", add_special=False)


def test_out_of_range_ids_are_refused(qwen2, phi3):
    for tokenizer in (qwen2, phi3):
        with pytest.raises(TokenizerError, match="outside the vocabulary"):
            tokenizer.token_bytes(tokenizer.vocab_size)
