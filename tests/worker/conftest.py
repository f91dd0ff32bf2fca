"""Fixtures shared by the worker's tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.worker.gguf_builder import GGUFSpec


@pytest.fixture
def write_gguf(tmp_path: Path) -> Callable[..., Path]:
    """write_gguf(spec=None, name="model.gguf", truncate=None) -> path of the written file."""

    def write(spec: GGUFSpec | None = None, name: str = "model.gguf", truncate: int | None = None) -> Path:
        raw, _ = (spec or GGUFSpec()).build()
        path = tmp_path / name
        path.write_bytes(raw if truncate is None else raw[:truncate])
        return path

    return write
