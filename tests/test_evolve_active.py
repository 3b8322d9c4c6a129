"""Active learning: uncertainty, core-set selection, exact budgets, the annotation app round trip, calibration."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from assay.core.record import Record
from assay.evolve.active import (ActiveRouter, AnnotationProject, apply_labels, binary_entropy, calibrate_judge,
                                 k_center_greedy, uncertainty_of)
from assay.platform.users import create_user


def test_binary_entropy_and_uncertainty() -> None:
    assert binary_entropy(0.5) == 1.0 and binary_entropy(0.0) == 0.0 and binary_entropy(1.0) == 0.0
    assert binary_entropy(0.1) == pytest.approx(0.4689955935892812)
    r = Record("a", "x", signals={"judge.disagreement": 0.2, "quality.prob": 0.5})
    u = uncertainty_of(r)
    assert u.parts == {"disagreement": 0.2, "entropy": 1.0} and u.value == pytest.approx(0.6)
    assert uncertainty_of(r, weights={"entropy": 0.0}).value == pytest.approx(0.2)
    assert uncertainty_of(Record("b", "x")).value == 0.0
    assert uncertainty_of(Record("c", "x", signals={"judge.disagreement": float("nan")})).parts == {}


def _farthest_first(x: np.ndarray, k: int, first: int) -> list[int]:
    """Textbook farthest-first traversal (reference implementation, loops only)."""
    def dist(i: int, j: int) -> float:
        a, b = x[i] / np.linalg.norm(x[i]), x[j] / np.linalg.norm(x[j])
        return 1.0 - float(a @ b)

    picked = [first]
    while len(picked) < k:
        best = max((i for i in range(len(x)) if i not in picked),
                   key=lambda i: (min(dist(i, j) for j in picked), -i))
        picked.append(best)
    return picked


def test_k_center_greedy_is_farthest_first() -> None:
    x = np.random.default_rng(0).normal(size=(30, 5))
    picks = k_center_greedy(x, 6, diversity=1.0)
    assert picks == _farthest_first(x, 6, picks[0])
    assert picks[0] == 0  # nothing labelled and no scores: the tie-breaker (here the index) decides


def test_k_center_greedy_is_within_twice_the_optimal_radius() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 3))
    xu = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = 1.0 - xu @ xu.T

    def radius(centres: list[int]) -> float:
        return float(d[:, centres].min(axis=1).max())

    k = 3
    optimal = min(radius(list(c)) for c in itertools.combinations(range(10), k))
    assert radius(k_center_greedy(x, k)) <= 2 * optimal + 1e-12


def test_labelled_items_push_selection_elsewhere_and_scores_matter() -> None:
    x = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    assert k_center_greedy(x, 1, labelled=np.array([[1.0, 0.0]])) in ([2], [3])
    assert k_center_greedy(x, 2, scores=np.array([0.1, 0.9, 0.2, 0.3]), diversity=0.0) == [1, 3]


def _records(n: int) -> list[Record]:
    topics = ["cooking pasta", "stock markets", "python loops", "poetry about rain", "car repair"]
    out = []
    for i in range(n):
        out.append(Record(f"r{i:02d}", {"instruction": f"Tell me about {topics[i % 5]} case {i}",
                                        "output": f"Answer {i} about {topics[i % 5]}"},
                          "conversation", signals={"judge.disagreement": (i % 7) / 6}))
    return out


@pytest.mark.parametrize("budget", [0, 1, 4, 9, 40])
def test_router_returns_exactly_the_budget(budget: int) -> None:
    recs = _records(25)
    chosen = ActiveRouter(budget, diversity=0.5).select(recs)
    assert len(chosen) == min(budget, 25) and len({r.id for r in chosen}) == len(chosen)
    assert [r.signals["active.rank"] for r in chosen] == list(range(len(chosen)))


def test_router_prefers_uncertain_items_and_spreads_them() -> None:
    recs = _records(35)
    pure_uncertainty = ActiveRouter(5, diversity=0.0).select(recs)
    assert all(r.signals["judge.disagreement"] == 1.0 for r in pure_uncertainty)
    mixed = ActiveRouter(5, diversity=0.7, pool_factor=7).select(_records(35))
    topics = {r.content["instruction"].split(" case")[0] for r in mixed}
    assert len(topics) >= 4  # diversity spreads the picks over topics


def test_annotation_round_trip_with_the_annotate_app(tmp_path: Path) -> None:
    from assay.annotate import workflow
    from assay.annotate.models import Item, Project

    db_url = str(tmp_path / "annotate.db")
    sink = AnnotationProject(db_url, "evolve-test", dimensions=("quality",), scale=(1, 5), overlap=2)
    recs = _records(12)
    chosen = ActiveRouter(4).select(recs)
    assert sink.push(chosen) == 4
    assert sink.push(chosen[:2]) == 0  # already there: not duplicated
    assert sorted(sink.item_record_ids()) == sorted(r.id for r in chosen)
    # two annotators label everything through the app's own queue
    user_ids = []
    with sink.db.write() as s:
        project = s.get(Project, sink.project_id)
        for name in ("ann1", "ann2"):
            user_ids.append(create_user(s, name, "password123").id)
            workflow.add_member(s, project, name)
    scores = {}
    for user_id in user_ids:
        while True:
            with sink.db.write() as s:
                project = s.get(Project, sink.project_id)
                a = workflow.next_assignment(s, project, user_id)
                if a is None:
                    break
                item = s.get(Item, a.item_id)
                score = 1 + (int(item.record_id[1:]) % 5)
                scores[item.record_id] = score
                workflow.submit(s, project, user_id, a.id, {"scores": {"quality": score}})
    labels = sink.pull_labels()
    assert labels == {rid: {"quality": sc} for rid, sc in scores.items()}
    assert apply_labels(recs, labels) == 4
    assert all(r.signals["human.quality"] == scores[r.id] for r in recs if r.id in scores)
    sink.close()
    # a second sink on the same project reuses it
    again = AnnotationProject(db_url, "evolve-test")
    assert again.project_id == sink.project_id
    again.close()


def test_calibration_equals_sklearn_isotonic() -> None:
    sklearn_iso = pytest.importorskip("sklearn.isotonic")
    rng = np.random.default_rng(3)
    judge = rng.integers(1, 11, size=40).astype(float)
    human = np.clip(np.round(judge / 2 + rng.normal(0, 1, size=40)), 1, 5)
    cal = calibrate_judge(list(zip(judge, human)))
    ref = sklearn_iso.IsotonicRegression(out_of_bounds="clip").fit(judge, human)
    grid = np.linspace(0, 11, 45)
    assert np.allclose([cal(g) for g in grid], ref.predict(grid))
    ys = [cal(g) for g in grid]
    assert all(a <= b + 1e-12 for a, b in zip(ys, ys[1:]))  # monotone
    assert calibrate_judge([(5, 3)]) is None and calibrate_judge([]) is None
