"""The tag vocabulary of the feature files: spec IDs, gates, models, quants, milestones, capabilities.

Every Gherkin tag becomes a pytest marker, so each one must be declared. The vocabulary is read from the
three manifests next to the features (requirements.toml, gates.toml, tags.toml); a tag outside it is a
collection error naming the file, the line and the tag, so a typo in `@M0-W-13OO` fails loudly instead of
silently dropping a scenario out of a gate.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

GATE_PREFIX = "gate_"
TAG_TABLES = ("models", "quants", "milestones", "capabilities")


class VocabularyError(Exception):
    """A manifest is missing or malformed, or a feature file uses an undeclared tag."""


@dataclass(frozen=True)
class Vocabulary:
    """Declared tags, each with the one-line description that `pytest --markers` shows."""

    requirements: dict[str, str] = field(default_factory=dict)
    gates: dict[str, str] = field(default_factory=dict)  # keyed by tag, e.g. "gate_foundation"
    other: dict[str, str] = field(default_factory=dict)  # models, quants, milestones, capabilities

    @classmethod
    def load(cls, features_dir: Path) -> Vocabulary:
        requirements = {
            row["id"]: row.get("title", "")
            for row in _read_tables(features_dir / "requirements.toml", "requirement", ("id",))
        }
        gates = {
            GATE_PREFIX + row["id"]: row.get("title", "")
            for row in _read_tables(features_dir / "gates.toml", "gate", ("id",))
        }
        other: dict[str, str] = {}
        tags_path = features_dir / "tags.toml"
        data = _read_toml(tags_path)
        for table in TAG_TABLES:
            entries = data.get(table, {})
            if not isinstance(entries, dict):
                raise VocabularyError(f"{tags_path}: [{table}] must map tag names to descriptions")
            other.update({name: str(text) for name, text in entries.items()})
        return cls(requirements=requirements, gates=gates, other=other)

    def markers(self) -> dict[str, str]:
        """Marker name -> description, for registration under `--strict-markers`."""
        declared = {tag: f"spec requirement: {title}" for tag, title in self.requirements.items()}
        declared |= {tag: f"gate: {title}" for tag, title in self.gates.items()}
        declared |= self.other
        return declared

    def __contains__(self, tag: str) -> bool:
        return tag in self.requirements or tag in self.gates or tag in self.other


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VocabularyError(f"{path}: tag manifest is missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise VocabularyError(f"{path}: not valid TOML ({exc})") from None


def _read_tables(path: Path, key: str, required: tuple[str, ...]) -> list[dict]:
    rows = _read_toml(path).get(key, [])
    if not isinstance(rows, list):
        raise VocabularyError(f"{path}: expected [[{key}]] tables")
    for number, row in enumerate(rows, start=1):
        missing = [name for name in required if name not in row]
        if missing:
            raise VocabularyError(f"{path}: [[{key}]] #{number} lacks {', '.join(missing)}")
    return rows


@dataclass(frozen=True)
class TagUse:
    tag: str
    line: int


_TAG_LINE = re.compile(r"^\s*@")


def scan_tags(feature_text: str) -> list[TagUse]:
    """Tags as written in a feature file, with their line numbers (1-based).

    Gherkin puts tags on their own lines before Feature/Rule/Scenario/Examples; a `#` starts a comment.
    """
    uses = []
    for number, line in enumerate(feature_text.splitlines(), start=1):
        if not _TAG_LINE.match(line):
            continue
        for token in line.split("#", 1)[0].split():
            if token.startswith("@") and len(token) > 1:
                uses.append(TagUse(token[1:], number))
    return uses


def check_feature_tags(path: Path, vocabulary: Vocabulary) -> None:
    """Raise `VocabularyError` naming file, line and tag for every undeclared tag."""
    unknown = [use for use in scan_tags(path.read_text(encoding="utf-8")) if use.tag not in vocabulary]
    if unknown:
        lines = "\n".join(f"  {path}:{use.line}: unknown tag @{use.tag}" for use in unknown)
        raise VocabularyError(
            f"{path}: tags not declared in features/requirements.toml, gates.toml or tags.toml:\n{lines}"
        )
