"""The decode benchmark passes every worker switch of its command line on to the worker it starts."""

from __future__ import annotations

import pytest

from reference_worker.cli import KERNEL_SWITCHES, kernel_argv


@pytest.mark.parametrize("dest", KERNEL_SWITCHES)
def test_each_worker_switch_reaches_the_worker_command_line(dest: str) -> None:
    """`--x` and `--no-x` of every switch come out of the options as the worker's own flags (a switch the
    options lack failed the benchmark on every model, at its first step)."""
    from benchmarks.decode import _parser, options_from_args

    flag = dest.replace("_", "-")
    for given in (f"--{flag}", f"--no-{flag}"):
        opts = options_from_args(_parser().parse_args(["--model", "m.gguf", given]))
        assert given in kernel_argv(opts)


def test_a_switch_left_to_the_worker_is_not_spelled_out() -> None:
    """Without `--dependent-launch` / `--no-dependent-launch` the worker decides by the model's shape, so
    the benchmark's worker command line says neither."""
    from benchmarks.decode import _parser, options_from_args

    opts = options_from_args(_parser().parse_args(["--model", "m.gguf"]))
    assert opts.dependent_launch is None
    argv = kernel_argv(opts)
    assert "--dependent-launch" not in argv and "--no-dependent-launch" not in argv
    assert "--late-trigger" in argv


def test_the_regrouped_types_reach_the_worker_command_line() -> None:
    """`--regroup q8_0 q6_k` comes out as the worker's own flag with both types, `--regroup none` as
    itself; none asked, none passed (the worker's choice by type and size)."""
    from benchmarks.decode import _parser, options_from_args

    def argv_of(*given: str) -> list[str]:
        return kernel_argv(options_from_args(_parser().parse_args(["--model", "m.gguf", *given])))

    argv = argv_of("--regroup", "q8_0", "q6_k")
    assert argv[argv.index("--regroup") :][:3] == ["--regroup", "q8_0", "q6_k"]
    argv = argv_of("--regroup", "none")
    assert argv[argv.index("--regroup") :] == ["--regroup", "none"]
    assert "--regroup" not in argv_of()
