"""`gguf-bpe` for SentencePiece-style vocabularies (`tokenizer.ggml.model = "llama"`, Phi-3).

The spec files Phi-3 under byte-level BPE, but its GGUF vocabulary is SentencePiece-style: token texts
with "▁" for a space, a score per token, no merges, and `<0xNN>` tokens for bytes no piece covers.
The algorithm is llama.cpp's `llm_tokenizer_spm_session`: start from single characters, repeatedly
merge the adjacent pair whose concatenation is the highest-scoring token (leftmost on ties), and spell
leftover characters as byte tokens. The `tokenizer_kind` is still "gguf-bpe" (M0-W-1360).
"""

from __future__ import annotations

import heapq

from reference_worker.tokenizers.base import TokenizerError
from reference_worker.tokenizers.vocab import GGUFVocab, TokenAttr

SPACE_MARK = "▁"  # U+2581


class SentencePieceTokenizer:
    kind = "gguf-bpe"

    def __init__(
        self,
        vocab: GGUFVocab,
        *,
        model_max_context: int | None,
        chat_template: str | None,
    ) -> None:
        self._vocab = vocab
        self._scores = vocab.scores or [0.0] * vocab.size
        self.vocab_size = vocab.size
        self.bos_id = vocab.bos_id
        self.eos_id = vocab.eos_id
        self.eog_ids = vocab.eog_ids
        self.add_bos = vocab.add_bos
        self.add_space_prefix = vocab.add_space_prefix
        self.model_max_context = model_max_context
        self.chat_template = chat_template
        self._byte_ids = [self._byte_token(b) for b in range(256)]

    def _byte_token(self, byte: int) -> int | None:
        # llama.cpp `byte_to_token`: "<0xNN>" (upper-case hex), else the byte itself as a token text.
        found = self._vocab.text_to_id.get(f"<0x{byte:02X}>")
        if found is None and byte < 0x80:
            found = self._vocab.text_to_id.get(chr(byte))
        return found

    def encode(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        ids: list[int] = []
        if add_special and self._vocab.add_bos and self.bos_id is not None:
            ids.append(self.bos_id)
        # llama.cpp prefixes a space to the text at the start and after every special token.
        after_special = True
        for piece in self._vocab.split_special(text, parse_special):
            if isinstance(piece, int):
                ids.append(piece)
                after_special = True
                continue
            if self.add_space_prefix and after_special:
                piece = " " + piece
            self._tokenize(piece.replace(" ", SPACE_MARK), ids)
            after_special = False
        if add_special and self._vocab.add_eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def _tokenize(self, text: str, out: list[int]) -> None:
        n = len(text)
        if n == 0:
            return
        text_to_id = self._vocab.text_to_id
        start = list(range(n))  # symbol i covers text[start[i] : start[i] + length[i]]
        length = [1] * n
        prev = list(range(-1, n - 1))
        nxt = [*range(1, n), -1]
        queue: list[tuple[float, int, int, int]] = []  # (-score, left, right, merged length)

        def push(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            token_id = text_to_id.get(text[start[left] : start[left] + length[left] + length[right]])
            if token_id is not None:
                heapq.heappush(queue, (-self._scores[token_id], left, right, length[left] + length[right]))

        for i in range(1, n):
            push(i - 1, i)
        while queue:
            _, left, right, size = heapq.heappop(queue)
            if length[left] == 0 or length[right] == 0 or length[left] + length[right] != size:
                continue  # one side changed since this pair was queued
            length[left] += length[right]
            length[right] = 0
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            push(prev[left], left)
            push(left, nxt[left])

        i = 0
        while i != -1:
            piece = text[start[i] : start[i] + length[i]]
            token_id = text_to_id.get(piece)
            if token_id is not None:
                out.append(token_id)
            else:
                out.extend(self._bytes_of(piece))
            i = nxt[i]

    def _bytes_of(self, piece: str) -> list[int]:
        ids = []
        for b in piece.encode("utf-8"):
            token_id = self._byte_ids[b]
            if token_id is None:
                raise TokenizerError(f"the vocabulary has no byte token for 0x{b:02X} (needed for {piece!r})")
            ids.append(token_id)
        return ids

    def decode(self, ids: list[int], *, render_special: bool = False) -> str:
        """llama.cpp `llama_detokenize`: the first token's leading space (the prefix that `encode`
        adds) is dropped, unless that first token renders as nothing (e.g. a hidden BOS)."""
        data = b"".join(self.token_bytes(i, render_special=render_special) for i in ids)
        if self.add_space_prefix and ids and data.startswith(b" "):
            if self.token_bytes(ids[0], render_special=render_special):
                data = data[1:]
        return data.decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int, *, render_special: bool = False) -> bytes:
        piece = self._vocab.special_piece(token_id, render_special)
        if piece is not None:
            return piece
        attr, text = self._vocab.attrs[token_id], self._vocab.tokens[token_id]
        if attr & TokenAttr.NORMAL:
            return text.replace(SPACE_MARK, " ").encode("utf-8")
        if attr & TokenAttr.BYTE:
            return bytes([int(text[3:5], 16)])
        return b""
