"""`benchmarks.ncu_gemv` without a GPU: reading ncu's CSV, the verdict, the command it runs."""

from __future__ import annotations

import sys

from benchmarks import ncu_gemv
from benchmarks.ncu_gemv import (
    METRICS,
    PIPES,
    STALLS,
    Launch,
    markdown,
    ncu_command,
    parse_csv,
    row_of,
    verdict,
)

HEADER = (
    '"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size",'
    '"Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"'
)


def _csv(launches: dict[str, dict[str, str]]) -> str:
    lines = ["==PROF== Connected to process 4242 (/usr/bin/python3)", HEADER]
    for launch_id, metrics in launches.items():
        for name, value in metrics.items():
            lines.append(
                f'"{launch_id}","4242","python3","127.0.0.1","_qgemv_kernel","1","7","(128, 1, 1)",'
                f'"(288, 1, 2)","0","9.0","Command line profiler metrics","{name}","","{value}"'
            )
    lines.append("==PROF== Disconnected from process 4242")
    return "\n".join(lines) + "\n"


LATENCY_BOUND = {
    "gpu__time_duration.sum": "16,420",  # ns, with a thousands separator as ncu may print it
    "dram__bytes_read.sum": "15925248",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed": "23.4",
    "smsp__issue_active.avg.pct_of_peak_sustained_active": "41.0",
    "sm__warps_active.avg.pct_of_peak_sustained_active": "55.2",
    "launch__registers_per_thread": "56",
    "smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio": "6.2",
    "smsp__average_warps_issue_stalled_wait_per_issue_active.ratio": "0.9",
    "smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio": "1.4",
    "smsp__average_warps_issue_stalled_not_selected_per_issue_active.ratio": "n/a",
    "sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active": "48.5",
    "sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active": "31.0",
    "sm__pipe_lsu_cycles_active.avg.pct_of_peak_sustained_active": "12.0",
}


def test_the_csv_gives_each_launch_its_counters() -> None:
    launches = parse_csv(_csv({"0": LATENCY_BOUND, "1": {"gpu__time_duration.sum": "900"}}))
    assert [launch.kernel for launch in launches] == ["_qgemv_kernel", "_qgemv_kernel"]
    first = launches[0]
    assert first.get("gpu__time_duration.sum") == 16420.0
    assert "smsp__average_warps_issue_stalled_not_selected_per_issue_active.ratio" not in first.metrics
    assert first.stalls == [("long_scoreboard", 6.2), ("math_pipe_throttle", 1.4), ("wait", 0.9)]
    assert first.pipes == [("alu", 48.5), ("fma", 31.0), ("lsu", 12.0)]
    assert (
        parse_csv("==ERROR== the user does not have permission to access NVIDIA GPU Performance Counters")
        == []
    )


def test_the_verdict_names_the_bound() -> None:
    assert verdict(Launch("k", {"dram__throughput.avg.pct_of_peak_sustained_elapsed": 82.0})) == "memory"
    issue = {"dram__throughput.avg.pct_of_peak_sustained_elapsed": 30.0}
    issue["smsp__issue_active.avg.pct_of_peak_sustained_active"] = 88.0
    assert verdict(Launch("k", issue)) == "issue"
    alu = {"sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active": 91.0}
    assert (
        verdict(Launch("k", {**alu, "smsp__issue_active.avg.pct_of_peak_sustained_active": 60.0}))
        == "pipe (alu)"
    )
    (launch,) = parse_csv(_csv({"0": LATENCY_BOUND}))
    assert verdict(launch) == "latency (long_scoreboard)"
    assert verdict(Launch("k", {})) == "latency"


def test_the_table_row() -> None:
    (launch,) = parse_csv(_csv({"0": LATENCY_BOUND}))
    row = row_of("phi-3-mini attn_qkv Q4_K 9216x3072", launch)
    assert row.microseconds == 16.42 and row.dram_gb_per_s == 969.9 and row.registers == 56.0
    line = markdown([row], "# t").splitlines()[-1]
    assert line.startswith("| phi-3-mini attn_qkv Q4_K 9216x3072 | 16.42 | 969.9 | 23.4 | 41 | 55.2 | 56 |")
    assert line.endswith(
        "| alu 48, fma 31 | long_scoreboard 6.2, math_pipe_throttle 1.4, wait 0.9 | latency (long_scoreboard) |"
    )


def test_the_command_profiles_one_launch_of_the_gemv_of_one_shape() -> None:
    argv = ncu_command("/usr/bin/ncu", "phi-3-mini attn_qkv Q5_K")
    assert argv[:2] == ["/usr/bin/ncu", "--csv"]
    assert argv[argv.index("--kernel-name") + 1] == "regex:^(_qgemv_kernel|_tc_gemv_kernel)$"
    assert argv[argv.index("--launch-count") + 1] == "1"
    assert argv[argv.index("--metrics") + 1] == ",".join((*METRICS, PIPES, STALLS))
    assert argv[argv.index(sys.executable) :][:3] == [sys.executable, "-m", "benchmarks.kernels_gemv"]
    assert argv[argv.index("--only") + 1] == "phi-3-mini attn_qkv Q5_K"
    bare = ncu_command("ncu", "x", optional=())
    assert bare[bare.index("--metrics") + 1] == ",".join(METRICS)


def test_the_attention_command_profiles_one_launch_of_one_form_at_tg128s_late_case() -> None:
    """`--attention`: the second `_rope_attention_kernel` launch of `kernels_attention` (the first is its
    default-form reference), one layout, one form, one case; and that the benchmark takes those filters."""
    from benchmarks import kernels_attention

    argv = ncu_command("ncu", "qwen2.5", attention_form="re-tiled")
    assert argv[argv.index("--kernel-name") + 1] == "regex:^_rope_attention_kernel$"
    assert argv[argv.index("--launch-skip") + 1] == "1"
    bench = argv[argv.index(sys.executable) :]
    assert bench[:3] == [sys.executable, "-m", "benchmarks.kernels_attention"]
    assert bench[bench.index("--forms") + 1] == "re-tiled" and bench[bench.index("--cases") + 1] == "256:128"
    assert "re-tiled" in kernels_attention.VARIANTS and (256, 128) in kernels_attention.CASES


def test_a_rejected_metric_list_is_retried_with_fewer_optional_groups(monkeypatch) -> None:
    """One unknown metric name fails ncu's whole list: the pipes go first, then the stalls."""
    lists: list[str] = []

    class Run:
        def __init__(self, stdout: str, returncode: int) -> None:
            self.stdout, self.stderr, self.returncode = stdout, "==ERROR== Failed to find metric", returncode

    def run(argv, **kwargs):
        metrics = argv[argv.index("--metrics") + 1]
        lists.append(metrics)
        accepted = PIPES not in metrics and STALLS not in metrics
        return Run(_csv({"0": LATENCY_BOUND}), 0) if accepted else Run("", 1)

    monkeypatch.setattr(ncu_gemv.subprocess, "run", run)
    launches, problem = ncu_gemv.profile("ncu", "x", 60)
    assert len(launches) == 1 and problem == ""
    assert [(PIPES in m, STALLS in m) for m in lists] == [(True, True), (False, True), (False, False)]
    monkeypatch.setattr(ncu_gemv.subprocess, "run", lambda argv, **kw: Run("", 1))
    assert ncu_gemv.profile("ncu", "x", 60) == ([], "ncu exit 1: ==ERROR== Failed to find metric")
