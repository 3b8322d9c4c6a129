"""A record's whole history in a flywheel run, stage by stage: the source page, the harvest steps, the classifier's
scores, people's labels, the synthesis and verification steps with their model calls (backend, prompt template,
cache key), people's review, the knowledge patches and their reviews, and the mixes and lab placements it is part of.

Everything is read back from the run folder and its annotation database; nothing is kept only in memory. A synthetic
record is followed to its source document through ``meta["parents"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from assay.core.record import Record
from assay.flywheel.calls import read_calls
from assay.flywheel.loop import read_json, read_records, text_of

STAGE_FILES = ("harvest", "scored", "routed", "curated", "seeds", "synthetic", "verified", "synth-routed", "mix")


class RunIndex:
    """Every record of every round file, by id (latest version of each stage kept), plus labels and patches."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.rounds: list[int] = []
        self.files: dict[tuple[int, str], dict[str, Record]] = {}
        self.calls: dict[int, list[dict[str, Any]]] = {}
        self.patches: dict[str, list[dict[str, Any]]] = {}
        r = 1
        while (out / f"round-{r:03d}").exists():
            rd = out / f"round-{r:03d}"
            self.rounds.append(r)
            for name in STAGE_FILES:
                self.files[(r, name)] = {x.id: x for x in read_records(rd / f"{name}.jsonl")}
            self.calls[r] = read_calls(rd / "calls.jsonl")
            for rid, p in (read_json(rd / "patches.json", {}) or {}).items():
                self.patches.setdefault(rid, []).append({**p, "round": r})
            r += 1
        self.labels = self._labels()
        self.patch_history = self._patch_history()

    def _labels(self) -> dict[str, list[dict[str, Any]]]:
        db_path = self.out / "annotate.db"
        if not db_path.exists():
            return {}
        from sqlalchemy import select

        from assay.platform.db import Database
        from assay.annotate.models import Project
        from assay.flywheel.people import human_labels

        db = Database(str(db_path))
        try:
            out: dict[str, list[dict[str, Any]]] = {}
            with db.read() as s:
                projects = list(s.execute(select(Project.id, Project.name)))
            for pid, name in projects:
                for rid, anns in human_labels(db, pid).items():
                    out.setdefault(rid, []).extend({**a, "project": name} for a in anns)
            return out
        finally:
            db.dispose()

    def _patch_history(self) -> dict[str, Any]:
        ids = {p["patch_id"] for ps in self.patches.values() for p in ps}
        if not ids:
            return {}
        from assay.platform.db import Database
        from assay.knowledge.store import KnowledgeStore

        db = Database(str(self.out / "annotate.db"))
        try:
            store = KnowledgeStore(db)
            return {pid: store.history(pid) for pid in sorted(ids)}
        finally:
            db.dispose()

    def find(self, record_id: str) -> list[tuple[int, str, Record]]:
        return [(r, name, recs[record_id]) for (r, name), recs in sorted(self.files.items()) if record_id in recs]

    def output_ids(self) -> list[str]:
        """Ids of the records of the last round's training mix (the loop's output)."""
        if not self.rounds:
            return []
        return list(self.files[(self.rounds[-1], "mix")])


def _source(x: Record) -> dict[str, Any]:
    keys = ("url", "source", "offset", "warc_date", "title", "content_type", "warc_record_id")
    return {k: x.meta[k] for k in keys if k in x.meta}


def _steps(x: Record) -> list[dict[str, Any]]:
    return [e.as_dict() for e in x.lineage]


def _calls_of(x: Record, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    fields = [v for v in (x.content.values() if isinstance(x.content, dict) else [x.content]) if isinstance(v, str)]
    norm = [" ".join(f.split()) for f in fields if f.strip()]
    out = []
    for c in calls:
        answer = " ".join((c.get("answer") or "").split())
        prompt = " ".join((c.get("prompt") or "").split())
        role = None
        if len(answer) >= 20 and any(answer in f for f in norm):
            role = "made this record"
        elif any(len(f) >= 40 and f[:200] in prompt for f in norm):
            role = "read this record"
        if role:
            out.append({"role": role, "step": c.get("step"), "backend": c.get("backend"), "model": c.get("model"),
                        "template": c.get("template"), "cache_key": c.get("cache_key"), "seed": c.get("seed"),
                        "max_tokens": c.get("max_tokens"), "answer": (c.get("answer") or "")[:300]})
    return out


def lineage(index: RunIndex, record_id: str) -> dict[str, Any]:
    """The history of one record (see the module docstring): ``{"record": …, "stages": [{stage, title, events}]}``."""
    hits = index.find(record_id)
    if not hits:
        raise KeyError(record_id)
    record = hits[-1][2]
    # follow meta.parents back to the harvested document (synthetic → its seed document; a revision → its draft)
    chain: list[str] = [record_id]
    cur = record
    while cur.meta.get("parents") and len(chain) < 10:
        pid = cur.meta["parents"][0]
        if pid in chain:
            break
        chain.insert(0, pid)
        found = index.find(pid)
        if not found:
            break
        cur = found[-1][2]
    doc_id = chain[0]
    stages: list[dict[str, Any]] = []
    made = [h for rid in chain[1:] for h in index.find(rid)]  # the chain's machine-made records, in order

    # I. harvest ---------------------------------------------------------------------------------------------------
    doc_hits = index.find(doc_id)
    by_file = {name: (r, x) for r, name, x in doc_hits}
    events: list[dict[str, Any]] = []
    if "harvest" in by_file:
        r, doc = by_file["harvest"]
        events.append({"what": "source page", "round": r, "record_id": doc.id, **_source(doc)})
        events.append({"what": "harvest steps", "steps": _steps(doc)})
    if "scored" in by_file:
        r, doc = by_file["scored"]
        events.append({"what": "quality classifier score", "round": r,
                       "quality.prob": doc.signals.get("quality.prob"),
                       "classifier_round": doc.signals.get("quality.model_round") or None})
    if "curated" in by_file:
        r, doc = by_file["curated"]
        events.append({"what": "curated (kept for training)", "round": r,
                       "quality.prob_after": doc.signals.get("quality.prob_after"),
                       "human.quality": doc.signals.get("human.quality")})
    stages.append({"stage": "harvest", "title": "I. Harvest", "record_id": doc_id, "events": events})

    # II. annotate -------------------------------------------------------------------------------------------------
    events = []
    if "routed" in by_file:
        r, doc = by_file["routed"]
        events.append({"what": "routed to people (active learning)", "round": r,
                       "uncertainty": doc.signals.get("active.uncertainty"), "rank": doc.signals.get("active.rank")})
    for rid in chain:
        for a in index.labels.get(rid, []):
            events.append({"what": "human label", "record_id": rid, **a})
    stages.append({"stage": "annotate", "title": "II. Annotate", "events": events})

    # III. synthesize ----------------------------------------------------------------------------------------------
    events = []
    own = {name: (r, x) for r, name, x in made}
    if "synthetic" in own:
        r, x = own["synthetic"]
        synth = x.meta.get("synth") or {}
        events.append({"what": "synthesized", "round": r, "from_document": doc_id, "technique": synth.get("technique"),
                       "backend": synth.get("backend"), "model": synth.get("model"),
                       "templates": synth.get("templates"), "steps": _steps(x)})
        for c in _calls_of(x, index.calls.get(r, [])):
            if c["step"] not in ("judge_score", "judge_pairwise", "critique_revise", "execution_feedback"):
                events.append({"what": "model call", **c})
    stages.append({"stage": "synthesize", "title": "III. Synthesize", "events": events})

    # IV. evolve ---------------------------------------------------------------------------------------------------
    events = []
    if "verified" in own:
        r, x = own["verified"]
        events.append({"what": "verified", "round": r, "steps": _steps(x)[len(_steps(own['synthetic'][1])):]
                       if "synthetic" in own else _steps(x),
                       **{k: v for k, v in x.signals.items() if k.startswith(("judge.", "critique", "exec"))}})
        for c in _calls_of(x, index.calls.get(r, [])):
            if c["step"] in ("judge_score", "judge_pairwise", "critique_revise", "execution_feedback"):
                events.append({"what": "model call", **c})
    if "synth-routed" in own:
        r, x = own["synth-routed"]
        events.append({"what": "routed to people (uncertain synthetic item)", "round": r,
                       "uncertainty": x.signals.get("active.uncertainty")})
    for rid in chain:
        for p in index.patches.get(rid, []):
            hist = index.patch_history.get(p["patch_id"], {})
            reviews = [e for e in hist.get("events", []) if e.get("event") in ("review", "accepted", "rejected")]
            events.append({"what": "knowledge patch (expert correction)", "record_id": rid, **p, "reviews": reviews})
    mixes = sorted({r for r, name, _ in hits if name == "mix"})
    if mixes:
        events.append({"what": "in the training mix", "rounds": mixes})
    stages.append({"stage": "evolve", "title": "IV. Evolve", "events": events})

    # lab ----------------------------------------------------------------------------------------------------------
    events = []
    seen: set[tuple[int, str]] = set()
    for r, name, _ in (hits if doc_id == record_id else made + doc_hits):
        if name in ("harvest", "curated", "verified", "mix") and (r, name) not in seen:
            seen.add((r, name))
            lab = read_json(index.out / f"round-{r:03d}" / "lab.json", {}) or {}
            key = {"verified": "synthetic"}.get(name, name)
            p = lab.get(key)
            if p:
                events.append({"what": f"placed on the quality ladder with the round's {key} data", "round": r,
                               "Q": p.get("Q"), "Q_ci": p.get("Q_ci"), "D_eff": p.get("D_eff")})
    stages.append({"stage": "lab", "title": "Lab", "events": events})
    return {"record_id": record_id, "origin": record.meta.get("origin"), "text": text_of(record)[:600],
            "chain": chain, "stages": stages}
