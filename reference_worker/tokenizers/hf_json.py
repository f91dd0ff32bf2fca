"""`hf-json`: a `tokenizer.json` next to the model file, run by HF `tokenizers` (M0-W-1361).

The special ids come from `tokenizer_config.json` when it sits next to `tokenizer.json`, else from the
GGUF metadata, else from well-known token texts. Special added tokens are hidden in decoded text, as
`tokenizers`' `decode(..., skip_special_tokens=True)` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, pre_tokenizers

from reference_worker.tokenizers.base import TokenizerError
from reference_worker.tokenizers.byte_level import token_text_to_bytes
from reference_worker.tokenizers.vocab import EOG_TEXTS, KEY

_BOS_TEXTS = ("<|startoftext|>", "<|begin_of_text|>", "<s>", "<|im_start|>")
_EOS_TEXTS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<|im_end|>")
# tokenizer_config.json writes "no limit" as a huge sentinel (int(1e30)); such values mean unknown.
_MAX_PLAUSIBLE_CONTEXT = 1 << 24


class HFJsonTokenizer:
    kind = "hf-json"
    add_space_prefix = False

    def __init__(self, path: Path, metadata: Mapping[str, Any], model_path: Path) -> None:
        try:
            self._hf = HFTokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for malformed files
            raise TokenizerError(f"{path}: not a usable tokenizer.json for {model_path.name}: {exc}") from exc
        config = _read_config(path.with_name("tokenizer_config.json"))
        self.vocab_size = self._hf.get_vocab_size(with_added_tokens=True)
        added = self._hf.get_added_tokens_decoder()
        self._added = frozenset(added)
        self._special = frozenset(i for i, tok in added.items() if tok.special)
        self._byte_level = isinstance(self._hf.decoder, decoders.ByteLevel) or isinstance(
            self._hf.pre_tokenizer, pre_tokenizers.ByteLevel
        )

        self.bos_id = self._special_id(
            config.get("bos_token"), metadata.get(KEY + "bos_token_id"), _BOS_TEXTS
        )
        self.eos_id = self._special_id(
            config.get("eos_token"), metadata.get(KEY + "eos_token_id"), _EOS_TEXTS
        )
        self.eog_ids = self._end_of_generation()
        self.add_bos = self.bos_id is not None and self._hf.encode("", add_special_tokens=True).ids[:1] == [
            self.bos_id
        ]
        self.model_max_context = _max_context(config, metadata)
        template = config.get("chat_template") or metadata.get("tokenizer.chat_template")
        self.chat_template = template if isinstance(template, str) else None

    def _special_id(self, configured: Any, from_gguf: Any, known_texts: tuple[str, ...]) -> int | None:
        if isinstance(configured, dict):
            configured = configured.get("content")
        if isinstance(configured, str) and self._hf.token_to_id(configured) is not None:
            return self._hf.token_to_id(configured)
        if from_gguf is not None and 0 <= int(from_gguf) < self.vocab_size:
            return int(from_gguf)
        return next((i for t in known_texts if (i := self._hf.token_to_id(t)) is not None), None)

    def _end_of_generation(self) -> frozenset[int]:
        # Same text rule as the GGUF vocabularies (llama.cpp), including the harmony one: `<|end|>`
        # closes a message and generation goes on when `<|return|>` and `<|call|>` exist.
        present = {t: i for t in EOG_TEXTS if (i := self._hf.token_to_id(t)) is not None}
        if "<|return|>" in present and "<|call|>" in present:
            present.pop("<|end|>", None)
        eog = set(present.values())
        if self.eos_id is not None:
            eog.add(self.eos_id)
        return frozenset(eog)

    def encode(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        # `encode_special_tokens` makes special added tokens plain text (llama.cpp's parse_special=false).
        self._hf.encode_special_tokens = not parse_special
        try:
            return self._hf.encode(text, add_special_tokens=add_special).ids
        finally:
            self._hf.encode_special_tokens = False

    def decode(self, ids: list[int], *, render_special: bool = False) -> str:
        return self._hf.decode(ids, skip_special_tokens=not render_special)

    def token_bytes(self, token_id: int, *, render_special: bool = False) -> bytes:
        text = self._hf.id_to_token(token_id)
        if text is None:
            raise TokenizerError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")
        if token_id in self._special:
            return text.encode("utf-8") if render_special else b""
        if self._byte_level and token_id not in self._added:
            return token_text_to_bytes(text)
        if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            return bytes([int(text[3:5], 16)])
        return self._hf.decode([token_id], skip_special_tokens=False).encode("utf-8")


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"{path}: cannot read tokenizer_config.json: {exc}") from exc
    return config if isinstance(config, dict) else {}


def _max_context(config: Mapping[str, Any], metadata: Mapping[str, Any]) -> int | None:
    configured = config.get("model_max_length")
    if isinstance(configured, int | float) and 0 < configured < _MAX_PLAUSIBLE_CONTEXT:
        return int(configured)
    arch = metadata.get("general.architecture")
    value = metadata.get(f"{arch}.context_length") if arch else None
    return int(value) if value is not None else None
