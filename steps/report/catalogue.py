"""The requirement catalogue, the gate manifest and the tag vocabulary, as the reports read them.

`features/requirements.toml`, `features/gates.toml` and `features/tags.toml` are the single source: the
reports classify a scenario's markers with them (a marker is a requirement ID, a `gate_<id>`, a model, a
quant, a milestone or a capability) and roll verdicts up along the gate items they declare.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

GATE_TAG_PREFIX = "gate_"
LEVELS = ("MUST", "SHOULD", "MAY", "—")
MILESTONES = ("M0", "M0.5", "M1")
STATUSES = ("m0", "deferred", "optional", "removed")
VERIFY_KINDS = ("http", "process", "gpu", "numeric", "doc")
TAG_TABLES = ("models", "quants", "milestones", "capabilities")


class CatalogueError(ValueError):
    """A manifest is missing or malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Requirement:
    id: str
    title: str
    level: str
    milestone: str
    status: str
    verify: tuple[str, ...]
    section: str
    waiver: str | None = None
    errata: str | None = None

    @property
    def in_scope(self) -> bool:
        """Optional and removed requirements are listed but never demanded of a worker."""
        return self.status in ("m0", "deferred")


@dataclass(frozen=True)
class GateItem:
    text: str
    requirements: tuple[str, ...]


@dataclass(frozen=True)
class Gate:
    id: str
    title: str
    milestone: str
    source: str
    description: str
    items: tuple[GateItem, ...]

    @property
    def tag(self) -> str:
        return GATE_TAG_PREFIX + self.id


@dataclass(frozen=True)
class Labels:
    """A scenario's markers sorted into the catalogue's kinds."""

    requirements: tuple[str, ...] = ()
    gates: tuple[str, ...] = ()  # gate ids, without the `gate_` prefix
    models: tuple[str, ...] = ()
    quants: tuple[str, ...] = ()
    milestones: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalogue:
    requirements: dict[str, Requirement]
    gates: dict[str, Gate]
    tags: dict[str, dict[str, str]] = field(default_factory=dict)  # table -> tag -> description

    @classmethod
    def load(cls, directory: Path) -> Catalogue:
        requirements = _load_requirements(directory / "requirements.toml")
        gates = _load_gates(directory / "gates.toml", requirements)
        tags_path = directory / "tags.toml"
        data = _read(tags_path)
        tags: dict[str, dict[str, str]] = {}
        for table in TAG_TABLES:
            entries = data.get(table, {})
            if not isinstance(entries, dict):
                raise CatalogueError(f"{tags_path}: [{table}] must map tag names to descriptions")
            tags[table] = {str(name): str(text) for name, text in entries.items()}
        return cls(requirements=requirements, gates=gates, tags=tags)

    def classify(self, markers: set[str] | list[str] | tuple[str, ...]) -> Labels:
        names = set(markers)
        gate_ids = {name.removeprefix(GATE_TAG_PREFIX) for name in names if name.startswith(GATE_TAG_PREFIX)}
        return Labels(
            requirements=tuple(rid for rid in self.requirements if rid in names),  # catalogue order
            gates=tuple(gid for gid in self.gates if gid in gate_ids),
            models=tuple(sorted(names & self.tags.get("models", {}).keys())),
            quants=tuple(sorted(names & self.tags.get("quants", {}).keys())),
            milestones=tuple(sorted(names & self.tags.get("milestones", {}).keys())),
            capabilities=tuple(sorted(names & self.tags.get("capabilities", {}).keys())),
        )

    def known_tag(self, tag: str) -> bool:
        if tag in self.requirements:
            return True
        if tag.startswith(GATE_TAG_PREFIX) and tag.removeprefix(GATE_TAG_PREFIX) in self.gates:
            return True
        return any(tag in table for table in self.tags.values())


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogueError(f"{path}: catalogue file is missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{path}: not valid TOML ({exc})") from None


def _choice(path: Path, where: str, name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise CatalogueError(f"{path}: {where}: {name} is {value!r}, expected one of {', '.join(allowed)}")
    return str(value)


def _load_requirements(path: Path) -> dict[str, Requirement]:
    rows = _read(path).get("requirement", [])
    requirements: dict[str, Requirement] = {}
    for number, row in enumerate(rows, start=1):
        where = f"[[requirement]] #{number} ({row.get('id', 'no id')})"
        missing = [
            key
            for key in ("id", "title", "level", "milestone", "status", "verify", "section")
            if key not in row
        ]
        if missing:
            raise CatalogueError(f"{path}: {where} lacks {', '.join(missing)}")
        rid = str(row["id"])
        if rid in requirements:
            raise CatalogueError(f"{path}: {where}: id {rid} appears twice")
        verify = row["verify"]
        if not isinstance(verify, list) or not verify:
            raise CatalogueError(f"{path}: {where}: verify must be a non-empty list")
        for kind in verify:
            _choice(path, where, "verify entry", kind, VERIFY_KINDS)
        requirements[rid] = Requirement(
            id=rid,
            title=str(row["title"]),
            level=_choice(path, where, "level", row["level"], LEVELS),
            milestone=_choice(path, where, "milestone", row["milestone"], MILESTONES),
            status=_choice(path, where, "status", row["status"], STATUSES),
            verify=tuple(verify),
            section=str(row["section"]),
            waiver=row.get("waiver"),
            errata=row.get("errata"),
        )
    return requirements


def _load_gates(path: Path, requirements: dict[str, Requirement]) -> dict[str, Gate]:
    gates: dict[str, Gate] = {}
    for number, row in enumerate(_read(path).get("gate", []), start=1):
        where = f"[[gate]] #{number} ({row.get('id', 'no id')})"
        missing = [
            key for key in ("id", "title", "milestone", "source", "description", "item") if key not in row
        ]
        if missing:
            raise CatalogueError(f"{path}: {where} lacks {', '.join(missing)}")
        items = []
        for item_number, item in enumerate(row["item"], start=1):
            refs = tuple(item.get("requirements", ()))
            unknown = [rid for rid in refs if rid not in requirements]
            if not item.get("text") or not refs or unknown:
                problem = (
                    f"unknown requirement IDs {', '.join(unknown)}"
                    if unknown
                    else "needs text and requirements"
                )
                raise CatalogueError(f"{path}: {where} item #{item_number}: {problem}")
            items.append(GateItem(text=str(item["text"]), requirements=refs))
        gate = Gate(
            id=str(row["id"]),
            title=str(row["title"]),
            milestone=_choice(path, where, "milestone", row["milestone"], MILESTONES),
            source=str(row["source"]),
            description=" ".join(str(row["description"]).split()),
            items=tuple(items),
        )
        if gate.id in gates:
            raise CatalogueError(f"{path}: {where}: gate id {gate.id} appears twice")
        gates[gate.id] = gate
    return gates
