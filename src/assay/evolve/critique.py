"""Constitutional critique and revision (Bai et al., 2022, "Constitutional AI", the supervised stage).

For each instruction-following record the model critiques the response against a principle sampled from a
*constitution*, then rewrites the response to address its own critique; with ``rounds > 1`` the revision is
critiqued again against another principle. Every record that gets a usable revision yields:

* an **SFT** record (``modality: conversation``): the instruction with the final revision as the answer;
* a **preference** record (``modality: preference``): ``{prompt, chosen: revision, rejected: original}``.

Both carry the whole chain in ``meta["critique"]`` (``original``, and per round ``principle``, ``critique``,
``revision``), the parent's id in ``meta["parents"]`` and the parent's lineage followed by this step's entry, so the
history of every revised answer is in the data. Records without a response are skipped (``skipped:no_response``);
a revision that is empty or identical to what it revises is dropped (``no_revision``).

**Constitutions** are YAML files: ``name``, ``description`` and ``principles``, each either a string (used for
both prompts) or ``{name, critique, revision}``. Built-in: ``default`` (general assistant answers) and ``code``
(programming answers), in ``assay/evolve/constitutions/``; ``constitution:`` also takes a path to your own file.
The principle for (record, round) is drawn from a generator seeded by (seed, record id, round): reruns pick the same.
"""

from __future__ import annotations

import importlib.resources
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field

from assay.core.record import Record, derive_id
from assay.core.step import Batch, StepContext, StepParams
from assay.evolve.common import EvolveLLMStep, EvolveParams, instruction_and_response
from assay.models.llm.base import LLMRequest, SamplingParams
from assay.synthesize.common import clean_text, conversation


class ConstitutionError(ValueError):
    """A constitution file is missing or malformed."""


@dataclass(frozen=True)
class Principle:
    name: str
    critique: str  # what the critic looks for
    revision: str  # what the reviser changes


@dataclass(frozen=True)
class Constitution:
    name: str
    description: str
    principles: tuple[Principle, ...]

    @classmethod
    def from_dict(cls, data: Any, source: str) -> "Constitution":
        if not isinstance(data, dict) or not isinstance(data.get("principles"), list) or not data["principles"]:
            raise ConstitutionError(f"{source}: a constitution is a mapping with a non-empty `principles` list")
        principles = []
        for i, p in enumerate(data["principles"]):
            if isinstance(p, str) and p.strip():
                principles.append(Principle(f"p{i}", p.strip(), p.strip()))
            elif isinstance(p, dict) and isinstance(p.get("critique"), str) and isinstance(p.get("revision"), str):
                principles.append(Principle(str(p.get("name", f"p{i}")), p["critique"].strip(), p["revision"].strip()))
            else:
                raise ConstitutionError(f"{source}: principles[{i}] must be a string or "
                                        "{name, critique, revision}")
        return cls(str(data.get("name", Path(source).stem)), str(data.get("description", "")), tuple(principles))


def builtin_constitutions() -> list[str]:
    folder = importlib.resources.files("assay.evolve").joinpath("constitutions")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_constitution(name_or_path: str) -> Constitution:
    """A built-in constitution by name (``default``, ``code``) or a YAML file by path."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConstitutionError(f"cannot read constitution {path}: {e}") from None
        source = str(path)
    else:
        resource = importlib.resources.files("assay.evolve").joinpath("constitutions", f"{name_or_path}.yaml")
        try:
            text = resource.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConstitutionError(f"no built-in constitution {name_or_path!r}; built-in: "
                                    f"{builtin_constitutions()} (or give a path to a YAML file)") from None
        source = name_or_path
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConstitutionError(f"{source}: malformed YAML: {e}") from None
    return Constitution.from_dict(data, source)


class CritiqueReviseParams(EvolveParams):
    TEMPLATES: ClassVar[dict[str, set[str]]] = {"critique": {"instruction", "response", "principle"},
                                                "revise": {"instruction", "response", "critique", "principle"}}

    #: built-in constitution name or path to a YAML file
    constitution: str = "default"
    #: critique → revision rounds per record, each with a freshly sampled principle (distinct while possible)
    rounds: int = Field(1, ge=1, le=8)
    #: which records to emit: SFT (instruction + revision), preference pairs (revision preferred), or both
    output: Literal["sft", "preference", "both"] = "both"
    critique_sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.7, max_tokens=256))
    revision_sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.7, max_tokens=512))
    #: revisions shorter than this many characters are dropped (no_revision)
    min_revision_chars: int = Field(1, ge=1)


class CritiqueRevise(EvolveLLMStep):
    """Critique each response against a sampled constitutional principle and revise it (SFT + preference output).

    Both output records carry the (original, critique, revision) chain in ``meta["critique"]``."""

    name = "critique_revise"
    version = "1"
    Params: ClassVar[type[StepParams]] = CritiqueReviseParams

    def __init__(self, params: StepParams | dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.constitution = load_constitution(self.p.constitution)  # fail at recipe load on a bad constitution

    @property
    def p(self) -> CritiqueReviseParams:
        assert isinstance(self.params, CritiqueReviseParams)
        return self.params

    def principles_for(self, record_id: str) -> list[Principle]:
        """The principles used for ``record_id``, one per round (reproducible; no repeats while possible)."""
        rng = random.Random(f"{self.p.seed}\x00{record_id}")
        pool = list(self.constitution.principles)
        out: list[Principle] = []
        while len(out) < self.p.rounds:
            order = pool[:]
            rng.shuffle(order)
            out.extend(order)
        return out[:self.p.rounds]

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        self.ensure_backend(ctx)
        p = self.p
        live: list[dict[str, Any]] = []
        out: Batch = []
        for r in batch:
            ir = instruction_and_response(r, p.max_seed_chars)
            if ir is None:
                self.count("skipped:no_response")
                continue
            live.append({"record": r, "instruction": ir[0], "original": ir[1], "current": ir[1], "steps": [],
                         "principles": self.principles_for(r.id), "failed": False})
        for rnd in range(p.rounds):
            active = [x for x in live if not x["failed"]]
            if not active:
                break
            crit_reqs = [LLMRequest.chat(
                self.templates["critique"].render(instruction=x["instruction"], response=x["current"],
                                                  principle=x["principles"][rnd].critique),
                self.sampled(p.critique_sampling, self.request_seed(x["record"].id, "critique", rnd)))
                for x in active]
            critiques = self.generate(crit_reqs)
            rev_reqs, rev_items = [], []
            for x, c in zip(active, critiques):
                text = clean_text(c.text, p.max_seed_chars) if c.ok else ""
                if not text:
                    x["failed"] = "no_critique"
                    continue
                x["steps"].append({"principle": x["principles"][rnd].name, "critique": text})
                rev_reqs.append(LLMRequest.chat(
                    self.templates["revise"].render(instruction=x["instruction"], response=x["current"],
                                                    critique=text, principle=x["principles"][rnd].revision),
                    self.sampled(p.revision_sampling, self.request_seed(x["record"].id, "revise", rnd))))
                rev_items.append(x)
            for x, c in zip(rev_items, self.generate(rev_reqs)):
                text = c.text.strip() if c.ok else ""
                if len(text) < p.min_revision_chars or text == x["current"].strip():
                    x["failed"] = "no_revision"
                    continue
                x["steps"][-1]["revision"] = text
                x["current"] = text
        for x in live:
            out.extend(self._emit(x))
        self.report_usage()
        return out

    def _emit(self, x: dict[str, Any]) -> list[Record]:
        parent: Record = x["record"]
        chain = {"constitution": self.constitution.name, "original": x["original"],
                 "steps": [s for s in x["steps"] if "revision" in s]}
        if not chain["steps"]:
            reason = x["failed"] or "no_revision"
            self.count(f"dropped:{reason}")
            dropped = Record(derive_id(parent.id, self.name, "sft"), parent.content, parent.modality,
                             meta={**parent.meta, "parents": [parent.id], "critique": {**chain, "steps": x["steps"]}},
                             lineage=list(parent.lineage))
            self.reject(dropped, reason)
            return [dropped]
        revision = chain["steps"][-1]["revision"]
        base_meta = {k: v for k, v in parent.meta.items() if k not in ("parents", "critique")}
        meta = {**base_meta, "parents": [parent.id], "critique": chain, "origin": "synthetic"}
        signals = {"critique.rounds": len(chain["steps"])}
        out = []
        if self.p.output in ("sft", "both"):
            out.append(Record(derive_id(parent.id, self.name, "sft"), conversation(x["instruction"], "", revision),
                              "conversation", meta=dict(meta), signals=dict(signals), lineage=list(parent.lineage)))
        if self.p.output in ("preference", "both"):
            content = {"prompt": x["instruction"], "chosen": revision, "rejected": x["original"]}
            out.append(Record(derive_id(parent.id, self.name, "preference"), content, "preference",
                              meta=dict(meta), signals=dict(signals), lineage=list(parent.lineage)))
        self.count("revised")
        return out
