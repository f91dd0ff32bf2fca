"""Loader fuzzing (M0-W-1111, M0-W-1210, M0-W-1211): the whole generated corpus of broken GGUF files
through the worker's own `load_worker`, in-process; a few real `python -m reference_worker` starts for the
exit code and the stderr line; and the checks shown able to fail."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from reference_worker.gguf import reader

from . import loader_fuzz
from .gguf_corpus import mutations
from .inprocess import REPO, TINY_MODEL
from .process import free_port, worker_argv

pytestmark = pytest.mark.skipif(
    not TINY_MODEL.is_file(), reason=f"{TINY_MODEL} missing: run `python -m fixtures prepare --tiny`"
)
pytest.importorskip("gguf")

KINDS = {
    "truncate",
    "header_bit_flip",
    "tensor_count",
    "metadata_count",
    "tensor_offset",
    "misaligned",
    "dimension",
    "n_dims",
    "tensor_type",
    "duplicate_name",
    "metadata_type",
    "huge_string",
    "huge_array",
    "array_type",
    "key_length",
}


def test_every_broken_file_is_refused_with_one_line_naming_it(tmp_path: Path) -> None:
    corpus = list(mutations(TINY_MODEL))
    assert {m.kind for m in corpus} == KINDS and len(corpus) > 500
    verdicts = loader_fuzz.run(TINY_MODEL, corpus, tmp_path)
    assert verdicts.failures == [], "\n".join(verdicts.failures[:10])
    assert verdicts.loaded == [] and verdicts.refused == len(corpus)


def test_a_message_without_the_file_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader._Cursor, "fail", lambda self, problem: reader.GGUFError(problem))
    monkeypatch.setattr(loader_fuzz, "model_file_error", lambda config, e: str(e))
    corpus = [m for m in mutations(TINY_MODEL) if m.kind == "huge_string"][:2]
    verdicts = loader_fuzz.run(TINY_MODEL, corpus, tmp_path)
    assert len(verdicts.failures) == 2 and "does not name the file" in verdicts.failures[0]


def test_an_unexpected_exception_and_a_hang_are_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = [m for m in mutations(TINY_MODEL) if m.kind == "dimension"][:2]

    def crash_then_hang(config, log):
        if config.model.name.startswith("0000"):
            raise IndexError("list index out of range")
        time.sleep(5)

    monkeypatch.setattr(loader_fuzz, "load_worker", crash_then_hang)
    monkeypatch.setattr(loader_fuzz, "SECONDS_PER_FILE", 1)
    verdicts = loader_fuzz.run(TINY_MODEL, corpus, tmp_path)
    assert "unexpected IndexError" in verdicts.failures[0] and "no answer within 1 s" in verdicts.failures[1]


@pytest.mark.parametrize("kind", ["truncate", "dimension", "huge_array"])
def test_the_process_exits_1_with_one_line(kind: str, tmp_path: Path) -> None:
    mutation = next(m for m in mutations(TINY_MODEL) if m.kind == kind and "ne0=0" not in m.where)
    model = tmp_path / f"{kind}.gguf"
    model.write_bytes(mutation.apply(TINY_MODEL.read_bytes()))
    result = subprocess.run(
        [sys.executable, "-m", "reference_worker", *worker_argv(model, free_port()), "--device", "cpu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {model}: "), result.stderr
    assert "Traceback" not in result.stderr
