"""Active learning: spend a budget of human labels where the machines are least sure, and use what comes back.

**Choosing** (:class:`ActiveRouter`). Each candidate record gets an *uncertainty* in [0, 1], the weighted mean of
whichever of these it has:

* judge disagreement: ``signals["judge.disagreement"]`` (the spread of a judge's samples, or an inconsistent
  verdict across the two presentation orders; see :mod:`assay.evolve.judges`);
* classifier entropy: the binary entropy (bits) of a probability signal such as ``quality.prob`` (0.5 is the most
  uncertain), for every signal named in ``entropy_signals``.

Uncertain items are often near-duplicates of each other (the same confusing kind of item), so asking about all of
them wastes labels. The router therefore takes the ``pool_factor × budget`` most uncertain candidates and picks
from them greedily, each time the item maximising ``(1 - diversity) · uncertainty + diversity · distance``, where
distance is the cosine distance (on embeddings) to the nearest item already picked or already labelled: with
``diversity: 1`` this is core-set selection by k-center greedy (Sener & Savarese, 2018); with 0, plain
uncertainty sampling. Exactly ``min(budget, candidates)`` items are chosen; ties break on a hash of the record id.

**Asking** (:class:`AnnotationProject`). The chosen records are pushed into a project of Assay's annotation app
(:mod:`assay.annotate`) through its Python API: same database, same items, lineage and overlap rules as any other
import; a record already in the project is not added twice. :meth:`AnnotationProject.pull_labels` reads the
consensus labels back (majority vote or Dawid-Skene over the annotators; rejected annotations left out).

**Using** (:func:`calibrate_judge`). Human ratings recalibrate the judge: an isotonic regression from judge score
to human rating, fitted on the labelled items and applied to all (``judge.calibrated``). Human-labelled records
also become anchors: the loop keeps them in the labelled set so later rounds ask about other regions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import xxhash

from assay.core.record import Record


def binary_entropy(p: float) -> float:
    """Entropy in bits of a yes/no prediction with probability ``p`` (1.0 at 0.5, 0.0 at 0 or 1)."""
    if not 0.0 < p < 1.0:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


@dataclass
class Uncertainty:
    """How an item's uncertainty was made up."""

    value: float
    parts: dict[str, float] = field(default_factory=dict)


def uncertainty_of(record: Record, entropy_signals: Sequence[str] = ("quality.prob",),
                   weights: dict[str, float] | None = None) -> Uncertainty:
    """The uncertainty of one record from its signals (0.0 when it has none of them)."""
    w = {"disagreement": 1.0, "entropy": 1.0, **(weights or {})}
    parts: dict[str, float] = {}
    d = record.signals.get("judge.disagreement")
    if isinstance(d, (int, float)) and math.isfinite(d):
        parts["disagreement"] = float(min(1.0, max(0.0, d)))
    entropies = [binary_entropy(float(record.signals[s])) for s in entropy_signals
                 if isinstance(record.signals.get(s), (int, float))]
    if entropies:
        parts["entropy"] = max(entropies)
    total = sum(w[k] for k in parts)
    value = sum(w[k] * v for k, v in parts.items()) / total if total > 0 else 0.0
    return Uncertainty(value, parts)


def k_center_greedy(embeddings: np.ndarray, k: int, labelled: np.ndarray | None = None,
                    scores: np.ndarray | None = None, diversity: float = 1.0,
                    tiebreak: Sequence[int] | None = None) -> list[int]:
    """Pick ``k`` rows of ``embeddings`` greedily maximising ``(1-diversity)·score + diversity·distance`` to the
    nearest picked or ``labelled`` row (cosine distance, rows L2-normalised here). Returns row indices in pick order.
    """
    n = len(embeddings)
    k = min(k, n)
    if k <= 0:
        return []
    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    s = np.zeros(n) if scores is None else np.asarray(scores, dtype=np.float64)
    tb = np.asarray(tiebreak if tiebreak is not None else range(n), dtype=np.float64)
    tb = tb / (tb.max() + 1) * 1e-9 if n else tb  # a vanishing tie-breaker
    if labelled is not None and len(labelled):
        lab = np.asarray(labelled, dtype=np.float64)
        ln = np.linalg.norm(lab, axis=1, keepdims=True)
        lab = np.divide(lab, ln, out=np.zeros_like(lab), where=ln > 0)
        min_dist = np.clip(1.0 - (x @ lab.T).max(axis=1), 0.0, 2.0)
    else:
        min_dist = np.full(n, 2.0)  # nothing chosen yet: every item is maximally far
    picked: list[int] = []
    available = np.ones(n, dtype=bool)
    for _ in range(k):
        dist_term = min_dist / 2.0  # cosine distance is in [0, 2]
        objective = (1 - diversity) * s + diversity * dist_term - tb
        objective[~available] = -np.inf
        i = int(np.argmax(objective))
        picked.append(i)
        available[i] = False
        min_dist = np.minimum(min_dist, np.clip(1.0 - x @ x[i], 0.0, 2.0))
    return picked


class ActiveRouter:
    """Chooses which records people should label (see the module docstring)."""

    def __init__(self, budget: int, *, diversity: float = 0.5, pool_factor: float = 3.0,
                 entropy_signals: Sequence[str] = ("quality.prob",), weights: dict[str, float] | None = None,
                 embedder: Any | None = None) -> None:
        if budget < 0:
            raise ValueError("budget must be >= 0")
        if not 0.0 <= diversity <= 1.0:
            raise ValueError("diversity must be in [0, 1]")
        self.budget = budget
        self.diversity = diversity
        self.pool_factor = max(1.0, pool_factor)
        self.entropy_signals = tuple(entropy_signals)
        self.weights = weights
        self.embedder = embedder

    def _embed(self, records: Sequence[Record]) -> np.ndarray:
        if self.embedder is None:
            from assay.models.embeddings import HashedNgramBackend

            self.embedder = HashedNgramBackend(dim=4096)
        return self.embedder.encode([r.text for r in records])

    def select(self, records: Sequence[Record], labelled: Sequence[Record] = ()) -> list[Record]:
        """Exactly ``min(budget, len(records))`` records, most informative first. Each gets
        ``signals["active.uncertainty"]`` and ``signals["active.rank"]``."""
        if self.budget == 0 or not records:
            return []
        unc = [uncertainty_of(r, self.entropy_signals, self.weights) for r in records]
        ids = [xxhash.xxh3_64_intdigest(r.id.encode()) for r in records]
        order = sorted(range(len(records)), key=lambda i: (-unc[i].value, ids[i]))
        pool = order[:max(self.budget, int(math.ceil(self.pool_factor * self.budget)))]
        pool_records = [records[i] for i in pool]
        emb = self._embed(pool_records)
        lab = self._embed(list(labelled)) if labelled else None
        tiebreak = np.argsort(np.argsort(np.array([ids[i] for i in pool], dtype=np.uint64)))
        picks = k_center_greedy(emb, self.budget, lab, np.array([unc[i].value for i in pool]), self.diversity,
                                tiebreak)
        chosen = []
        for rank, j in enumerate(picks):
            r = pool_records[j]
            u = unc[pool[j]]
            r.signals["active.uncertainty"] = round(u.value, 6)
            r.signals["active.rank"] = rank
            for k, v in u.parts.items():
                r.signals[f"active.{k}"] = round(v, 6)
            chosen.append(r)
        return chosen


# -- where the labels come from -----------------------------------------------------------------------------------
class LabelSink(Protocol):
    """Somewhere to send items for people to label, and to read their labels from."""

    def push(self, records: Sequence[Record]) -> int: ...

    def pull_labels(self) -> dict[str, dict[str, Any]]: ...


class AnnotationProject:
    """A project of Assay's annotation app used as a :class:`LabelSink` (Python API, same database as the app).

    ``task_type`` ``rating`` asks for scores on ``dimensions`` (default one, ``quality``, on ``scale`` 1-5);
    ``preference`` asks which of two responses is better. The project is created on first use if it does not
    exist (with ``overlap`` annotators per item).
    """

    def __init__(self, db_url: str, project: str, *, task_type: str = "rating",
                 dimensions: Sequence[str] = ("quality",), scale: tuple[int, int] = (1, 5), overlap: int = 1,
                 guidelines: str = "", aggregate: str = "majority") -> None:
        from assay.platform.db import Database

        self.db = Database(db_url)
        self.db.migrate()
        self.project_name = project
        self.task_type = task_type
        self.aggregate = aggregate
        config: dict[str, Any] = {}
        if task_type == "rating":
            config = {"dimensions": list(dimensions), "scale": list(scale)}
        from assay.annotate import workflow

        with self.db.write() as s:
            try:
                self.project_id = workflow.find_project(s, project).id
            except workflow.NotFound:
                self.project_id = workflow.create_project(
                    s, project, task_type, config=config, overlap=overlap,
                    guidelines=guidelines or "Items chosen by Assay's active-learning router: the machine judges "
                                             "were least sure about these. Rate them carefully.").id

    def push(self, records: Sequence[Record]) -> int:
        """Add ``records`` as items; returns how many were new (already present ones are not duplicated)."""
        from assay.annotate import workflow
        from assay.annotate.models import Project

        with self.db.write() as s:
            report = workflow.add_items(s, s.get(Project, self.project_id), list(records))
        if report.skipped:
            raise ValueError(f"the annotation project refused some items: {report.skipped}")
        return report.imported

    def item_record_ids(self) -> list[str]:
        from sqlalchemy import select

        from assay.annotate.models import Item

        with self.db.read() as s:
            return list(s.scalars(select(Item.record_id).where(Item.project_id == self.project_id,
                                                               Item.is_gold.is_(False)).order_by(Item.id)))

    def pull_labels(self) -> dict[str, dict[str, Any]]:
        """Consensus label per labelled record id: ``{record_id: {label_set: label}}`` (``quality``, ``choice``...)."""
        from sqlalchemy import select

        from assay.annotate.models import Item, Project
        from assay.annotate.quality import consensus_labels

        with self.db.read() as s:
            project = s.get(Project, self.project_id)
            by_set = consensus_labels(s, project, method=self.aggregate)
            record_of = dict(s.execute(select(Item.id, Item.record_id).where(Item.project_id == self.project_id)).all())
        out: dict[str, dict[str, Any]] = {}
        for set_name, labels in by_set.items():
            for item_id, label in labels.items():
                out.setdefault(record_of[item_id], {})[set_name] = label
        return out

    def close(self) -> None:
        self.db.dispose()


# -- using the labels ---------------------------------------------------------------------------------------------
@dataclass
class Calibration:
    """A monotone map from judge score to human rating, fitted on labelled items."""

    xs: list[float]
    ys: list[float]
    n: int

    def __call__(self, score: float) -> float:
        return float(np.interp(score, self.xs, self.ys))

    def to_dict(self) -> dict[str, Any]:
        return {"xs": self.xs, "ys": self.ys, "n": self.n}


def calibrate_judge(pairs: Sequence[tuple[float, float]]) -> Calibration | None:
    """Fit judge score → human rating by isotonic regression (pool adjacent violators); ``None`` with < 2 pairs."""
    pts = sorted((float(x), float(y)) for x, y in pairs
                 if isinstance(x, (int, float)) and isinstance(y, (int, float)))
    if len(pts) < 2:
        return None
    # merge equal x first, then pool adjacent violators
    xs: list[float] = []
    sums: list[float] = []
    counts: list[int] = []
    for x, y in pts:
        if xs and xs[-1] == x:
            sums[-1] += y
            counts[-1] += 1
        else:
            xs.append(x)
            sums.append(y)
            counts.append(1)
    blocks = [[xs[i], xs[i], sums[i], counts[i]] for i in range(len(xs))]  # [x_lo, x_hi, sum, count]
    merged: list[list[float]] = []
    for b in blocks:
        merged.append(b)
        while len(merged) > 1 and merged[-2][2] / merged[-2][3] > merged[-1][2] / merged[-1][3]:
            hi = merged.pop()
            merged[-1] = [merged[-1][0], hi[1], merged[-1][2] + hi[2], merged[-1][3] + hi[3]]
    out_x, out_y = [], []
    for lo, hi, s, c in merged:
        for x in ((lo,) if lo == hi else (lo, hi)):
            out_x.append(x)
            out_y.append(s / c)
    return Calibration(out_x, out_y, len(pts))


def apply_labels(records: Sequence[Record], labels: dict[str, dict[str, Any]]) -> int:
    """Write human labels into the records they belong to (``signals["human.<set>"]``); returns how many."""
    n = 0
    for r in records:
        lab = labels.get(r.id)
        if not lab:
            continue
        for k, v in lab.items():
            r.signals[f"human.{k}"] = v
        n += 1
    return n
