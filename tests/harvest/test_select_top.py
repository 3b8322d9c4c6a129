"""select_top: the top fraction / count of records by any signal across shards (DataComp-style), checked against
a sort of all scores at once and against DataComp's percentile rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from operator_support import run_global

from assay.core.record import Record
from assay.core.step import REGISTRY
from assay.harvest.dedup.hashing import record_key


def _records(scores: list[float | None]) -> list[Record]:
    out = []
    for i, s in enumerate(scores):
        r = Record(f"r{i}", f"text {i}")
        if s is not None:
            r.signals["score"] = s
        out.append(r)
    return out


def _shards(recs: list[Record], n: int) -> list[list[Record]]:
    return [recs[i::n] for i in range(n)]


def test_keeps_the_top_fraction_across_shards_like_one_global_sort(tmp_path):
    rng = np.random.default_rng(7)
    scores = np.round(rng.normal(size=500), 2).tolist()  # rounded: many ties
    recs = _records(scores)
    out = run_global(REGISTRY.get("select_top")(signal="score", keep_fraction=0.2), _shards(recs, 3), tmp_path)
    kept = {r.id for r in out if r.drop is None}
    k = math.ceil(0.2 * len(scores))
    cut = sorted(scores, reverse=True)[k - 1]
    assert kept == {f"r{i}" for i, s in enumerate(scores) if s >= cut}
    assert len(kept) >= k
    assert {r.drop for r in out if r.drop} == {("select_top", "below_top")}
    # DataComp's rule (score >= np.percentile(scores, 100 * (1 - fraction))) keeps the same records here
    datacomp = {f"r{i}" for i, s in enumerate(scores) if s >= np.percentile(scores, 80)}
    assert len(kept ^ datacomp) <= 0.01 * len(scores), len(kept ^ datacomp)


def test_exact_ties_keep_exactly_k_and_do_not_depend_on_sharding(tmp_path):
    scores = [float(i % 4) for i in range(103)]  # 26 records share the best score
    picks = []
    for n_shards in (1, 4):
        recs = _records(scores)
        step = REGISTRY.get("select_top")(signal="score", keep_count=10, ties="exact")
        out = run_global(step, _shards(recs, n_shards), tmp_path / str(n_shards))
        kept = sorted(r.id for r in out if r.drop is None)
        assert len(kept) == 10 and all(scores[int(i[1:])] == 3.0 for i in kept)
        picks.append(kept)
    assert picks[0] == picks[1]
    best = sorted((r for r in _records(scores) if r.signals["score"] == 3.0), key=record_key)[:10]
    assert picks[0] == sorted(r.id for r in best)


def test_lower_is_better_and_unscored_records(tmp_path):
    scores = [5.0, 1.0, None, 3.0, 2.0, float("nan"), 4.0]
    out = run_global(REGISTRY.get("select_top")(signal="score", keep_count=2, higher_is_better=False),
                     [_records(scores)], tmp_path / "a")
    assert {r.id: r.drop and r.drop[1] for r in out} == {
        "r0": "below_top", "r1": None, "r2": "unscored", "r3": "below_top", "r4": None, "r5": "unscored",
        "r6": "below_top"}
    out = run_global(REGISTRY.get("select_top")(signal="score", keep_count=2, unscored="keep"),
                     [_records(scores)], tmp_path / "b")
    assert sorted(r.id for r in out if r.drop is None) == ["r0", "r2", "r5", "r6"]


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="exactly one"):
        REGISTRY.get("select_top")(signal="s")
    with pytest.raises(ValueError, match="exactly one"):
        REGISTRY.get("select_top")(signal="s", keep_count=3, keep_fraction=0.5)
