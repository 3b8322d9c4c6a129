"""The flywheel recipe (YAML): what each round harvests, who labels, what is synthesized and how it is measured.

Paths in the recipe are relative to the recipe file. Unknown keys are errors (with the place named), like every
Assay recipe. See ``recipes/flywheel.yaml`` for a commented example and ``docs/flywheel.md`` for the whole loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from assay.core.errors import AssayError, RecipeError
from assay.core.recipe import read_yaml, validation_summary


class FlywheelError(AssayError):
    """A flywheel recipe or output folder that cannot be used (one line, no traceback)."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HarvestSpec(_Spec):
    #: web pages to harvest (WARC files, folders or globs; relative to the recipe)
    inputs: list[str] = Field(default_factory=lambda: ["../samples/python-docs"])
    #: pages set aside before round 1: the lab's clean reference corpus and the classifier's held-out set
    reference_pages: int = Field(40, ge=4)
    #: new pages read in each round (the stream continues where the previous round stopped)
    pages_per_round: int = Field(30, ge=1)
    #: the harvest pipeline run on each round's pages (any registered steps)
    steps: list[Any] = Field(default_factory=lambda: [{"extract": {"engine": "resiliparse"}}])
    #: documents with fewer words than this after the steps are dropped ("too_short")
    min_words: int = Field(30, ge=1)


class SimulatedAnnotator(_Spec):
    name: str
    #: the share of items this annotator answers at random (uniform over the scale) instead of from gold
    noise: float = Field(0.1, ge=0.0, le=1.0)


class PeopleSpec(_Spec):
    #: ``simulated``: seeded annotators answer through the app's HTTP API; ``people``: the run stops after routing
    #: and resumes when people have labelled the items in the browser (``assay annotate serve --db OUT/annotate.db``)
    mode: Literal["simulated", "people"] = "simulated"
    annotators: list[SimulatedAnnotator] = Field(default_factory=lambda: [SimulatedAnnotator(name="ann1", noise=0.1),
                                                                           SimulatedAnnotator(name="ann2", noise=0.2)])
    #: annotators per item (consensus: majority, or Dawid-Skene)
    overlap: int = Field(1, ge=1, le=10)
    aggregate: Literal["majority", "dawid-skene"] = "majority"


class RouteSpec(_Spec):
    #: documents sent to people per round (active learning: most uncertain under the classifier, diverse)
    budget: int = Field(8, ge=0)
    diversity: float = Field(0.5, ge=0.0, le=1.0)
    pool_factor: float = Field(3.0, ge=1.0)


class ClassifierSpec(_Spec):
    #: features of the quality classifier: hashed word n-grams (fast, no torch) or minilm
    embedder: Literal["hashed", "minilm"] = "hashed"
    #: a human rating at or above this (1-5 scale) is a "good document" label
    good_at: int = Field(4, ge=1, le=5)


class SynthSpec(_Spec):
    #: the best documents (by the retrained classifier, people's ratings first) that seed synthesis each round
    from_top: int = Field(2, ge=1)
    #: synthesis steps (textbook, self_instruct, ...); the loop's ``backend`` fills in a step that names none
    steps: list[Any] = Field(default_factory=lambda: [{"textbook": {"max_passages": 2, "exercises": 0}}])
    #: judge / critique steps on what was synthesized (execution_feedback drops records that are not code tasks)
    verify: list[Any] = Field(default_factory=lambda: [{"judge_score": {"samples": 2}}])
    #: steps run after ``verify`` on the records that are code tasks (a problem, a solution and tests), e.g.
    #: execution_feedback in the sandbox; records that are not code tasks skip them
    verify_code: list[Any] = Field(default_factory=list)
    #: synthetic items routed to people per round (the most uncertain: judge disagreement)
    route_budget: int = Field(1, ge=0)
    #: synthetic records people rated below this leave the pool
    min_human_rating: int = Field(3, ge=1, le=5)


class MixSpec(_Spec):
    min_human_fraction: float = Field(0.5, ge=0.0, le=1.0)
    mode: Literal["accumulate", "replace"] = "accumulate"


class KnowledgeSpec(_Spec):
    #: a person's rating this far (on the 1-5 scale) from the classifier's prediction is an expert correction that
    #: becomes a knowledge patch submitted for review
    disagreement: float = Field(2.0, ge=0.0)
    domain: str = "data-quality"
    #: patches per round at most (the largest disagreements first)
    max_per_round: int = Field(3, ge=0)


class LabSpec(_Spec):
    #: tiny-LM preset of the quality ladder (nano: CI-sized; micro: benchmark-sized)
    preset: str = "nano"
    vocab_size: int = Field(320, ge=64)
    #: data sizes D (tokens) and qualities Q of the ladder, built once on the reference pages
    tokens: list[int] = Field(default_factory=lambda: [2048, 4096])
    qualities: list[float] = Field(default_factory=lambda: [1.0, 0.5])
    seeds: int = Field(2, ge=1, le=10)
    bootstrap: int = Field(40, ge=2)
    #: the budget each round's datasets are trained on to place them (default: the largest D)
    place_tokens: int | None = Field(None, ge=64)
    eval_tokens: int = Field(4096, ge=256)
    threads: int = Field(1, ge=1)


class FlywheelRecipe(_Spec):
    name: str = "flywheel"
    description: str = ""
    rounds: int = Field(3, ge=1, le=1000)
    seed: int = 0
    #: default LLM backend of every synthesis/verify step that does not set its own (default: local SmolLM2)
    backend: dict[str, Any] | None = None
    harvest: HarvestSpec = Field(default_factory=HarvestSpec)
    people: PeopleSpec = Field(default_factory=PeopleSpec)
    route: RouteSpec = Field(default_factory=RouteSpec)
    classifier: ClassifierSpec = Field(default_factory=ClassifierSpec)
    synthesize: SynthSpec = Field(default_factory=SynthSpec)
    mix: MixSpec = Field(default_factory=MixSpec)
    knowledge: KnowledgeSpec = Field(default_factory=KnowledgeSpec)
    lab: LabSpec = Field(default_factory=LabSpec)

    @model_validator(mode="after")
    def _check(self) -> "FlywheelRecipe":
        names = [a.name for a in self.people.annotators]
        if len(set(names)) != len(names):
            raise ValueError("people.annotators: names must be unique")
        if self.people.mode == "simulated" and len(names) < self.people.overlap:
            raise ValueError(f"people.overlap is {self.people.overlap} but only {len(names)} simulated annotators")
        if len(set(self.lab.tokens)) < 2 or len(set(self.lab.qualities)) < 2:
            raise ValueError("lab: the ladder needs at least two tokens values and two qualities")
        if any(not 0 < q <= 1 for q in self.lab.qualities) or 1.0 not in self.lab.qualities:
            raise ValueError("lab.qualities: values in (0, 1], including 1.0 (the clean reference)")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> tuple["FlywheelRecipe", Path]:
        path = Path(path)
        data = read_yaml(path, FlywheelError, "flywheel recipe")
        return cls.from_dict(data or {}, str(path)), path.resolve().parent

    @classmethod
    def from_dict(cls, data: Any, source: str = "<flywheel>") -> "FlywheelRecipe":
        if not isinstance(data, dict):
            raise FlywheelError(f"{source}: a flywheel recipe is a mapping (rounds, harvest, route, ...)")
        try:
            recipe = cls(**data)
        except ValidationError as e:
            raise FlywheelError(f"{source}: {validation_summary(e)}") from None
        for part in ("harvest", "synthesize", "verify", "verify_code"):
            recipe.steps(part, source)  # step names and parameters are checked now, not mid-run
        return recipe

    def steps(self, part: str, source: str = "<flywheel>", round_no: int | None = None,
              cache: str | None = None) -> list[Any]:
        """Fresh step instances of ``harvest``, ``synthesize`` or ``verify`` (the loop's backend and cache filled in
        where a step sets none; ``seed`` shifted per round so each round samples anew)."""
        from assay.core.recipe import Recipe

        raw = {"harvest": self.harvest.steps, "synthesize": self.synthesize.steps,
               "verify": self.synthesize.verify, "verify_code": self.synthesize.verify_code}[part]
        if not raw:
            return []
        try:
            sub = Recipe.from_dict({"name": f"{self.name}-{part}", "steps": raw}, source=f"{source}: {part}")
        except RecipeError as e:
            raise FlywheelError(str(e)) from None
        out = []
        for step in sub.instantiate():
            fields = step.Params.model_fields
            changes: dict[str, Any] = {}
            if self.backend is not None and "backend" in fields and "backend" not in step.params.model_fields_set:
                changes["backend"] = self.backend
            if cache is not None and "cache" in fields and "cache" not in step.params.model_fields_set:
                changes["cache"] = cache
            if round_no is not None and "seed" in fields:
                own = "seed" in step.params.model_fields_set
                base = step.params.seed if own else self.seed  # type: ignore[attr-defined]
                changes["seed"] = base * 1_000_003 + round_no
            if changes:
                step = type(step)({**step.params.model_dump(exclude_unset=True), **changes})
            out.append(step)
        return out

    def fingerprint(self) -> str:
        import xxhash

        d = self.model_dump(mode="json", exclude={"description", "rounds"})
        return xxhash.xxh3_64_hexdigest(orjson.dumps(d, option=orjson.OPT_SORT_KEYS))
