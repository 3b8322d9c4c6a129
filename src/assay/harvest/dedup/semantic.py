"""``semantic_dedup``: drop texts that mean the same as another (SemDedup, Abbas et al. 2023, as NeMo Curator runs
it), correct across all shards and workers.

collect (per shard): every text is embedded (all-MiniLM-L6-v2 from the ``ml`` extra by default, offline; rows are
L2-normalised, so a dot product is a cosine similarity) and the vectors are written with the records' keys.

reduce (once): the vectors of the whole corpus are clustered with k-means (``clusters``; scikit-learn, a fixed seed,
rows in record-key order so the result does not depend on sharding). Within each cluster, as in NeMo Curator's
SemDedup: members are ordered by their distance to the centroid (``keep: closest`` first, or ``farthest`` first,
NeMo's "hard" examples), the pairwise cosine similarities are computed, and a member is dropped when its similarity
to any member *before* it exceeds ``threshold`` (NeMo: ``1 - eps``). The first member of every group of near-equal
meanings is kept. A dropped record's ``signals["semdedup.cluster"]`` is the id of the kept record it leads to
(following "most similar earlier member" until a kept one); kept records with duplicates get
``semdedup.cluster_size``.

The reduce holds all vectors in memory (384 float32 = 1.5 KB a record: fine for millions, not billions) and computes
each k-means cluster's full similarity matrix (a cluster of 20,000 records takes 1.6 GB: raise ``clusters`` with the
corpus; NeMo's guidance is about 1 cluster per 10,000 records or fewer).
"""

from __future__ import annotations

import shutil
from typing import Any, Iterable, Iterator, Literal

import numpy as np
from pydantic import Field

from assay.core.step import Batch, StepContext
from assay.harvest.dedup import state
from assay.harvest.dedup.base import ClusterDedupParams, ClusterDedupStep, PartBuffer


def semdedup_cluster(emb: np.ndarray, centroid: np.ndarray, threshold: float, keep: str,
                     tiebreak: np.ndarray) -> np.ndarray:
    """For the members of one k-means cluster (rows of ``emb``): the member each one is a duplicate of (its own
    index when kept), following NeMo Curator's SemDedup rule."""
    n = emb.shape[0]
    d = 1.0 - emb @ centroid
    order = np.lexsort((tiebreak, -d if keep == "farthest" else d))
    e = emb[order]
    sim = e @ e.T
    sim = np.triu(sim, k=1)  # sim[i, j] for i < j: j compared with the members before it
    best = sim.argmax(axis=0)
    best_sim = sim[best, np.arange(n)]
    dup = best_sim > threshold
    dup[0] = False
    parent = np.where(dup, best, np.arange(n))
    # follow the chain to a kept member (indices strictly decrease along it)
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            break
        parent = nxt
    out = np.empty(n, dtype=np.int64)
    out[order] = order[parent]
    return out


class SemanticDedup(ClusterDedupStep):
    """Drop texts whose meaning duplicates another's (SemDedup: MiniLM embeddings, k-means, within-cluster cosine
    threshold); one per group is kept."""

    name = "semantic_dedup"
    summary = "Drop texts that mean the same as another (SemDedup: MiniLM, k-means, cosine threshold)."
    version = "1"
    signal_prefix = "semdedup"
    drop_reason = "semantic_duplicate"

    class Params(ClusterDedupParams):
        model: str = Field("minilm", description="embedding backend: 'minilm', 'minilm-onnx' or a "
                                                 "sentence-transformers folder")
        clusters: int = Field(100, ge=1, description="k-means clusters (fewer if there are fewer records)")
        threshold: float = Field(0.9, gt=0, le=1, description="drop a text more similar than this (cosine) to "
                                                             "one before it in its cluster (NeMo: 1 - eps, its "
                                                             "default eps 0.01 catches only near-copies)")
        keep: Literal["closest", "farthest"] = Field(
            "closest", description="in a group of duplicates keep the one closest to the cluster centroid, or the "
                                   "farthest (NeMo's 'hard')")
        kmeans_iterations: int = Field(100, ge=1)
        seed: int = 0
        batch_size: int = Field(64, ge=1)
        device: str = "cpu"
        max_chars: int = Field(10_000, ge=1, description="embed at most this many characters of a text (MiniLM "
                                                          "reads 256 tokens anyway)")

    def __getstate__(self) -> dict[str, Any]:
        st = self.__dict__.copy()
        st.pop("_backend", None)
        return st

    def setup(self, ctx: StepContext) -> None:
        from assay.models.embeddings import get_backend

        p = self.params
        self._backend = get_backend(p.model, batch_size=p.batch_size, device=p.device)

    def collect(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        if not hasattr(self, "_backend"):
            self.setup(ctx)
        p = self.params
        buf = PartBuffer(self, ctx)
        texts: list[str] = []

        def flush() -> None:
            emb = self._backend.encode(texts).astype(np.float32) if texts else np.zeros((0, 1), np.float32)
            buf.flush({"embeddings": emb})
            texts.clear()

        for batch in batches:
            for record in batch:
                if record.drop is not None:
                    continue
                buf.add(record)
                texts.append(record.text[:p.max_chars])
                if len(buf) >= p.part_rows:
                    flush()
            yield batch
        if len(buf):
            flush()
        buf.finish()
        self.count("embedded", sum(buf.part_records))

    def reduce(self, ctx: StepContext) -> None:
        from sklearn.cluster import KMeans

        p = self.params
        state_dir, segments, scratch, keys = self._open_reduce(ctx)
        keys = np.asarray(keys)
        n = keys.size
        roots = np.arange(n, dtype=np.int64)
        clusters = 0
        if n > 1:
            emb = np.concatenate([np.asarray(s.load("embeddings")) for s in segments if s.records])
            order = np.argsort(keys, kind="stable")  # record-key order: independent of sharding
            k = min(p.clusters, n)
            km = KMeans(n_clusters=k, n_init=1, max_iter=p.kmeans_iterations, random_state=p.seed)
            labels_sorted = km.fit_predict(emb[order])
            labels = np.empty(n, dtype=np.int64)
            labels[order] = labels_sorted
            centroids = km.cluster_centers_
            norms = np.linalg.norm(centroids, axis=1, keepdims=True)
            centroids = centroids / np.where(norms == 0, 1, norms)
            for c in range(k):
                members = np.flatnonzero(labels == c)
                if members.size < 2:
                    continue
                clusters += 1
                local = semdedup_cluster(emb[members], centroids[c], p.threshold, p.keep, keys[members])
                roots[members] = members[local]
        summary = self._write_decisions(ctx, segments, lambda lo, hi: roots[lo:hi], keys, ctx.num_shards)
        shutil.rmtree(scratch, ignore_errors=True)
        self.count("semantic_duplicates", summary["dropped"])
        state.save_json(state_dir / "reduce.json", {**summary, "kmeans_clusters": int(min(p.clusters, n)),
                                                    "clusters_compared": clusters})
