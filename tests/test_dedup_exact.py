"""exact_dedup: one record per identical (optionally normalised) content, the same whatever the sharding."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.core.errors import AssayError
from assay.core.record import Record, stable_id
from assay.core.step import REGISTRY, StepContext
from assay.harvest.dedup import ExactDedup
from assay.harvest.dedup.hashing import record_key


def run_sharded(step_factory, records: list[Record], num_shards: int, run_dir: Path, batch: int = 7) -> list[Record]:
    """Run collect / reduce / apply as an executor would: every phase with a fresh step instance (as in another
    process), records dealt round-robin to ``num_shards`` shards."""
    shards = [[r.copy() for r in records[i::num_shards]] for i in range(num_shards)]

    def batches(recs):
        return [recs[i:i + batch] for i in range(0, len(recs), batch)]

    for i, recs in enumerate(shards):
        collected = [r for b in step_factory().collect(batches(recs), StepContext(run_dir, i, num_shards)) for r in b]
        assert collected == recs  # collect passes records through unchanged
    step_factory().reduce(StepContext(run_dir, 0, num_shards))
    out: list[Record] = []
    for i, recs in enumerate(shards):
        out.extend(r for b in step_factory().apply(batches(recs), StepContext(run_dir, i, num_shards)) for r in b)
    return out


def corpus() -> list[Record]:
    texts = ["alpha beta", "Alpha  Beta", "alpha beta", "gamma", "alpha beta", "gamma", "delta\n", "DELTA",
             "", "", "unique one", "alpha beta "]
    return [Record(stable_id("t", i), t) for i, t in enumerate(texts)]


def test_registered_and_params_validated() -> None:
    assert REGISTRY.get("exact_dedup") is ExactDedup
    with pytest.raises(ValueError, match="normalize"):
        ExactDedup(normalize=True)


def test_exact_duplicates_dropped_with_cluster_pointing_at_kept_record(tmp_path: Path) -> None:
    recs = corpus()
    out = list(r for b in ExactDedup().process([recs], StepContext(tmp_path)) for r in b)
    kept = [r for r in out if r.drop is None]
    dropped = [r for r in out if r.drop is not None]
    assert sorted(r.text for r in kept) == sorted(["alpha beta", "Alpha  Beta", "gamma", "delta\n", "DELTA", "",
                                                   "unique one", "alpha beta "])
    assert {r.drop for r in dropped} == {("exact_dedup", "duplicate")}
    by_id = {r.id: r for r in out}
    for r in dropped:
        rep = by_id[r.signals["dedup.cluster"]]
        assert rep.drop is None and rep.content == r.content
        # the representative is the member with the smallest key
        members = [x for x in out if x.content == r.content]
        assert rep is min(members, key=record_key)
    assert by_id[kept[0].id].signals.get("dedup.cluster_size", 1) >= 1
    sizes = {r.text: r.signals.get("dedup.cluster_size") for r in kept}
    assert sizes["alpha beta"] == 3 and sizes["gamma"] == 2 and sizes[""] == 2 and sizes["unique one"] is None


def test_normalised_mode_folds_case_and_whitespace(tmp_path: Path) -> None:
    out = list(r for b in ExactDedup(normalise=True).process([corpus()], StepContext(tmp_path)) for r in b)
    kept_norm = [" ".join(r.text.lower().split()) for r in out if r.drop is None]
    assert sorted(kept_norm) == sorted(set(kept_norm)) == ["", "alpha beta", "delta", "gamma", "unique one"]


def test_structured_content_and_already_dropped_records(tmp_path: Path) -> None:
    recs = [Record("a", {"messages": [{"role": "user", "content": "hi"}]}, "conversation"),
            Record("b", {"messages": [{"role": "user", "content": "hi"}]}, "conversation"),
            Record("c", "x", drop=("earlier", "bad")), Record("d", "x")]
    out = list(r for b in ExactDedup().process([recs], StepContext(tmp_path)) for r in b)
    assert sum(r.drop == ("exact_dedup", "duplicate") for r in out) == 1
    assert out[2].drop == ("earlier", "bad") and out[3].drop is None  # a dropped record is not a representative


@pytest.mark.parametrize("normalise", [False, True])
def test_same_result_for_1_3_7_shards_and_any_part_or_sort_size(tmp_path: Path, normalise: bool) -> None:
    import random

    rng = random.Random(5)
    words = ["a", "b", "c", "d", "A", "B  "]
    recs = [Record(stable_id("s", i), " ".join(rng.choice(words) for _ in range(rng.randint(0, 3))))
            for i in range(400)]
    results = []
    for n, extra in [(1, {}), (3, {"part_rows": 17, "sort_rows": 40}), (7, {"part_rows": 5, "sort_rows": 29})]:
        out = run_sharded(lambda: ExactDedup(normalise=normalise, **extra), recs, n, tmp_path / f"{n}")
        results.append({r.id: (r.drop, r.signals.get("dedup.cluster"), r.signals.get("dedup.cluster_size"))
                        for r in out})
    assert results[0] == results[1] == results[2]
    n_kept = sum(v[0] is None for v in results[0].values())
    distinct = {(" ".join(r.text.lower().split()) if normalise else r.text) for r in recs}
    assert n_kept == len(distinct)


def test_reduce_fails_clearly_when_a_shard_is_missing(tmp_path: Path) -> None:
    recs = corpus()
    list(ExactDedup().collect([recs], StepContext(tmp_path, 0, 2)))
    with pytest.raises(AssayError, match=r"missing: \[1\]"):
        ExactDedup().reduce(StepContext(tmp_path, 0, 2))
    with pytest.raises(AssayError, match="unexpected shards"):
        list(ExactDedup().collect([recs], StepContext(tmp_path, 1, 2)))
        ExactDedup().reduce(StepContext(tmp_path, 0, 1))


def test_apply_without_reduce_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(AssayError, match="did reduce run"):
        list(ExactDedup().apply([corpus()], StepContext(tmp_path)))


def test_apply_does_not_depend_on_record_order_within_a_shard(tmp_path: Path) -> None:
    recs = corpus()
    step = ExactDedup()
    ctx = StepContext(tmp_path)
    list(step.collect([recs], ctx))
    step.reduce(ctx)
    forward = {r.id: r.drop for b in step.apply([[r.copy() for r in recs]], ctx) for r in b}
    backward = {r.id: r.drop for b in step.apply([[r.copy() for r in reversed(recs)]], ctx) for r in b}
    assert forward == backward
    assert step.stats.counters["unmatched_decisions"] == 0


def test_apply_counts_decisions_that_match_no_record(tmp_path: Path) -> None:
    recs = corpus()
    step = ExactDedup()
    ctx = StepContext(tmp_path)
    list(step.collect([recs], ctx))
    step.reduce(ctx)
    list(step.apply([recs[:3]], ctx))
    assert step.stats.counters["unmatched_decisions"] > 0
    assert ctx.errors.counts["dedup_unmatched"] == 1


def test_reduce_refuses_state_collected_with_other_parameters(tmp_path: Path) -> None:
    list(ExactDedup(normalise=True).collect([corpus()], StepContext(tmp_path)))
    with pytest.raises(AssayError, match="different parameters"):
        ExactDedup(normalise=False).reduce(StepContext(tmp_path))
