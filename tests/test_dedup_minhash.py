"""minhash_dedup: planted near-duplicates in real text are found (recall) without merging distinct texts
(precision), and the result does not depend on the number of shards, part files or sort ranges."""

from __future__ import annotations

import glob
import random
from pathlib import Path

import pytest

from assay.core.record import Record, stable_id
from assay.core.step import REGISTRY, StepContext
from assay.harvest.dedup import MinHashDedup
from assay.harvest.dedup.evaluation import (distinct_texts, jaccard, pair_scores, plant_near_duplicates,
                                            texts_from_html_files)
from assay.harvest.dedup.hashing import record_key

from doc_pages import require_debian_docs


def run_sharded(step_factory, records: list[Record], num_shards: int, run_dir: Path, batch: int = 25) -> list[Record]:
    """collect / reduce / apply as an executor would, each phase with a fresh step (as in another process),
    records dealt round-robin to ``num_shards`` shards."""
    shards = [[r.copy() for r in records[i::num_shards]] for i in range(num_shards)]

    def batches(recs):
        return [recs[i:i + batch] for i in range(0, len(recs), batch)]

    for i, recs in enumerate(shards):
        for _ in step_factory().collect(batches(recs), StepContext(run_dir, i, num_shards)):
            pass
    step_factory().reduce(StepContext(run_dir, 0, num_shards))
    out: list[Record] = []
    for i, recs in enumerate(shards):
        out.extend(r for b in step_factory().apply(batches(recs), StepContext(run_dir, i, num_shards)) for r in b)
    return out


def labels(out: list[Record]) -> list[str]:
    return [r.signals.get("minhash.cluster", r.id) for r in out]


def synthetic_corpus(seed: int = 0, n_base: int = 120) -> tuple[list[Record], list[int]]:
    """Random-word documents with planted variants (always available, unlike the real-text corpus)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    base = [" ".join(rng.choice(vocab) for _ in range(rng.randint(20, 300))) + "." for _ in range(n_base)]
    corpus = plant_near_duplicates(base, seed=seed, duplicate_share=0.5, related_share=0.2)
    recs = [Record(stable_id("synthetic", i), t) for i, t in enumerate(corpus.texts)]
    return recs, corpus.family


@pytest.fixture(scope="module")
def real_corpus():
    py_docs, pg_docs = require_debian_docs()
    py = texts_from_html_files(sorted(glob.glob(str(py_docs / "**" / "*.html"), recursive=True))[::3][:160])
    pg = texts_from_html_files(sorted(glob.glob(str(pg_docs / "*.html")))[::7][:160])
    base = distinct_texts(py + pg)
    return plant_near_duplicates(base, seed=11)


def test_registered_and_params_validated() -> None:
    assert REGISTRY.get("minhash_dedup") is MinHashDedup
    with pytest.raises(ValueError, match="threshold"):
        MinHashDedup(threshold=0.8)
    with pytest.raises(ValueError):
        MinHashDedup(bands=100, rows=64)


@pytest.mark.parametrize("params", [{}, {"scheme": "permutations"}])
def test_planted_near_duplicates_in_real_text(real_corpus, tmp_path: Path, params: dict) -> None:
    corpus = real_corpus
    n_dups = sum(k not in ("original", "related") for k in corpus.kind)
    n_related = corpus.kind.count("related")
    assert len(set(corpus.family)) >= 250 and n_dups >= 150 and n_related >= 20
    assert min(s for s, k in zip(corpus.similarity, corpus.kind) if k not in ("original", "related")) >= 0.8
    assert max(s for s, k in zip(corpus.similarity, corpus.kind) if k == "related") <= 0.7
    recs = [Record(stable_id("planted", i), t) for i, t in enumerate(corpus.texts)]
    out = list(r for b in MinHashDedup(params).process([recs[i:i + 100] for i in range(0, len(recs), 100)],
                                                       StepContext(tmp_path)) for r in b)
    scores = pair_scores(labels(out), corpus.family)
    assert scores["recall"] >= 0.95, scores
    assert scores["precision"] >= 0.98, scores
    dropped = [r for r in out if r.drop is not None]
    assert {r.drop for r in dropped} == {("minhash_dedup", "near_duplicate")}
    assert len(dropped) == len(out) - len(set(labels(out)))


def test_same_result_for_1_3_7_shards_parts_and_sort_ranges(tmp_path: Path) -> None:
    recs, _ = synthetic_corpus(seed=1)
    for params in ({}, {"min_jaccard": None}):
        results = []
        for n, extra in [(1, {}), (3, {"part_rows": 41, "sort_rows": 97}), (7, {"part_rows": 9, "sort_rows": 53})]:
            out = run_sharded(lambda: MinHashDedup({**params, **extra}), recs, n, tmp_path / f"{n}-{len(params)}")
            assert len(out) == len(recs)
            results.append({r.id: (r.drop, r.signals.get("minhash.cluster"), r.signals.get("minhash.cluster_size"))
                            for r in out})
        assert results[0] == results[1] == results[2]
        assert sum(v[0] is not None for v in results[0].values()) > 50


def test_clusters_match_planted_families_on_synthetic_text(tmp_path: Path) -> None:
    recs, family = synthetic_corpus(seed=2)
    out = run_sharded(MinHashDedup, recs, 3, tmp_path)
    by_id = {r.id: i for i, r in enumerate(recs)}
    scores = pair_scores([r.signals.get("minhash.cluster", r.id) for r in out], [family[by_id[r.id]] for r in out])
    assert scores["recall"] >= 0.95 and scores["precision"] >= 0.98, scores


def test_representative_is_the_smallest_key_and_sizes_are_reported(tmp_path: Path) -> None:
    recs, _ = synthetic_corpus(seed=3, n_base=60)
    out = run_sharded(MinHashDedup, recs, 2, tmp_path)
    clusters: dict[str, list[Record]] = {}
    for r in out:
        clusters.setdefault(r.signals.get("minhash.cluster", r.id), []).append(r)
    multi = [c for c in clusters.values() if len(c) > 1]
    assert multi
    for rep_id, members in clusters.items():
        rep = next(r for r in members if r.id == rep_id)
        assert rep.drop is None
        assert rep is min(members, key=record_key)
        if len(members) > 1:
            assert rep.signals["minhash.cluster_size"] == len(members)
            assert all(jaccard(rep.text, m.text) > 0.3 for m in members)


def test_bad_input_is_counted_not_fatal(tmp_path: Path) -> None:
    texts = ["", "   \n ", "!!!", "\x00\x01\x02 binary \udcff junk \ud800", "é" * 50, "words " * 300_000,
             "words " * 300_000 + "different tail", "a b c", "a b c"]
    recs = [Record(f"r{i}", t) for i, t in enumerate(texts)]
    recs.append(Record("img", {"image": b"\x89PNG", "caption": "a b c"}, "image_text"))
    step = MinHashDedup(max_chars=1_000_000)
    out = list(r for b in step.process([recs], StepContext(tmp_path)) for r in b)
    assert len(out) == len(recs)
    assert step.stats.counters["no_words"] == 3  # "", whitespace, punctuation only
    assert step.stats.counters["truncated"] == 2
    dropped = {r.id for r in out if r.drop is not None}
    # the two long texts are equal on their first max_chars characters; the captions equal "a b c"
    assert len(dropped & {"r5", "r6"}) == 1 and len(dropped & {"r7", "r8", "img"}) == 2
    assert not dropped & {"r0", "r1", "r2", "r3", "r4"}


def test_empty_shards_and_empty_corpus(tmp_path: Path) -> None:
    recs, _ = synthetic_corpus(seed=4, n_base=10)
    out = run_sharded(MinHashDedup, recs[:2], 4, tmp_path / "a")  # shards 2 and 3 are empty
    assert len(out) == 2
    assert run_sharded(MinHashDedup, [], 2, tmp_path / "b") == []
