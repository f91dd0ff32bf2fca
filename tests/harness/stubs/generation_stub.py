"""A stub worker whose "model" is a deterministic word generator, optionally breaking one generation rule.

It keeps the HTTP contract of `stub_worker.py` and adds what the generation, tokenizer and GPT features
look at: seeded sampling, greedy decoding (temperature 0, top_k 1, a tiny top_p), a repetition penalty,
stop strings, max_tokens, multi-byte text, a generated seed on started/end, the file's tokenizer facts on
/health, and golden continuations (it streams a golden's text when given its prompt, as a correct model
would). Each `--fault` breaks exactly one of them:

    ignore_seed         temperature > 0 draws from an unseeded generator (M0-SYS-2.3.1, M0-W-1030)
    ignore_stop         stop strings are never applied (M0-W-1422)
    replacement_char    one token carries U+FFFD (M0-W-1824)
    split_utf8          an emoji is sent as two halves, one surrogate per event (M0-W-1824)
    exceed_max_tokens   one token more than max_tokens (M0-W-1300)
    wrong_vocab_size    /health vocab_size is off by one (M0-W-1364)
    wrong_tokenizer     /health tokenizer_kind is the other backend (M0-W-1360)
    wrong_continuation  the golden continuation's last token differs (M0-W-1215 and the golden's IDs)
    quant_q8_0          /health quant_kind is Q8_0 whatever the file (M0-W-1823)

Each `--variant` behaves in another way the spec allows, which the suite must pass too:

    replace_invalid     on a synthetic stand-in (random weights), one token carries U+FFFD where such a model
                        emits bytes that are invalid UTF-8 in themselves; never on real weights (ERRATA E-28)
    stream_stop         whole tokens are streamed as they come, so the start of the stop string is streamed
                        too; the token that completes it ends the job unsent (ERRATA E-06)

    python tests/harness/stubs/generation_stub.py --worker-id W --model M.gguf --gpu-device 0 --port P \
        [--fault NAME] [--variant NAME] [--goldens DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import zlib
from pathlib import Path

import gguf
from stub_worker import Handler, StubWorker, http_server, read_model, stub_arguments

FAULTS = (
    "none",
    "ignore_seed",
    "ignore_stop",
    "replacement_char",
    "split_utf8",
    "exceed_max_tokens",
    "wrong_vocab_size",
    "wrong_tokenizer",
    "wrong_continuation",
    "quant_q8_0",
)
VARIANTS = ("none", "replace_invalid", "stream_stop")
REAL_WEIGHTS_FOLDER = "real"  # where the fixtures keep real model files (steps/models.py)
WORDS = (" GPU", " computing", " 世界", " 👋", " haiku", " fast", " kernels", " memory", " tokens", ",")


def file_facts(path: str) -> dict:
    """What /health reports: read_model's facts, the tokenizer.json when present, tensor bytes."""
    facts = read_model(path)
    reader = gguf.GGUFReader(path)
    facts["architecture"] = str(reader.get_field("general.architecture").contents())
    facts["vram_bytes_used"] = sum(int(tensor.n_bytes) for tensor in reader.tensors)
    tokenizer_json = Path(path).with_name("tokenizer.json")
    if tokenizer_json.is_file():
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        ids = list(data["model"]["vocab"].values()) + [token["id"] for token in data.get("added_tokens", [])]
        facts["tokenizer_kind"], facts["vocab_size"] = "hf-json", max(ids) + 1
    return facts


class GenerationStub(StubWorker):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.fault = args.fault
        self.variant = getattr(args, "variant", "none")  # the lifecycle stub has no --variant
        self.real_weights = REAL_WEIGHTS_FOLDER in Path(args.model).parts
        self.facts = file_facts(args.model)
        self.goldens = {}
        if args.goldens is not None:
            for path in Path(args.goldens).glob("*.json"):
                golden = json.loads(path.read_text(encoding="utf-8"))
                self.goldens[golden["prompt"]] = golden

    def health(self) -> dict:
        body = {"status": "healthy", "resident": True, **self.facts}
        if self.fault == "wrong_vocab_size":
            body["vocab_size"] += 1
        if self.fault == "wrong_tokenizer":
            body["tokenizer_kind"] = "hf-json" if body["tokenizer_kind"] == "gguf-bpe" else "gguf-bpe"
        if self.fault == "quant_q8_0":
            body["quant_kind"] = "Q8_0"
        return body

    def generate(self, body: dict, seed: int) -> list[str]:
        prompt, max_tokens = body["prompt"], body.get("max_tokens") or 2048
        temperature = body.get("temperature", 1.0)
        golden = self.goldens.get(prompt)
        if golden is not None and temperature == 0:
            pieces = golden_pieces(golden)
            if self.fault == "wrong_continuation":
                pieces[-1] += "x"
            return pieces[:max_tokens]
        greedy = temperature == 0 or body.get("top_k") == 1 or body.get("top_p", 1.0) < 1e-3
        start = zlib.crc32(prompt.encode("utf-8"))
        if greedy:
            # A greedy "model" that loops on one word, as small models do; a penalty breaks the loop.
            penalty = body.get("repetition_penalty", 1.0) > 1.0
            picks = [start + (index if penalty else min(index, 2)) for index in range(max_tokens)]
        else:
            rng = random.Random() if self.fault == "ignore_seed" else random.Random(seed ^ start)
            picks = [rng.randrange(1 << 30) for _ in range(max_tokens)]
        tokens = [WORDS[pick % len(WORDS)] for pick in picks]
        if self.fault == "exceed_max_tokens":
            tokens.append(WORDS[0])
        if self.fault == "replacement_char" and len(tokens) > 1:
            tokens[1] = " \ufffd"
        if self.variant == "replace_invalid" and not self.real_weights and len(tokens) > 1:
            tokens[1] = " \ufffd"
        return tokens


def golden_pieces(golden: dict) -> list[str]:
    """The golden text cut into as many pieces as it has tokens."""
    text, count = golden["text"], len(golden["token_ids"])
    size = max(1, len(text) // count)
    pieces = [text[i * size : (i + 1) * size] for i in range(count - 1)]
    return pieces + [text[(count - 1) * size :]]


class GenerationHandler(Handler):
    def _stream(self, body: dict) -> None:
        worker = self.worker
        seed = body["seed"] if isinstance(body.get("seed"), int) else secrets.randbits(53)
        tokens = worker.generate(body, seed)
        stop_reason, emitted = "MAX_TOKENS", tokens
        full = "".join(tokens)
        hits = [full.find(stop) for stop in body.get("stop") or [] if stop in full]
        if hits and worker.fault != "ignore_stop":
            stop_reason, emitted, offset = "STOP_SEQUENCE", [], 0
            if worker.variant == "stream_stop":
                # Streamed as generated: whole tokens, until the one that completes the stop string,
                # which ends the job unsent; the part of the stop string before it was streamed.
                at, stop = min((full.find(stop), stop) for stop in body["stop"] if stop in full)
                for piece in tokens:
                    if offset + len(piece) >= at + len(stop):
                        break
                    emitted.append(piece)
                    offset += len(piece)
            else:
                for piece in tokens:  # the text before the first stop string, cut at the token boundaries
                    emitted.append(piece[: max(0, min(hits) - offset)])
                    offset += len(piece)
                    if offset >= min(hits):
                        break
        self._begin_stream()
        self._started(body.get("job_id", ""), seed=seed)
        for index, piece in enumerate(emitted):
            if worker.fault == "split_utf8" and index == 0:
                raw = b'{"type":"token","t":" \\ud83d","i":0}'
                self._event("token", {}, raw_text=raw)
                continue
            self._event("token", {"t": piece, "i": index})
        end = {"tokens_out": len(emitted), "decode_time_ms": 1, "stop_reason": stop_reason, "seed": seed}
        self._event("end", end)
        self.close_connection = True


def main() -> None:
    parser = stub_arguments(__doc__, FAULTS)
    parser.add_argument("--variant", choices=VARIANTS, default="none")
    parser.add_argument("--goldens", help="folder of golden continuations to stream for their prompts")
    args = parser.parse_args()
    args.framing, args.token_delay_ms = "event", 0.0
    server = http_server(GenerationHandler, GenerationStub(args), args.port)
    print(f"generation stub ready on {args.port} (fault={args.fault})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
