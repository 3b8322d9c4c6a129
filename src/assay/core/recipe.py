"""Recipes: a YAML file that names the input, the steps with their parameters, and the output.

.. code-block:: yaml

    name: quickstart
    description: Clean a few hundred web pages.
    input:
      format: warc          # auto | jsonl | parquet | warc
    output:
      format: jsonl.gz      # jsonl | jsonl.gz | jsonl.zst | parquet
      max_records_per_file: 100000
    batch_size: 500
    steps:
      - extract: {engine: resiliparse}
      - language_id: {languages: [en]}
      - gopher_quality          # a bare name uses the defaults
      - exact_dedup

Validation errors name the bad key by its place (``steps[2].gopher_quality.max_words``) and say what was expected.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import orjson
import xxhash
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from assay.core.errors import RecipeError
from assay.core.step import REGISTRY, Step, StepParams

OUTPUT_FORMATS = ("jsonl", "jsonl.gz", "jsonl.zst", "parquet", "webdataset")


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: files or globs (local paths or fsspec URIs); the CLI's --input overrides them
    paths: list[str] = Field(default_factory=list)
    format: Literal["auto", "jsonl", "parquet", "warc", "webdataset", "video", "lerobot"] = "auto"
    #: for foreign JSONL/Parquet (not written by Assay): the field holding the text (others go to meta);
    #: ``null`` keeps the whole object as the record's content
    text_key: str | None = "text"
    #: for foreign data: the field holding a stable id, if any (else the id derives from file and position)
    id_key: str | None = None
    #: modality given to foreign records
    modality: str = "text"
    #: WARC: record types to read
    warc_types: list[Literal["response", "resource", "conversion"]] = Field(default_factory=lambda: ["response"])
    #: split uncompressed JSONL and Parquet files into shards of about this many bytes (0 = one shard per file)
    shard_bytes: int = 128 * 1024 * 1024


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["jsonl", "jsonl.gz", "jsonl.zst", "parquet", "webdataset"] = "jsonl.gz"
    max_records_per_file: int = Field(default=100_000, gt=0)
    max_bytes_per_file: int = Field(default=512 * 1024 * 1024, gt=0)
    #: write dropped records to rejected/ (with their reason)
    rejected: bool = True
    #: the column (Parquet) or key (JSONL) holding each record's content: ``text`` as datatrove and Data-Juicer
    #: write, or ``content``; Assay reads its files back either way
    text_column: Literal["content", "text"] = "content"

    @model_validator(mode="after")
    def _text_column_applies(self) -> "OutputSpec":
        if self.format == "webdataset" and self.text_column != "content":
            raise ValueError("text_column applies to jsonl and parquet output (a WebDataset keeps the text in "
                             "<key>.txt)")
        return self


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "recipe"
    description: str = ""
    input: InputSpec = Field(default_factory=InputSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    batch_size: int = Field(default=500, gt=0)
    steps: list[StepSpec] = Field(default_factory=list)

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> "Recipe":
        return cls.from_text(read_text(path, RecipeError), source=str(path))

    @classmethod
    def from_text(cls, text: str, source: str = "<recipe>") -> "Recipe":
        data = parse_yaml(text, source, RecipeError)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise RecipeError(f"{source}: a recipe is a mapping with keys like 'steps', 'input', 'output'; "
                              f"got {type(data).__name__}")
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<recipe>") -> "Recipe":
        data = dict(data)
        if "rounds" in data and "steps" not in data:  # a loop's recipe given to `assay run`
            raise RecipeError(f"{source}: this is a recipe of rounds, not of steps: run it with `assay flywheel run` "
                              "(a flywheel recipe) or `assay evolve loop` (an evolve loop recipe)")
        raw_steps = data.pop("steps", []) or []
        if not isinstance(raw_steps, list):
            raise RecipeError(f"{source}: 'steps' must be a list of steps, got {type(raw_steps).__name__}")
        steps = [_parse_step(i, s, source) for i, s in enumerate(raw_steps)]
        try:
            recipe = cls(**data, steps=steps)
        except ValidationError as e:
            raise RecipeError(_format_validation(e, source, prefix=())) from None
        recipe.instantiate(validate_only=True, source=source)
        return recipe

    # -- use ---------------------------------------------------------------------------------------------------
    def instantiate(self, validate_only: bool = False, source: str = "<recipe>") -> list[Step]:
        steps: list[Step] = []
        for i, spec in enumerate(self.steps):
            try:
                cls = REGISTRY.get(spec.name)
            except KeyError as e:
                raise RecipeError(f"{source}: steps[{i}]: {e.args[0]}") from None
            try:
                params = cls.Params(**spec.params)
            except ValidationError as e:
                raise RecipeError(_format_validation(e, source, prefix=(f"steps[{i}]", spec.name),
                                                     params_model=cls.Params)) from None
            except TypeError as e:
                raise RecipeError(f"{source}: steps[{i}].{spec.name}: {e}") from None
            steps.append(cls(params))
        return steps

    def fingerprint(self) -> str:
        """A hash of everything that determines the output (not the description)."""
        d = self.model_dump(mode="json", exclude={"description", "name"})
        return xxhash.xxh3_64_hexdigest(orjson.dumps(d, option=orjson.OPT_SORT_KEYS))


def _parse_step(i: int, raw: Any, source: str) -> StepSpec:
    where = f"{source}: steps[{i}]"
    if isinstance(raw, str):
        return StepSpec(name=raw)
    if isinstance(raw, dict) and len(raw) == 1:
        (name, params), = raw.items()
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise RecipeError(f"{where}.{name}: parameters must be a mapping (key: value), "
                              f"got {type(params).__name__} {params!r}")
        return StepSpec(name=str(name), params=params)
    if isinstance(raw, dict) and ("step" in raw or "name" in raw):  # long form: {step: name, params: {...}}
        key = "step" if "step" in raw else "name"  # `name` is how Recipe.model_dump() writes it: round trips work
        extra = set(raw) - {key, "params"}
        if extra:
            raise RecipeError(f"{where}: unexpected keys {sorted(extra)}; the long form is "
                              f"'- step: NAME' with optional 'params: {{...}}'")
        return StepSpec(name=str(raw[key]), params=raw.get("params") or {})
    raise RecipeError(f"{where}: expected a step name or a mapping '- step_name: {{param: value}}', got {raw!r}")


def _format_validation(e: ValidationError, source: str, prefix: tuple[str, ...],
                       params_model: type[StepParams] | None = None) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join([*prefix, *(str(p) for p in err["loc"])])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            allowed = list(params_model.model_fields) if params_model is not None else []
            key = str(err["loc"][-1])
            close = difflib.get_close_matches(key, allowed, n=1)
            msg = f"unknown key '{key}'"
            if close:
                msg += f"; did you mean '{close[0]}'?"
            if allowed:
                msg += f" (expected one of: {', '.join(allowed)})"
        elif "input" in err and err["type"] != "missing":
            msg += f" (got {err['input']!r})"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


# -- YAML files with one-line errors (recipes here; the loop, flywheel and other YAML files use them too) -------------
def read_text(path: str | Path, error: type[Exception], what: str = "recipe") -> str:
    """The text of ``path``; a missing file or text that is not UTF-8 raises ``error`` with one line naming it."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def parse_yaml(text: str, source: str, error: type[Exception]) -> Any:
    """The YAML document in ``text``; malformed YAML raises ``error`` naming ``source`` and the line and column."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise error(f"{source}: malformed YAML{where}: {problem}") from None


def read_yaml(path: str | Path, error: type[Exception], what: str = "recipe") -> Any:
    """:func:`read_text` then :func:`parse_yaml`."""
    return parse_yaml(read_text(path, error, what), str(path), error)


def validation_summary(e: ValidationError) -> str:
    """A pydantic error as one line: ``where: what; where: what``."""
    return "; ".join(f"{'.'.join(str(x) for x in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors())
