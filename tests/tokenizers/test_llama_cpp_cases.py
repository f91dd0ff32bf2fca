"""llama.cpp's own tokenizer test vectors (test-tokenizer-0: add_special=false, parse_special=false)."""

from __future__ import annotations

import pytest

from fixtures.vectors.sources import llama_cpp_cases


def _cases(name):
    return [
        pytest.param(name, text, ids, id=f"{name}-{i:02d}")
        for i, (text, ids) in enumerate(llama_cpp_cases(name))
    ]


@pytest.mark.parametrize(("name", "text", "expected"), _cases("qwen2") + _cases("phi3"))
def test_ids_and_round_trip(name, text, expected, request):
    tokenizer = request.getfixturevalue(name)
    ids = tokenizer.encode(text, add_special=False, parse_special=False)
    assert ids == expected
    assert tokenizer.decode(ids) == text


def test_case_counts():
    # The vendored files hold 46 cases each; a silently shorter list would weaken the check.
    assert len(llama_cpp_cases("qwen2")) == 46
    assert len(llama_cpp_cases("phi3")) == 46
