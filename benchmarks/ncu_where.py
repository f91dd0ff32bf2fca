"""Where a decode GEMV's warps spend their time, by part of the kernel: Nsight Compute's warp-state samples
per SASS instruction, summed over the prologue, the walk and the epilogue.

    python -m benchmarks.ncu_where --only "phi-3-mini attn_qkv (Q4_K layers)" [...] [--out DIR] [--ncu PATH]

For each shape of `benchmarks.kernels_gemv` matching one of `--only` (as `benchmarks.ncu_gemv` selects), one
launch of the GEMV (its second) is profiled with the SourceCounters section, whose PC sampling records,
every few cycles, the instruction each resident warp is at and whether it issued. A warp's samples at an
instruction are the time it spent there, waiting on its operands (a load's data, a barrier) or issuing.
`benchmarks.ncu_gemv` says what bounds a launch (latency, on global loads); this says which part of the
program the waiting is in, and so which design changes can shorten it:

- prologue: from the start to the last barrier before the first mma (`HMMA`/`IMMA`): the pointers, the
  first unit's words asked for, the activations loaded, reduced to their scale and stored as B operands;
- walk: from there to the last mma: each unit's words waited for and multiplied, the next ones asked for;
- epilogue: the rest: the split-K partial sums, the arrival counter, the last program's pass, the stores.

Why samples and not timers inside the kernel: they cost the kernel nothing and need no change to it. The
share of samples is a share of warp-time, not of the launch's duration (the regions of different programs
overlap), so it ranks where waiting is, it does not add up to microseconds.

Writes `ncu_where.md` (a row a shape: samples by region, the top instructions) and `ncu_where.json` (every
instruction's samples and region) to `--out`; where a shape's source page does not parse, the page as ncu
printed it beside them (`ncu_where_source_<n>.txt`).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.ncu_gemv import KERNEL

REGIONS = ("prologue", "walk", "epilogue")
_MMA = re.compile(r"^\s*(@!?U?P\w+\s+)?[HI]MMA\b")
_BARRIER = re.compile(r"^\s*(@!?U?P\w+\s+)?BAR\.SYNC")
_SAMPLES = "Warp Stall Sampling (All Samples)"
_NOT_ISSUED = "Warp Stall Sampling (Not-issued Samples)"


@dataclass
class Instruction:
    address: str
    sass: str
    samples: float  # every sample at this instruction
    not_issued: float  # those where the warp was stalled there


def parse_source_csv(text: str) -> list[Instruction]:
    """ncu's `--page source --csv --print-source sass` output -> its instructions in program order (the
    header is the first line naming the samples' column; lines before it, ncu's own, are skipped)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _SAMPLES in line), None)
    if start is None:
        return []
    rows = csv.DictReader(io.StringIO("\n".join(lines[start:])))
    found = []
    for row in rows:
        sass = row.get("Source") or ""
        if not sass.strip():
            continue
        found.append(
            Instruction(
                row.get("Address") or row.get("# Address") or "",
                sass.strip(),
                _number(row.get(_SAMPLES)),
                _number(row.get(_NOT_ISSUED)),
            )
        )
    return found


def _number(text: str | None) -> float:
    try:
        return float((text or "0").replace(",", ""))
    except ValueError:
        return 0.0


def region_of_each(instructions: list[Instruction]) -> list[str]:
    """Each instruction's region (module docstring): the prologue ends at the last barrier before the first
    mma, the walk at the last mma. A listing without an mma is all prologue."""
    mmas = [i for i, ins in enumerate(instructions) if _MMA.match(ins.sass)]
    if not mmas:
        return ["prologue"] * len(instructions)
    barriers = [i for i, ins in enumerate(instructions[: mmas[0]]) if _BARRIER.match(ins.sass)]
    walk_from = barriers[-1] + 1 if barriers else mmas[0]
    return [
        "prologue" if i < walk_from else "walk" if i <= mmas[-1] else "epilogue"
        for i in range(len(instructions))
    ]


@dataclass
class Where:
    shape: str
    samples: float
    share: dict[str, float]  # region -> % of the launch's samples
    stalled: dict[str, float]  # region -> % of its samples where the warp did not issue
    top: list[str]  # the instructions with the most samples: "region: SASS (n %)"


def where_of(shape: str, instructions: list[Instruction], top: int = 6) -> Where:
    regions = region_of_each(instructions)
    total = sum(ins.samples for ins in instructions) or 1.0
    by_region = {
        r: sum(ins.samples for ins, g in zip(instructions, regions, strict=True) if g == r) for r in REGIONS
    }
    stalled = {
        r: sum(ins.not_issued for ins, g in zip(instructions, regions, strict=True) if g == r)
        for r in REGIONS
    }
    ranked = sorted(zip(instructions, regions, strict=True), key=lambda pair: -pair[0].samples)[:top]
    return Where(
        shape=shape,
        samples=total,
        share={r: round(100.0 * by_region[r] / total, 1) for r in REGIONS},
        stalled={r: round(100.0 * stalled[r] / by_region[r], 1) if by_region[r] else 0.0 for r in REGIONS},
        top=[f"{g}: {ins.sass} ({100.0 * ins.samples / total:.1f} %)" for ins, g in ranked],
    )


def markdown(rows: list[Where], header: str) -> str:
    out = [
        header,
        "",
        "Share of the launch's warp samples in each region (in brackets: the share of those where the warp "
        "was stalled, not issuing), and the instructions with the most samples.",
        "",
        "| shape | samples | prologue % | walk % | epilogue % | top instructions |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for w in rows:
        cells = " | ".join(f"{w.share[r]} ({w.stalled[r]})" for r in REGIONS)
        out.append(f"| {w.shape} | {w.samples:.0f} | {cells} | {'<br>'.join(w.top)} |")
    return "\n".join(out) + "\n"


def ncu_commands(ncu: str, only: str, report: Path) -> tuple[list[str], list[str]]:
    """(profile the second GEMV launch of `benchmarks.kernels_gemv --only <only>` with source counters into
    `report`, print that report's SASS source page as CSV)."""
    profile = [
        ncu, "--section", "SourceCounters", "--section", "WarpStateStats", "--kernel-name", KERNEL,
        "--launch-skip", "1", "--launch-count", "1", "--export", str(report), "--force-overwrite",
        sys.executable, "-m", "benchmarks.kernels_gemv", "--only", only, "--replays", "2",
        "--out", "/tmp/ncu-where-scratch",
    ]  # fmt: skip
    source = [ncu, "--import", f"{report}.ncu-rep", "--page", "source", "--csv", "--print-source", "sass"]
    return profile, source


def main(argv: list[str] | None = None) -> int:
    from benchmarks.kernels_gemv import SHAPES

    p = argparse.ArgumentParser(prog="python -m benchmarks.ncu_where", description=__doc__.split("\n")[0])
    p.add_argument(
        "--only",
        nargs="+",
        default=["phi-3-mini"],
        help="shapes whose model/tensor/type contains one of these",
    )
    p.add_argument("--out", type=Path, default=Path("reports"))
    p.add_argument("--ncu", default="ncu", help="the Nsight Compute CLI")
    p.add_argument("--timeout-s", type=float, default=240.0, help="per shape")
    args = p.parse_args(argv)
    ncu = shutil.which(args.ncu)
    if ncu is None:
        print(f"error: {args.ncu} not found (Nsight Compute's CLI)", file=sys.stderr)
        return 2

    def key(s) -> str:  # as `benchmarks.ncu_gemv` matches kernels_gemv's --only
        return f"{s.model} {s.tensor} {s.qtype.name}"

    shapes = [s for s in SHAPES if any(o.lower() in key(s).lower() for o in args.only)]
    if not shapes:
        print(f"error: no benchmarks.kernels_gemv shape matches {args.only!r}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    rows, problems, listings = [], [], {}
    for n, shape in enumerate(shapes):
        name = f"{key(shape)} {shape.out_features}x{shape.in_features}"
        with tempfile.TemporaryDirectory() as tmp:
            profile, source = ncu_commands(ncu, key(shape), Path(tmp) / "where")
            try:
                run = subprocess.run(profile, capture_output=True, text=True, timeout=args.timeout_s)
                page = subprocess.run(source, capture_output=True, text=True, timeout=args.timeout_s)
            except subprocess.TimeoutExpired:
                problems.append(f"- {name}: ncu ran past {args.timeout_s:.0f} s")
                continue
        instructions = parse_source_csv(page.stdout)
        if not instructions:  # the page as ncu printed it, to see why
            (args.out / f"ncu_where_source_{n}.txt").write_text(page.stdout + page.stderr)
            tail = " / ".join((page.stderr or run.stderr or run.stdout).strip().splitlines()[-3:])
            problems.append(
                f"- {name}: no source page (ncu exit {run.returncode}, {page.returncode}): {tail}"
            )
            continue
        rows.append(where_of(name, instructions))
        listings[name] = [
            asdict(i) | {"region": g} for i, g in zip(instructions, region_of_each(instructions), strict=True)
        ]
    text = markdown(rows, f"# Where the decode GEMVs' warps wait ({', '.join(args.only)})")
    if problems:
        text += "\nNot profiled:\n" + "\n".join(problems) + "\n"
    (args.out / "ncu_where.md").write_text(text)
    (args.out / "ncu_where.json").write_text(
        json.dumps({"rows": [asdict(r) for r in rows], "instructions": listings}, indent=1) + "\n"
    )
    print(text)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
