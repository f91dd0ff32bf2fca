"""A GGUF vocabulary: token texts, attributes and special ids, with llama.cpp's load-time rules.

Both GGUF backends (byte-level BPE and SentencePiece-style) share this: which tokens are control or
user-defined, which ids end generation, which special tokens are recognised in a prompt and how
(`split_special`). The rules follow llama.cpp's `llama_vocab::impl::load` (src/llama-vocab.cpp), the
tokenizer oracle of the conformance vectors, including the rules it keys on token and model names.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reference_worker.tokenizers.base import TokenizerError


class TokenType(enum.IntEnum):
    """`tokenizer.ggml.token_type` values (gguf-py `TokenType`)."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


class TokenAttr(enum.IntFlag):
    """Per-token attributes, as llama.cpp derives them from the token type and the rules below."""

    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3
    USER_DEFINED = 1 << 4
    BYTE = 1 << 5
    LSTRIP = 1 << 7
    RSTRIP = 1 << 8


# Attribute of each token type, indexed by `tokenizer.ggml.token_type` (llama.cpp `load`).
_TYPE_TO_ATTR = (
    TokenAttr.UNDEFINED, TokenAttr.NORMAL, TokenAttr.UNKNOWN, TokenAttr.CONTROL, TokenAttr.USER_DEFINED,
    TokenAttr.UNUSED, TokenAttr.BYTE,
)  # fmt: skip

# Attributes of tokens that render as "" unless asked for (llama.cpp `token_to_piece`, special=false).
HIDDEN = TokenAttr.CONTROL | TokenAttr.UNKNOWN
# Tokens matched in the text before the BPE/SPM pass (llama.cpp `cache_special_tokens`).
SPECIAL = TokenAttr.CONTROL | TokenAttr.USER_DEFINED | TokenAttr.UNKNOWN

# Token texts llama.cpp treats as end of turn / end of generation (src/llama-vocab.cpp, "auto-detect").
EOT_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
)  # fmt: skip
EOG_TEXTS = frozenset(EOT_TEXTS) | {
    "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "</s>", "<|eom_id|>", "[EOS]", "<eos>",
    "<turn|>", "<|tool_response>", "[e~[",
}  # fmt: skip
# Fill-in-the-middle tokens: made control; pad/repo/file-separator also end generation.
FIM_TEXTS = {
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}  # fmt: skip
# The harmony format's structural tokens are always parsed and always rendered (llama.cpp forces them
# to user-defined), and `<|end|>` ends a message, not the generation, when `<|return|>`/`<|call|>` exist.
HARMONY_USER_DEFINED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")

# Defaults before the metadata is read (llama.cpp `load`): SentencePiece uses 1/2/0, GPT-2 BPE uses 11.
_DEFAULT_IDS = {"llama": {"bos": 1, "eos": 2, "unk": 0}, "gpt2": {"bos": 11, "eos": 11}}
# Pre-tokenizers for which llama.cpp adds BOS unless the metadata says otherwise.
_ADD_BOS_PRE = frozenset({"llama3", "llama-v3", "llama-bpe", "falcon3"})

KEY = "tokenizer.ggml."
_C_SPACE = " \t\n\v\f\r"  # C isspace(), what llama.cpp strips around LSTRIP/RSTRIP tokens


@dataclass
class GGUFVocab:
    """Token texts and attributes of one GGUF vocabulary plus its special ids and flags."""

    model: str  # tokenizer.ggml.model: "gpt2" or "llama"
    pre: str  # tokenizer.ggml.pre (empty when absent)
    tokens: list[str]
    attrs: list[int]  # TokenAttr bits
    scores: list[float] | None
    text_to_id: dict[str, int]
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    eom_id: int | None
    unk_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    eog_ids: frozenset[int]
    special_ids: list[int] = field(default_factory=list)  # longest text first, as llama.cpp matches them

    @property
    def size(self) -> int:
        return len(self.tokens)

    def special_piece(self, token_id: int, render_special: bool) -> bytes | None:
        """The bytes of a token whose piece does not depend on the algorithm (llama.cpp `token_to_piece`):
        control/unknown tokens are hidden unless rendered, user-defined ones verbatim; None for the rest."""
        if not 0 <= token_id < self.size:
            raise TokenizerError(f"token id {token_id} is outside the vocabulary (size {self.size})")
        attr, text = self.attrs[token_id], self.tokens[token_id]
        if attr & HIDDEN:
            return text.encode("utf-8") if render_special else b""
        if attr & TokenAttr.USER_DEFINED:
            return text.encode("utf-8")
        return None

    def split_special(self, text: str, parse_special: bool) -> list[str | int]:
        """Cut `text` at special tokens: a list of raw text pieces (str) and token ids (int).

        llama.cpp `tokenizer_st_partition`: special tokens are tried longest text first, each one
        splitting every remaining text piece; control and unknown tokens only when `parse_special`.
        LSTRIP/RSTRIP tokens eat the whitespace next to them.
        """
        pieces: list[str | int] = [text] if text else []
        for token_id in self.special_ids:
            attr = self.attrs[token_id]
            if not parse_special and attr & HIDDEN:
                continue
            needle = self.tokens[token_id]
            if not any(isinstance(p, str) and needle in p for p in pieces):
                continue
            pieces = list(_split_on(pieces, needle, token_id, attr))
        return pieces


def _split_on(pieces: list[str | int], needle: str, token_id: int, attr: int) -> Iterator[str | int]:
    for piece in pieces:
        if isinstance(piece, int) or needle not in piece:
            yield piece
            continue
        parts = piece.split(needle)
        for i, part in enumerate(parts):
            if i > 0 and attr & TokenAttr.RSTRIP:
                part = part.lstrip(_C_SPACE)
            if i < len(parts) - 1 and attr & TokenAttr.LSTRIP:
                part = part.rstrip(_C_SPACE)
            if part:
                yield part
            if i < len(parts) - 1:
                yield token_id


def read_gguf_vocab(metadata: Mapping[str, Any], model_path: Path) -> GGUFVocab:
    """Build the vocabulary from GGUF metadata; errors name `model_path` and the offending key."""
    model = metadata.get(KEY + "model")
    if model not in _DEFAULT_IDS:
        raise TokenizerError(
            f"{model_path}: unsupported tokenizer.ggml.model {model!r} "
            f"(supported: {', '.join(sorted(_DEFAULT_IDS))}, or a tokenizer.json next to the model)"
        )
    tokens = _string_list(metadata, KEY + "tokens", model_path)
    n = len(tokens)
    types = metadata.get(KEY + "token_type")
    if types is not None and len(types) < n:
        raise TokenizerError(f"{model_path}: {KEY}token_type has {len(types)} entries for {n} tokens")
    # Plain ints holding TokenAttr bits: 150k IntFlag objects would cost a noticeable part of load time.
    known = len(_TYPE_TO_ATTR)
    attrs = (
        [int(_TYPE_TO_ATTR[t]) if 0 <= t < known else 0 for t in types[:n]]
        if types is not None
        else [int(TokenAttr.NORMAL)] * n
    )
    scores = metadata.get(KEY + "scores")
    if scores is not None:
        scores = [float(s) for s in scores[:n]]
    text_to_id = {text: i for i, text in enumerate(tokens)}

    ids: dict[str, int | None] = {"bos": None, "eos": None, "eot": None, "eom": None, "unk": None}
    ids.update({k: v if v < n else None for k, v in _DEFAULT_IDS[model].items()})
    for name, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("eot", "eot_token_id"),
                      ("eom", "eom_token_id"), ("unk", "unknown_token_id")):  # fmt: skip
        value = metadata.get(KEY + key)
        if value is not None and 0 <= int(value) < n:
            ids[name] = int(value)

    pre = str(metadata.get(KEY + "pre", "") or "")
    add_bos = model == "llama" or pre in _ADD_BOS_PRE
    add_bos = bool(metadata.get(KEY + "add_bos_token", add_bos))
    add_eos = bool(metadata.get(KEY + "add_eos_token", False))
    add_space_prefix = bool(metadata.get(KEY + "add_space_prefix", model == "llama"))

    eog = _end_of_generation(tokens, attrs, text_to_id, ids, metadata)
    special_ids = sorted((i for i in range(n) if attrs[i] & SPECIAL), key=lambda i: -len(tokens[i]))
    _apply_name_rules(str(metadata.get("general.name", "") or ""), tokens, attrs, text_to_id, special_ids)
    return GGUFVocab(
        model=model, pre=pre, tokens=tokens, attrs=attrs, scores=scores, text_to_id=text_to_id,
        bos_id=ids["bos"], eos_id=ids["eos"], eot_id=ids["eot"], eom_id=ids["eom"], unk_id=ids["unk"],
        add_bos=add_bos, add_eos=add_eos, add_space_prefix=add_space_prefix, eog_ids=eog,
        special_ids=special_ids,
    )  # fmt: skip


def _string_list(metadata: Mapping[str, Any], key: str, model_path: Path) -> list[str]:
    value = metadata.get(key)
    if not isinstance(value, list | tuple) or not value:
        raise TokenizerError(f"{model_path}: metadata key {key} is missing or empty")
    # An empty token text would break the text->id map; llama.cpp renames it the same way.
    return [t if t else f"[EMPTY_{i}]" for i, t in enumerate(value)]


def _end_of_generation(
    tokens: list[str],
    attrs: list[int],
    text_to_id: dict[str, int],
    ids: dict[str, int | None],
    metadata: Mapping[str, Any],
) -> frozenset[int]:
    """End-of-generation ids and the control attributes that go with them (llama.cpp `load`)."""

    def mark_control(token_id: int) -> None:
        attrs[token_id] |= TokenAttr.CONTROL

    # Found by text, these are made control below with the rest of EOG_TEXTS.
    if ids["eot"] is None:
        ids["eot"] = next((text_to_id[t] for t in EOT_TEXTS if t in text_to_id), None)
    if ids["eom"] is None:
        ids["eom"] = text_to_id.get("<|eom_id|>")

    eog: set[int] = set()
    for role, texts in FIM_TEXTS.items():
        token_id = metadata.get(f"{KEY}{role}_token_id")
        if token_id is None or not 0 <= int(token_id) < len(tokens):
            token_id = next((text_to_id[t] for t in texts if t in text_to_id), None)
            if token_id is not None:
                mark_control(token_id)
        if token_id is not None and role in ("fim_pad", "fim_rep", "fim_sep"):
            eog.add(int(token_id))
    for text in EOG_TEXTS:
        if text in text_to_id:
            eog.add(text_to_id[text])
            mark_control(text_to_id[text])
    eog |= {i for i in (ids["eos"], ids["eot"], ids["eom"]) if i is not None}

    for text in HARMONY_USER_DEFINED:
        if text in text_to_id:
            attrs[text_to_id[text]] = int(TokenAttr.USER_DEFINED)
    eog_texts = {tokens[i] for i in eog}
    if "<|end|>" in eog_texts and "<|return|>" in eog_texts and "<|call|>" in eog_texts:
        end_id = text_to_id["<|end|>"]
        eog.discard(end_id)
        attrs[end_id] = int(TokenAttr.USER_DEFINED)
    return frozenset(eog)


def _apply_name_rules(
    model_name: str,
    tokens: list[str],
    attrs: list[int],
    text_to_id: dict[str, int],
    special_ids: list[int],
) -> None:
    """Per-model token attributes llama.cpp keys on `general.name` (they change how prompts tokenize).

    Phi-3: every special token eats the whitespace after it (RSTRIP), except <unk>, <s>, <|endoftext|>;
    so "<|user|>\\nHi" tokenizes like "<|user|>Hi".
    """
    name = model_name.lower()
    if "phi-3" in name or "phi3" in name:
        for token_id in special_ids:
            attrs[token_id] |= TokenAttr.RSTRIP
        if "</s>" in text_to_id:
            attrs[text_to_id["</s>"]] |= TokenAttr.RSTRIP
        for text in ("<unk>", "<s>", "<|endoftext|>"):
            if text in text_to_id:
                attrs[text_to_id[text]] &= ~TokenAttr.RSTRIP
