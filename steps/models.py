"""Model catalogue: the roles scenarios name, the files behind them, and what those files promise.

A scenario says "the Qwen2.5-0.5B-Instruct Q4_K_M model"; the catalogue maps that role to a file. With
`--model-dir DIR` the real file of the role is taken from DIR (file names in `REAL_FILES`); otherwise a
synthetic stand-in of the same architecture and tensor-type mix from the fixtures build dir. Each
resolved file records whether it is real or synthetic, and its SHA-256, for the report.

Expected values that depend on the file (vocabulary size, context length, architecture, quant kind) are
read from the GGUF with gguf-py, an implementation independent of any worker's own reader.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from fixtures.paths import prepare_command

FIXTURES_ENV = "WORKER_ORCD_FIXTURES_DIR"
DEFAULT_FIXTURES_DIR = Path("fixtures/build")
PREPARE_COMMAND = "python -m fixtures prepare"
SHAPED_DIR = "shaped"  # full-shape random-weight files, under the fixtures build dir

TINY_ARCHITECTURES = ("llama", "qwen2", "phi3", "gpt2", "gpt-oss")
TINY_QTYPES = ("f32", "f16", "q8_0", "q4_0", "q4_1", "q5_0", "q4_k_m", "mxfp4_moe")


@dataclass(frozen=True)
class ModelRole:
    """A model as scenarios name it, with the file names that can play it."""

    name: str
    real_files: tuple[str, ...]  # accepted names in --model-dir (the first is the canonical one)
    stand_in: str | None  # path relative to the fixtures build dir; None: no synthetic stand-in
    stand_in_is_real: bool = False  # a small real file shipped as the fixture itself
    shaped: str | None = None  # full-shape random-weight file (`fixtures prepare --shaped`), for timing


# Real file names are those of the published GGUF repositories of each model.
ROLES: dict[str, ModelRole] = {
    role.name: role
    for role in (
        ModelRole(
            "qwen2.5-0.5b-instruct-q4_k_m",
            ("qwen2.5-0.5b-instruct-q4_k_m.gguf",),
            "tiny/qwen2-realvocab-q4_k_m.gguf",
            shaped="shaped/qwen2.5-0.5b-q4_k_m.gguf",
        ),
        ModelRole(
            "phi-3-mini-4k-instruct-q4_k_m",
            ("Phi-3-mini-4k-instruct-q4.gguf", "Phi-3-mini-4k-instruct-Q4_K_M.gguf"),
            "tiny/phi3-realvocab-q4_k_m.gguf",
            shaped="shaped/phi-3-mini-q4_k_m.gguf",
        ),
        ModelRole(
            "gpt-oss-20b-mxfp4",
            ("gpt-oss-20b-mxfp4.gguf",),
            "tiny/gpt-oss-realvocab/gpt-oss-realvocab-mxfp4_moe.gguf",
            shaped="shaped/gpt-oss-20b-mxfp4_moe.gguf",
        ),
        ModelRole(
            "smollm2-135m-instruct-q4_1",
            ("SmolLM2-135M-Instruct.Q4_1.gguf",),
            "real/SmolLM2-135M-Instruct.Q4_1.gguf",
            stand_in_is_real=True,
        ),
        # A real sibling of the spec's Qwen2.5-0.5B-Instruct Q4_K_M (the Coder fine-tune of the same base:
        # same architecture, shapes, tokenizer and quant mix), fetched by `fixtures prepare --real`.
        ModelRole(
            "qwen2.5-coder-0.5b-instruct-q4_k_m",
            ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",),
            "real/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            stand_in_is_real=True,
        ),
    )
}

_TINY_ROLE = re.compile(r"^tiny-(?P<arch>[a-z0-9-]+?)-(?P<qtype>[a-z0-9_]+)$")


class ModelSetupError(Exception):
    """A role is unknown or its file is missing; the message says what to run."""


def role_key(text: str) -> str:
    """'Qwen2.5-0.5B-Instruct Q4_K_M' -> 'qwen2.5-0.5b-instruct-q4_k_m'; 'tiny qwen2 Q4_0' -> 'tiny-qwen2-q4_0'."""
    return re.sub(r"\s+", "-", text.strip().lower())


@dataclass(frozen=True)
class ModelFacts:
    """What a worker serving this file must report, as read by gguf-py."""

    architecture: str
    vocab_size: int  # len(tokenizer.ggml.tokens)
    context_length: int | None
    quant_kind: str  # from general.file_type, e.g. "Q4_K_M", "MXFP4", "Q4_0"
    tokenizer_json_vocab_size: int | None  # when a tokenizer.json sits next to the model (hf-json)
    name: str | None = None  # general.name, what a worker may report as /health `model`

    @property
    def tokenizer_kind(self) -> str:
        # M0-W-1360: hf-json when a tokenizer.json ships with the model, else the GGUF vocabulary.
        return "hf-json" if self.tokenizer_json_vocab_size is not None else "gguf-bpe"

    @property
    def accepted_vocab_sizes(self) -> set[int]:
        sizes = {self.vocab_size}
        if self.tokenizer_json_vocab_size is not None:
            sizes.add(self.tokenizer_json_vocab_size)
        return sizes


@dataclass(frozen=True)
class ModelFile:
    role: str
    path: Path
    synthetic: bool

    @cached_property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        with self.path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    @cached_property
    def facts(self) -> ModelFacts:
        return read_facts(self.path)

    @property
    def provenance(self) -> dict[str, object]:
        return {"role": self.role, "path": str(self.path), "synthetic": self.synthetic, "sha256": self.sha256}


def quant_kind_of(file_type: int) -> str:
    """general.file_type -> the `quant_kind` string of /health (MOSTLY_Q4_K_M -> "Q4_K_M")."""
    import gguf

    try:
        name = gguf.LlamaFileType(file_type).name
    except ValueError:
        return f"FILE_TYPE_{file_type}"
    name = name.removeprefix("MOSTLY_").removeprefix("ALL_")
    return "MXFP4" if name == "MXFP4_MOE" else name


def read_facts(path: Path) -> ModelFacts:
    import gguf

    reader = gguf.GGUFReader(path)

    def value(key: str) -> object | None:
        field = reader.get_field(key)
        return None if field is None else field.contents()

    architecture = str(value("general.architecture"))
    tokens = reader.get_field("tokenizer.ggml.tokens")
    context_length = value(f"{architecture}.context_length")
    file_type = value("general.file_type")
    tokenizer_json = path.parent / "tokenizer.json"
    return ModelFacts(
        architecture=architecture,
        vocab_size=len(tokens.data) if tokens is not None else 0,
        context_length=int(context_length) if context_length is not None else None,
        quant_kind=quant_kind_of(int(file_type)) if file_type is not None else "UNKNOWN",
        tokenizer_json_vocab_size=tokenizer_json_vocab_size(tokenizer_json)
        if tokenizer_json.exists()
        else None,
        name=str(value("general.name")) if value("general.name") is not None else None,
    )


def tokenizer_json_vocab_size(path: Path) -> int:
    """Largest token id + 1 over the BPE vocabulary and the added (special) tokens."""
    data = json.loads(path.read_text(encoding="utf-8"))
    ids = list(data.get("model", {}).get("vocab", {}).values())
    ids += [token["id"] for token in data.get("added_tokens", [])]
    return max(ids) + 1 if ids else 0


class ModelCatalogue:
    """Resolves roles to files, once per session (facts and hashes are cached on the `ModelFile`)."""

    def __init__(self, model_dir: Path | None, fixtures_dir: Path) -> None:
        self.model_dir = model_dir
        self.fixtures_dir = fixtures_dir
        self._resolved: dict[str, ModelFile] = {}

    @classmethod
    def from_options(cls, model_dir: str | None, rootdir: Path) -> ModelCatalogue:
        fixtures = Path(os.environ.get(FIXTURES_ENV, rootdir / DEFAULT_FIXTURES_DIR))
        return cls(Path(model_dir).resolve() if model_dir else None, fixtures.resolve())

    @property
    def resolved(self) -> list[ModelFile]:
        return list(self._resolved.values())

    def roles(self) -> list[str]:
        """Every role a scenario can name: the catalogue's roles, then each tiny architecture and type."""
        tiny = [f"tiny-{arch}-{qtype}" for arch in TINY_ARCHITECTURES for qtype in TINY_QTYPES]
        return [*ROLES, *tiny]

    def available(self) -> list[ModelFile]:
        """The file of every role that resolves here (missing fixtures are left out)."""
        found = []
        for key in self.roles():
            try:
                found.append(self.resolve(key))
            except ModelSetupError:
                continue
        return found

    def resolve(self, name: str) -> ModelFile:
        key = role_key(name)
        if key not in self._resolved:
            self._resolved[key] = self._locate(key, name)
        return self._resolved[key]

    def _locate(self, key: str, name: str) -> ModelFile:
        tiny = _TINY_ROLE.match(key)
        if tiny:
            arch, qtype = tiny["arch"], tiny["qtype"]
            if arch not in TINY_ARCHITECTURES or qtype not in TINY_QTYPES:
                raise ModelSetupError(
                    f"unknown tiny model {name!r}: architectures {', '.join(TINY_ARCHITECTURES)}; "
                    f"types {', '.join(TINY_QTYPES)}"
                )
            return self._fixture(key, f"tiny/{arch}-{qtype}.gguf", synthetic=True)
        role = ROLES.get(key)
        if role is None:
            raise ModelSetupError(
                f"unknown model {name!r}: known roles are {', '.join(ROLES)} and 'tiny <arch> <type>'"
            )
        if self.model_dir is not None:
            for file_name in role.real_files:
                candidate = self.model_dir / file_name
                if candidate.is_file():
                    return ModelFile(key, candidate, synthetic=False)
        if role.stand_in is None:
            raise ModelSetupError(f"model {name!r} needs {role.real_files[0]} in --model-dir")
        return self._fixture(key, role.stand_in, synthetic=not role.stand_in_is_real)

    def full_shape(self, name: str) -> ModelFile | None:
        """The file timing scenarios of a role run on (issue 12 item 5): the real file (from --model-dir,
        or a small real file shipped as the fixture), else the full-shape random-weight file when built
        (it times like the real one); None when only a tiny stand-in is here."""
        model = self.resolve(name)
        if self.is_full_shape(model):
            return model
        role = ROLES.get(role_key(name))
        if role is None or role.shaped is None or not (self.fixtures_dir / role.shaped).is_file():
            return None
        return ModelFile(model.role, self.fixtures_dir / role.shaped, synthetic=True)

    def is_full_shape(self, model: ModelFile) -> bool:
        """A real file, or one of the full-shape random-weight files of the fixtures build dir."""
        if not model.synthetic:
            return True
        return model.path.resolve().is_relative_to((self.fixtures_dir / SHAPED_DIR).resolve())

    def full_shape_hint(self, name: str) -> str:
        """How to get a full-shape file for a role, for a not-applicable reason."""
        role = ROLES.get(role_key(name))
        if role is None:
            return "tiny models have no full-shape file"
        hint = f"give the real {role.real_files[0]} with --model-dir"
        if role.shaped is not None:
            hint += f", or build {role.shaped} with `{prepare_command(role.shaped)}`"
        return hint

    def _fixture(self, key: str, relative: str, synthetic: bool) -> ModelFile:
        path = self.fixtures_dir / relative
        if not path.is_file():
            raise ModelSetupError(
                f"model file for {key!r} is missing: {path}; build the fixtures with `{PREPARE_COMMAND}` "
                f"(or pass --model-dir with the real files)"
            )
        return ModelFile(key, path, synthetic=synthetic)
