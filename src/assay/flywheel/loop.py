"""``assay flywheel run RECIPE -o OUT``: the closed loop through all four stages, round by round, resumable.

Before round 1 (**reference**): the first ``harvest.reference_pages`` pages are harvested and set aside: they are the
lab's clean reference corpus (the quality ladder is built on them once) and the classifier's held-out set (labelled
by the stated gold rule, never shown to people, never trained on).

Each round r:

1. **harvest**: the next ``harvest.pages_per_round`` pages of the web sample go through the harvest steps.
2. **route**: the current quality classifier (trained on the human labels of rounds < r; none in round 1) scores
   them (``quality.prob``); the active-learning router picks ``route.budget`` documents where it is least sure and
   that are most unlike what people already labelled, and pushes them into the annotation project ``…-docs``.
3. **label**: people rate them 1-5 in the annotation app: seeded simulated annotators through its HTTP API, or real
   people in the browser (``people.mode: people``: the run stops here until they are done, and a rerun goes on).
4. **train**: the classifier is retrained on all human labels so far (rating >= ``classifier.good_at`` is "good");
   its accuracy on the held-out set is recorded. The round's documents are rescored; the curated set is the
   documents people rated good plus those the classifier calls good that people did not see.
5. **synthesize**: the best curated documents seed the synthesis steps (the local model by default); records are
   turned into instruction/response pairs and get ``meta["parents"]`` = the source document.
6. **verify**: critique / judge / execution steps on the new records; dropped ones are kept with their reason.
7. **review**: the most uncertain verified records (judge disagreement) go to people (``…-synthetic``); records they
   rate below ``synthesize.min_human_rating`` leave the pool.
8. **mix**: the training mix: every curated human document so far plus the accumulated synthetic generations, with
   at least ``mix.min_human_fraction`` human records; collapse metrics of this generation against the human anchor.
9. **knowledge**: where a person's rating and the machine's disagree by ``knowledge.disagreement`` or more, the
   correction becomes a knowledge patch proposed by that person and submitted for review (a reviewer signs a review).
10. **lab**: the round's datasets (harvested, curated, synthetic, mix) are placed on the quality ladder: ``Q`` with
    its confidence interval and effective clean tokens ``D·Q^(γ/β)``.

Every phase writes its files atomically, then its marker ``round-r/_done/<phase>``; a rerun skips finished phases.
Items are pushed to the annotation app only after the choice is on disk (a rerun pushes the same ones, which the app
does not duplicate), LLM answers come from ``OUT/llm-cache.sqlite``, patches are looked up by title before one is
proposed: ``kill -9`` at any moment and the same command resumes without duplicating anything.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

from assay.core.record import Record, derive_id
from assay.evolve.loop import read_records, text_of, write_json, write_records  # noqa: F401  (used here and by report/lineage)
from assay.flywheel.recipe import FlywheelError, FlywheelRecipe

STATE_FILE = "flywheel-state.json"
PHASES = ("harvest", "route", "label", "train", "synthesize", "verify", "review", "mix", "knowledge", "lab")
DOC_DIMENSION = "quality"


class WaitingForPeople(FlywheelError):
    """The round waits for people to label routed items in the annotation app (``people.mode: people``)."""


# -- files (the record and JSON files of a round are written as the evolve loop writes its own) -------------------
def read_json(path: Path, default: Any = None) -> Any:
    return orjson.loads(path.read_bytes()) if path.exists() else default


def title_of(record: Record) -> str:
    """A document's title: its HTML title when the extractor kept it, else its first line."""
    for key in ("title", "html_title"):
        v = record.meta.get(key)
        if isinstance(v, str) and v.strip():
            return v.strip()[:200]
    first = next((ln.strip("# ").strip() for ln in record.text.splitlines() if ln.strip()), "")
    return first[:200] or record.id


# -- the loop -----------------------------------------------------------------------------------------------------
class Flywheel:
    """Runs a :class:`FlywheelRecipe` into ``out_dir`` (see the module docstring)."""

    def __init__(self, recipe: FlywheelRecipe, out_dir: str | Path, base_dir: str | Path = ".",
                 log: Callable[[str], None] | None = None) -> None:
        self.recipe = recipe
        self.out = Path(out_dir)
        self.base = Path(base_dir)
        self.log = log or (lambda msg: None)
        self._db: Any = None
        self._projects: dict[str, Any] = {}
        self._lab_obj: Any = None
        self._pages: list[Record] | None = None

    # -- set-up --------------------------------------------------------------------------------------------------
    def prepare(self, overwrite: bool = False) -> None:
        state_path = self.out / STATE_FILE
        if overwrite and self.out.exists():
            if not state_path.exists() and any(self.out.iterdir()):
                raise FlywheelError(f"{self.out} holds files that are not a flywheel run; --overwrite leaves it alone")
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        fp = self.recipe.fingerprint()
        if state_path.exists():
            if read_json(state_path).get("fingerprint") != fp:
                raise FlywheelError(f"{self.out} holds a flywheel run with another recipe; use another folder or "
                                    "--overwrite")
        else:
            if any(self.out.iterdir()):
                raise FlywheelError(f"{self.out} is not empty and is not a flywheel run folder")
            write_json(state_path, {"fingerprint": fp, "recipe": self.recipe.model_dump(mode="json"),
                                    "created": time.time()})

    @property
    def cache_path(self) -> str:
        return str(self.out / "llm-cache.sqlite")

    @property
    def db(self) -> Any:
        if self._db is None:
            from assay.platform.db import Database

            self._db = Database(str(self.out / "annotate.db"))
            self._db.migrate()
        return self._db

    def project(self, kind: str) -> Any:
        """The annotation project of documents (``docs``) or synthetic records (``synthetic``)."""
        if kind not in self._projects:
            from assay.evolve.active import AnnotationProject

            ps = self.recipe.people
            guide = {"docs": "Rate how good this web document is to learn from (1 = worthless, 5 = excellent "
                             "prose that teaches something).",
                     "synthetic": "Rate this machine-written text (1 = wrong or useless, 5 = correct and useful). "
                                  "The machine judges were least sure about it."}[kind]
            self._projects[kind] = AnnotationProject(str(self.out / "annotate.db"), f"{self.recipe.name}-{kind}",
                                                     task_type="rating", dimensions=[DOC_DIMENSION], scale=(1, 5),
                                                     overlap=ps.overlap, guidelines=guide, aggregate=ps.aggregate)
        return self._projects[kind]

    def close(self) -> None:
        for p in self._projects.values():
            p.close()
        self._projects.clear()
        if self._db is not None:
            self._db.dispose()
            self._db = None

    def round_dir(self, r: int) -> Path:
        return self.out / f"round-{r:03d}"

    def done(self, where: Path, phase: str) -> bool:
        return (where / "_done" / phase).exists()

    def mark(self, where: Path, phase: str, info: dict[str, Any]) -> None:
        d = where / "_done"
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / phase, info)

    # -- the web sample ------------------------------------------------------------------------------------------
    def pages(self) -> list[Record]:
        """Every page of the harvest inputs, in input order (damaged input is skipped and counted)."""
        if self._pages is None:
            from assay.core.errors import ErrorLog
            from assay.io.sources import plan_shards, read_shard

            paths = [p if "://" in p or os.path.isabs(p) else os.path.normpath(self.base / p)
                     for p in self.recipe.harvest.inputs]
            errors = ErrorLog()
            try:
                shards = plan_shards(paths, "auto", 0)
            except (FileNotFoundError, ValueError) as e:
                raise FlywheelError(f"harvest.inputs: {e}") from None
            self._pages = [r for shard in shards for r in read_shard(shard, errors)]
            self.page_errors = dict(errors.counts)
        return self._pages

    def harvest_pages(self, pages: list[Record], where: Path, stage: str) -> tuple[list[Record], list[Record],
                                                                                 dict[str, Any]]:
        from assay.core.pipeline import Pipeline
        from assay.core.step import StepContext

        rejected: list[Record] = []
        pipe = Pipeline(self.recipe.steps("harvest"))
        kept = list(pipe.run_records([p.copy() for p in pages], StepContext(run_dir=where / "_work"),
                                     reject=rejected.extend))
        out = []
        for d in kept:
            if len(d.text.split()) < self.recipe.harvest.min_words:
                d.drop = ("flywheel", "too_short")
                rejected.append(d)
                continue
            d.meta["origin"] = "human"
            d.meta["flywheel"] = {"stage": stage}
            out.append(d)
        stats = {k: v.to_dict() for k, v in pipe.stats().items()}
        return out, rejected, stats

    # -- running -------------------------------------------------------------------------------------------------
    def run(self, rounds: int | None = None, overwrite: bool = False) -> dict[str, Any]:
        self.prepare(overwrite)
        total = rounds or self.recipe.rounds
        try:
            self.reference()
            for r in range(1, total + 1):
                self.run_round(r)
        finally:
            self.close()
        summary = self.summary()
        write_json(self.out / "flywheel.json", summary)
        from assay.flywheel.report import write_report

        write_report(self.out)
        return summary

    def reference(self) -> None:
        ref = self.out / "reference"
        ref.mkdir(exist_ok=True)
        hs = self.recipe.harvest
        if not self.done(ref, "harvest"):
            self.log("reference: harvest the reference pages")
            t = time.perf_counter()
            pages = self.pages()[:hs.reference_pages]
            docs, rejected, stats = self.harvest_pages(pages, ref, "reference")
            if len(docs) < 4:
                raise FlywheelError(f"only {len(docs)} of the {len(pages)} reference pages survived the harvest steps")
            from assay.flywheel.people import gold_rating

            for d in docs:
                d.signals["gold.quality"] = gold_rating(d.text)
            write_records(ref / "docs.jsonl", docs)
            self.mark(ref, "harvest", {"pages": len(pages), "records": len(docs), "rejected": len(rejected),
                                       "steps": stats, "seconds": round(time.perf_counter() - t, 3)})
        if not self.done(ref, "lab"):
            self.log("reference: build the quality ladder")
            t = time.perf_counter()
            law = self.lab.ladder([d.text for d in read_records(ref / "docs.jsonl")], log=self.log)
            self.mark(ref, "lab", {"law": law, "seconds": round(time.perf_counter() - t, 3)})

    @property
    def lab(self) -> Any:
        if self._lab_obj is None:
            from assay.flywheel.lab import Lab

            self._lab_obj = Lab(self.recipe.lab, self.out / "lab", self.recipe.seed)
        return self._lab_obj

    def _ensure_lab(self) -> None:
        if self._lab_obj is None or self._lab_obj._fit is None:
            self.lab.ladder([d.text for d in read_records(self.out / "reference" / "docs.jsonl")])

    def run_round(self, r: int) -> None:
        rd = self.round_dir(r)
        rd.mkdir(parents=True, exist_ok=True)
        for phase in PHASES:
            if not self.done(rd, phase):
                self.log(f"round {r}: {phase}")
                t = time.perf_counter()
                info = getattr(self, f"_{phase}")(r, rd)
                info["seconds"] = round(time.perf_counter() - t, 3)
                self.mark(rd, phase, info)

    # -- 1. harvest ----------------------------------------------------------------------------------------------
    def _harvest(self, r: int, rd: Path) -> dict[str, Any]:
        hs = self.recipe.harvest
        start = hs.reference_pages + (r - 1) * hs.pages_per_round
        pages = self.pages()[start:start + hs.pages_per_round]
        if not pages:
            raise FlywheelError(f"round {r}: the harvest inputs hold only {len(self.pages())} pages; round {r} "
                                f"needs pages {start + 1}..{start + hs.pages_per_round}")
        docs, rejected, stats = self.harvest_pages(pages, rd / "harvest", "harvest")
        for d in docs:
            d.meta["flywheel"] = {"round": r, "stage": "harvest"}
        write_records(rd / "harvest.jsonl", docs)
        write_records(rd / "harvest-rejected.jsonl", rejected)
        return {"pages": len(pages), "first_page": start, "records": len(docs), "rejected": len(rejected),
                "rejected_by": _reasons(rejected), "steps": stats}

    # -- 2. route ------------------------------------------------------------------------------------------------
    def model_path(self, r: int) -> Path:
        return self.out / "classifier" / f"round-{r:03d}.npz"

    def current_model(self, before_round: int) -> tuple[Any, int | None]:
        """The newest classifier trained before round ``before_round`` (and the round that trained it)."""
        from assay.models.quality_classifier import QualityModel

        for k in range(before_round - 1, 0, -1):
            if self.model_path(k).exists():
                return QualityModel.load(self.model_path(k)), k
        return None, None

    def _route(self, r: int, rd: Path) -> dict[str, Any]:
        from assay.evolve.active import ActiveRouter

        docs = read_records(rd / "harvest.jsonl")
        model, trained_in = self.current_model(r)
        probs = model.score([d.text for d in docs]) if model is not None and docs else [0.5] * len(docs)
        for d, p in zip(docs, probs):
            d.signals["quality.prob"] = round(float(p), 6)
            d.signals["quality.model_round"] = trained_in or 0
        write_records(rd / "scored.jsonl", docs)
        own = read_records(rd / "routed.jsonl")
        if own:  # an interrupted route phase wrote its choice before pushing: push the same items
            chosen = own
        else:
            earlier = [x for k in range(1, r) for x in read_records(self.round_dir(k) / "routed.jsonl")]
            rs = self.recipe.route
            router = ActiveRouter(rs.budget, diversity=rs.diversity, pool_factor=rs.pool_factor,
                                  entropy_signals=["quality.prob"])
            chosen = router.select(docs, labelled=earlier)
            write_records(rd / "routed.jsonl", chosen)
        pushed = self.project("docs").push(chosen)
        return {"candidates": len(docs), "routed": len(chosen), "pushed": pushed, "budget": self.recipe.route.budget,
                "classifier_round": trained_in}

    # -- 3. label ------------------------------------------------------------------------------------------------
    def _label(self, r: int, rd: Path) -> dict[str, Any]:
        return self.ask_people("docs", read_records(rd / "routed.jsonl"), r)

    def ask_people(self, kind: str, records: list[Record], r: int) -> dict[str, Any]:
        project = self.project(kind)
        ps = self.recipe.people
        if ps.mode == "simulated" and records:
            from assay.annotate import workflow
            from assay.flywheel.people import SimulatedAnnotator, accounts, serve_app
            from assay.platform.users import create_user

            passwords = accounts(self.out, [a.name for a in ps.annotators])
            with self.db.write() as s:
                p = workflow.find_project(s, project.project_name)
                for a in ps.annotators:
                    try:
                        workflow.find_user(s, a.name)
                    except workflow.NotFound:
                        create_user(s, a.name, passwords[a.name], "annotator")
                    try:
                        workflow.add_member(s, p, a.name)
                    except workflow.Conflict:
                        pass
            counts: dict[str, dict[str, int]] = {}
            with serve_app(str(self.out / "annotate.db")) as url:
                sims = [SimulatedAnnotator(url, a.name, passwords[a.name], a.noise, self.recipe.seed)
                        for a in ps.annotators]
                for name, c in _round_robin(sims, project.project_id, DOC_DIMENSION):
                    counts[name] = c
        labels = project.pull_labels()
        wanted = [x.id for x in records]
        missing = [i for i in wanted if DOC_DIMENSION not in labels.get(i, {})]
        if missing:
            raise WaitingForPeople(
                f"round {r}: {len(missing)} of {len(wanted)} items of project {project.project_name!r} still need "
                f"labels: label them in the browser (assay annotate serve --db {self.out / 'annotate.db'}), then "
                f"run the same command again to go on")
        info: dict[str, Any] = {"items": len(wanted), "labels": {i: labels[i][DOC_DIMENSION] for i in wanted}}
        if ps.mode == "simulated" and records:
            info["annotators"] = counts
        return info

    # -- 4. train ------------------------------------------------------------------------------------------------
    def all_labels(self, kind: str) -> dict[str, Any]:
        return {rid: lab[DOC_DIMENSION] for rid, lab in self.project(kind).pull_labels().items()
                if DOC_DIMENSION in lab}

    def _train(self, r: int, rd: Path) -> dict[str, Any]:
        from assay.models.embeddings import get_backend
        from assay.models.quality_classifier import train_quality_model

        cs = self.recipe.classifier
        labels = self.all_labels("docs")
        labelled = [x for k in range(1, r + 1) for x in read_records(self.round_dir(k) / "routed.jsonl")
                    if x.id in labels]
        held = read_records(self.out / "reference" / "docs.jsonl")
        texts = [x.text for x in labelled]
        y = [int(labels[x.id] >= cs.good_at) for x in labelled]
        eval_texts = [x.text for x in held]
        eval_y = [int(x.signals["gold.quality"] >= cs.good_at) for x in held]
        info: dict[str, Any] = {"labels_total": len(labelled), "positives": sum(y), "heldout": len(held),
                                "heldout_positives": sum(eval_y)}
        model = None
        if min(sum(y), len(y) - sum(y)) >= 2:
            backend = get_backend("hashed", dim=2**18) if cs.embedder == "hashed" else get_backend(cs.embedder)
            model = train_quality_model(texts, y, backend=backend, task="binary", eval_texts=eval_texts,
                                        eval_labels=eval_y, seed=self.recipe.seed,
                                        sources={"flywheel_round": r, "human_labels": len(labelled)})
            model.save(self.model_path(r))
            m = model.info.get("metrics", {})
            info.update({"trained": True, "accuracy": m.get("accuracy"),
                         "balanced_accuracy": m.get("balanced_accuracy"),
                         "auc": m.get("auc"), "majority_baseline": m.get("majority_baseline")})
        else:
            model, k = self.current_model(r)
            info.update({"trained": False, "why": f"needs >= 2 human labels of each class (has {sum(y)} good, "
                                                  f"{len(y) - sum(y)} not)", "kept_model_of_round": k})
            if model is not None:
                m = model.info.get("metrics", {})
                info.update({"accuracy": m.get("accuracy"), "balanced_accuracy": m.get("balanced_accuracy"),
                             "auc": m.get("auc"), "majority_baseline": m.get("majority_baseline")})
            else:
                share = sum(eval_y) / len(eval_y) if eval_y else 0.0
                info["majority_baseline"] = max(share, 1 - share)
        # rescore the round's documents and curate: people's ratings first, the classifier for the rest
        docs = read_records(rd / "scored.jsonl")
        probs = model.score([d.text for d in docs]) if model is not None and docs else None
        curated = []
        for i, d in enumerate(docs):
            if probs is not None:
                d.signals["quality.prob_after"] = round(float(probs[i]), 6)
            if d.id in labels:
                d.signals["human.quality"] = labels[d.id]
                keep = labels[d.id] >= cs.good_at
            else:
                keep = probs is None or probs[i] >= 0.5
            if keep:
                d.meta["flywheel"] = {"round": r, "stage": "curated"}
                curated.append(d)
        write_records(rd / "curated.jsonl", curated)
        info.update({"docs": len(docs), "curated": len(curated)})
        return info

    # -- 5. synthesize -------------------------------------------------------------------------------------------
    def _run_steps(self, steps: list[Any], records: list[Record], rd: Path) -> tuple[list[Record], list[Record],
                                                                                 dict[str, Any]]:
        from assay.core.pipeline import Pipeline
        from assay.core.step import StepContext
        from assay.flywheel.calls import attach

        ctx = StepContext(run_dir=rd / "_work")
        attach(steps, ctx, rd / "calls.jsonl")
        rejected: list[Record] = []
        pipe = Pipeline(steps)
        kept = list(pipe.run_records(records, ctx, reject=rejected.extend))
        return kept, rejected, {k: v.to_dict() for k, v in pipe.stats().items()}

    def _synthesize(self, r: int, rd: Path) -> dict[str, Any]:
        curated = read_records(rd / "curated.jsonl")
        ranked = sorted(curated, key=lambda d: (-(d.signals.get("human.quality") or 0),
                                                -(d.signals.get("quality.prob_after", d.signals.get("quality.prob"))
                                                  or 0), d.id))
        seeds = []
        for d in ranked[:self.recipe.synthesize.from_top]:
            seeds.append(Record(d.id, {"topic": title_of(d), "text": d.text[:1500]}, "text",
                                meta={"url": d.meta.get("url"), "origin": "human"}))
        write_records(rd / "seeds.jsonl", seeds)
        (rd / "calls.jsonl").unlink(missing_ok=True)  # a rerun of this phase logs its calls afresh (from the cache)
        made, rejected, stats = self._run_steps(
            self.recipe.steps("synthesize", round_no=r, cache=self.cache_path), [s.copy() for s in seeds], rd)
        seed_ids = {s.id for s in seeds}
        fresh = []
        for x in made:
            if x.id in seed_ids:
                continue
            x = as_instruction(x)
            x.id = derive_id(x.id, "flywheel-round", r)
            x.meta["origin"] = "synthetic"
            x.meta["generation"] = r
            x.meta["flywheel"] = {"round": r, "stage": "synthetic"}
            fresh.append(x)
        write_records(rd / "synthetic.jsonl", fresh)
        write_records(rd / "synthesize-rejected.jsonl", rejected)
        return {"seeds": len(seeds), "records": len(fresh), "rejected": len(rejected),
                "rejected_by": _reasons(rejected), "steps": stats}

    # -- 6. verify -----------------------------------------------------------------------------------------------
    def _verify(self, r: int, rd: Path) -> dict[str, Any]:
        from assay.evolve.execution import code_task_of

        synthetic = read_records(rd / "synthetic.jsonl")
        steps = self.recipe.steps("verify", round_no=r, cache=self.cache_path)
        if steps and synthetic:
            verified, rejected, stats = self._run_steps(steps, synthetic, rd)
        else:
            verified, rejected, stats = synthetic, [], {}
        code = [x for x in verified if not isinstance(code_task_of(x), str)]
        code_stats: dict[str, Any] = {}
        if code and self.recipe.synthesize.verify_code:
            code_ids = {x.id for x in code}
            ran, code_rejected, code_stats = self._run_steps(
                self.recipe.steps("verify_code", round_no=r, cache=self.cache_path), code, rd)
            verified = [x for x in verified if x.id not in code_ids] + ran
            rejected += code_rejected
        write_records(rd / "verified.jsonl", verified)
        write_records(rd / "verify-rejected.jsonl", rejected)
        return {"records": len(verified), "rejected": len(rejected), "rejected_by": _reasons(rejected),
                "code_tasks": len(code), "steps": stats, "code_steps": code_stats}

    # -- 7. review (synthetic items to people) -------------------------------------------------------------------
    def _review(self, r: int, rd: Path) -> dict[str, Any]:
        from assay.evolve.active import ActiveRouter

        verified = read_records(rd / "verified.jsonl")
        own = read_records(rd / "synth-routed.jsonl")
        if own:
            chosen = own
        else:
            earlier = [x for k in range(1, r) for x in read_records(self.round_dir(k) / "synth-routed.jsonl")]
            router = ActiveRouter(self.recipe.synthesize.route_budget, diversity=0.3, entropy_signals=[])
            chosen = router.select(verified, labelled=earlier)
            write_records(rd / "synth-routed.jsonl", chosen)
        pushed = self.project("synthetic").push(chosen)
        info = self.ask_people("synthetic", chosen, r)
        return {"candidates": len(verified), "routed": len(chosen), "pushed": pushed, **info}

    # -- 8. mix and collapse metrics -----------------------------------------------------------------------------
    def _mix(self, r: int, rd: Path) -> dict[str, Any]:
        from assay.evolve import collapse, mixer
        from assay.models.embeddings import get_backend

        ms = self.recipe.mix
        syn_labels = self.all_labels("synthetic")
        anchor = [x for k in range(1, r + 1) for x in read_records(self.round_dir(k) / "curated.jsonl")]
        removed = 0
        pools = []
        for k in range(1, r + 1):
            keep = []
            for x in read_records(self.round_dir(k) / "verified.jsonl"):
                if x.id in syn_labels:
                    x.signals["human.quality"] = syn_labels[x.id]
                    if syn_labels[x.id] < self.recipe.synthesize.min_human_rating:
                        removed += 1
                        continue
                keep.append(x)
            pools.append(keep)
        mixed = mixer.mix(anchor, pools, ms.min_human_fraction, ms.mode, None, self.recipe.seed)
        write_records(rd / "mix.jsonl", mixed)
        generation = read_records(rd / "verified.jsonl")
        metrics: dict[str, Any] = {}
        if generation and anchor:
            try:
                metrics = collapse.collapse_metrics([text_of(x) for x in generation], [text_of(x) for x in anchor],
                                                    get_backend("hashed", dim=4096), 2000, self.recipe.seed,
                                                    n_boot=20)
            except ValueError as e:  # too few texts for a metric: said in the report, the loop goes on
                metrics = {"error": str(e)}
        write_json(rd / "metrics.json", metrics)
        return {"removed_by_people": removed, **mixer.mix_stats(mixed)}

    # -- 9. knowledge --------------------------------------------------------------------------------------------
    def _knowledge(self, r: int, rd: Path) -> dict[str, Any]:
        ks = self.recipe.knowledge
        doc_labels = self.all_labels("docs")
        syn_labels = self.all_labels("synthetic")
        annotations = self.annotations()
        cases = []
        for x in read_records(rd / "routed.jsonl"):
            if x.id not in doc_labels:
                continue
            machine = 1 + 4 * float(x.signals.get("quality.prob", 0.5))
            gap = doc_labels[x.id] - machine
            if abs(gap) >= ks.disagreement:
                cases.append((abs(gap), "docs", x, doc_labels[x.id], machine))
        for x in read_records(rd / "synth-routed.jsonl"):
            if x.id not in syn_labels or not isinstance(x.signals.get("judge.score"), (int, float)):
                continue
            machine = 1 + 4 * (float(x.signals["judge.score"]) - 1) / 9  # the judge's 1-10 on the 1-5 scale
            gap = syn_labels[x.id] - machine
            if abs(gap) >= ks.disagreement:
                cases.append((abs(gap), "synthetic", x, syn_labels[x.id], machine))
        cases.sort(key=lambda c: (-c[0], c[2].id))
        patches = read_json(rd / "patches.json", {})
        if ks.max_per_round and cases:
            store, reviewer_key = self.knowledge_store()
            for _gap, kind, x, human, machine in cases[:ks.max_per_round]:
                if x.id in patches:
                    continue
                who = next((a["annotator"] for a in annotations.get(x.id, [])), None)
                if who is None:
                    continue
                patches[x.id] = self.propose_patch(store, reviewer_key, kind, x, who, human, machine, r)
                write_json(rd / "patches.json", patches)
        write_json(rd / "patches.json", patches)
        return {"disagreements": len(cases), "patches": len(patches),
                "patch_ids": sorted({p["patch_id"] for p in patches.values()})}

    def knowledge_store(self) -> tuple[Any, Any]:
        """The knowledge store (same database as the annotation app) and the simulated reviewer's key; every set-up
        step is idempotent, so a run killed half-way through it sets up the rest on the rerun."""
        from assay.annotate import workflow
        from assay.flywheel.people import accounts
        from assay.platform.users import create_user
        from assay.knowledge import keys
        from assay.knowledge.store import KnowledgeStore

        store = KnowledgeStore(self.db, default_quorum=1)
        kdir = self.out / "keys"
        kdir.mkdir(exist_ok=True)
        loaded = {}
        for name in ("reviewer", "root"):
            path = kdir / f"{name}.pem"
            if not path.exists():
                tmp = kdir / f".{name}.{os.getpid()}.pem"
                for stale in (tmp, tmp.with_name(tmp.name + ".pub")):
                    stale.unlink(missing_ok=True)
                keys.save(keys.generate(), tmp)
                os.replace(tmp.with_name(tmp.name + ".pub"), path.with_name(path.name + ".pub"))
                os.replace(tmp, path)
            loaded[name] = keys.load_private(path)
        reviewer = f"{self.recipe.name}-reviewer"
        with self.db.write() as s:
            try:
                workflow.find_user(s, reviewer)
            except workflow.NotFound:
                create_user(s, reviewer, accounts(self.out, [reviewer])[reviewer], "annotator")
        store.grant(reviewer, self.recipe.knowledge.domain, "reviewer")
        store.register_key(reviewer, keys.raw_public(loaded["reviewer"]), "reviewer")
        store.certify(loaded["root"])
        return store, loaded["reviewer"]

    def propose_patch(self, store: Any, reviewer_key: Any, kind: str, x: Record, author: str, human: float,
                      machine: float, r: int) -> dict[str, Any]:
        """The expert's correction as a patch (found again by its title after a kill) with one signed review."""
        from sqlalchemy import select

        from assay.knowledge.models import PatchVersion

        what = "web document" if kind == "docs" else "synthetic text"
        title = f"Quality correction for {what} {x.id}"
        subject = x.meta.get("url") or title_of(x) if kind == "docs" else title_of(x)
        content = (f"People rated the {what} {subject!s} {human:g}/5 where the machine estimate was {machine:.1f}/5 "
                   f"(round {r} of flywheel {self.recipe.name!r}). Rating rule: a good document to learn from has "
                   f"enough words, most of them in sentences of prose rather than tables, lists or code.")
        with self.db.read() as s:
            found = [row for row in s.scalars(select(PatchVersion)) if (row.document or {}).get("title") == title]
        if found:
            patch_id, version = found[0].patch_id, found[0].version
        else:
            source = {"record_id": x.id, "title": title_of(x)[:200]}
            if kind == "docs" and x.meta.get("url"):
                source["url"] = x.meta["url"]
            p = store.propose(author, title=title, content=content, domains=[self.recipe.knowledge.domain],
                              sources=[source])
            patch_id, version = p.patch_id, p.version
        history = store.history(patch_id)
        reviewer = f"{self.recipe.name}-reviewer"
        reviewed = any(e.get("event") == "review" for e in history.get("events", []))
        status = None
        if not reviewed:
            status = store.review(patch_id, version, reviewer, "accept", reviewer_key,
                                  "checked against the annotation and the rating rule").status
        return {"patch_id": patch_id, "version": version, "author": author, "reviewer": reviewer, "kind": kind,
                "status": status or store.get(patch_id, version).status, "human": human, "machine": round(machine, 3)}

    def annotations(self) -> dict[str, list[dict[str, Any]]]:
        from assay.flywheel.people import human_labels

        out: dict[str, list[dict[str, Any]]] = {}
        for kind in ("docs", "synthetic"):
            for rid, anns in human_labels(self.db, self.project(kind).project_id).items():
                out.setdefault(rid, []).extend({**a, "project": self.project(kind).project_name} for a in anns)
        return out

    # -- 10. lab -------------------------------------------------------------------------------------------------
    def _lab(self, r: int, rd: Path) -> dict[str, Any]:
        self._ensure_lab()
        sets = {"harvest": read_records(rd / "harvest.jsonl"), "curated": read_records(rd / "curated.jsonl"),
                "synthetic": read_records(rd / "verified.jsonl"), "mix": read_records(rd / "mix.jsonl")}
        placements = {}
        for name, recs in sets.items():
            self.log(f"round {r}: lab: place {name} ({len(recs)} records)")
            placements[name] = self.lab.place(name, [text_of(x) for x in recs if text_of(x).strip()])
        write_json(rd / "lab.json", placements)
        return {"placed": sorted(k for k, v in placements.items() if v.get("placed"))}

    # -- summary -------------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        rounds = []
        r = 1
        while self.round_dir(r).exists():
            rd = self.round_dir(r)
            entry: dict[str, Any] = {"round": r}
            for phase in PHASES:
                f = rd / "_done" / phase
                if f.exists():
                    entry[phase] = read_json(f)
            entry["metrics"] = read_json(rd / "metrics.json", {})
            entry["lab_placements"] = read_json(rd / "lab.json", {})
            entry["patches"] = read_json(rd / "patches.json", {})
            entry["complete"] = all((rd / "_done" / p).exists() for p in PHASES)
            rounds.append(entry)
            r += 1
        ref = self.out / "reference" / "_done"
        return {"name": self.recipe.name, "out": str(self.out), "rounds": rounds,
                "reference": {p: read_json(ref / p) for p in ("harvest", "lab") if (ref / p).exists()},
                "people": {"mode": self.recipe.people.mode,
                           "annotators": [a.model_dump() for a in self.recipe.people.annotators],
                           "rule": "gold_rating (assay.flywheel.people)"},
                "recipe": self.recipe.model_dump(mode="json")}


def as_instruction(x: Record) -> Record:
    """A synthesized text record as an instruction/response pair (what judges, critics and people rate); records
    that already are instruction data stay as they are."""
    if isinstance(x.content, str):
        synth = x.meta.get("synth") or {}
        topic = synth.get("topic") or title_of(x)
        audience = synth.get("audience") or "a general reader"
        style = synth.get("style") or "textbook"
        body = x.content
        prefix = f"# {topic}"
        if body.startswith(prefix):
            body = body[len(prefix):].lstrip()
        x.content = {"instruction": f"Write a {style} section about {topic} for {audience}.", "output": body}
        x.modality = "conversation"
    return x


def _reasons(rejected: list[Record]) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in rejected:
        reason = f"{x.drop[0]}:{x.drop[1]}" if x.drop else "?"
        out[reason] = out.get(reason, 0) + 1
    return out


def _round_robin(sims: list[Any], project_id: int, dimension: str) -> Iterator[tuple[str, dict[str, int]]]:
    """Annotators take one item each in turn until the queue is empty for all of them (each item once per
    overlap slot), so the work spreads over them as it would over people working at the same time."""
    sessions = {s.name: s.open() for s in sims}
    totals = {s.name: {"answered": 0, "random_answers": 0} for s in sims}
    try:
        active = list(sims)
        while active:
            still = []
            for s in active:
                got = s.answer_one(sessions[s.name], project_id, dimension)
                if got is not None:
                    totals[s.name]["answered"] += 1
                    totals[s.name]["random_answers"] += int(got)
                    still.append(s)
            active = still
    finally:
        for s in sims:
            s.close(sessions[s.name])
    yield from totals.items()


def run_flywheel(recipe_path: str | Path, out_dir: str | Path, rounds: int | None = None, overwrite: bool = False,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    recipe, base = FlywheelRecipe.from_yaml(recipe_path)
    return Flywheel(recipe, out_dir, base, log).run(rounds, overwrite)
