"""Self-contained HTML: one page per gate and an index of all gates.

Plain HTML with inline CSS and no script, so a page opens from disk, from a CI artefact store or from an
e-mail attachment and looks the same everywhere. Every page opens with the verdict and the checklist;
details (failure text, worker logs, provenance) follow below.
"""

from __future__ import annotations

import hashlib
from html import escape
from pathlib import Path

from steps.report.provenance import file_sha256
from steps.report.results import ADVISORY, FAIL, NOT_APPLICABLE, NOT_RUN, PASS, ScenarioResult
from steps.report.rollup import (
    GREEN,
    INCOMPLETE,
    NOT_COVERED,
    OUT_OF_SCOPE,
    RED,
    WAIVED,
    GateVerdict,
    RequirementRow,
)

LOG_TAIL_BYTES = 8000
COLLAPSE_PASSES = 5  # passing scenarios listed per requirement before they are folded

LABELS = {
    PASS: "PASS",
    FAIL: "FAIL",
    ADVISORY: "ADVISORY",
    NOT_APPLICABLE: "NOT APPLICABLE",
    NOT_RUN: "NOT RUN",
    INCOMPLETE: "INCOMPLETE",
    NOT_COVERED: "NOT COVERED",
    WAIVED: "WAIVED",
    OUT_OF_SCOPE: "OUT OF SCOPE",
    GREEN: "GREEN",
    RED: "RED",
}

CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1f2328;
 margin:0;background:#f6f8fa}
main{max-width:1320px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:19px;margin:32px 0 10px;padding-bottom:6px;border-bottom:1px solid #d0d7de}
a{color:#0969da;text-decoration:none} a:hover{text-decoration:underline}
.head{display:flex;gap:24px;align-items:center;background:#fff;border:1px solid #d0d7de;border-radius:10px;
 padding:18px 22px;border-left-width:10px}
.head.green{border-left-color:#1a7f37}.head.red{border-left-color:#cf222e}.head.incomplete{border-left-color:#bf8700}
.head .verdict{font-size:30px;font-weight:700;letter-spacing:.04em;min-width:190px}
.head.green .verdict{color:#1a7f37}.head.red .verdict{color:#cf222e}.head.incomplete .verdict{color:#9a6700}
.head .what{flex:1}.sub{color:#57606a;font-size:13px}
.counts{display:flex;gap:10px;flex-wrap:wrap;margin-top:10px}
.count{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:3px 9px;font-size:13px}
.count b{font-size:15px}.count.zero{opacity:.5}
.desc{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 16px;margin-top:14px;color:#3d444d}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de;border-radius:8px;
 overflow:hidden}
th{background:#eef1f4;text-align:left;font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#57606a;
 padding:8px 10px;border-bottom:1px solid #d0d7de}
td{padding:9px 10px;border-top:1px solid #e6e9ed;vertical-align:top}
tr.item td{border-top:2px solid #d0d7de}
td.num{color:#57606a;width:34px;text-align:right}
td.text{width:34%;font-weight:500}
td.v{width:150px}
.badge{display:inline-block;border-radius:12px;padding:2px 10px;font-size:12px;font-weight:700;letter-spacing:.03em;
 white-space:nowrap;border:1px solid transparent}
.b-pass,.b-green{background:#dafbe1;color:#116329;border-color:#aceebb}
.b-fail,.b-red{background:#ffebe9;color:#a40e26;border-color:#ffcecb}
.b-advisory{background:#fff1e5;color:#953800;border-color:#ffd8b5}
.b-not-applicable{background:#eaeef2;color:#424a53;border-color:#d0d7de}
.b-not-run{background:#fff;color:#57606a;border-color:#afb8c1;border-style:dashed}
.b-incomplete{background:#fff8c5;color:#7d4e00;border-color:#eed888}
.b-not-covered{background:#fff;color:#9a6700;border-color:#d4a72c;border-style:dashed}
.b-waived{background:#fbefff;color:#6e40c9;border-color:#e2c5ff}
.b-out-of-scope{background:#fff;color:#6e7781;border-color:#d0d7de}
.req{margin:0 0 8px}.req:last-child{margin-bottom:0}
.rid{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;font-weight:600;
 background:#eef1f4;border-radius:4px;padding:1px 6px;white-space:nowrap}
.rtitle{color:#57606a;font-size:13px}
ul.sc{list-style:none;margin:4px 0 0 14px;padding:0}
ul.sc li{margin:2px 0;font-size:13px}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:6px;vertical-align:middle}
.d-pass{background:#1a7f37}.d-fail{background:#cf222e}.d-not-applicable{background:#8c959f}.d-advisory{background:#bc4c00}
.d-not-run{background:#fff;border:1px dashed #8c959f}
.why{color:#57606a;font-style:italic}
.none{color:#9a6700;font-size:13px}.waiver{color:#6e40c9;font-size:13px}
.tags span{display:inline-block;margin:0 4px 3px 0}
.tag{font-size:12px;background:#ddf4ff;color:#0550ae;border-radius:4px;padding:1px 6px;white-space:nowrap}
.tag.g{background:#fff1e5;color:#953800}.tag.m{background:#f6f8fa;color:#424a53;border:1px solid #d0d7de}
tr.detail td{background:#fbfbfc;border-top:none;padding-top:0}
details summary{cursor:pointer;color:#0969da;font-size:13px;margin:4px 0}
pre{background:#0d1117;color:#e6edf3;padding:10px 12px;border-radius:6px;overflow:auto;max-height:420px;
 font-size:12px;line-height:1.4;white-space:pre-wrap;word-break:break-word}
pre.assertion{background:#fff5f5;color:#82071e;border:1px solid #ffcecb;max-height:220px}
pre.assertion .where{color:#57606a}
ol.steps{margin:6px 0;padding-left:22px;font-size:13px}
.st-failed{color:#cf222e;font-weight:600}.st-not-reached{color:#8c959f}
table.kv td:first-child{width:190px;color:#57606a;font-weight:500}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;word-break:break-all;
 white-space:pre-wrap}
.synthetic{color:#9a6700;font-weight:600}.real{color:#1a7f37;font-weight:600}
.file{color:#57606a;font-size:12.5px}
.legend{font-size:13px;color:#57606a;margin-top:8px}
footer{margin-top:36px;color:#57606a;font-size:12.5px}
"""


def badge(verdict: str) -> str:
    return f'<span class="badge b-{verdict}">{LABELS.get(verdict, verdict.upper())}</span>'


def anchor(nodeid: str) -> str:
    return "s-" + hashlib.sha1(nodeid.encode()).hexdigest()[:12]


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>{body}</main></body></html>\n"
    )


def _scenario_line(scenario: ScenarioResult, link: bool = True) -> str:
    name = escape(scenario.name)
    if link:
        name = f'<a href="#{anchor(scenario.nodeid)}">{name}</a>'
    why = f' <span class="why">— {escape(scenario.reason)}</span>' if scenario.reason else ""
    return f'<li><span class="dot d-{scenario.verdict}"></span>{name}{_real_file(scenario)}{why}</li>'


def _real_file(scenario: ScenarioResult) -> str:
    """The real model file a checklist row's scenario ran on, by name and SHA-256 prefix: an item that names
    the spec's model may be judged on a real sibling file (features/ERRATA.md E-31), and the row says which."""
    if not scenario.model_file or scenario.model_synthetic:
        return ""
    digest = file_sha256(scenario.model_file)
    sha = f", sha256 {digest[:12]}…" if digest else ""
    return (
        f' <span class="file">on the real file <span class="mono" title="{escape(scenario.model_file)}">'
        f"{escape(Path(scenario.model_file).name)}</span>{escape(sha)}</span>"
    )


def _requirement_block(row: RequirementRow) -> str:
    req = row.requirement
    head = (
        f'<div class="req"><span class="rid">{escape(req.id)}</span> '
        f'<span class="rtitle">{escape(req.title)} · {escape(req.level)} · {escape(req.section)}</span>'
    )
    passed = [s for s in row.scenarios if s.verdict == PASS]
    if len(passed) > COLLAPSE_PASSES:  # long outlines: show what needs attention, fold the passes
        others = [s for s in row.scenarios if s.verdict != PASS]
        body = (
            '<ul class="sc">' + "".join(_scenario_line(s) for s in others) + "</ul>"
            f'<details><summary>{len(passed)} scenarios pass</summary><ul class="sc">'
            + "".join(_scenario_line(s) for s in passed)
            + "</ul></details>"
        )
    elif row.scenarios:
        body = '<ul class="sc">' + "".join(_scenario_line(s) for s in row.scenarios) + "</ul>"
    elif req.waiver:
        body = f'<div class="waiver">Waived: {escape(req.waiver)}</div>'
    else:
        body = '<div class="none">No scenario exercises this requirement for this gate.</div>'
    return head + body + "</div>"


def _counts(pairs: list[tuple[str, int]]) -> str:
    return (
        '<div class="counts">'
        + "".join(f'<span class="count"><b>{n}</b> {escape(label)}</span>' for label, n in pairs)
        + "</div>"
    )


def _tags(scenario: ScenarioResult, link_gates: bool) -> tuple[str, str, str]:
    labels = scenario.labels
    ids = "".join(f'<span class="tag">{escape(r)}</span>' for r in labels.requirements)
    gates = "".join(
        (f'<a href="gate-{escape(g)}.html">' if link_gates else "")
        + f'<span class="tag g">{escape(g)}</span>'
        + ("</a>" if link_gates else "")
        for g in labels.gates
    )
    subject = "".join(
        f'<span class="tag m">{escape(t)}</span>'
        for t in (*labels.models, *labels.quants, *labels.milestones)
    )
    return (
        f'<div class="tags">{ids}</div>',
        f'<div class="tags">{gates}</div>',
        f'<div class="tags">{subject}</div>',
    )


def _log_tail(path: str) -> str:
    file = Path(path)
    try:
        size = file.stat().st_size
        with file.open("rb") as handle:
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(log not readable: {exc})"
    cut = f"… last {LOG_TAIL_BYTES} of {size} bytes …\n" if size > LOG_TAIL_BYTES else ""
    return cut + (text or "(empty)")


def _detail(scenario: ScenarioResult) -> str:
    parts = []
    if scenario.steps:
        steps = "".join(
            f'<li class="st-{s.status.replace(" ", "-")}">{escape(s.keyword)} {escape(s.text)}'
            + ("" if s.status == "passed" else f" <em>({escape(s.status)})</em>")
            + "</li>"
            for s in scenario.steps
        )
        parts.append(f'<ol class="steps">{steps}</ol>')
    if scenario.detail:
        lines = scenario.detail.splitlines()
        assertion = "\n".join(line[1:].strip() for line in lines if line.startswith("E "))
        where = next((line for line in reversed(lines) if line.strip()), "")
        parts.append(
            f'<pre class="assertion">{escape(assertion or where)}\n<span class="where">{escape(where)}</span></pre>'
        )
        parts.append(
            f"<details><summary>Full traceback</summary><pre>{escape(scenario.detail)}</pre></details>"
        )
    for label, path in scenario.worker_logs:
        parts.append(
            f'<details><summary>Worker log: {escape(label)} <span class="mono">{escape(path)}</span></summary>'
            f"<pre>{escape(_log_tail(path))}</pre></details>"
        )
    return "".join(parts)


def results_table(scenarios: list[ScenarioResult], link_gates: bool = True) -> str:
    if not scenarios:
        return '<p class="none">No scenario of this gate was collected in this run.</p>'
    order = {FAIL: 0, ADVISORY: 1, NOT_APPLICABLE: 2, NOT_RUN: 3, PASS: 4}
    rows = []
    for s in sorted(scenarios, key=lambda s: (order.get(s.verdict, 9), s.nodeid)):
        ids, gates, subject = _tags(s, link_gates)
        why = f'<div class="why">{escape(s.reason)}</div>' if s.reason else ""
        rows.append(
            f'<tr id="{anchor(s.nodeid)}"><td class="v">{badge(s.verdict)}</td>'
            f'<td><b>{escape(s.name)}</b><div class="sub">{escape(s.feature)} · '
            f'<span class="mono">{escape(s.location)}</span></div>{why}</td>'
            f"<td>{ids}</td><td>{gates}</td><td>{subject}</td><td>{s.duration_s:.2f} s</td></tr>"
        )
        if s.verdict in (FAIL, ADVISORY):
            rows.append(f'<tr class="detail"><td></td><td colspan="5">{_detail(s)}</td></tr>')
    return (
        "<table><thead><tr><th>Verdict</th><th>Scenario</th><th>Spec IDs</th><th>Gates</th>"
        "<th>Model · quant · milestone</th><th>Time</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def provenance_section(provenance: dict) -> str:
    worker = provenance.get("worker", {})
    git = provenance.get("git", {})
    commit = str(git.get("commit", ""))
    if git.get("modified"):
        commit += " (with uncommitted changes)"
    versions = ", ".join(f"{k} {v}" for k, v in provenance.get("versions", {}).items())
    rows = [
        (f"Worker {key}", "\n".join(map(str, value)) if isinstance(value, list) else value)
        for key, value in worker.items()
    ]
    rows += [
        ("Device", provenance.get("device", "")),
        ("Harness commit", commit),
        ("Command", provenance.get("command", "")),
        (
            "Started / finished (UTC)",
            f"{provenance.get('started_at', '')} / {provenance.get('finished_at', '')}",
        ),
        ("Host", provenance.get("host", "")),
        ("Python", provenance.get("python", "")),
        ("Packages", versions),
    ]
    kv = "".join(f'<tr><td>{escape(k)}</td><td class="mono">{escape(str(v))}</td></tr>' for k, v in rows)
    models = provenance.get("models", [])
    if models:
        model_rows = "".join(
            f'<tr><td>{escape(str(m.get("role", "")))}</td><td class="mono">{escape(str(m.get("path", "")))}</td>'
            + (
                '<td class="synthetic">synthetic stand-in</td>'
                if m.get("synthetic")
                else '<td class="real">real model file</td>'
            )
            + f'<td class="mono">{escape(str(m.get("sha256", "")))}</td></tr>'
            for m in models
        )
        model_table = (
            "<h3>Model files</h3><table><thead><tr><th>Role</th><th>Path</th><th>Kind</th><th>SHA-256</th></tr>"
            f"</thead><tbody>{model_rows}</tbody></table>"
        )
    else:
        model_table = '<p class="none">No model files were recorded by the harness in this run.</p>'
    return f'<h2>Run provenance</h2><table class="kv"><tbody>{kv}</tbody></table>{model_table}'


def _gate_counts(gv: GateVerdict) -> str:
    pairs = [
        ("items", len(gv.items)),
        ("pass", gv.count(PASS)),
        ("fail", gv.count(FAIL)),
        ("advisory", gv.count(ADVISORY)),
        ("incomplete", gv.count(INCOMPLETE)),
        ("not covered", gv.count(NOT_COVERED)),
        ("waived", gv.count(WAIVED)),
        ("scenarios", len(gv.scenarios)),
    ]
    return _counts(pairs)


VERDICT_HELP = (
    "An item passes only when every scenario mapped to its requirements ran and passed, and each of its "
    "requirements has at least one scenario. A skipped scenario (not applicable) never counts as a pass. "
    "A gate is green only when every item passed (waived items excepted)."
)


def render_gate(gv: GateVerdict, provenance: dict) -> str:
    gate = gv.gate
    checklist = []
    for number, iv in enumerate(gv.items, start=1):
        blocks = "".join(_requirement_block(row) for row in iv.rows)
        checklist.append(
            f'<tr class="item"><td class="num">{number}</td><td class="text">{escape(iv.item.text)}</td>'
            f'<td>{blocks}</td><td class="v">{badge(iv.verdict)}</td></tr>'
        )
    body = (
        f'<div class="sub"><a href="index.html">← all gates</a> · milestone {escape(gate.milestone)}</div>'
        f'<div class="head {gv.verdict}"><div class="verdict">{LABELS[gv.verdict]}</div>'
        f'<div class="what"><h1>{escape(gate.title)}</h1>'
        f'<div class="sub">Gate <span class="mono">{escape(gate.id)}</span> · scenarios tagged '
        f'<span class="mono">@{escape(gate.tag)}</span> · source: {escape(gate.source)}</div>'
        f"{_gate_counts(gv)}</div></div>"
        f'<div class="desc">{escape(gate.description)}</div>'
        "<h2>Gate checklist</h2>"
        "<table><thead><tr><th>#</th><th>Checklist item</th><th>Spec requirements → scenarios</th>"
        f"<th>Verdict</th></tr></thead><tbody>{''.join(checklist)}</tbody></table>"
        f'<div class="legend">{VERDICT_HELP}</div>'
        "<h2>Results</h2>"
        + results_table(list(gv.scenarios))
        + provenance_section(provenance)
        + "<footer>Generated by the worker-orcd conformance harness. Machine-readable verdicts: "
        '<a href="verdicts.json">verdicts.json</a>, <a href="junit.xml">junit.xml</a>, '
        '<a href="cucumber.json">cucumber.json</a>.</footer>'
    )
    return page(f"{LABELS[gv.verdict]} · {gate.title}", body)


def render_index(
    gates: list[GateVerdict],
    requirements: dict[str, RequirementRow],
    pending: dict[str, str],
    scenarios: list[ScenarioResult],
    provenance: dict,
) -> str:
    rows = []
    for gv in gates:
        rows.append(
            f'<tr><td class="v">{badge(gv.verdict)}</td><td><a href="gate-{escape(gv.gate.id)}.html">'
            f'<b>{escape(gv.gate.title)}</b></a><div class="sub">{escape(gv.gate.source)}</div></td>'
            f"<td>{escape(gv.gate.milestone)}</td><td>{len(gv.items)}</td><td>{gv.count(PASS)}</td>"
            f"<td>{gv.count(FAIL)}</td><td>{gv.count(INCOMPLETE)}</td><td>{gv.count(NOT_COVERED)}</td>"
            f"<td>{gv.count(WAIVED)}</td><td>{len(gv.scenarios)}</td></tr>"
        )
    verdict_counts = [
        (v, sum(1 for s in scenarios if s.verdict == v))
        for v in (PASS, FAIL, ADVISORY, NOT_APPLICABLE, NOT_RUN)
    ]
    uncovered = [row for row in requirements.values() if row.verdict == NOT_COVERED]
    waived = [row for row in requirements.values() if row.verdict == WAIVED]
    unc_rows = "".join(
        f'<tr><td><span class="rid">{escape(r.requirement.id)}</span></td><td>{escape(r.requirement.title)}</td>'
        f"<td>{escape(r.requirement.milestone)}</td><td>{escape(pending.get(r.requirement.id, 'not in the pending list'))}</td></tr>"
        for r in uncovered
    )
    waived_rows = "".join(
        f'<tr><td><span class="rid">{escape(r.requirement.id)}</span></td><td>{escape(r.requirement.title)}</td>'
        f'<td class="waiver">{escape(r.requirement.waiver or "")}</td></tr>'
        for r in waived
    )
    failing = [s for s in scenarios if s.verdict == FAIL]
    body = (
        "<h1>worker-orcd conformance: all gates</h1>"
        f'<div class="sub">{escape(str(provenance.get("started_at", "")))} · commit '
        f'<span class="mono">{escape(str(provenance.get("git", {}).get("commit", ""))[:12])}</span> · '
        f"{escape(str(provenance.get('device', '')))}</div>"
        + _counts([(f"scenarios {LABELS[v].lower()}", n) for v, n in verdict_counts])
        + "<h2>Gates</h2><table><thead><tr><th>Verdict</th><th>Gate</th><th>Milestone</th><th>Items</th>"
        "<th>Pass</th><th>Fail</th><th>Incomplete</th><th>Not covered</th><th>Waived</th><th>Scenarios</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f'<div class="legend">{VERDICT_HELP}</div>'
        + ("<h2>Failing scenarios</h2>" + results_table(failing) if failing else "")
        + f"<h2>Requirements no scenario exercised in this run ({len(uncovered)})</h2>"
        + (
            "<table><thead><tr><th>ID</th><th>Requirement</th><th>Milestone</th><th>Planned coverage</th></tr>"
            f"</thead><tbody>{unc_rows}</tbody></table>"
            if uncovered
            else "<p>Every in-scope requirement was exercised by at least one scenario.</p>"
        )
        + f"<h2>Waived requirements ({len(waived)})</h2>"
        + (
            "<table><thead><tr><th>ID</th><th>Requirement</th><th>Why no scenario, and what is checked instead</th>"
            f"</tr></thead><tbody>{waived_rows}</tbody></table>"
            if waived
            else "<p>None.</p>"
        )
        + provenance_section(provenance)
        + '<footer><a href="verdicts.json">verdicts.json</a> · <a href="junit.xml">junit.xml</a> · '
        '<a href="cucumber.json">cucumber.json</a></footer>'
    )
    return page("worker-orcd conformance: all gates", body)
