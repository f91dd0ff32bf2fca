"""Whether generated text is coherent English, by the criterion written in
features/generation/haiku.feature: mostly printable ASCII, a few distinct dictionary-like words, no loop.
"""

from __future__ import annotations

import re
from collections import Counter

WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")
VOWELS = set("aeiouyAEIOUY")


def dictionary_like(word: str) -> bool:
    """A plausible English word: letters only, 2-15 of them, a vowel, no letter three times in a row
    ("coholic" and "GPU" qualify; "xqzt", "aaaa" and "Ġmisses" do not)."""
    letters = word.replace("'", "")
    return (
        (
            2 <= len(letters) <= 15
            and any(char in VOWELS for char in letters)
            and not re.search(r"(.)\1\1", letters.lower())
        )
        or letters.isupper()
        and 2 <= len(letters) <= 5
    )


def coherence_problems(text: str) -> list[str]:
    """Why `text` is not coherent English, per the criterion written in features/generation/haiku.feature."""
    problems = []
    visible = [char for char in text if not char.isspace()]
    if not visible:
        return ["the text is empty"]
    ascii_share = sum(char.isascii() and char.isprintable() for char in visible) / len(visible)
    if ascii_share < 0.9:
        problems.append(f"only {ascii_share:.0%} of its characters are printable ASCII (needs 90%)")
    words = WORD.findall(text)
    good = {word.lower() for word in words if dictionary_like(word) and len(word) >= 3}
    if len(good) < 3:
        problems.append(
            f"it has {len(good)} distinct dictionary-like words of 3+ letters (needs 3): {sorted(good)}"
        )
    lowered = [word.lower() for word in text.split()]
    for n in (1, 2, 3):
        grams = Counter(tuple(lowered[i : i + n]) for i in range(len(lowered) - n + 1))
        if grams and (top := grams.most_common(1)[0])[1] > 4:
            problems.append(f"it loops: {' '.join(top[0])!r} occurs {top[1]} times")
            break
    return problems
