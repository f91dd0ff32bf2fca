"""What bounds each decode GEMV on the GPU, from Nsight Compute's counters: memory, issue, a pipe or latency.

    python -m benchmarks.ncu_gemv [--only SUBSTRING] [--out DIR] [--ncu PATH]
    python -m benchmarks.ncu_gemv --attention LAYOUT [--forms FORM ...] [--out DIR]

For each shape of `benchmarks.kernels_gemv` whose model/tensor/type contains `--only` (e.g. "phi-3-mini",
"Q4_K"), runs that benchmark for the one shape under `ncu` and profiles one launch of the GEMV kernel
(`_qgemv_kernel`, or `_tc_gemv_kernel` for the larger Q4_K matrices; its second: the first compiles; ncu flushes the caches before it, so the weight streams
from HBM as in a decode step). Counters (`METRICS`): the launch's duration, DRAM bytes read and throughput
against the device's peak, issue slots busy (the share of cycles a scheduler issued), warps active
(achieved occupancy), registers a thread, each execution pipe's busy share, and the warp stall reasons
per issued instruction.

The verdict column reads them (`verdict`): "memory" when DRAM runs at 70 % of its peak or more, "issue"
when the schedulers issue in 70 % of their cycles or more (the decode's instructions are the bound: fewer
per weight is the lever), "pipe (<name>)" when one execution pipe is that busy (e.g. `alu`: the integer
decode, shifts and masks, which sm_90 runs at half the FMA pipe's rate: fewer integer operations a weight
is the lever), else "latency (<top stall>)": nothing is busy and warps mostly wait, on global loads for
`long_scoreboard` (more loads in flight is the lever: more programs, more steps in flight).

`--attention LAYOUT` profiles the decode attention instead (`_rope_attention_kernel`, one launch of
`benchmarks.kernels_attention` for the layout at tg128's late case, 256 positions of cache at position 128,
in each of `--forms`), with the same counters and verdict, into `ncu_attention.md` / `.json`.

Why a wrapper and not the Nsight GUI: the device runs headless and returns files; the table is what a
results record quotes. Writes `ncu_gemv.md` and `ncu_gemv.json` (every counter of every launch) to `--out`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The decode GEMV kernels: the CUDA-core loop, and the larger Q4_K matrices' on the tensor cores
# (`kernels.tensor_core_gemv`); ncu's `regex:` form matches either.
KERNEL = "regex:^(_qgemv_kernel|_tc_gemv_kernel)$"
ATTENTION_KERNEL = "regex:^_rope_attention_kernel$"
ATTENTION_CASE = "256:128"  # tg128's cache bucket, late in its 128 tokens (`kernels_attention.CASES`)
METRICS = (
    "gpu__time_duration.sum",
    "dram__bytes_read.sum",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "smsp__issue_active.avg.pct_of_peak_sustained_active",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "launch__registers_per_thread",
    "launch__grid_size",
    "launch__block_size",
    "smsp__inst_executed.sum",
)
# Every stall reason, as warps stalled on it per issued instruction (ncu's "regex:" metric selection).
STALLS = r"regex:^smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio$"
_STALL_PREFIX, _STALL_SUFFIX = "smsp__average_warps_issue_stalled_", "_per_issue_active.ratio"
# Every execution pipe's busy share: a decoder's integer work (shifts, masks: the ALU pipe, half the FMA
# pipe's rate on sm_90) can bound a GEMV before the issue slots do.
PIPES = r"regex:^sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active$"
_PIPE_PREFIX, _PIPE_SUFFIX = "sm__pipe_", "_cycles_active.avg.pct_of_peak_sustained_active"
# Optional metric groups, dropped in this order when an ncu rejects the list (one unknown name fails all).
OPTIONAL = (PIPES, STALLS)
BUSY = 70.0  # % of peak at which a unit is taken as the bound


@dataclass
class Launch:
    """One profiled launch: its kernel name and counters (ncu's base units: ns, bytes, %, counts)."""

    kernel: str
    metrics: dict[str, float] = field(default_factory=dict)

    def get(self, name: str) -> float | None:
        return self.metrics.get(name)

    @property
    def stalls(self) -> list[tuple[str, float]]:
        """Stall reasons, most warps first: (reason, warps stalled per issued instruction)."""
        return self._family(_STALL_PREFIX, _STALL_SUFFIX)

    @property
    def pipes(self) -> list[tuple[str, float]]:
        """Execution pipes, busiest first: (pipe, % of its peak cycles active)."""
        return self._family(_PIPE_PREFIX, _PIPE_SUFFIX)

    def _family(self, prefix: str, suffix: str) -> list[tuple[str, float]]:
        """(the part between `prefix` and `suffix`, value) of each metric so named, largest value first."""
        found = [
            (name[len(prefix) : -len(suffix)], value)
            for name, value in self.metrics.items()
            if name.startswith(prefix) and name.endswith(suffix)
        ]
        return sorted(found, key=lambda kv: -kv[1])


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def parse_csv(text: str) -> list[Launch]:
    """ncu's `--csv --page details` output (one row a metric of a launch; `==PROF==` lines and anything
    before the header skipped) -> the launches in order, each with its numeric metrics."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        return []
    launches: dict[str, Launch] = {}
    for row in csv.DictReader(io.StringIO("\n".join(lines[start:]))):
        if not row.get("ID") or row.get("Metric Name") is None:
            continue
        launch = launches.setdefault(row["ID"], Launch(row.get("Kernel Name", "")))
        value = _number(row.get("Metric Value") or "")
        if value is not None:
            launch.metrics[row["Metric Name"]] = value
    return list(launches.values())


def verdict(launch: Launch) -> str:
    """What bounds the launch (module docstring): memory, issue, or latency and its top stall."""
    dram = launch.get("dram__throughput.avg.pct_of_peak_sustained_elapsed")
    issue = launch.get("smsp__issue_active.avg.pct_of_peak_sustained_active")
    if dram is not None and dram >= BUSY:
        return "memory"
    if issue is not None and issue >= BUSY:
        return "issue"
    pipes = launch.pipes
    if pipes and pipes[0][1] >= BUSY:
        return f"pipe ({pipes[0][0]})"
    stalls = launch.stalls
    return f"latency ({stalls[0][0]})" if stalls else "latency"


@dataclass
class Row:
    shape: str
    microseconds: float | None
    dram_gb_per_s: float | None
    dram_pct: float | None
    issue_pct: float | None
    warps_active_pct: float | None
    registers: float | None
    busiest_pipes: str
    top_stalls: str
    verdict: str
    metrics: dict[str, float]


def row_of(shape: str, launch: Launch) -> Row:
    ns = launch.get("gpu__time_duration.sum")
    read = launch.get("dram__bytes_read.sum")
    stalls = ", ".join(f"{name} {value:.1f}" for name, value in launch.stalls[:3])
    pipes = ", ".join(f"{name} {value:.0f}" for name, value in launch.pipes[:2])
    return Row(
        shape=shape,
        microseconds=None if ns is None else round(ns / 1e3, 2),
        dram_gb_per_s=None if ns is None or read is None or ns == 0 else round(read / ns, 1),
        dram_pct=launch.get("dram__throughput.avg.pct_of_peak_sustained_elapsed"),
        issue_pct=launch.get("smsp__issue_active.avg.pct_of_peak_sustained_active"),
        warps_active_pct=launch.get("sm__warps_active.avg.pct_of_peak_sustained_active"),
        registers=launch.get("launch__registers_per_thread"),
        busiest_pipes=pipes or "-",
        top_stalls=stalls or "-",
        verdict=verdict(launch),
        metrics=launch.metrics,
    )


def markdown(rows: list[Row], header: str) -> str:
    def cell(v: float | None) -> str:
        return "-" if v is None else f"{v:g}"

    out = [
        header,
        "",
        "| shape | µs | DRAM read GB/s | DRAM % of peak | issue slots busy % | warps active % | registers "
        "| busiest pipes (% active) | top stalls (warps per issued instruction) | bound |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r.shape} | {cell(r.microseconds)} | {cell(r.dram_gb_per_s)} | {cell(r.dram_pct)} "
            f"| {cell(r.issue_pct)} | {cell(r.warps_active_pct)} | {cell(r.registers)} | {r.busiest_pipes} "
            f"| {r.top_stalls} "
            f"| {r.verdict} |"
        )
    return "\n".join(out) + "\n"


def ncu_command(
    ncu: str, only: str, *, optional: tuple[str, ...] = OPTIONAL, attention_form: str | None = None
) -> list[str]:
    """ncu profiling the second GEMV launch of `benchmarks.kernels_gemv --only <only>`, with `METRICS` and
    the `optional` metric groups; with `attention_form`, the second attention launch of
    `benchmarks.kernels_attention --only <only>` in that form at ATTENTION_CASE (the first is its
    reference run in the default form, which the form's own first launch follows)."""
    metrics = ",".join(METRICS + optional)
    if attention_form is None:
        kernel = KERNEL
        bench = [
            "benchmarks.kernels_gemv", "--only", only, "--replays", "2", "--out", "/tmp/ncu-gemv-scratch",
        ]  # fmt: skip
    else:
        kernel = ATTENTION_KERNEL
        bench = [
            "benchmarks.kernels_attention", "--only", only, "--cases", ATTENTION_CASE, "--forms", attention_form,
            "--replays", "2", "--out", "/tmp/ncu-attention-scratch",
        ]  # fmt: skip
    return [
        ncu, "--csv", "--page", "details", "--print-units", "base", "--kernel-name", kernel,
        "--launch-skip", "1", "--launch-count", "1", "--metrics", metrics, sys.executable, "-m", *bench,
    ]  # fmt: skip


def profile(
    ncu: str, only: str, timeout_s: float, attention_form: str | None = None
) -> tuple[list[Launch], str]:
    """The profiled launches of one shape (or attention form), and what went wrong if none came back.
    Retries with fewer optional metric groups if a run gets nothing (an ncu that lacks a metric rejects
    the whole list)."""
    problem = ""
    for dropped in range(len(OPTIONAL) + 1):
        try:
            run = subprocess.run(
                ncu_command(ncu, only, optional=OPTIONAL[dropped:], attention_form=attention_form),
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            return [], f"ncu ran past {timeout_s:.0f} s"
        launches = parse_csv(run.stdout)
        if launches:
            return launches, ""
        tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
        problem = f"ncu exit {run.returncode}: {' / '.join(tail)}"
    return [], problem


def main(argv: list[str] | None = None) -> int:
    from benchmarks.kernels_gemv import SHAPES

    p = argparse.ArgumentParser(prog="python -m benchmarks.ncu_gemv", description=__doc__.split("\n")[0])
    p.add_argument("--only", default="phi-3-mini", help="shapes whose model/tensor/type contains this")
    p.add_argument("--out", type=Path, default=Path("reports"))
    p.add_argument("--ncu", default="ncu", help="the Nsight Compute CLI")
    p.add_argument("--timeout-s", type=float, default=180.0, help="per shape")
    p.add_argument(
        "--attention", metavar="LAYOUT", help="profile the decode attention of this layout instead"
    )
    p.add_argument(
        "--forms", nargs="+", default=["default"], help="with --attention: kernels_attention's forms"
    )
    args = p.parse_args(argv)
    ncu = shutil.which(args.ncu)
    if ncu is None:
        print(f"error: {args.ncu} not found (Nsight Compute's CLI)", file=sys.stderr)
        return 2
    if args.attention:
        return _profile_attention(ncu, args)

    def key(s) -> str:  # what kernels_gemv's own --only matches (case-insensitive)
        return f"{s.model} {s.tensor} {s.qtype.name}"

    shapes = [s for s in SHAPES if args.only.lower() in key(s).lower()]
    if not shapes:
        print(f"error: no benchmarks.kernels_gemv shape matches {args.only!r}", file=sys.stderr)
        return 2
    rows, problems = [], []
    for shape in shapes:
        name = f"{key(shape)} {shape.out_features}x{shape.in_features}"
        launches, problem = profile(ncu, key(shape), args.timeout_s)  # the whole key: this shape alone
        if not launches:
            problems.append(f"- {name}: {problem}")
            continue
        rows.append(row_of(name, launches[0]))
        print(markdown(rows[-1:], "").splitlines()[-1], flush=True)
    return _publish(
        rows, problems, f"# Decode GEMVs under Nsight Compute ({args.only})", args.out / "ncu_gemv"
    )


def _profile_attention(ncu: str, args: argparse.Namespace) -> int:
    """`--attention`: one launch of each form, as `main` does for the GEMV shapes."""
    rows, problems = [], []
    for form in args.forms:
        name = f"{args.attention} attention {form} @{ATTENTION_CASE}"
        launches, problem = profile(ncu, args.attention, args.timeout_s, attention_form=form)
        if not launches:
            problems.append(f"- {name}: {problem}")
            continue
        rows.append(row_of(name, launches[0]))
    header = f"# Decode attention under Nsight Compute ({args.attention})"
    return _publish(rows, problems, header, args.out / "ncu_attention")


def _publish(rows: list[Row], problems: list[str], header: str, stem: Path) -> int:
    """The table (and what was not profiled, and why) as `stem`.md, every counter as `stem`.json; exit 0 if
    anything was profiled."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, header)
    if problems:
        text += "\nNot profiled:\n" + "\n".join(problems) + "\n"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    print(text)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
