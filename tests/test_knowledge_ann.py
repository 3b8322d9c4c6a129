"""Approximate dense search in HybridIndex (faiss IVF-Flat): agreement with the exact scan, filters, writes,
fallback to the exact scan, persistence.

The vectors are synthetic unit vectors in clusters (as sentence embeddings are), passed with ``upsert(vectors=)``
to an index without an embedder, so the dense side is exercised without a model. The exact reference is a numpy
brute-force product computed here, independently of the index.
"""

from __future__ import annotations

import numpy as np
import pytest

from assay.knowledge import search as search_mod
from assay.knowledge.search import HybridIndex

DIM = 48
N_DOCS = 4000
N_CLUSTERS = 40


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _clustered(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` unit vectors around N_CLUSTERS random centres; returns (vectors, cluster of each row, centres)."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((N_CLUSTERS, DIM)))
    cluster = rng.integers(0, N_CLUSTERS, n)
    vectors = _unit(centres[cluster] + 0.12 * rng.standard_normal((n, DIM)))
    return vectors, cluster, centres


def _queries(centres: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _unit(centres[rng.integers(0, len(centres), n)] + 0.12 * rng.standard_normal((n, DIM)))


def _docs(n: int, statuses: list[str] | None = None) -> list[dict]:
    return [{"doc_id": f"d{i}@1", "patch_id": f"d{i}", "version": 1, "text": f"doc {i}",
             "status": statuses[i] if statuses else "accepted", "domains": ["even" if i % 2 == 0 else "odd"]}
            for i in range(n)]


def _index(vectors: np.ndarray, ann: str, statuses: list[str] | None = None, **kw) -> HybridIndex:
    index = HybridIndex(None, embedder="none", ann=ann, **kw)
    index.upsert(_docs(len(vectors), statuses), vectors=vectors)
    return index


def _row(doc_id: str) -> int:
    return int(doc_id[1:].split("@")[0])


def _recall_at_k(found: list[tuple[str, float]], vectors: np.ndarray, query: np.ndarray, allowed: np.ndarray,
                 k: int) -> float:
    """Share of ``found`` whose true cosine reaches the exact k-th best among ``allowed`` rows (ties count as hits,
    so equal-scoring neighbours are not penalised)."""
    scores = vectors @ query
    kth = np.sort(scores[allowed])[-k]
    return sum(scores[_row(d)] >= kth - 1e-5 for d, _ in found) / k


def test_ann_agrees_with_exact_scan_and_reports_true_cosines():
    vectors, _, centres = _clustered(N_DOCS)
    approx, exact = _index(vectors, "on"), _index(vectors, "off")
    queries = _queries(centres, 60)
    everything = np.arange(N_DOCS)
    recalls = []
    for q in queries:
        found = approx.search("", 10, mode="dense", vector=q, latest_only=False)
        reference = exact.search("", 10, mode="dense", vector=q, latest_only=False)
        assert len(found) == 10
        # the exact index matches numpy brute force
        assert _recall_at_k(reference, vectors, q, everything, 10) == 1.0
        # scores returned by the ANN are the true cosines of the returned docs
        assert np.allclose([s for _, s in found], [float(vectors[_row(d)] @ q) for d, _ in found], atol=1e-5)
        recalls.append(_recall_at_k(found, vectors, q, everything, 10))
    assert np.mean(recalls) >= 0.95
    assert approx.dense_counts["ann"] == len(queries) and approx.dense_counts["fallback"] == 0
    assert exact.dense_counts["ann"] == 0 and approx.ann_build_seconds is not None


def test_filters_are_respected_on_the_ann_path():
    vectors, _, centres = _clustered(N_DOCS)
    rng = np.random.default_rng(3)
    statuses = [str(s) for s in rng.choice(["accepted", "proposed"], N_DOCS)]
    index = _index(vectors, "on", statuses)
    accepted = np.array([s == "accepted" for s in statuses])
    recalls = []
    for q in _queries(centres, 30):
        found = index.search("", 10, mode="dense", vector=q, status=["accepted"], domains=["even"])
        allowed = accepted & (np.arange(N_DOCS) % 2 == 0)
        assert len(found) == 10 and all(allowed[_row(d)] for d, _ in found)
        recalls.append(_recall_at_k(found, vectors, q, np.flatnonzero(allowed), 10))
    assert index.dense_counts["ann"] == 30  # a quarter of the docs pass: not selective enough for the exact path
    assert np.mean(recalls) >= 0.95


def test_upsert_replace_and_remove_are_visible_after_the_ann_is_built():
    vectors, _, centres = _clustered(N_DOCS)
    index = _index(vectors, "on")
    query = _queries(centres, 1)[0]
    before = index.search("", 5, mode="dense", vector=query)  # builds the IVF index
    assert index.dense_counts["ann"] == 1
    index.upsert([{"doc_id": "new@1", "patch_id": "new", "version": 1, "text": "new"}], vectors=query[None])
    found = index.search("", 5, mode="dense", vector=query)
    assert found[0][0] == "new@1" and found[0][1] == pytest.approx(1.0, abs=1e-5)
    # replacing the best old doc with a far-away vector moves it out; its old slot must not come back
    top_old = before[0][0]
    index.upsert([{"doc_id": top_old, "patch_id": top_old.split("@")[0], "version": 1, "text": "moved"}],
                 vectors=-query[None])
    found = [d for d, _ in index.search("", 5, mode="dense", vector=query)]
    assert top_old not in found
    assert index.search("", 1, mode="dense", vector=-query)[0][0] == top_old
    assert index.remove(["new@1"]) == 1
    found = [d for d, _ in index.search("", 5, mode="dense", vector=query)]
    assert "new@1" not in found and found == [d for d, _ in before[1:]] + found[4:]
    assert index.dense_counts["fallback"] == 0 and index.dense_counts["ann"] == 5


def test_falls_back_to_exact_scan_when_too_few_ann_candidates_pass():
    vectors, cluster, centres = _clustered(N_DOCS)
    # every doc of cluster 0 is a draft, every other doc accepted: a query at cluster 0 finds only drafts by ANN
    statuses = ["draft" if c == 0 else "accepted" for c in cluster]
    approx, exact = _index(vectors, "on", statuses), _index(vectors, "off", statuses)
    query = centres[0]
    found = approx.search("", 3, mode="dense", vector=query, status=["accepted"])
    assert approx.dense_counts == {"ann": 0, "fallback": 1, "exact": 0}
    assert found == exact.search("", 3, mode="dense", vector=query, status=["accepted"])
    assert all(cluster[_row(d)] != 0 for d, _ in found)


def test_selective_filter_and_threshold_use_the_exact_scan():
    vectors, _, centres = _clustered(N_DOCS)
    statuses = ["rare" if i % 20 == 0 else "accepted" for i in range(N_DOCS)]
    query = _queries(centres, 1)[0]
    auto = _index(vectors, "auto", statuses, ann_threshold=1000)
    found = auto.search("", 5, mode="dense", vector=query, status=["rare"])  # 5% pass: exact over those rows
    allowed = np.array([s == "rare" for s in statuses])
    assert _recall_at_k(found, vectors, query, np.flatnonzero(allowed), 5) == 1.0
    assert auto.dense_counts == {"ann": 0, "fallback": 0, "exact": 1}
    auto.search("", 5, mode="dense", vector=query)
    assert auto.dense_counts["ann"] == 1  # 4,000 vectors >= threshold 1,000
    small = _index(vectors, "auto", ann_threshold=10_000)
    small.search("", 5, mode="dense", vector=query)
    assert small.dense_counts == {"ann": 0, "fallback": 0, "exact": 1}
    small.ann = "off"  # switchable between queries
    auto.ann = "off"
    auto.search("", 5, mode="dense", vector=query)
    assert auto.dense_counts["ann"] == 1 and auto.dense_counts["exact"] == 2


def test_bad_ann_mode_is_rejected():
    with pytest.raises(ValueError, match="ann must be one of"):
        HybridIndex(None, embedder="none", ann="maybe")


def test_hybrid_mode_uses_ann_for_its_dense_list():
    vectors, _, centres = _clustered(N_DOCS)
    approx, exact = _index(vectors, "on"), _index(vectors, "off")
    query = _queries(centres, 1)[0]
    a = approx.search("doc 17", 10, vector=query, latest_only=False)
    b = exact.search("doc 17", 10, vector=query, latest_only=False)
    assert approx.dense_counts["ann"] == 1
    # the only doc with both words: first by BM25, so in the fused top 10 whichever way the dense list was found
    assert "d17@1" in {d for d, _ in a} and "d17@1" in {d for d, _ in b}
    assert len({d for d, _ in a} & {d for d, _ in b}) >= 8


def test_reopened_index_rebuilds_the_ann_and_compact_resets_it(tmp_path):
    rng = np.random.default_rng(5)
    topics = [[f"t{t}w{w}" for w in range(15)] for t in range(30)]  # texts on topics, as real knowledge clusters
    docs = [{"doc_id": f"d{i}@1", "patch_id": f"d{i}", "version": 1, "status": "accepted",
             "text": " ".join(rng.choice(topics[i % 30], 12))} for i in range(3000)]
    with HybridIndex(tmp_path / "kb", embedder="hashed", ann="on") as index:
        index.upsert(docs)
    reopened = HybridIndex(tmp_path / "kb", embedder="hashed", ann="on")  # vectors from the snapshot
    queries = reopened.embed([" ".join(rng.choice(topics[t], 4)) for t in range(20)])
    vectors = reopened._emb[:3000].copy()

    def agreement(allowed: np.ndarray) -> float:
        return float(np.mean([_recall_at_k(reopened.search("", 10, mode="dense", vector=q), vectors, q, allowed, 10)
                              for q in queries]))

    assert agreement(np.arange(3000)) >= 0.95 and reopened.dense_counts["ann"] == 20
    reopened.remove([f"d{i}@1" for i in range(0, 3000, 2)])
    reopened.compact()  # renumbers the slots: the IVF index must be rebuilt, not reused with stale ids
    assert reopened._ann is None
    vectors = vectors[1::2]  # slot j now holds doc 2j + 1
    found = reopened.search("", 10, mode="dense", vector=queries[0])
    assert all(_row(d) % 2 == 1 for d, _ in found)
    assert reopened.dense_counts["ann"] == 21 and reopened._ann is not None and reopened._ann.ntotal == 1500
    hits = [float(vectors[(_row(d) - 1) // 2] @ queries[0]) for d, _ in found]
    assert np.allclose(hits, [s for _, s in found], atol=1e-5)
    reopened.close()


def test_faiss_threads_setting_is_restored():
    faiss = search_mod._faiss()
    before = faiss.omp_get_max_threads()
    vectors, _, centres = _clustered(N_DOCS)
    _index(vectors, "on").search("", 3, mode="dense", vector=_queries(centres, 1)[0])
    assert faiss.omp_get_max_threads() == before
