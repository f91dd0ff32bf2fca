"""The worker's README, for the one documentation requirement a harness can read (M0-W-1040): which models
were verified reproducible, with the caveat that engines and GPUs may be non-deterministic.

`--worker-readme PATH` names it; when the harness spawns the reference worker, its README is the project's
`README.md`. Otherwise the scenario is not applicable. The README is Markdown: a section is a heading and
the text up to the next heading; the reproducibility section is one whose heading or text speaks of
reproducibility.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from steps.verdicts import not_applicable

REFERENCE_README = "README.md"
REPRODUCIBLE = re.compile(r"reproducib", re.IGNORECASE)
# A model named in prose: a family of the spec's and the catalogue's models, or a model file name.
MODEL_NAMES = re.compile(
    r"\b(qwen[\w.-]*|phi-?\d[\w.-]*|gpt-oss[\w.-]*|gpt-?2\b|llama[\w.-]*|smollm[\w.-]*|mistral[\w.-]*|gemma[\w.-]*)"
    r"|[\w.-]+\.gguf\b",
    re.IGNORECASE,
)
# The caveat of M0-W-1040: results on other GPUs (or engines) are not guaranteed to be the same.
CAVEAT = re.compile(
    r"not (?:a )?(?:product )?guarantee|non-?determinis|may (?:change|differ)|can differ|not guaranteed",
    re.IGNORECASE,
)
HEADING = re.compile(r"^#{1,6}\s", re.MULTILINE)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("worker-orcd").addoption(
        "--worker-readme",
        metavar="PATH",
        help="the README of the worker under test (M0-W-1040: the models verified reproducible); "
        "default: the project's README.md when the reference worker is spawned",
    )


@dataclass(frozen=True)
class Readme:
    path: Path
    text: str

    def sections(self) -> list[str]:
        starts = [match.start() for match in HEADING.finditer(self.text)]
        bounds = [0, *starts, len(self.text)]
        return [
            self.text[a:b].strip() for a, b in zip(bounds, bounds[1:], strict=False) if self.text[a:b].strip()
        ]

    def reproducibility_sections(self) -> list[str]:
        return [section for section in self.sections() if REPRODUCIBLE.search(section)]


def worker_readme(config: pytest.Config) -> Readme:
    """The README named with --worker-readme, the reference worker's, or not applicable."""
    chosen = config.getoption("worker_readme")
    if chosen is None:
        if config.getoption("worker_cmd") is not None or config.getoption("worker_url") is not None:
            not_applicable("the harness does not know the worker's README; name it with --worker-readme PATH")
        path = config.rootpath / REFERENCE_README
    else:
        path = Path(chosen)
    if not path.is_file():
        pytest.fail(f"setup error: --worker-readme {path}: no such file", pytrace=False)
    return Readme(path, path.read_text(encoding="utf-8", errors="replace"))


def models_named(section: str) -> list[str]:
    return sorted({match.group(0) for match in MODEL_NAMES.finditer(section)})


def says_caveat(section: str) -> bool:
    return bool(CAVEAT.search(section)) and "gpu" in section.lower()
