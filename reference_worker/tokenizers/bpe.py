"""`gguf-bpe` for GPT-2 style byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`, M0-W-1362).

Qwen2, SmolLM2 and gpt-oss GGUFs carry this kind: byte-level tokens, ranked merges and a pre-tokenizer
regex named by `tokenizer.ggml.pre`. Special tokens are cut out of the text first (`GGUFVocab
.split_special`); the remaining pieces go through the regex split and the merges. The merge engine is
HF `tokenizers`' BPE model built in memory from the GGUF vocabulary, which gives the same ids as
llama.cpp's `llm_tokenizer_bpe_session` (checked against llama.cpp's own test vectors).
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from reference_worker.tokenizers.base import TokenizerError
from reference_worker.tokenizers.byte_level import token_text_to_bytes
from reference_worker.tokenizers.pretokenize import PRE_TOKENIZERS
from reference_worker.tokenizers.vocab import GGUFVocab, TokenAttr


class ByteLevelBPETokenizer:
    kind = "gguf-bpe"
    add_space_prefix = False

    def __init__(
        self,
        vocab: GGUFVocab,
        merges: list[str],
        model_path: Path,
        *,
        model_max_context: int | None,
        chat_template: str | None,
    ) -> None:
        if vocab.pre not in PRE_TOKENIZERS:
            raise TokenizerError(
                f"{model_path}: unsupported tokenizer.ggml.pre {vocab.pre!r} "
                f"(supported: {', '.join(sorted(p for p in PRE_TOKENIZERS if p))})"
            )
        patterns, ignore_merges = PRE_TOKENIZERS[vocab.pre]
        self._vocab = vocab
        self.vocab_size = vocab.size
        self.bos_id = vocab.bos_id
        self.eos_id = vocab.eos_id
        self.eog_ids = vocab.eog_ids
        self.add_bos = vocab.add_bos
        self.model_max_context = model_max_context
        self.chat_template = chat_template
        self._pieces: dict[int, bytes] = {}  # token_bytes of each id seen, render_special False

        # The whole vocabulary, as llama.cpp looks merged pieces up in it (a later duplicate text wins).
        self._hf = HFTokenizer(
            models.BPE(
                vocab=vocab.text_to_id, merges=_parse_merges(merges, model_path), ignore_merges=ignore_merges
            )
        )
        self._hf.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(p), behavior="isolated") for p in patterns]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )

    def encode(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        ids: list[int] = []
        if add_special and self._vocab.add_bos and self.bos_id is not None:
            ids.append(self.bos_id)
        for piece in self._vocab.split_special(text, parse_special):
            if isinstance(piece, int):
                ids.append(piece)
            else:
                ids.extend(self._hf.encode(piece, add_special_tokens=False).ids)
        if add_special and self._vocab.add_eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: list[int], *, render_special: bool = False) -> str:
        data = b"".join(self.token_bytes(i, render_special=render_special) for i in ids)
        return data.decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int, *, render_special: bool = False) -> bytes:
        """llama.cpp `token_to_piece`: control/unknown hidden, user-defined verbatim, others byte-mapped.
        Cached per id (the streaming decoder asks once per generated token)."""
        if not render_special:
            cached = self._pieces.get(token_id)
            if cached is not None:
                return cached
        piece = self._vocab.special_piece(token_id, render_special)
        if piece is None:
            attr, text = self._vocab.attrs[token_id], self._vocab.tokens[token_id]
            piece = token_text_to_bytes(text) if attr & (TokenAttr.NORMAL | TokenAttr.BYTE) else b""
        if not render_special:
            self._pieces[token_id] = piece
        return piece


def _parse_merges(merges: list[str], model_path: Path) -> list[tuple[str, str]]:
    # A merge is "left right"; the separator is the first space after the first character, since a
    # byte-level token never holds a raw space (llama.cpp: `word.find(' ', 1)`).
    pairs = []
    for rank, merge in enumerate(merges):
        cut = merge.find(" ", 1)
        if cut < 0:
            raise TokenizerError(f"{model_path}: tokenizer.ggml.merges[{rank}] {merge!r} is not 'left right'")
        pairs.append((merge[:cut], merge[cut + 1 :]))
    return pairs
