"""Tokenizers of the worker: `gguf-bpe` (byte-level BPE or SentencePiece from GGUF metadata) and
`hf-json` (a tokenizer.json next to the model). See docs/tokenizers.md."""

from reference_worker.tokenizers.base import Tokenizer, TokenizerError
from reference_worker.tokenizers.loader import load_tokenizer
from reference_worker.tokenizers.stream import StreamDecoder

__all__ = ["StreamDecoder", "Tokenizer", "TokenizerError", "load_tokenizer"]
