"""Pre-tokenizer regexes of byte-level BPE vocabularies, selected by `tokenizer.ggml.pre`.

The patterns are those of llama.cpp's `llm_tokenizer_bpe` (src/llama-vocab.cpp), in their original
form from the models' `tokenizer.json` (llama.cpp rewrites `(?i:...)` as explicit case classes for
std::regex; the meaning is the same). When a vocabulary has several patterns they apply in sequence:
each one splits every piece the previous left, and the text between matches stays a piece of its own.
"""

from __future__ import annotations

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# o200k (GPT-4o, gpt-oss): tiktoken's `o200k_base` pat_str.
O200K = "|".join(
    (
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    )
)

_DEFAULT = (r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]")

# tokenizer.ggml.pre -> (patterns, ignore_merges). `ignore_merges`: a piece that is a whole token is
# taken as is, without running the merges (llama.cpp sets it for the llama3 family).
PRE_TOKENIZERS: dict[str, tuple[tuple[str, ...], bool]] = {
    "": (_DEFAULT, False),
    "default": (_DEFAULT, False),
    **{name: ((GPT2,), False) for name in ("gpt-2", "phi-2", "mpt", "olmo", "jais")},
    **{name: ((LLAMA3,), True) for name in ("llama3", "llama-v3", "llama-bpe", "falcon3")},
    **{name: ((QWEN2,), False) for name in ("qwen2", "deepseek-r1-qwen", "stablelm2", "megrez")},
    **{name: ((r"\p{N}", GPT2), False) for name in ("smollm", "starcoder", "refact", "codeshell")},
    **{name: ((O200K,), False) for name in ("gpt-4o", "llama4")},
}
