"""Compares the verdicts of two conformance runs, scenario by scenario and gate by gate.

    python -m steps.report.compare reports-serial/verdicts.json reports-sharded/verdicts.json

Prints every scenario (by node ID) and gate whose verdict differs, or is in one run only, and exits 1
when there is any; 0 when both runs judged the same scenarios alike. Used to show that a sharded run
(`-n N`) reaches the serial run's verdicts.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

MISSING = "(absent)"


class VerdictFileError(Exception):
    """A file that is not a verdicts.json of this project."""


@dataclass(frozen=True)
class Difference:
    kind: str  # "scenario" | "gate"
    name: str
    left: str
    right: str


def load_verdicts(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(scenario node ID -> verdict, gate ID -> verdict) of one verdicts.json."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        scenarios = {entry["nodeid"]: entry["verdict"] for entry in document["scenarios"]}
        gates = dict(document["summary"]["gates"])
    except OSError as exc:
        raise VerdictFileError(f"{path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise VerdictFileError(
            f"{path}: not a conformance verdicts.json ({type(exc).__name__}: {exc})"
        ) from None
    return scenarios, gates


def _differences(kind: str, left: dict[str, str], right: dict[str, str]) -> list[Difference]:
    names = list(left) + [name for name in right if name not in left]
    return [
        Difference(kind, name, left.get(name, MISSING), right.get(name, MISSING))
        for name in names
        if left.get(name, MISSING) != right.get(name, MISSING)
    ]


def compare(left: Path, right: Path) -> list[Difference]:
    left_scenarios, left_gates = load_verdicts(left)
    right_scenarios, right_gates = load_verdicts(right)
    return _differences("scenario", left_scenarios, right_scenarios) + _differences(
        "gate", left_gates, right_gates
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m steps.report.compare LEFT/verdicts.json RIGHT/verdicts.json", file=sys.stderr)
        return 2
    left, right = Path(args[0]), Path(args[1])
    try:
        differences = compare(left, right)
        count = len(load_verdicts(left)[0])
    except VerdictFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for diff in differences:
        print(f"{diff.kind} {diff.name}: {diff.left} | {diff.right}")
    if differences:
        print(f"{len(differences)} verdicts differ between {left} and {right}")
        return 1
    print(f"same verdicts: {count} scenarios and every gate alike in {left} and {right}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
