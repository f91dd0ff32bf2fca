"""Which model an attached worker serves (`--worker-url`), so that every scenario is judged against the
file the worker really loaded and the scenarios of other models are not applicable.

- `--worker-model FILE` names the file the worker was started with. Expectations and provenance (its
  SHA-256) come from that file; it plays the roles whose file it is: the same file, a file name the role
  accepts in `--model-dir`, or (for the named roles) the same architecture, vocabulary size and quant kind.
- Without it the served model is detected once from `GET /health`: its `model` against each catalogue
  file's `general.name`, file name and stem; failing that, `architecture` (when reported), `vocab_size`,
  `quant_kind` and `context_length` against a quick header read of each file (`steps/gguf_peek.py`).
  The scenarios then take their expectations from the role's own file, which /health describes.

A worker whose `/health` cannot be read is not guessed at: its scenarios run and fail on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from steps.gguf_peek import GGUFPeekError, peek
from steps.models import ROLES, ModelCatalogue, ModelFile, quant_kind_of, tokenizer_json_vocab_size

HEALTH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServedModel:
    """What the attached worker serves, and which scenario roles that file can be judged as."""

    label: str  # how reasons and reports name it: /health `model`, else the file name
    determined_by: str  # how the harness knows, for the report
    roles: frozenset[str]  # role keys (`steps.models.role_key`) this worker serves
    file: ModelFile | None = None  # --worker-model: the file every expectation comes from

    def plays(self, role: str) -> bool:
        return role in self.roles

    def judged_file(self, scenario_model: ModelFile) -> ModelFile:
        """The file a scenario of `scenario_model.role` is judged against."""
        if self.file is None:
            return scenario_model  # detected: the role's own file is the one /health describes
        return ModelFile(scenario_model.role, self.file.path, synthetic=self.file.synthetic)

    def describe(self) -> dict[str, object]:
        described: dict[str, object] = {
            "served model": self.label,
            "served model determined by": self.determined_by,
        }
        if self.file is not None:
            described["served model file"] = str(self.file.path)
            described["served model sha256"] = self.file.sha256
        return described


def from_file(path: Path, catalogue: ModelCatalogue) -> ServedModel:
    """`--worker-model FILE`: the roles it plays among the catalogue's files."""
    path = path.resolve()
    synthetic = _is_synthetic(path, catalogue)
    served = ModelFile("served", path, synthetic=synthetic)
    roles = frozenset(model.role for model in catalogue.available() if _plays(served, model))
    names = ", ".join(sorted(roles)) or "no role of the catalogue"
    return ServedModel(
        label=path.name,
        determined_by=f"--worker-model {path} (plays {names})",
        roles=roles,
        file=served,
    )


def detect(url: str, catalogue: ModelCatalogue) -> ServedModel | None:
    """From `GET /health`; None when the worker does not answer it with a JSON object."""
    try:
        response = httpx.get(f"{url}/health", timeout=HEALTH_TIMEOUT_S)
        health = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(health, dict):
        return None
    return from_health(health, catalogue)


def from_health(health: dict, catalogue: ModelCatalogue) -> ServedModel:
    available = [(model, _Identity.of(model)) for model in catalogue.available()]
    name = health.get("model")
    label = str(name) if isinstance(name, str) and name else "an unnamed model"
    seen = _health_facts(health)
    by_name = [
        model for model, identity in available if isinstance(name, str) and _named(model, identity, name)
    ]
    if len(by_name) == 1:
        model = by_name[0]
        how = f"GET /health model {name!r} is the name of {model.path.name}"
        return ServedModel(label, how, frozenset({model.role}))
    by_facts = [model for model, identity in available if _facts_match(model, identity, health)]
    if by_facts:
        files = ", ".join(model.path.name for model in by_facts)
        how = f"GET /health ({seen}) matches the facts of {files}"
        return ServedModel(label, how, frozenset(model.role for model in by_facts))
    how = (
        f"GET /health ({seen}) matches no model file of the catalogue; "
        "name the file with --worker-model (or give the real files with --model-dir)"
    )
    return ServedModel(label, how, frozenset())


@dataclass(frozen=True)
class _Identity:
    """The facts that tell catalogue files apart, from a quick header read (`steps.gguf_peek`)."""

    architecture: str
    name: str
    quant_kind: str
    vocab_size: int | None
    context_length: int | None

    @classmethod
    def of(cls, model: ModelFile) -> _Identity:
        try:
            found = peek(model.path)
        except GGUFPeekError:
            return cls("", "", "", None, None)
        quant = quant_kind_of(found.file_type) if found.file_type is not None else "UNKNOWN"
        return cls(found.architecture or "", found.name or "", quant, found.vocab_size, found.context_length)

    def vocab_matches(self, model: ModelFile, vocab_size: object) -> bool:
        if vocab_size == self.vocab_size:
            return True
        tokenizer_json = model.path.parent / "tokenizer.json"  # hf-json: the JSON vocabulary counts
        return tokenizer_json.is_file() and vocab_size == tokenizer_json_vocab_size(tokenizer_json)


def _named(model: ModelFile, identity: _Identity, name: str) -> bool:
    wanted = name.strip().lower()
    names = {model.path.name, model.path.stem, identity.name}
    return wanted in {candidate.lower() for candidate in names if candidate}


def _facts_match(model: ModelFile, identity: _Identity, health: dict) -> bool:
    """`architecture` is optional on /health; `context_length` may be capped below the file's."""
    architecture = health.get("architecture")
    if isinstance(architecture, str) and architecture.lower() != identity.architecture.lower():
        return False
    if health.get("quant_kind") != identity.quant_kind:
        return False
    if not identity.vocab_matches(model, health.get("vocab_size")):
        return False
    context = health.get("context_length")
    if isinstance(context, int) and identity.context_length is not None:
        return 0 < context <= identity.context_length
    return True


def _health_facts(health: dict) -> str:
    keys = ("model", "architecture", "vocab_size", "quant_kind", "context_length")
    return ", ".join(f"{key} {health.get(key)!r}" for key in keys if key in health)


def _plays(served: ModelFile, model: ModelFile) -> bool:
    if served.path == model.path.resolve():
        return True
    role = ROLES.get(model.role)
    if role is None:  # a tiny fixture: its expectations (goldens) hold for exactly that file
        return _same_bytes(served.path, model.path)
    if served.path.name in role.real_files:
        return True
    facts, expected = _Identity.of(served), _Identity.of(model)
    return (facts.architecture, facts.vocab_size, facts.quant_kind) == (
        expected.architecture,
        expected.vocab_size,
        expected.quant_kind,
    )


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    return ModelFile("a", a, synthetic=True).sha256 == ModelFile("b", b, synthetic=True).sha256


def _is_synthetic(path: Path, catalogue: ModelCatalogue) -> bool:
    """Files of the fixtures build dir are synthetic, except the small real file shipped among them."""
    try:
        relative = path.relative_to(catalogue.fixtures_dir)
    except ValueError:
        return False
    return not any(role.stand_in_is_real and role.stand_in == str(relative) for role in ROLES.values())
