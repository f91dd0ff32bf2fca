"""The side-by-side report of `benchmarks.report`."""

from __future__ import annotations


def test_the_report_names_a_command_once_for_all_its_records() -> None:
    from benchmarks.report import _run_lines

    def record(date: str, command: str) -> dict:
        return {"date": date, "command": command, "git_commit": "abc", "device": {"name": "GPU"}}

    bench = "python -m benchmarks.llamacpp bench --model a --model b"
    lines = _run_lines(
        [record("t1", bench), record("t2", bench), record("t3", "python -m benchmarks.decode")]
    )
    assert len(lines) == 2 and "t1" in lines[0] and bench in lines[0]
