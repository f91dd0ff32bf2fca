"""GPT-2's byte <-> printable-character map used by byte-level BPE vocabularies.

Every byte 0..255 is stored in the vocabulary as one printable character: the printable Latin-1 bytes
as themselves, the rest shifted to U+0100 onwards (space -> "Ġ", newline -> "Ċ"). Decoding a token
means mapping each character back to its byte; the bytes of consecutive tokens then form UTF-8.
"""

from __future__ import annotations

from functools import cache


@cache
def byte_to_char() -> tuple[str, ...]:
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table: dict[int, str] = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return tuple(table[b] for b in range(256))


@cache
def char_to_byte() -> dict[str, int]:
    return {c: b for b, c in enumerate(byte_to_char())}


def token_text_to_bytes(text: str) -> bytes:
    """Bytes of a byte-level token text; a character outside the map is kept as its UTF-8."""
    table = char_to_byte()
    out = bytearray()
    for ch in text:
        b = table.get(ch)
        if b is None:
            out += ch.encode("utf-8")
        else:
            out.append(b)
    return bytes(out)


def bytes_to_token_text(data: bytes) -> str:
    table = byte_to_char()
    return "".join(table[b] for b in data)
