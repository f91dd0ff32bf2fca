"""Stop sequences (M0-W-1422), matched on the generated text rather than on token ids.

The spec matches tokenized stop sequences against token ids; the same text can be produced by different
token splits, so matching text is the stricter behaviour: a stop string spanning several tokens, or ending
inside one, is found. Text that could still be the beginning of a stop string is held back until the next
token decides it; the stop string itself and anything after it are never emitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StopResult:
    text: str  # safe to emit now
    matched: str | None = None  # the stop string that ended generation, if any


class StopMatcher:
    def __init__(self, stop_strings: Sequence[str]) -> None:
        if any(not s for s in stop_strings):
            raise ValueError("stop strings must be non-empty")
        self.stop_strings = tuple(stop_strings)
        self._held = ""

    def push(self, text: str) -> StopResult:
        """Adds newly decoded text; returns what can be emitted and the matched stop string, if any."""
        buffer = self._held + text
        match = self._earliest_match(buffer)
        if match is not None:
            start, stop = match
            self._held = ""
            return StopResult(buffer[:start], stop)
        keep = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return StopResult(buffer[: len(buffer) - keep])

    @property
    def holding(self) -> bool:
        """True while some emitted-looking text is held back as a possible stop-string prefix."""
        return bool(self._held)

    def flush(self) -> str:
        """At the end of generation (no stop matched): the held-back text, which is ordinary output."""
        held, self._held = self._held, ""
        return held

    def _earliest_match(self, buffer: str) -> tuple[int, str] | None:
        found = [(buffer.find(s), s) for s in self.stop_strings]
        found = [(i, s) for i, s in found if i >= 0]
        return min(found, key=lambda f: f[0]) if found else None

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest suffix of `buffer` that is a proper prefix of some stop string."""
        longest = 0
        for stop in self.stop_strings:
            for n in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:n]):
                    longest = n
                    break
        return longest
