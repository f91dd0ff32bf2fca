"""Stop strings matched on generated text (M0-W-1422)."""

from __future__ import annotations

import pytest

from reference_worker.stops import StopMatcher


def run(stops: list[str], pieces: list[str]) -> tuple[str, str | None]:
    m = StopMatcher(stops)
    out = []
    for piece in pieces:
        r = m.push(piece)
        out.append(r.text)
        if r.matched:
            return "".join(out), r.matched
    return "".join(out) + m.flush(), None


def test_no_stop_passes_text_through_unchanged():
    m = StopMatcher([])
    assert m.push("Hello").text == "Hello" and m.push(" world").text == " world"


def test_stop_inside_one_piece_cuts_before_it():
    assert run(["END"], ["abcENDxyz"]) == ("abc", "END")


def test_stop_across_token_boundaries():
    assert run(["\n\n"], ["Hi", "\n", "\n", "more"]) == ("Hi", "\n\n")
    assert run(["STOP"], ["aS", "T", "OPb"]) == ("a", "STOP")


def test_partial_prefix_is_held_back_then_released():
    m = StopMatcher(["STOP"])
    assert m.push("xST").text == "x"
    assert m.holding
    r = m.push("AY")
    assert r.text == "STAY" and r.matched is None and not m.holding


def test_unfinished_prefix_at_the_end_is_ordinary_text():
    assert run(["STOP"], ["the ST"]) == ("the ST", None)


def test_earliest_stop_wins():
    assert run(["world", "lo w"], ["hello world"]) == ("hel", "lo w")


def test_overlapping_prefix_candidates():
    # "aab" where the buffer ends in "a": the held suffix must be the longest prefix ("aa")
    assert run(["aab"], ["xa", "a", "b"]) == ("x", "aab")
    assert run(["aab"], ["xa", "a", "a", "b"]) == ("xa", "aab")


def test_empty_stop_string_is_rejected():
    with pytest.raises(ValueError):
        StopMatcher([""])
