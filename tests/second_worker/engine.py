"""The model: llama.cpp through llama-cpp-python, one job at a time, text decoded as it is generated.

Token bytes go through an incremental UTF-8 decoder: a character split across tokens is held back until
it is complete (M0-W-1824), and bytes that can never form a character (random weights emit them) become
U+FFFD. Stop strings are matched on the generated text; the text is streamed as it is generated, so a
stop string is streamed too, and the job ends on the token that completes it, cut at its end.
"""

from __future__ import annotations

import codecs
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import llama_cpp

SUPPORTED = ("llama", "qwen2", "phi3", "gpt2", "gpt-oss")
REQUIRED_KEYS = ("context_length", "embedding_length", "block_count")
MAX_TENSORS = 10_000
CONTEXT_CAP = 2048  # the window this worker serves (ERRATA E-17 allows a smaller one than the file's)
FILE_TYPES = {  # general.file_type -> /health quant_kind (ERRATA E-04)
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 32: "BF16", 38: "MXFP4",
}  # fmt: skip


class LoadError(Exception):
    """The model cannot be served; the message names the file and the problem."""


@dataclass(frozen=True)
class Facts:
    """What /health says about the served file."""

    name: str
    architecture: str
    quant_kind: str
    vocab_size: int
    context_length: int


@dataclass
class Sampling:
    max_tokens: int = 2048
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int = 0


@dataclass
class Piece:
    text: str


@dataclass
class Finished:
    reason: str  # EOS | MAX_TOKENS | STOP_SEQUENCE
    tokens_in: int
    decode_ms: float


class Cancelled(Exception):
    pass


def check_header(path: Path) -> None:
    """M0-W-1210: readable, GGUF magic, version 3, fewer than 10,000 tensors, before llama.cpp sees it."""
    if not path.is_file():
        raise LoadError(f"{path}: no such model file")
    with path.open("rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:4] != b"GGUF":
        raise LoadError(f"{path}: not a GGUF file (bad magic {head[:4]!r})")
    version, tensor_count = struct.unpack_from("<IQ", head, 4)
    if version != 3:
        raise LoadError(f"{path}: GGUF version {version} is not supported (only version 3)")
    if tensor_count >= MAX_TENSORS:
        raise LoadError(f"{path}: {tensor_count} tensors, the limit is {MAX_TENSORS - 1}")


def diagnose(path: Path) -> str:
    """Why llama.cpp refused a file whose header is fine: read it with gguf-py (slow, only on failure)."""
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, IndexError, OSError) as exc:
        return f"damaged GGUF (truncated, or a bad tensor type): {exc}"
    size = path.stat().st_size
    for tensor in reader.tensors:
        if tensor.data_offset + int(tensor.n_bytes) > size:
            return f"tensor {tensor.name} runs past the end of file (truncated)"
    field = reader.get_field("general.architecture")
    arch = str(field.contents()) if field is not None else None
    if arch not in SUPPORTED:
        return f"architecture {arch!r} is not supported ({', '.join(SUPPORTED)})"
    for key in REQUIRED_KEYS:
        if reader.get_field(f"{arch}.{key}") is None:
            return f"metadata key {arch}.{key} is missing"
    return "llama.cpp cannot load it"


class Engine:
    def __init__(self, llm, facts: Facts) -> None:  # noqa: ANN001 (llama_cpp.Llama)
        self.llm = llm
        self.facts = facts
        self.lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, on_progress: Callable[[int], None]) -> Engine:
        check_header(path)
        on_progress(0)
        try:
            probe = llama_cpp.Llama(model_path=str(path), n_ctx=8, vocab_only=True, verbose=False)
            metadata = dict(probe.metadata)
            del probe
            arch = metadata.get("general.architecture", "")
            if arch not in SUPPORTED:
                raise LoadError(f"{path}: architecture {arch!r} is not supported ({', '.join(SUPPORTED)})")
            context = int(metadata.get(f"{arch}.context_length", CONTEXT_CAP))
            llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=min(context, CONTEXT_CAP), n_threads=2, verbose=False
            )
        except (ValueError, RuntimeError):
            raise LoadError(f"{path}: {diagnose(path)}") from None
        on_progress(100)
        file_type = metadata.get("general.file_type")
        facts = Facts(
            name=metadata.get("general.name") or path.stem,
            architecture=arch,
            quant_kind=FILE_TYPES.get(int(file_type), "UNKNOWN") if file_type is not None else "UNKNOWN",
            vocab_size=llm.n_vocab(),
            context_length=llm.n_ctx(),
        )
        return cls(llm, facts)

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def generate(
        self, prompt: str, sampling: Sampling, cancelled: threading.Event
    ) -> Iterator[Piece | Finished]:
        """Pieces of text as generated, then one Finished; raises Cancelled or ValueError (prompt too long)."""
        llm = self.llm
        prompt_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        room = llm.n_ctx() - len(prompt_ids)
        if room < 1:
            raise ValueError(f"the prompt has {len(prompt_ids)} tokens; the context holds {llm.n_ctx()}")
        llm.set_seed(sampling.seed & 0xFFFFFFFF)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, sent, count, reason = "", 0, 0, "MAX_TOKENS"
        begun = time.monotonic()
        tokens = llm.generate(
            prompt_ids,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            temp=sampling.temperature,
            repeat_penalty=sampling.repetition_penalty,
            reset=True,
        )
        for token in tokens:
            if cancelled.is_set():
                raise Cancelled
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):  # whichever end token the model has
                reason = "EOS"
                break
            text += decoder.decode(llm.detokenize([token], special=False))
            count += 1
            hit = min((text.find(stop) + len(stop) for stop in sampling.stop if stop in text), default=None)
            if hit is not None:
                yield Piece(text[sent:hit])
                reason = "STOP_SEQUENCE"
                break
            yield Piece(text[sent:])
            sent = len(text)
            if count >= min(sampling.max_tokens, room):
                break
        return_ms = (time.monotonic() - begun) * 1000
        yield Finished(reason, len(prompt_ids), return_ms)
