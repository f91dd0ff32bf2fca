"""UTF-8-safe streaming of generated tokens (M0-W-1361, M0-W-1362, M0-W-1824).

A byte-level token may hold part of a character (emoji and CJK often span two or three tokens), and a
SentencePiece vocabulary spells rare characters as `<0xNN>` byte tokens. `push` therefore emits only
complete UTF-8 characters and keeps an incomplete tail for the next token; nothing it returns is ever
invalid UTF-8 or U+FFFD. Bytes that can never form a character (a truncated sequence followed by
something else, or one still incomplete at `flush`) are dropped and counted in `dropped_bytes`.
"""

from __future__ import annotations

from reference_worker.tokenizers.base import Tokenizer

_INCOMPLETE = "unexpected end of data"  # the UTF-8 codec's reason for a sequence cut at the end


class StreamDecoder:
    """Turns token ids into text chunks; the chunks concatenate to `tokenizer.decode(ids)`.

    at_text_start: the first token starts a text rather than continuing a prompt. For SentencePiece
    vocabularies the first token's leading space (the prefix `encode` adds) is then dropped, as
    `decode` does; generated tokens after a prompt keep it (llama.cpp streams `token_to_piece`).
    Control tokens (BOS, `<|im_end|>`, ...) render as "".
    """

    def __init__(self, tokenizer: Tokenizer, *, at_text_start: bool = False) -> None:
        self._tokenizer = tokenizer
        self._strip_first_space = at_text_start and tokenizer.add_space_prefix
        self._pending = b""
        self.tokens_seen = 0
        self.dropped_bytes = 0

    def push(self, token_id: int) -> str:
        piece = self._tokenizer.token_bytes(token_id)
        if self.tokens_seen == 0 and self._strip_first_space and piece.startswith(b" "):
            piece = piece[1:]
        self.tokens_seen += 1
        self._pending += piece
        return self._take(final=False)

    def flush(self) -> str:
        """The rest at the end of the stream; an incomplete trailing character is dropped, not sent."""
        return self._take(final=True)

    def _take(self, *, final: bool) -> str:
        data, chunks = self._pending, []
        while data:
            try:
                chunks.append(data.decode("utf-8"))
                data = b""
            except UnicodeDecodeError as err:
                chunks.append(data[: err.start].decode("utf-8"))
                if err.reason == _INCOMPLETE and not final:
                    data = data[err.start :]
                    break
                self.dropped_bytes += err.end - err.start
                data = data[err.end :]
        self._pending = data
        return "".join(chunks)
