"""Markdown tables from benchmark records, and the side-by-side report of the worker against llama.cpp.

    python -m benchmarks.report RECORD.json... [--title T] [--out-md report.md] [--out-json report.json]

A record file holds one JSON record or a list of them; `kind` says whose it is ("worker-decode" from
`benchmarks.decode`, "llama-bench" from `benchmarks.llamacpp`). Models are matched by file name.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

MIB = 1 << 20


def _llama_build(record: dict) -> str:
    """llama-bench's build commit, or for a build from a source tarball (commit "unknown") the tarball's
    sha256 prefix (`benchmarks.llamacpp`'s `llama_source`)."""
    commit = record.get("build_commit")
    source = record.get("llama_source")
    if commit in (None, "unknown") and source:
        return f"source {source['sha256'][:12]}"
    return commit or "–"


def _num(value: Any, fmt: str = ",.1f") -> str:
    return "–" if value is None else format(value, fmt)


def _mib(nbytes: int | None) -> str:
    return "–" if nbytes is None else f"{nbytes / MIB:,.1f}"


def _run_lines(records: list[dict[str, Any]]) -> list[str]:
    """Command, device, date and commit of each distinct run: records of one command (llama-bench writes
    one per model, seconds apart) are one line, with the first record's date."""
    lines, seen = [], set()
    for r in records:
        dev = r.get("device", {})
        key = (r.get("command"), r.get("git_commit"))
        if key in seen:
            continue
        seen.add(key)
        label = f" [{r['label']}]" if r.get("label") else ""
        lines.append(
            f"- {r.get('date')}{label} on **{dev.get('name')}** (torch {dev.get('torch')}, "
            f"CUDA {dev.get('cuda_runtime', '–')}), commit `{r.get('git_commit')}`: `{r.get('command')}`"
        )
    return lines


def _first_token(record: dict[str, Any], n: int) -> dict[str, Any] | None:
    for p in record.get("prefill", []):
        if p["prompt_tokens"] == n:
            return p
    return None


def worker_markdown(records: list[dict[str, Any]]) -> str:
    head = (
        "| model | file MiB | weights on device MiB (allocated) | process→ready s | loader s (GB/s) "
        "| first token ms (prompt tokens: ms) | decode tok/s | ms/token (p95 inter-token) | MB read/token "
        "| achieved GB/s | % of copy BW | floor tok/s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = []
    for r in records:
        m, mem, load, d = r["model"], r["memory"], r["load"], r["decode"]
        weights = mem["accounted_by_category"].get("weights")
        allocated = mem.get("torch_allocated_bytes", mem.get("worker_process_device_bytes"))
        first = " / ".join(f"{p['prompt_tokens']}: {p['first_token_ms']:,.1f}" for p in r.get("prefill", []))
        rows.append(
            f"| {m['name']} ({r['mode']}) | {_mib(m['file_bytes'])} | {_mib(weights)} ({_mib(allocated)}) "
            f"| {_num(load['process_start_to_ready_s'], '.2f')} "
            f"| {_num(load['loader_copy_s'], '.2f')} ({_num(load.get('loader_gbps'), '.2f')}) "
            f"| {first or '–'} "
            f"| **{_num(d['tok_s'], ',.2f')}** | {_num(d['ms_per_token'], '.2f')} ({_num(d['inter_token_ms_p95'], '.2f')}) "
            f"| {m['weight_bytes_per_token'] / 1e6:,.1f} | {_num(d.get('achieved_gbps'))} "
            f"| {_num(d.get('pct_of_copy'))} | {_num(d.get('floor_tok_s'), ',.0f')} |"
        )
    notes = [
        "",
        "Decode: greedy, median of the runs' tokens/s; MB read/token = weight bytes one decoded token reads "
        "(experts: the used share; untied token_embd: one row); achieved GB/s = MB read/token × tok/s; "
        "floor = copy bandwidth / bytes per token.",
    ]
    reduced = [r["model"]["name"] for r in records if r["decode"].get("reduced_to_fit_budget")]
    if reduced:
        notes.append(f"Runs or tokens were cut to fit the time budget for: {', '.join(reduced)}.")
    return "\n".join([head, *rows, *notes, "", *_run_lines(records)])


def _llama_test(record: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return record.get("tests", {}).get(kind)


def llamacpp_markdown(records: list[dict[str, Any]]) -> str:
    head = (
        "| model | llama.cpp build | tg128 tok/s | pp512 tok/s | MB read/token | achieved GB/s | % of copy BW |\n"
        "|---|---|---:|---:|---:|---:|---:|"
    )
    rows = []
    for r in records:
        tg, pp = _llama_test(r, "tg128"), _llama_test(r, "pp512")
        rows.append(
            f"| {r['model']['name']} | {_llama_build(r)} "
            f"| **{_num(tg and tg['avg_ts'], ',.2f')}** ± {_num(tg and tg['stddev_ts'], '.2f')} "
            f"| {_num(pp and pp['avg_ts'], ',.0f')} ± {_num(pp and pp['stddev_ts'], ',.0f')} "
            f"| {r['model']['weight_bytes_per_token'] / 1e6:,.1f} | {_num(r.get('achieved_gbps'))} "
            f"| {_num(r.get('pct_of_copy'))} |"
        )
    return "\n".join([head, *rows, "", *_run_lines(records)])


def side_by_side(workers: list[dict[str, Any]], llamas: list[dict[str, Any]]) -> tuple[str, list[dict]]:
    """One row per model file: decode and prefill of the worker (in process) next to llama-bench's tg128
    and pp512; where the same run also timed the worker over HTTP/SSE, that decode rate and its ratio to
    the in-process one (the HTTP target: within 10 %)."""
    by_file = {r["model"]["file"]: r for r in llamas}
    in_process = [w for w in workers if w.get("mode") != "http"]
    # HTTP records are a column beside the in-process ones; without those they are the rows themselves.
    over_http = {r["model"]["file"]: r for r in workers if r.get("mode") == "http"} if in_process else {}
    http_head = " over HTTP tok/s | HTTP / in process |" if over_http else ""
    head = (
        "| model | MB read/token | floor tok/s | worker decode tok/s | graphs off tok/s | llama.cpp tg128 tok/s "
        f"| worker / llama.cpp | worker prefill tok/s @512 | llama.cpp pp512 tok/s |{http_head}\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|---:|" * bool(over_http)
    )
    rows, table = [], []
    for w in in_process or workers:
        file = w["model"]["file"]
        llama = by_file.get(file)
        tg = llama and _llama_test(llama, "tg128")
        pp = llama and _llama_test(llama, "pp512")
        p512 = _first_token(w, 512)
        ratio = w["decode"]["tok_s"] / tg["avg_ts"] if tg else None
        eager = w["decode"].get("without_graphs") or {}
        entry = {
            "file": file,
            "weight_bytes_per_token": w["model"]["weight_bytes_per_token"],
            "floor_tok_s": w["decode"].get("floor_tok_s"),
            "worker_decode_tok_s": w["decode"]["tok_s"],
            "worker_decode_graphs_off_tok_s": eager.get("tok_s"),
            "llamacpp_tg128_tok_s": tg and tg["avg_ts"],
            "worker_over_llamacpp": ratio and round(ratio, 4),
            "worker_prefill512_tok_s": p512 and p512["prefill_tok_s"],
            "llamacpp_pp512_tok_s": pp and pp["avg_ts"],
        }
        http_cells = ""
        if over_http:
            http = over_http.get(file)
            entry["worker_decode_http_tok_s"] = http and http["decode"]["tok_s"]
            http_ratio = http and http["decode"]["tok_s"] / w["decode"]["tok_s"]
            entry["http_over_in_process"] = http_ratio and round(http_ratio, 4)
            http_cells = f" {_num(entry['worker_decode_http_tok_s'], ',.2f')} | {_num(http_ratio, '.3f')} |"
        table.append(entry)
        rows.append(
            f"| {w['model']['name']} | {entry['weight_bytes_per_token'] / 1e6:,.1f} "
            f"| {_num(entry['floor_tok_s'], ',.0f')} | **{_num(entry['worker_decode_tok_s'], ',.2f')}** "
            f"| {_num(entry['worker_decode_graphs_off_tok_s'], ',.2f')} "
            f"| **{_num(entry['llamacpp_tg128_tok_s'], ',.2f')}** | {_num(ratio, '.3f')} "
            f"| {_num(entry['worker_prefill512_tok_s'], ',.0f')} | {_num(entry['llamacpp_pp512_tok_s'], ',.0f')} |"
            + http_cells
        )
    return "\n".join([head, *rows]), table


def full_report(records: list[dict[str, Any]], title: str) -> tuple[str, dict[str, Any]]:
    workers = [r for r in records if r.get("kind") == "worker-decode"]
    llamas = [r for r in records if r.get("kind") == "llama-bench"]
    parts = [f"# {title}", ""]
    combined: dict[str, Any] = {"title": title, "records": records}
    if workers and llamas:
        text, table = side_by_side(workers, llamas)
        parts += ["## Side by side (same device, same run)", "", text, ""]
        combined["side_by_side"] = table
    if workers:
        parts += ["## Reference worker", "", worker_markdown(workers), ""]
    if llamas:
        parts += [
            "## llama.cpp (llama-bench -ngl 99 -fa 1 -p 512 -n 128 -r 3)",
            "",
            llamacpp_markdown(llamas),
            "",
        ]
    return "\n".join(parts), combined


def load_records(paths: list[Path]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in paths:
        data = json.loads(path.read_text())
        records += data if isinstance(data, list) else [data]
    return records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n")[0])
    p.add_argument("records", nargs="+", type=Path)
    p.add_argument("--title", default="Decode benchmark")
    p.add_argument("--out-md", type=Path)
    p.add_argument("--out-json", type=Path)
    args = p.parse_args(argv)
    missing = [str(f) for f in args.records if not f.is_file()]
    if missing:
        print(f"error: no such record file: {', '.join(missing)}", file=sys.stderr)
        return 1
    text, combined = full_report(load_records(args.records), args.title)
    if args.out_md:
        args.out_md.write_text(text)
    if args.out_json:
        args.out_json.write_text(json.dumps(combined, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
