"""Writes the report directory: verdicts.json, index.html and one gate-<id>.html per gate.

JUnit XML and Cucumber JSON are written by pytest (`--junitxml`) and pytest-bdd (`--cucumberjson`);
the plugin points both into the same directory.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict
from pathlib import Path

from steps.report import html
from steps.report.catalogue import Catalogue
from steps.report.provenance import file_sha256
from steps.report.results import ScenarioResult
from steps.report.rollup import NOT_COVERED, all_gate_verdicts, requirement_rows

SCHEMA_VERSION = 1


def read_pending(path: Path) -> dict[str, str]:
    """features/coverage-pending.toml: requirement ID -> the area that will cover it."""
    if not path.is_file():
        return {}
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return {
        rid: str(entry.get("area", "")) for entry in data.get("pending", []) for rid in entry.get("ids", [])
    }


def _scenario_json(s: ScenarioResult) -> dict[str, object]:
    return {
        "nodeid": s.nodeid,
        "name": s.name,
        "feature": s.feature,
        "location": s.location,
        "verdict": s.verdict,
        "reason": s.reason,
        "duration_s": round(s.duration_s, 3),
        "requirements": list(s.labels.requirements),
        "gates": list(s.labels.gates),
        "models": list(s.labels.models),
        "quants": list(s.labels.quants),
        "milestones": list(s.labels.milestones),
        "capabilities": list(s.labels.capabilities),
        "steps": [asdict(step) for step in s.steps],
        "worker_logs": [{"label": label, "path": path} for label, path in s.worker_logs],
        **(
            {
                "model_file": s.model_file,
                "model_synthetic": s.model_synthetic,
                "model_sha256": file_sha256(s.model_file),
            }
            if s.model_file
            else {}
        ),
    }


def write_reports(
    directory: Path,
    catalogue: Catalogue,
    scenarios: list[ScenarioResult],
    provenance: dict,
    pending: dict[str, str],
) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    gates = all_gate_verdicts(catalogue, scenarios)
    requirements = requirement_rows(catalogue, scenarios)
    document = {
        "schema": SCHEMA_VERSION,
        "run": provenance,
        "summary": {
            "scenarios": {
                v: sum(1 for s in scenarios if s.verdict == v) for v in sorted({s.verdict for s in scenarios})
            },
            "gates": {gv.gate.id: gv.verdict for gv in gates},
        },
        "gates": [
            {
                "id": gv.gate.id,
                "title": gv.gate.title,
                "milestone": gv.gate.milestone,
                "verdict": gv.verdict,
                "scenarios": [s.nodeid for s in gv.scenarios],
                "items": [
                    {
                        "text": iv.item.text,
                        "verdict": iv.verdict,
                        "requirements": [
                            {
                                "id": row.requirement.id,
                                "verdict": row.verdict,
                                "scenarios": [s.nodeid for s in row.scenarios],
                            }
                            for row in iv.rows
                        ],
                    }
                    for iv in gv.items
                ],
            }
            for gv in gates
        ],
        "requirements": {
            rid: {
                "title": row.requirement.title,
                "level": row.requirement.level,
                "milestone": row.requirement.milestone,
                "status": row.requirement.status,
                "verdict": row.verdict,
                "scenarios": [s.nodeid for s in row.scenarios],
                "waiver": row.requirement.waiver,
                "errata": row.requirement.errata,
                "pending_area": pending.get(rid),
            }
            for rid, row in requirements.items()
        },
        "uncovered": [rid for rid, row in requirements.items() if row.verdict == NOT_COVERED],
        "scenarios": [_scenario_json(s) for s in scenarios],
    }
    written = [directory / "verdicts.json"]
    written[0].write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for gv in gates:
        path = directory / f"gate-{gv.gate.id}.html"
        path.write_text(html.render_gate(gv, provenance), encoding="utf-8")
        written.append(path)
    index = directory / "index.html"
    index.write_text(html.render_index(gates, requirements, pending, scenarios, provenance), encoding="utf-8")
    written.append(index)
    return written
