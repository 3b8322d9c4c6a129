"""``select_top``: keep the best records by any signal across all shards, DataComp-style ("keep the top 30% by CLIP
score", "the 10% with the lowest perplexity").

``quality_select`` (:mod:`assay.harvest.quality`) does this for the quality classifier's score; this step takes any
numeric signal, either direction, a fraction or a count, and an exact mode that breaks ties.

A global step: ``collect`` writes each shard's scores and record keys, ``reduce`` finds the cut over all of them,
``apply`` keeps the records at or above it. The cut is the k-th best score with ``k = ceil(keep_fraction × scored)``
(or ``keep_count``):

* ``ties: keep`` (default): every record scoring as well as the k-th is kept, so a few more than k may survive
  (DataComp's ``score >= percentile`` rule behaves the same way);
* ``ties: exact``: exactly k are kept; among equal scores the records with the smaller key (a hash of id and
  content, :func:`~assay.harvest.dedup.hashing.record_key`) win, so the choice does not depend on sharding.

Records without the signal (or with a non-finite value) are dropped as ``unscored`` or kept (``unscored: keep``,
outside the count). Reason for the others: ``below_top``. The cut is written to the step's state as
``threshold.json`` and counted (``scored``, ``kept``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import ClassVar, Iterable, Iterator, Literal

import numpy as np
import orjson
from pydantic import Field, model_validator

from assay.core.record import Record
from assay.core.step import Batch, GlobalStep, StepContext, StepParams
from assay.harvest.dedup.hashing import record_key


class SelectTopParams(StepParams):
    signal: str = Field(description="the signal to rank by, e.g. quality.score or tokens.count")
    keep_fraction: float | None = Field(None, gt=0, le=1, description="share of scored records to keep (DCLM: 0.1)")
    keep_count: int | None = Field(None, ge=0, description="number of records to keep (instead of a fraction)")
    higher_is_better: bool = Field(True, description="false: keep the lowest scores (perplexity, toxicity)")
    ties: Literal["keep", "exact"] = Field("keep", description="keep every record tied with the last one, or "
                                                               "exactly the count (ties broken by record key)")
    unscored: Literal["drop", "keep"] = "drop"

    @model_validator(mode="after")
    def _one_size(self) -> "SelectTopParams":
        if (self.keep_fraction is None) == (self.keep_count is None):
            raise ValueError("give exactly one of keep_fraction and keep_count")
        return self


def _score_of(record: Record, signal: str) -> float | None:
    value = record.signals.get(signal)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class SelectTop(GlobalStep):
    """Keep the top fraction (or count) of records by any signal across all shards (DataComp-style selection)."""

    name = "select_top"
    version = "1"
    Params: ClassVar[type[StepParams]] = SelectTopParams

    def _oriented(self, score: float) -> float:
        """Scores turned so that larger is better."""
        return score if self.params.higher_is_better else -score

    def collect(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        scores: list[float] = []
        keys: list[int] = []
        for batch in batches:
            for r in batch:
                if r.drop is None:
                    s = _score_of(r, self.params.signal)
                    if s is not None:
                        scores.append(self._oriented(s))
                        keys.append(record_key(r))
            yield batch
        folder = ctx.state_dir(self, self.index)
        arr = np.zeros(len(scores), dtype=[("score", "<f8"), ("key", "<u8")])
        arr["score"], arr["key"] = scores, keys
        tmp = folder / f".scores-{ctx.shard:05d}.{os.getpid()}.npy"
        np.save(tmp, arr, allow_pickle=False)
        os.replace(tmp, folder / f"scores-{ctx.shard:05d}.npy")

    def reduce(self, ctx: StepContext) -> None:
        p: SelectTopParams = self.params  # type: ignore[assignment]
        folder = ctx.state_dir(self, self.index)
        parts = [np.load(folder / f"scores-{s:05d}.npy", allow_pickle=False) for s in range(ctx.num_shards)]
        arr = np.concatenate(parts) if parts else np.zeros(0, dtype=[("score", "<f8"), ("key", "<u8")])
        n = len(arr)
        k = min(n, p.keep_count if p.keep_count is not None else math.ceil(p.keep_fraction * n))
        state: dict = {"scored": n, "k": k, "threshold": None, "key": None}
        if k > 0:
            # best first: score descending, then key ascending
            order = np.lexsort((arr["key"], -arr["score"]))
            last = arr[order[k - 1]]
            state["threshold"] = float(last["score"])
            state["key"] = int(last["key"]) if p.ties == "exact" else None
        _atomic_write(folder / "threshold.json", orjson.dumps(state))
        self.count("scored", n)

    def apply(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        p: SelectTopParams = self.params  # type: ignore[assignment]
        state = orjson.loads((ctx.state_dir(self, self.index) / "threshold.json").read_bytes())
        cut, cut_key = state["threshold"], state["key"]
        for batch in batches:
            for r in batch:
                if r.drop is not None:
                    continue
                s = _score_of(r, p.signal)
                if s is None:
                    if p.unscored == "drop":
                        self.reject(r, "unscored")
                    continue
                s = self._oriented(s)
                keep = cut is not None and (s > cut or (s == cut and (cut_key is None or record_key(r) <= cut_key)))
                if keep:
                    self.count("kept")
                else:
                    self.reject(r, "below_top")
            yield batch

    def apply_state(self, shard: int) -> list[str]:
        return ["threshold.json"]
