"""The numbers on a project's dashboard: agreement, consensus and whom to trust.

For labelled tasks (preference choices, rating scores per rubric dimension) it computes Krippendorff's α (nominal for
choices, ordinal for Likert scores), Fleiss' κ on items with exactly ``overlap`` labels, mean pairwise Cohen's κ,
majority-vote and Dawid-Skene consensus; and per annotator: gold accuracy, agreement with the Dawid-Skene consensus,
agreement with the majority of the *other* annotators, Dawid-Skene's estimate of their accuracy, review outcomes and
time per item. Gold items and rejected annotations are left out of agreement; gold is scored separately.
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from assay.annotate import label_task, stats, tasks, trajectory_task
from assay.annotate.models import REVIEW_REJECTED, Annotation, Item, Project
from assay.platform.models import User


def _finite(x: float) -> float | None:
    return None if x is None or x != x else round(float(x), 4)


def _label_sets(project: Project, rows: list[Any]) -> dict[str, list[tuple[int, int, Any]]]:
    """Named lists of (item, annotator, label) triples: one for preferences, one per rubric dimension for ratings."""
    if project.task_type == "preference":
        return {"choice": [(r.item_id, r.user_id, r.value["choice"]) for r in rows]}
    if project.task_type in tasks.RUBRIC_TASKS:
        return {d: [(r.item_id, r.user_id, r.value["scores"][d]) for r in rows if d in r.value.get("scores", {})]
                for d in project.config["dimensions"]}
    if project.task_type == trajectory_task.TASK:
        return {"success": trajectory_task.success_triples(rows)}
    if project.task_type == label_task.CLASSIFY:
        return label_task.label_sets(project.config, rows)
    return {}


def _pairwise_cohen(triples: list[tuple[int, int, Any]], min_shared: int = 5) -> float | None:
    by_worker: dict[int, dict[int, Any]] = {}
    for item, w, v in triples:
        by_worker.setdefault(w, {})[item] = v
    kappas = []
    for w1, w2 in itertools.combinations(sorted(by_worker), 2):
        shared = sorted(set(by_worker[w1]) & set(by_worker[w2]))
        if len(shared) >= min_shared:
            k = stats.cohen_kappa([by_worker[w1][i] for i in shared], [by_worker[w2][i] for i in shared])
            if k == k:
                kappas.append(k)
    return _finite(sum(kappas) / len(kappas)) if kappas else None


def project_quality(s: Session, project: Project) -> dict[str, Any]:
    rows = s.execute(select(Annotation.id, Annotation.item_id, Annotation.user_id, Annotation.value,
                            Annotation.is_gold, Annotation.seconds, Annotation.review_status)
                     .where(Annotation.project_id == project.id)).all()
    names = dict(s.execute(select(User.id, User.username)).all())
    gold_answers = dict(s.execute(select(Item.id, Item.gold_answer)
                                  .where(Item.project_id == project.id, Item.is_gold.is_(True))).all())
    live = [r for r in rows if r.review_status != REVIEW_REJECTED]
    regular = [r for r in live if not r.is_gold]

    per: dict[int, dict[str, Any]] = {}

    def entry(uid: int) -> dict[str, Any]:
        return per.setdefault(uid, {"annotator": names.get(uid, str(uid)), "annotations": 0, "gold_n": 0,
                                    "gold_accuracy": None, "_gold": [], "_secs": [], "accepted": 0, "rejected": 0,
                                    "agreement": {}, "loo_agreement": {}, "ds_accuracy": {}})

    for r in rows:
        e = entry(r.user_id)
        if r.review_status == REVIEW_REJECTED:
            e["rejected"] += 1
            continue
        e["annotations"] += 1
        e["accepted"] += r.review_status == "accepted"
        if r.seconds is not None:
            e["_secs"].append(r.seconds)
        if r.is_gold and gold_answers.get(r.item_id) is not None:
            e["_gold"].append(tasks.gold_score(project.task_type, project.config, r.value, gold_answers[r.item_id]))

    measures: dict[str, Any] = {}
    consensus: dict[str, dict[int, Any]] = {}
    for name, triples in _label_sets(project, regular).items():
        nominal = project.task_type in ("preference", trajectory_task.TASK, label_task.CLASSIFY)
        level = "nominal" if nominal else "ordinal"
        domain = (list(trajectory_task.SUCCESS_DOMAIN) if project.task_type == trajectory_task.TASK
                  else label_task.domain_of(project.config, name) if project.task_type == label_task.CLASSIFY
                  else list(tasks.PREFERENCE_CHOICES) if level == "nominal"
                  else list(range(project.config["scale"][0], project.config["scale"][1] + 1)))
        alpha = stats.alpha_from_triples(triples, level, domain) if triples else float("nan")
        fleiss = None
        if project.overlap >= 2 and triples:
            table, _ = stats.fleiss_table(triples, project.overlap, domain)
            if len(table):
                fleiss = _finite(stats.fleiss_kappa(table))
        ds = stats.dawid_skene(triples) if triples else None
        mv = stats.majority_vote(triples) if triples else None
        consensus[name] = ds.labels if ds else {}
        measures[name] = {"alpha": _finite(alpha), "alpha_level": level, "fleiss_kappa": fleiss,
                          "mean_cohen_kappa": _pairwise_cohen(triples), "labels": len(triples),
                          "items": len({t for t, _, _ in triples}),
                          "ds_vs_mv_disagreements": (sum(ds.labels[i] != mv.labels[i] for i in ds.labels)
                                                     if ds and mv else 0)}
        if ds:
            for uid, (n, share) in stats.agreement_with_consensus(triples, ds.labels).items():
                entry(uid)["agreement"][name] = _finite(share)
            for uid, (n, share) in stats.leave_one_out_agreement(triples).items():
                entry(uid)["loo_agreement"][name] = _finite(share)
            for uid, acc in ds.annotator_accuracy().items():
                entry(uid)["ds_accuracy"][name] = _finite(acc)

    extra: dict[str, Any] = {}
    if project.task_type == trajectory_task.TASK:  # sub-task boundaries: F1 within the project's frame tolerance
        extra["segments"] = trajectory_task.segment_agreement(
            ((r.item_id, r.user_id, r.value.get("segments") or []) for r in regular),
            project.config.get("boundary_tolerance", trajectory_task.DEFAULT_TOLERANCE))

    if project.task_type in label_task.TASKS:  # how much the model's pre-annotations were kept
        extra["suggestions"] = label_task.suggestion_uptake(regular)
    if project.task_type == label_task.SPANS:  # span-level F1 between annotators (exact and token overlap)
        texts = dict(s.execute(select(Item.id, Item.content).where(Item.project_id == project.id)).all())
        extra["spans"] = label_task.span_agreement({i: c["text"] for i, c in texts.items()},
                                                   ((r.item_id, r.user_id, r.value.get("spans") or [])
                                                    for r in regular))

    annotators = []
    for uid, e in per.items():
        gold = e.pop("_gold")
        secs = e.pop("_secs")
        e["gold_n"] = len(gold)
        e["gold_accuracy"] = _finite(sum(gold) / len(gold)) if gold else None
        e["median_seconds"] = _finite(statistics.median(secs)) if secs else None
        for key in ("agreement", "loo_agreement", "ds_accuracy"):
            vals = [v for v in e[key].values() if v is not None]
            e[key + "_mean"] = _finite(sum(vals) / len(vals)) if vals else None
        e["user_id"] = uid
        annotators.append(e)
    annotators.sort(key=lambda e: (e["gold_accuracy"] is None, -(e["gold_accuracy"] or 0), e["annotator"]))
    return {"project": project.name, "task_type": project.task_type, "annotations": len(live),
            "regular_annotations": len(regular), "measures": measures, "annotators": annotators,
            "consensus_items": {k: len(v) for k, v in consensus.items()}, **extra}


def consensus_labels(s: Session, project: Project, method: str = "majority") -> dict[str, dict[int, Any]]:
    """Per label set, the consensus label of every item: ``majority`` or ``dawid-skene``."""
    rows = s.execute(select(Annotation.item_id, Annotation.user_id, Annotation.value)
                     .where(Annotation.project_id == project.id, Annotation.is_gold.is_(False),
                            Annotation.review_status != REVIEW_REJECTED)).all()
    out = {}
    for name, triples in _label_sets(project, rows).items():
        agg = stats.dawid_skene(triples) if method == "dawid-skene" else stats.majority_vote(triples)
        out[name] = agg.labels
    return out
