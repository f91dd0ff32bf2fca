"""The command line shared by the recorded runs of `tests/fuzz/`: `--out`, the record printed and written
as JSON, exit code 0 only when nothing failed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=(doc or "").split("\n")[0])
    p.add_argument("--out", type=Path, help="write the record as JSON here")
    return p


def command(module: str, argv: list[str] | None) -> str:
    return " ".join(["python -m", module, *(sys.argv[1:] if argv is None else argv)])


def missing(model: Path) -> bool:
    """True (after the one-line error) when the fixture the run needs is not built."""
    if model.is_file():
        return False
    print(f"error: {model}: no such file (run `python -m fixtures prepare --tiny`)", file=sys.stderr)
    return True


def finish(record: dict[str, Any], out: Path | None, failed: bool) -> int:
    text = json.dumps(record, indent=2)
    print(text)
    if out is not None:
        out.write_text(text + "\n")
    return 1 if failed else 0
