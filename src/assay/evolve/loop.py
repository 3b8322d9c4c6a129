"""``assay evolve loop RECIPE``: the closed loop, for N rounds, resumable.

Each round r = 1..N:

1. **synthesize**: the ``synthesize`` steps run on ``inputs_per_round`` records drawn (seeded) from the previous
   round's training mix (round 1: the human anchor set); their new records are this round's generation
   (``meta["origin"] = "synthetic"``, ``meta["generation"] = r``).
2. **verify**: the ``verify`` steps (judges, the code sandbox, filters) run on the generation; dropped records go
   to ``round-r/rejected.jsonl`` with their reason.
3. **route**: the active-learning router picks exactly ``route.budget`` verified records where the machines are
   least sure (judge disagreement, classifier entropy) and most diverse, and pushes them into the annotation
   project (``route.db``, ``route.project``); already labelled and already routed records serve as anchors.
4. **merge**: the human labels available so far are pulled back; they recalibrate the judge (isotonic fit of judge
   score → human rating, ``judge.calibrated`` on every verified record), and synthetic records people rated below
   ``route.min_human_rating`` leave the pool. The training mix is the human anchor set plus the *accumulated*
   verified generations 1..r (or only the last with ``mix.mode: replace``), with at least
   ``mix.min_human_fraction`` human records.
5. **measure**: collapse metrics of this round's generation against the anchor set (distinct-n, self-BLEU, Vendi,
   tail recall, embedding coverage), and the mix's composition.

Everything lands in the output folder: ``round-r/{inputs,synthetic,verified,rejected,routed,mix}.jsonl``,
``round-r/labels.json``, ``round-r/metrics.json``, ``loop.json`` (all rounds) and ``report.html``. Each phase
writes its files atomically and then a marker ``round-r/_done/<phase>``; a rerun skips finished phases, and LLM
answers come from ``llm-cache.sqlite`` in the output folder, so an interrupted loop resumes where it stopped. A
folder holding a loop with a different recipe is refused (``--overwrite`` starts afresh).

Recipe (YAML)::

    name: evolve-demo
    rounds: 2
    seed: 0
    anchor: {path: seeds.jsonl, text_key: null, limit: 20}   # human data; path relative to the recipe
    inputs_per_round: 4
    backend: {kind: local}          # default `backend:` for every LLM step that does not set its own
    synthesize: [{evol_instruct: {rounds: 1}}]
    verify: [{judge_score: {samples: 2}}]
    route: {budget: 3, project: evolve-demo, db: annotate.db, diversity: 0.5}
    mix: {min_human_fraction: 0.5, mode: accumulate}
    measure: {embedder: hashed}
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assay.core.errors import AssayError, ErrorLog, RecipeError
from assay.core.pipeline import Pipeline
from assay.core.recipe import Recipe, read_yaml, validation_summary
from assay.core.record import Record, derive_id
from assay.core.step import Step, StepContext
from assay.evolve import active, collapse, mixer
from assay.evolve import steps as _register_evolve_steps  # noqa: F401  (the loop's recipes name them)

PHASES = ("synthesize", "verify", "route", "merge", "measure")
STATE_FILE = "loop-state.json"


class LoopError(AssayError):
    """A loop recipe or output folder that cannot be used."""


class AnchorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: file(s) of human data (JSONL, Parquet, Assay records or foreign JSON); relative to the recipe
    path: str | list[str]
    #: field holding the text of foreign JSON objects; null keeps the whole object as content
    text_key: str | None = None
    #: use at most this many records (the first ones)
    limit: int | None = Field(None, ge=1)


class RouteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: items sent to people per round (exactly this many, when there are enough verified records)
    budget: int = Field(10, ge=0)
    #: annotation database (SQLite path relative to the output folder, or a postgresql:// URL)
    db: str = "annotate.db"
    project: str = "evolve"
    task_type: Literal["rating", "preference"] = "rating"
    dimensions: list[str] = Field(default_factory=lambda: ["quality"])
    scale: tuple[int, int] = (1, 5)
    overlap: int = Field(1, ge=1, le=50)
    diversity: float = Field(0.5, ge=0.0, le=1.0)
    pool_factor: float = Field(3.0, ge=1.0)
    entropy_signals: list[str] = Field(default_factory=lambda: ["quality.prob"])
    #: synthetic records people rated below this (on `dimensions[0]`) leave the training pool; null keeps them
    min_human_rating: float | None = 2
    #: consensus over annotators: majority or dawid-skene
    aggregate: Literal["majority", "dawid-skene"] = "majority"


class MixSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_human_fraction: float = Field(0.5, ge=0.0, le=1.0)
    mode: Literal["accumulate", "replace"] = "accumulate"
    max_synthetic: int | None = Field(None, ge=0)


class MeasureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: embeddings for Vendi and coverage: minilm (default, offline), hashed (no torch), or none
    embedder: str = "minilm"
    max_docs: int = Field(2000, ge=10)


class LoopRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "evolve"
    description: str = ""
    rounds: int = Field(2, ge=1, le=1000)
    seed: int = 0
    anchor: AnchorSpec
    inputs_per_round: int | None = Field(None, ge=1)
    backend: dict[str, Any] | None = None
    synthesize: list[Any] = Field(default_factory=list)
    verify: list[Any] = Field(default_factory=list)
    route: RouteSpec = Field(default_factory=RouteSpec)
    mix: MixSpec = Field(default_factory=MixSpec)
    measure: MeasureSpec = Field(default_factory=MeasureSpec)
    batch_size: int = Field(64, ge=1)

    @classmethod
    def from_yaml(cls, path: str | Path) -> tuple["LoopRecipe", Path]:
        path = Path(path)
        data = read_yaml(path, LoopError, "loop recipe")
        return cls.from_dict(data or {}, str(path)), path.resolve().parent

    @classmethod
    def from_dict(cls, data: Any, source: str = "<loop>") -> "LoopRecipe":
        if not isinstance(data, dict):
            raise LoopError(f"{source}: a loop recipe is a mapping (rounds, anchor, synthesize, verify, ...)")
        try:
            recipe = cls(**data)
        except ValidationError as e:
            raise LoopError(f"{source}: {validation_summary(e)}") from None
        if not recipe.synthesize:
            raise LoopError(f"{source}: `synthesize` needs at least one step")
        for part in ("synthesize", "verify"):
            recipe.steps(part, source)  # validate step names and parameters now
        return recipe

    def steps(self, part: str, source: str = "<loop>", round_no: int | None = None,
              cache: str | None = None) -> list[Step]:
        """Fresh step instances for ``synthesize`` or ``verify``: the loop's ``backend`` filled in where a step sets
        none, ``cache`` as the response cache of LLM steps that set none, and, for round ``round_no``, each ``seed``
        parameter shifted by the round so that every round samples anew (seed s becomes s * 1000003 + round)."""
        raw = getattr(self, part)
        try:
            sub = Recipe.from_dict({"name": f"{self.name}-{part}", "steps": raw}, source=f"{source}: {part}")
        except RecipeError as e:
            raise LoopError(str(e)) from None
        steps = sub.instantiate()
        out = []
        for step in steps:
            changes: dict[str, Any] = {}
            fields = step.Params.model_fields
            if self.backend is not None and "backend" in fields and "backend" not in step.params.model_fields_set:
                changes["backend"] = self.backend
            if cache is not None and "cache" in fields and "cache" not in step.params.model_fields_set:
                changes["cache"] = cache
            if round_no is not None and "seed" in fields:
                base = step.params.seed if "seed" in step.params.model_fields_set else self.seed  # type: ignore[attr-defined]
                changes["seed"] = base * 1_000_003 + round_no
            if changes:
                step = type(step)({**step.params.model_dump(exclude_unset=True), **changes})
            out.append(step)
        return out

    def fingerprint(self) -> str:
        import xxhash

        d = self.model_dump(mode="json", exclude={"description", "rounds"})
        return xxhash.xxh3_64_hexdigest(orjson.dumps(d, option=orjson.OPT_SORT_KEYS))


# -- files --------------------------------------------------------------------------------------------------------
def write_records(path: Path, records: Iterable[Record]) -> int:
    """Write records as JSONL atomically (temporary file, then rename)."""
    tmp = path.with_name(f".tmp-{path.name}")
    n = 0
    with open(tmp, "wb") as f:
        for r in records:
            f.write(r.to_json() + b"\n")
            n += 1
    os.replace(tmp, path)
    return n


def read_records(path: Path) -> list[Record]:
    if not path.exists():
        return []
    with open(path, "rb") as f:
        return [Record.from_dict(orjson.loads(line)) for line in f if line.strip()]


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    os.replace(tmp, path)


def text_of(record: Record) -> str:
    """The text the collapse metrics compare: the instruction and the answer of instruction data, the text of text
    records, the chosen response of preference pairs, the code of code records."""
    c = record.content
    if isinstance(c, str):
        return c
    if not isinstance(c, dict):
        return ""
    parts = []
    for key in ("instruction", "prompt", "question", "problem", "input", "output", "response", "answer",
                "solution", "chosen", "text"):
        v = c.get(key)
        if isinstance(v, str) and v.strip():
            parts.append(v)
    if not parts and isinstance(c.get("messages"), list):
        parts = [m["content"] for m in c["messages"] if isinstance(m, dict) and isinstance(m.get("content"), str)]
    instances = c.get("instances")  # Self-Instruct seed tasks
    if isinstance(instances, list):
        for inst in instances[:1]:
            if isinstance(inst, dict):
                parts += [v for v in (inst.get("input"), inst.get("output")) if isinstance(v, str) and v.strip()]
    return "\n".join(parts)


def load_anchor(spec: AnchorSpec, base: Path) -> list[Record]:
    """The human anchor records (``meta["origin"] = "human"``); damaged input is skipped, not fatal."""
    from assay.io.sources import plan_shards, read_shard

    paths = [spec.path] if isinstance(spec.path, str) else list(spec.path)
    paths = [p if "://" in p or os.path.isabs(p) else str(base / p) for p in paths]
    errors = ErrorLog()
    out: list[Record] = []
    try:
        shards = plan_shards(paths, "auto", 0)
    except (FileNotFoundError, ValueError) as e:
        raise LoopError(f"anchor: {e}") from None
    for shard in shards:
        for r in read_shard(shard, errors, text_key=spec.text_key):
            r.meta["origin"] = "human"
            out.append(r)
            if spec.limit is not None and len(out) >= spec.limit:
                return out
    if not out:
        raise LoopError(f"anchor: no records in {paths} (skipped: {dict(errors.counts)})")
    return out


# -- the loop -----------------------------------------------------------------------------------------------------
class EvolveLoop:
    """Runs a :class:`LoopRecipe` into ``out_dir`` (see the module docstring)."""

    def __init__(self, recipe: LoopRecipe, out_dir: str | Path, base_dir: str | Path = ".",
                 log: Callable[[str], None] | None = None, embedder: Any | None = None) -> None:
        self.recipe = recipe
        self.out = Path(out_dir)
        self.base = Path(base_dir)
        self.log = log or (lambda msg: None)
        self._embedder = embedder
        self._sink: active.AnnotationProject | None = None

    # -- set-up --------------------------------------------------------------------------------------------------
    def prepare(self, overwrite: bool = False) -> None:
        state_path = self.out / STATE_FILE
        if overwrite and self.out.exists():
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        fp = self.recipe.fingerprint()
        if state_path.exists():
            state = orjson.loads(state_path.read_bytes())
            if state.get("fingerprint") != fp:
                raise LoopError(f"{self.out} holds a loop run with another recipe; use another folder or --overwrite")
        else:
            if any(p.name.startswith("round-") for p in self.out.iterdir()):
                raise LoopError(f"{self.out} is not empty and is not an evolve loop folder")
            write_json(state_path, {"fingerprint": fp, "recipe": self.recipe.model_dump(mode="json"),
                                    "created": time.time()})

    @property
    def cache_path(self) -> str:
        """One LLM response cache for the whole loop (a resumed round asks nothing twice)."""
        return str(self.out / "llm-cache.sqlite")

    @property
    def db_url(self) -> str:
        db = self.recipe.route.db
        return db if "://" in db or os.path.isabs(db) else str(self.out / db)

    @property
    def sink(self) -> active.AnnotationProject:
        if self._sink is None:
            rs = self.recipe.route
            self._sink = active.AnnotationProject(self.db_url, rs.project, task_type=rs.task_type,
                                                  dimensions=rs.dimensions, scale=rs.scale, overlap=rs.overlap,
                                                  aggregate=rs.aggregate)
        return self._sink

    @property
    def embedder(self) -> Any | None:
        if self._embedder is None and self.recipe.measure.embedder != "none":
            from assay.models.embeddings import get_backend

            name = self.recipe.measure.embedder
            self._embedder = get_backend(name, dim=4096) if name == "hashed" else get_backend(name)
        return self._embedder

    def round_dir(self, r: int) -> Path:
        return self.out / f"round-{r:03d}"

    def done(self, r: int, phase: str) -> bool:
        return (self.round_dir(r) / "_done" / phase).exists()

    def mark(self, r: int, phase: str, info: dict[str, Any]) -> None:
        d = self.round_dir(r) / "_done"
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / phase, info)

    # -- running -------------------------------------------------------------------------------------------------
    def run(self, rounds: int | None = None, overwrite: bool = False) -> dict[str, Any]:
        """Run (or resume) the loop; returns the summary written to ``loop.json``."""
        self.prepare(overwrite)
        anchor = load_anchor(self.recipe.anchor, self.base)
        total = rounds or self.recipe.rounds
        try:
            for r in range(1, total + 1):
                self.run_round(r, anchor)
        finally:
            if self._sink is not None:
                self._sink.close()
        summary = self.summary()
        write_json(self.out / "loop.json", summary)
        from assay.evolve.report import write_report

        write_report(self.out)
        return summary

    def _run_steps(self, steps: list[Step], records: list[Record], r: int) -> tuple[list[Record], list[Record],
                                                                                    dict[str, Any]]:
        rejected: list[Record] = []
        pipe = Pipeline(steps)
        # each round's steps keep their state (global steps, scratch) in the round's own folder
        ctx = StepContext(run_dir=self.round_dir(r) / "_work")
        kept = list(pipe.run_records(records, ctx, batch_size=self.recipe.batch_size, reject=rejected.extend))
        stats = {k: v.to_dict() for k, v in pipe.stats().items()}
        return kept, rejected, stats

    def run_round(self, r: int, anchor: list[Record]) -> None:
        rd = self.round_dir(r)
        rd.mkdir(parents=True, exist_ok=True)
        rc = self.recipe
        # 1. synthesize ------------------------------------------------------------------------------------------
        if not self.done(r, "synthesize"):
            self.log(f"round {r}: synthesize")
            previous = anchor if r == 1 else read_records(self.round_dir(r - 1) / "mix.jsonl")
            inputs = list(previous)
            if rc.inputs_per_round is not None and len(inputs) > rc.inputs_per_round:
                inputs = random.Random(f"{rc.seed}:{r}").sample(inputs, rc.inputs_per_round)
            write_records(rd / "inputs.jsonl", inputs)
            t = time.perf_counter()
            made, rejected, stats = self._run_steps(rc.steps("synthesize", round_no=r, cache=self.cache_path), [x.copy() for x in inputs],
                                                    r)
            fresh = []
            input_ids = {x.id for x in inputs}
            for x in made:
                if x.id in input_ids:  # a step that passes its inputs through: they are not this generation
                    continue
                # ids of made records derive from their parents; the same parent may be drawn in several rounds
                x.id = derive_id(x.id, "evolve-round", r)
                x.meta["origin"] = "synthetic"
                x.meta["generation"] = r
                fresh.append(x)
            write_records(rd / "synthetic.jsonl", fresh)
            write_records(rd / "rejected-synthesize.jsonl", rejected)
            self.mark(r, "synthesize", {"inputs": len(inputs), "records": len(fresh), "rejected": len(rejected),
                                        "seconds": round(time.perf_counter() - t, 3), "steps": stats})
        # 2. verify ----------------------------------------------------------------------------------------------
        if not self.done(r, "verify"):
            self.log(f"round {r}: verify")
            t = time.perf_counter()
            synthetic = read_records(rd / "synthetic.jsonl")
            if rc.verify:
                verified, rejected, stats = self._run_steps(rc.steps("verify", round_no=r, cache=self.cache_path), synthetic, r)
            else:
                verified, rejected, stats = synthetic, [], {}
            write_records(rd / "verified.jsonl", verified)
            write_records(rd / "rejected.jsonl", rejected)
            self.mark(r, "verify", {"records": len(verified), "rejected": len(rejected),
                                    "seconds": round(time.perf_counter() - t, 3), "steps": stats})
        # 3. route -----------------------------------------------------------------------------------------------
        if not self.done(r, "route"):
            self.log(f"round {r}: route")
            verified = read_records(rd / "verified.jsonl")
            earlier = [x for k in range(1, r) for x in read_records(self.round_dir(k) / "routed.jsonl")]
            by_id = {x.id: x for x in verified}
            # an interrupted route phase wrote its choice before pushing: reuse it (the push is idempotent)
            own = [x.id for x in read_records(rd / "routed.jsonl")]
            already = set(self.sink.item_record_ids()) - set(own)
            candidates = [x for x in verified if x.id not in already]
            if own and all(i in by_id for i in own):
                chosen = [by_id[i] for i in own]
            else:
                router = active.ActiveRouter(rc.route.budget, diversity=rc.route.diversity,
                                             pool_factor=rc.route.pool_factor,
                                             entropy_signals=rc.route.entropy_signals)
                chosen = router.select(candidates, labelled=earlier)
                write_records(rd / "routed.jsonl", chosen)  # before the push: a rerun pushes the same items
            pushed = self.sink.push(chosen)
            self.mark(r, "route", {"candidates": len(candidates), "routed": len(chosen), "pushed": pushed,
                                   "budget": rc.route.budget, "project": rc.route.project})
        # 4. merge -----------------------------------------------------------------------------------------------
        if not self.done(r, "merge"):
            self.log(f"round {r}: merge")
            labels = self.sink.pull_labels()
            write_json(rd / "labels.json", labels)
            generations = [read_records(self.round_dir(k) / "verified.jsonl") for k in range(1, r + 1)]
            dim = rc.route.dimensions[0] if rc.route.task_type == "rating" else "choice"
            calibration = self._calibrate(generations, labels, dim)
            removed = 0
            pools = []
            for gen in generations:
                keep = []
                for x in gen:
                    lab = labels.get(x.id, {})
                    if calibration is not None and isinstance(x.signals.get("judge.score"), (int, float)):
                        x.signals["judge.calibrated"] = round(calibration(x.signals["judge.score"]), 4)
                    if lab:
                        x.signals.update({f"human.{k}": v for k, v in lab.items()})
                    low = (rc.route.min_human_rating is not None and isinstance(lab.get(dim), (int, float))
                           and lab[dim] < rc.route.min_human_rating)
                    if low:
                        removed += 1
                    else:
                        keep.append(x)
                pools.append(keep)
            mixed = mixer.mix(anchor, pools, rc.mix.min_human_fraction, rc.mix.mode, rc.mix.max_synthetic, rc.seed)
            write_records(rd / "mix.jsonl", mixed)
            self.mark(r, "merge", {"labels": len(labels), "removed_by_people": removed,
                                   "calibration": calibration.to_dict() if calibration else None,
                                   **mixer.mix_stats(mixed)})
        # 5. measure ---------------------------------------------------------------------------------------------
        if not self.done(r, "measure"):
            self.log(f"round {r}: measure")
            generation = read_records(rd / "verified.jsonl")
            mixed = read_records(rd / "mix.jsonl")
            metrics = collapse.collapse_metrics([text_of(x) for x in generation], [text_of(x) for x in anchor],
                                                self.embedder, rc.measure.max_docs, rc.seed)
            mix_syn = [text_of(x) for x in mixed if not mixer.is_human(x)]
            metrics["mix"] = {**mixer.mix_stats(mixed),
                              "synthetic.distinct_2": round(collapse.distinct_n(mix_syn, 2), 6)}
            write_json(rd / "metrics.json", metrics)
            self.mark(r, "measure", {"done": True})

    def _calibrate(self, generations: list[list[Record]], labels: dict[str, dict[str, Any]],
                   dim: str) -> active.Calibration | None:
        pairs = []
        for gen in generations:
            for x in gen:
                lab = labels.get(x.id, {})
                if isinstance(x.signals.get("judge.score"), (int, float)) and isinstance(lab.get(dim), (int, float)):
                    pairs.append((x.signals["judge.score"], lab[dim]))
        return active.calibrate_judge(pairs)

    def summary(self) -> dict[str, Any]:
        """Per round: phase books and metrics (only finished rounds)."""
        rounds = []
        r = 1
        while self.round_dir(r).exists():
            rd = self.round_dir(r)
            entry: dict[str, Any] = {"round": r}
            for phase in PHASES:
                f = rd / "_done" / phase
                if f.exists():
                    entry[phase] = orjson.loads(f.read_bytes())
            if (rd / "metrics.json").exists():
                entry["metrics"] = orjson.loads((rd / "metrics.json").read_bytes())
            rounds.append(entry)
            r += 1
        return {"name": self.recipe.name, "out": str(self.out), "annotation": {"db": self.db_url,
                                                                              "project": self.recipe.route.project},
                "rounds": rounds}


def run_loop(recipe_path: str | Path, out_dir: str | Path, rounds: int | None = None, overwrite: bool = False,
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Load a loop recipe and run it into ``out_dir`` (resuming what is there)."""
    recipe, base = LoopRecipe.from_yaml(recipe_path)
    return EvolveLoop(recipe, out_dir, base, log).run(rounds, overwrite)
