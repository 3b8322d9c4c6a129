"""Model-based quality scoring: score records with a trained quality classifier, select on the score.

The classifier (DCLM-style reference-vs-random or FineWeb-Edu-style graded, one linear head on text embeddings) is
:class:`assay.models.quality_classifier.QualityModel`, trained by ``assay quality train`` or
:func:`~assay.models.quality_classifier.train_quality_model`.

Steps (scoring is separate from selection, so ``action: flag`` and score-only runs work):

* ``quality_score``: writes ``signals["quality.score"]`` (batched inference).
* ``quality_filter``: drops (or flags) records whose score is below ``threshold``; scores them itself when given a
  ``model`` and the signal is missing.
* ``quality_select``: keeps the top ``keep_fraction`` of records by score across all shards (DCLM keeps the top 10%).
"""

from __future__ import annotations

import math
import os
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Literal

import numpy as np
import orjson
import xxhash
from pydantic import Field

from assay.core.record import Record
from assay.core.step import Batch, Filter, FilterParams, GlobalStep, Step, StepContext, StepParams
from assay.models.quality_classifier import DEFAULT_SIGNAL, QualityModel, load_model_cached, model_digest


class _UsesModel:
    """Mixin for steps with a ``model`` parameter: the lineage's parameter hash also covers the model file's bytes,
    so records scored by a retrained model (same path, new weights) say so."""

    params: Any

    @cached_property
    def params_hash(self) -> str:
        base = Step.params_hash.func(self)  # type: ignore[attr-defined]
        digest = model_digest(self.params.model) if getattr(self.params, "model", None) else None
        return base if digest is None else xxhash.xxh3_64_hexdigest(f"{base}:{digest}".encode())[:12]


def score_records(step: Step, model: QualityModel, records: Iterable[Record], signal: str) -> None:
    """Write ``signal`` for every live record with text; count the others as ``skipped:<why>`` on ``step``."""
    todo: list[Record] = []
    for r in records:
        if r.drop is not None:
            continue
        text = r.text
        if not text.strip():
            step.count("skipped:no_text")
            continue
        todo.append(r)
    if not todo:
        return
    scores = model.score([r.text for r in todo])
    for r, s in zip(todo, scores):
        r.signals[signal] = round(float(s), 6)
    step.count("scored", len(todo))


class QualityScoreParams(StepParams):
    model: str = Field(description="path of a model file from `assay quality train`")
    signal: str = Field(DEFAULT_SIGNAL, description="signal name to write the score to")
    batch_size: int = Field(64, ge=1, description="texts per forward pass of the embedding model")
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...")


class QualityScore(_UsesModel, Step):
    """Score text quality with a trained classifier into signals["quality.score"]."""

    name = "quality_score"
    version = "1"
    Params: ClassVar[type[StepParams]] = QualityScoreParams

    def setup(self, ctx: StepContext) -> None:
        p: QualityScoreParams = self.params  # type: ignore[assignment]
        self.model = load_model_cached(p.model)
        self.model.backend(batch_size=p.batch_size, device=p.device)

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        if not hasattr(self, "model"):
            self.setup(ctx)
        score_records(self, self.model, batch, self.params.signal)  # type: ignore[attr-defined]
        return batch


class QualityFilterParams(FilterParams):
    threshold: float = Field(description="keep records scoring at least this (0..1 for binary models, the label "
                                         "scale for regression models, e.g. 3 for FineWeb-Edu grades)")
    signal: str = Field(DEFAULT_SIGNAL, description="signal holding the score")
    model: str | None = Field(None, description="score records that lack the signal with this model")
    unscored: Literal["drop", "keep"] = Field("drop", description="what to do with records that have no score")
    batch_size: int = Field(64, ge=1)
    device: str = "auto"


class QualityFilter(_UsesModel, Filter):
    """Keep records whose quality score is at least a threshold (scores them first if given a model)."""

    name = "quality_filter"
    version = "1"
    Params: ClassVar[type[StepParams]] = QualityFilterParams

    def setup(self, ctx: StepContext) -> None:
        p: QualityFilterParams = self.params  # type: ignore[assignment]
        self.model = None
        if p.model is not None:
            self.model = load_model_cached(p.model)
            self.model.backend(batch_size=p.batch_size, device=p.device)

    def score_batch(self, batch: Batch) -> None:
        p: QualityFilterParams = self.params  # type: ignore[assignment]
        if p.model is None:
            return
        if not hasattr(self, "model"):
            self.setup(StepContext())
        score_records(self, self.model, (r for r in batch if p.signal not in r.signals), p.signal)

    def decide(self, record: Record) -> str | None:
        p: QualityFilterParams = self.params  # type: ignore[assignment]
        score = _score_of(record, p.signal)
        if score is None:
            return "unscored" if p.unscored == "drop" else None
        return "below_threshold" if score < p.threshold else None


def _score_of(record: Record, signal: str) -> float | None:
    value = record.signals.get(signal)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


class QualitySelectParams(StepParams):
    keep_fraction: float = Field(gt=0, le=1, description="share of scored records to keep, best first (DCLM: 0.1)")
    signal: str = Field(DEFAULT_SIGNAL, description="signal holding the score (from quality_score)")
    unscored: Literal["drop", "keep"] = "drop"


class QualitySelect(GlobalStep):
    """Keep the top fraction of records by quality score across all shards (a global score threshold)."""

    name = "quality_select"
    version = "1"
    Params: ClassVar[type[StepParams]] = QualitySelectParams

    def collect(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        p: QualitySelectParams = self.params  # type: ignore[assignment]
        scores: list[float] = []
        for batch in batches:
            for r in batch:
                if r.drop is None:
                    s = _score_of(r, p.signal)
                    if s is not None:
                        scores.append(s)
            yield batch
        folder = ctx.state_dir(self, self.index)
        _atomic_write(folder / f"scores-{ctx.shard:05d}.npy", np.asarray(scores, dtype=np.float64))

    def reduce(self, ctx: StepContext) -> None:
        p: QualitySelectParams = self.params  # type: ignore[assignment]
        folder = ctx.state_dir(self, self.index)
        parts = [np.load(f, allow_pickle=False) for f in sorted(folder.glob("scores-*.npy"))]
        scores = np.sort(np.concatenate(parts)) if parts else np.zeros(0)
        if len(scores) == 0:
            threshold = math.inf
        else:
            # the k-th best score: ties at the threshold are all kept, so slightly more than k may survive
            k = max(1, int(math.ceil(p.keep_fraction * len(scores))))
            threshold = float(scores[len(scores) - k])
        blob = orjson.dumps({"threshold": threshold if math.isfinite(threshold) else None,
                             "scored": int(len(scores)), "keep_fraction": p.keep_fraction})
        _atomic_write(folder / "threshold.json", blob)

    def apply(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        p: QualitySelectParams = self.params  # type: ignore[assignment]
        state = orjson.loads((ctx.state_dir(self, self.index) / "threshold.json").read_bytes())
        threshold = state["threshold"] if state["threshold"] is not None else math.inf
        for batch in batches:
            for r in batch:
                if r.drop is not None:
                    continue
                s = _score_of(r, p.signal)
                if s is None:
                    if p.unscored == "drop":
                        self.reject(r, "unscored")
                elif s < threshold:
                    self.reject(r, "below_top_fraction")
            yield batch


def _atomic_write(path: Path, data: bytes | np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        if isinstance(data, np.ndarray):
            np.save(f, data, allow_pickle=False)
        else:
            f.write(data)
    os.replace(tmp, path)
