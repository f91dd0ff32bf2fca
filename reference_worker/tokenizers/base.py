"""The tokenizer interface the engine and the server see, and the error every backend raises."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class TokenizerError(ValueError):
    """The tokenizer cannot be built or used; the message names the model file and the problem."""


@runtime_checkable
class Tokenizer(Protocol):
    """One vocabulary, one algorithm (M0-W-1360).

    `kind` is what `/health` reports as `tokenizer_kind` (M0-W-1364): `"gguf-bpe"` for a vocabulary read
    from the GGUF metadata (GPT-2 byte-level BPE or SentencePiece-style), `"hf-json"` for a
    `tokenizer.json` next to the model (M0-W-1361).
    """

    kind: str
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    eog_ids: frozenset[int]
    model_max_context: int | None
    chat_template: str | None
    add_bos: bool
    # SentencePiece vocabularies mark a word start with "▁" and prepend one to the text; decoding the start
    # of a text drops that space again (llama.cpp `llama_detokenize`). False for byte-level BPE.
    add_space_prefix: bool

    def encode(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of `text`.

        add_special: add BOS/EOS as the vocabulary asks (`tokenizer.ggml.add_bos_token`, ...).
        parse_special: recognise control tokens such as `<|im_start|>` written in the text; user-defined
        tokens are always recognised (as llama.cpp and HF `tokenizers` do).
        """
        ...

    def decode(self, ids: list[int], *, render_special: bool = False) -> str:
        """Text of `ids`; control tokens render as "" unless `render_special`."""
        ...

    def token_bytes(self, token_id: int, *, render_special: bool = False) -> bytes:
        """Raw bytes of one token (may be part of a UTF-8 character); b"" for control tokens."""
        ...
