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


def _worker(mode: str, tok_s: float) -> dict:
    return {
        "kind": "worker-decode",
        "mode": mode,
        "model": {"file": "m.gguf", "name": "m", "weight_bytes_per_token": 1_000_000},
        "decode": {"tok_s": tok_s, "floor_tok_s": 4000.0},
        "prefill": [],
    }


def test_the_side_by_side_shows_the_http_rate_beside_the_in_process_one() -> None:
    from benchmarks.report import side_by_side

    llama = {"kind": "llama-bench", "model": {"file": "m.gguf"}, "tests": {"tg128": {"avg_ts": 800.0}}}
    text, table = side_by_side([_worker("in-process", 900.0), _worker("http", 855.0)], [llama])
    assert len(table) == 1, "one row per file: the HTTP record is a column, not a row"
    assert table[0]["worker_decode_tok_s"] == 900.0 and table[0]["worker_over_llamacpp"] == 1.125
    assert table[0]["worker_decode_http_tok_s"] == 855.0 and table[0]["http_over_in_process"] == 0.95
    assert "HTTP / in process" in text and "| 855.00 | 0.950 |" in text


def test_the_side_by_side_has_no_http_columns_without_an_http_record() -> None:
    from benchmarks.report import side_by_side

    text, table = side_by_side([_worker("in-process", 900.0)], [])
    assert "HTTP" not in text and "worker_decode_http_tok_s" not in table[0]


def test_http_records_alone_are_the_rows_not_a_column_beside_themselves() -> None:
    from benchmarks.report import side_by_side

    text, table = side_by_side([_worker("http", 855.0)], [])
    assert table[0]["worker_decode_tok_s"] == 855.0 and "HTTP / in process" not in text


def test_a_llama_build_from_a_source_tarball_is_named_by_the_tarball() -> None:
    """llama-bench built from a source tarball says build_commit "unknown": the report names the tarball's
    sha256 instead; a real commit is shown as it is."""
    from benchmarks.report import _llama_build

    source = {"tarball": "llama.cpp-src.tar.xz", "sha256": "0123456789abcdef" * 4}
    assert _llama_build({"build_commit": "unknown", "llama_source": source}) == "source 0123456789ab"
    assert _llama_build({"build_commit": "4cb7e0bd6", "llama_source": source}) == "4cb7e0bd6"
    assert _llama_build({}) == "–"
