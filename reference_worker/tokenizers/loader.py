"""Backend selection at model load (M0-W-1360)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reference_worker.tokenizers.base import Tokenizer, TokenizerError
from reference_worker.tokenizers.bpe import ByteLevelBPETokenizer
from reference_worker.tokenizers.hf_json import HFJsonTokenizer
from reference_worker.tokenizers.spm import SentencePieceTokenizer
from reference_worker.tokenizers.vocab import KEY, read_gguf_vocab

TOKENIZER_JSON = "tokenizer.json"


def load_tokenizer(metadata: Mapping[str, Any], model_path: Path) -> Tokenizer:
    """`hf-json` when a tokenizer.json sits next to the model file, else `gguf-bpe` from the metadata.

    `metadata` is the GGUF key/value metadata (`GGUFFile.metadata`). Raises `TokenizerError` naming the
    model file and the problem (unsupported `tokenizer.ggml.model`/`pre`, missing vocabulary, ...).
    """
    model_path = Path(model_path)
    tokenizer_json = model_path.with_name(TOKENIZER_JSON)
    if tokenizer_json.is_file():
        return HFJsonTokenizer(tokenizer_json, metadata, model_path)

    vocab = read_gguf_vocab(metadata, model_path)
    context = _context_length(metadata)
    template = metadata.get("tokenizer.chat_template")
    template = template if isinstance(template, str) else None
    if vocab.model == "llama":
        return SentencePieceTokenizer(vocab, model_max_context=context, chat_template=template)
    merges = metadata.get(KEY + "merges")
    if not isinstance(merges, list | tuple) or not merges:
        raise TokenizerError(
            f"{model_path}: metadata key {KEY}merges is missing or empty (gpt2 BPE needs it)"
        )
    return ByteLevelBPETokenizer(
        vocab, list(merges), model_path, model_max_context=context, chat_template=template
    )


def _context_length(metadata: Mapping[str, Any]) -> int | None:
    arch = metadata.get("general.architecture")
    value = metadata.get(f"{arch}.context_length") if arch else None
    return int(value) if value is not None else None
