"""StreamDecoder (M0-W-1824): only complete UTF-8 leaves the decoder, nothing is lost at the end."""

from __future__ import annotations

import pytest

from reference_worker.tokenizers import StreamDecoder


class ByteTokens:
    """A stand-in vocabulary whose token i is the single byte i (256 is a hidden control token)."""

    add_space_prefix = False

    def token_bytes(self, token_id: int, *, render_special: bool = False) -> bytes:
        return b"" if token_id == 256 else bytes([token_id])


def _stream(tokenizer, ids, **kwargs):
    decoder = StreamDecoder(tokenizer, **kwargs)
    chunks = [decoder.push(i) for i in ids]
    return chunks, decoder.flush(), decoder


@pytest.mark.parametrize("char", ["ñ", "世", "👋"])
def test_a_character_split_across_tokens_is_held_back_until_complete(char):
    data = char.encode("utf-8")
    chunks, rest, decoder = _stream(ByteTokens(), list(data))
    assert chunks == [""] * (len(data) - 1) + [char]
    assert rest == "" and decoder.dropped_bytes == 0


def test_text_around_a_split_character_is_emitted_at_once():
    ids = list(b"ab") + list("世".encode())[:2]
    chunks, _, _ = _stream(ByteTokens(), ids)
    assert chunks == ["a", "b", "", ""]


def test_control_tokens_render_as_nothing():
    chunks, rest, _ = _stream(ByteTokens(), [0x68, 256, 0x69])
    assert "".join(chunks) + rest == "hi"


def test_an_incomplete_character_at_the_end_is_dropped_and_counted():
    chunks, rest, decoder = _stream(ByteTokens(), list(b"ok") + list("👋".encode())[:3])
    assert "".join(chunks) + rest == "ok"
    assert decoder.dropped_bytes == 3


def test_bytes_that_can_never_form_a_character_are_dropped():
    ids = [0xE4, 0xB8, 0x41, 0xFF, 0x42]  # truncated 3-byte sequence, then 'A', an invalid byte, 'B'
    chunks, rest, decoder = _stream(ByteTokens(), ids)
    text = "".join(chunks) + rest
    assert text == "AB" and "\ufffd" not in text
    assert decoder.dropped_bytes == 3


MULTILINGUAL = ["你好世界", "Hello 👋 World 🌍", "Mixed: 日本語 English العربية", "😶‍🌫️🦙 ñandú Ωμέγα कखग"]


@pytest.mark.parametrize("text", MULTILINGUAL)
@pytest.mark.parametrize("name", ["qwen2", "phi3", "o200k"])
def test_stream_of_a_real_vocabulary_equals_decode(name, text, request):
    tokenizer = request.getfixturevalue(name)
    ids = tokenizer.encode(text, add_special=False)
    chunks, rest, decoder = _stream(tokenizer, ids)
    streamed = "".join(chunks) + rest
    assert streamed.encode("utf-8")  # a str is valid UTF-8 by construction; no surrogates slipped in
    assert "\ufffd" not in streamed and decoder.dropped_bytes == 0
    expected = tokenizer.decode(ids)
    # SentencePiece: a continuation keeps the space prefix `encode` put at the start; decode drops it.
    assert streamed == (" " + expected if tokenizer.add_space_prefix else expected)
    chunks, rest, _ = _stream(tokenizer, ids, at_text_start=True)
    assert "".join(chunks) + rest == expected


def test_phi3_byte_fallback_tokens_build_one_character(phi3):
    ids = phi3.encode("👋", add_special=False)
    byte_ids = [i for i in ids if len(phi3.token_bytes(i)) == 1 and phi3.token_bytes(i)[0] >= 0x80]
    assert len(byte_ids) == 4  # <0xF0> <0x9F> <0x91> <0x8B>
    chunks, rest, _ = _stream(phi3, byte_ids)
    assert chunks == ["", "", "", "👋"] and rest == ""


def test_generated_text_stream_keeps_control_tokens_out(qwen2):
    ids = qwen2.encode("<|im_start|>assistant\n你好 👋<|im_end|>", add_special=False)
    chunks, rest, _ = _stream(qwen2, ids)
    assert "".join(chunks) + rest == "assistant\n你好 👋"
