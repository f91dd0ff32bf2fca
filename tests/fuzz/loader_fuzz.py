"""Fuzzing the model loader with the generated corpus of `gguf_corpus`: every broken file must be refused
the way `python -m reference_worker` refuses it (one of `worker.MODEL_FILE_ERRORS`, or not enough device
memory: exit 1 with one line naming the file and the problem), within a bounded time, and never with an
unexpected exception, a hang or a crash. Loads run in this process, the worker's own `load_worker`.

    python -m tests.fuzz.loader_fuzz --out benchmarks/results/loader-fuzz.json

A mutated file that is still a good model (e.g. a bit flip that leaves it readable) may load: counted as
`loaded`, not a failure. `tests/fuzz/test_loader_fuzz.py` runs a bounded sample and a few real processes.
"""

from __future__ import annotations

import io
import resource
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from reference_worker.config import WorkerConfig
from reference_worker.device_memory import VramOOM
from reference_worker.gguf import InsufficientDeviceMemory
from reference_worker.logs import EventLog
from reference_worker.worker import MODEL_FILE_ERRORS, load_worker, model_file_error

from . import record
from .gguf_corpus import Mutation, mutations
from .inprocess import TINY_MODEL

SECONDS_PER_FILE = 10  # a load that takes longer is a hang
REFUSALS = (*MODEL_FILE_ERRORS, InsufficientDeviceMemory, VramOOM)


class _Hang(Exception):
    pass


def _alarm(sig: int, frame: FrameType | None) -> None:
    raise _Hang


@dataclass
class LoaderVerdicts:
    files: int = 0
    refused: int = 0
    loaded: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)
    slowest_seconds: float = 0.0
    slowest: str = ""


def refusal(path: Path) -> tuple[str, str | None]:
    """("loaded", None), ("refused", message), or ("failed", what went wrong) for one file."""
    config = WorkerConfig(worker_id=str(uuid.uuid4()), model=path, gpu_device=0, port=8080, device="cpu")
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS_PER_FILE)
    try:
        load_worker(config, EventLog(io.StringIO()))
        return "loaded", None
    except REFUSALS as e:
        return "refused", model_file_error(config, e)
    except _Hang:
        return "failed", f"no answer within {SECONDS_PER_FILE} s"
    except Exception as e:  # the worker would exit 1, but with a message it did not mean to give
        return "failed", f"unexpected {type(e).__name__}: {str(e)[:200]}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def problems_with_refusal(path: Path, message: str) -> list[str]:
    out = []
    if str(path) not in message:
        out.append(f"message does not name the file: {message[:200]}")
    if "\n" in message or "Traceback" in message:
        out.append(f"message is not one line: {message[:200]}")
    if len(message) - len(str(path)) > 1000:
        out.append(f"message is {len(message)} characters long")
    return out


def run(good: Path, corpus: list[Mutation], workdir: Path) -> LoaderVerdicts:
    verdicts = LoaderVerdicts()
    data = good.read_bytes()
    for i, mutation in enumerate(corpus):
        path = workdir / f"{i:04d}-{mutation.kind}.gguf"
        path.write_bytes(mutation.apply(data))
        started = time.perf_counter()
        outcome, message = refusal(path)
        elapsed = time.perf_counter() - started
        path.unlink()
        verdicts.files += 1
        verdicts.by_kind[mutation.kind] = verdicts.by_kind.get(mutation.kind, 0) + 1
        if elapsed > verdicts.slowest_seconds:
            verdicts.slowest_seconds, verdicts.slowest = elapsed, mutation.name
        if outcome == "loaded":
            verdicts.loaded.append(mutation.name)
        elif outcome == "refused":
            verdicts.refused += 1
            verdicts.failures += [f"{mutation.name}: {p}" for p in problems_with_refusal(path, message or "")]
        else:
            verdicts.failures.append(f"{mutation.name}: {message}")
    return verdicts


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = record.parser("tests.fuzz.loader_fuzz", __doc__)
    parser.add_argument("--model", type=Path, default=TINY_MODEL, help="the good file the corpus starts from")
    args = parser.parse_args(argv)
    if record.missing(args.model):
        return 1
    corpus = list(mutations(args.model))
    rss_before = _max_rss_mib()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="loader-fuzz-") as tmp:
        verdicts = run(args.model, corpus, Path(tmp))
    result = {
        "command": record.command("tests.fuzz.loader_fuzz", argv),
        "model": str(args.model),
        "files": verdicts.files,
        "refused": verdicts.refused,
        "loaded_anyway": len(verdicts.loaded),
        "loaded_examples": verdicts.loaded[:20],
        "failures": len(verdicts.failures),
        "first_failures": verdicts.failures[:20],
        "by_kind": verdicts.by_kind,
        "seconds_per_file_limit": SECONDS_PER_FILE,
        "slowest_seconds": round(verdicts.slowest_seconds, 3),
        "slowest": verdicts.slowest,
        "peak_rss_mib_before": round(rss_before, 1),
        "peak_rss_mib_after": round(_max_rss_mib(), 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return record.finish(result, args.out, bool(verdicts.failures))


if __name__ == "__main__":
    raise SystemExit(main())
