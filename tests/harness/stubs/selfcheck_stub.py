"""A stub self-check command: prints a verdict for the vectors it is given, as told.

    python tests/harness/stubs/selfcheck_stub.py pass|fail|short|crash CHECK [--vectors FILE]

pass: every vector passes; fail: vector 03 fails; short: the last vector is left out; crash: no JSON.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    verdict, check, *rest = sys.argv[1:]
    if verdict == "crash":
        print("Traceback (most recent call last): the self-check crashed", file=sys.stderr)
        return 3
    vectors = json.loads(open(rest[rest.index("--vectors") + 1], encoding="utf-8").read())["vectors"]
    cases = [
        {"name": f"{i:02d} {vector['description']}", "pass": not (verdict == "fail" and i == 3)}
        for i, vector in enumerate(vectors)
    ]
    if verdict == "fail":
        cases[3]["problem"] = "encode gave [1]"
    if verdict == "short":
        cases.pop()
    passed = all(case["pass"] for case in cases)
    print(json.dumps({"check": check, "pass": passed, "cases": cases}))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
