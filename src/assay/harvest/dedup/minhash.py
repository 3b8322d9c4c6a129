"""``minhash_dedup``: near-duplicate removal with MinHash-LSH, correct across all shards and workers.

collect (per shard): texts are shingled into word n-grams (:mod:`.shingles`), turned into ``bands × rows`` MinHash
values (:mod:`.signatures`) and ``bands`` 64-bit band keys, a batch of texts at a time, in numpy. Per part of
``part_rows`` records the shard writes each band's keys sorted, with the records' positions (and, if candidate
pairs are verified, the full signatures).

reduce (once): for each band in turn, and for each range of the 64-bit key space small enough to sort in memory
(``sort_rows``), the matching slice of every part (binary search in memory-mapped sorted files) is gathered and
sorted; records sharing a band key are candidate duplicates and are joined, each to the smallest-key record of its
bucket (pairs already in one cluster are skipped), in a union-find over the whole corpus (:mod:`.unionfind`, parent array memory-mapped). With
``min_jaccard`` set, a candidate pair is joined only if the fraction of equal MinHash values (the Jaccard
estimate over all ``bands × rows`` values) reaches it, which removes most false positives of the banding. The
clusters are the connected components; their representative is the record with the smallest key.

apply (per shard): records that are not their cluster's representative are dropped with reason
``near_duplicate`` and ``signals["minhash.cluster"]`` = the kept record's id; representatives of clusters of more
than one record get ``signals["minhash.cluster_size"]``.

Records without any word are not compared (counted as ``no_words``); texts longer than ``max_chars`` are compared
on their first ``max_chars`` characters (counted as ``truncated``).
"""

from __future__ import annotations

import shutil
from typing import Iterable, Iterator, Literal

import numpy as np
from pydantic import Field, model_validator

from assay.core.step import Batch, StepContext
from assay.harvest.dedup import state
from assay.harvest.dedup.base import ClusterDedupParams, ClusterDedupStep, PartBuffer
from assay.harvest.dedup.shingles import shingle_texts
from assay.harvest.dedup.signatures import band_keys, estimated_jaccard, minhash_signatures
from assay.harvest.dedup.unionfind import DisjointSets

#: characters of text shingled in one vectorised pass (bounds the temporary arrays to a few tens of MB)
CHUNK_CHARS = 1_000_000


class MinHashDedup(ClusterDedupStep):
    """Drop near-duplicate texts (MinHash-LSH over word n-grams); one record per cluster is kept."""

    name = "minhash_dedup"
    version = "1"
    signal_prefix = "minhash"
    drop_reason = "near_duplicate"

    class Params(ClusterDedupParams):
        ngram: int = Field(5, ge=1, le=32, description="words per shingle (FineWeb: 5)")
        bands: int = Field(14, ge=1, le=1024, description="LSH bands: records with all `rows` values of a band "
                                                          "equal are candidates (FineWeb: 14 bands x 8 rows)")
        rows: int = Field(8, ge=1, le=64, description="MinHash values per band")
        scheme: Literal["one_permutation", "permutations"] = Field(
            "one_permutation", description="one-permutation hashing with densification (fast), or one hash "
                                           "function per MinHash value (classic)")
        min_jaccard: float | None = Field(
            0.7, ge=0.0, le=1.0, description="join a candidate pair only if its estimated Jaccard similarity is at "
                                             "least this; null: no check (as FineWeb), more false positives")
        max_chars: int = Field(1_000_000, ge=1, description="compare at most this many characters of each text")

        @model_validator(mode="after")
        def _enough_values(self) -> "MinHashDedup.Params":
            if self.bands * self.rows > 4096:
                raise ValueError(f"bands × rows = {self.bands * self.rows} is more than 4096 MinHash values")
            return self

    @property
    def num_perm(self) -> int:
        return self.params.bands * self.params.rows

    # -- collect -------------------------------------------------------------------------------------------------
    def collect(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        p = self.params
        verify = p.min_jaccard is not None
        buf = PartBuffer(self, ctx)
        pending: list[str] = []
        pending_first = 0  # position (in the part) of pending[0]
        pending_chars = 0
        key_chunks: list[np.ndarray] = []
        pos_chunks: list[np.ndarray] = []
        sig_chunks: list[np.ndarray] = []

        def sign_pending() -> None:
            nonlocal pending, pending_first, pending_chars
            if not pending:
                return
            shingles = shingle_texts(pending, p.ngram)
            sig = minhash_signatures(shingles, self.num_perm, p.scheme)
            has_words = shingles.counts > 0
            self.count("no_words", int(np.count_nonzero(~has_words)))
            keys = band_keys(sig, p.bands, p.rows)
            key_chunks.append(keys[:, has_words])
            pos_chunks.append(pending_first + np.flatnonzero(has_words))
            if verify:
                sig_chunks.append(sig)
            pending_first += len(pending)
            pending, pending_chars = [], 0

        def flush_part() -> None:
            nonlocal pending_first
            sign_pending()
            keys = np.concatenate(key_chunks, axis=1) if key_chunks else np.zeros((p.bands, 0), np.uint64)
            pos = np.concatenate(pos_chunks) if pos_chunks else np.zeros(0, np.int64)
            order = np.argsort(keys, axis=1, kind="stable")
            arrays = {"band_keys": np.take_along_axis(keys, order, axis=1),
                      "band_pos": pos[order].astype(np.uint32)}
            if verify:
                arrays["signatures"] = (np.concatenate(sig_chunks) if sig_chunks
                                        else np.zeros((0, self.num_perm), np.uint32))
            buf.flush(arrays)
            key_chunks.clear(), pos_chunks.clear(), sig_chunks.clear()
            pending_first = 0

        for batch in batches:
            for record in batch:
                if record.drop is not None:
                    continue
                text = record.text
                if len(text) > p.max_chars:
                    text = text[:p.max_chars]
                    self.count("truncated")
                buf.add(record)
                pending.append(text)
                pending_chars += len(text)
                if pending_chars >= CHUNK_CHARS:
                    sign_pending()
                if len(buf) >= min(p.part_rows, 1 << 32):
                    flush_part()
            yield batch
        if len(buf):
            flush_part()
        buf.finish()
        self.count("records_signed", sum(buf.part_records))

    # -- reduce --------------------------------------------------------------------------------------------------
    def reduce(self, ctx: StepContext) -> None:
        p = self.params
        state_dir, segments, scratch, keys = self._open_reduce(ctx)
        sets = DisjointSets(keys, path=scratch / "parent.npy")
        starts = np.array([s.global_offset for s in segments], dtype=np.int64)

        entries = sum(s.load("band_pos").shape[1] for s in segments)  # records with at least one word
        n_ranges = max(1, -(-entries // p.sort_rows))
        bounds = state.hash_ranges(n_ranges)
        candidates = rejected = 0
        for band in range(p.bands):
            for r in range(n_ranges):
                hs, gs = [], []
                for s in segments:
                    row = s.load("band_keys")[band]
                    a, b = state.slice_sorted(row, bounds[r], bounds[r + 1])
                    if a < b:
                        hs.append(np.asarray(row[a:b]))
                        gs.append(np.asarray(s.load("band_pos")[band, a:b], dtype=np.int64) + s.global_offset)
                if not hs:
                    continue
                center, member = _bucket_edges(np.concatenate(hs), np.concatenate(gs), keys)
                if center.size:  # pairs already joined (through earlier bands) need no check
                    new = sets.find(center) != sets.find(member)
                    center, member = center[new], member[new]
                candidates += center.size
                if center.size and p.min_jaccard is not None:
                    ok = self._similar(segments, starts, center, member, p.min_jaccard)
                    rejected += int(center.size - np.count_nonzero(ok))
                    center, member = center[ok], member[ok]
                if center.size:
                    sets.union(center, member)

        summary = self._write_decisions(ctx, segments, sets.roots, keys, ctx.num_shards)
        del keys, sets
        shutil.rmtree(scratch, ignore_errors=True)
        self.count("candidate_pairs", candidates)
        self.count("rejected_pairs", rejected)
        self.count("near_duplicates", summary["dropped"])
        state.save_json(state_dir / "reduce.json", {**summary, "candidate_pairs": candidates,
                                                    "rejected_pairs": rejected, "key_ranges": n_ranges})

    @staticmethod
    def _similar(segments: list[state.Segment], starts: np.ndarray, a: np.ndarray, b: np.ndarray,
                 min_jaccard: float) -> np.ndarray:
        """Whether each pair ``(a[i], b[i])`` (global indices) has estimated Jaccard >= ``min_jaccard``."""
        out = np.zeros(a.size, dtype=bool)
        for lo in range(0, a.size, 1 << 16):
            ca, cb = a[lo:lo + (1 << 16)], b[lo:lo + (1 << 16)]
            out[lo:lo + ca.size] = estimated_jaccard(_gather(segments, starts, ca),
                                                     _gather(segments, starts, cb)) >= min_jaccard
        return out


def _bucket_edges(h: np.ndarray, g: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges joining every record of a bucket (equal ``h``) to the bucket's smallest-(key, index) record."""
    order = np.argsort(h)
    hs = h[order]
    same = hs[1:] == hs[:-1]
    in_bucket = np.zeros(hs.size, dtype=bool)
    in_bucket[1:] |= same
    in_bucket[:-1] |= same
    if not in_bucket.any():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    sel = order[in_bucket]
    bh, bg = h[sel], g[sel]
    bk = np.asarray(keys[bg])
    o = np.lexsort((bg, bk, bh))
    bh, bg = bh[o], bg[o]
    first = np.ones(bh.size, dtype=bool)
    first[1:] = bh[1:] != bh[:-1]
    head = np.flatnonzero(first)
    center = np.repeat(bg[head], np.diff(np.append(head, bh.size)))
    return center[~first], bg[~first]


def _gather(segments: list[state.Segment], starts: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Signatures of records ``g`` (global indices), read from their parts' memory-mapped files."""
    seg = np.searchsorted(starts, g, side="right") - 1
    first = segments[0].load("signatures")
    out = np.empty((g.size, first.shape[1]), dtype=np.uint32)
    for i in np.unique(seg):
        s = segments[int(i)]
        m = seg == i
        local = g[m] - s.global_offset
        order = np.argsort(local)
        rows = np.asarray(s.load("signatures")[local[order]])
        out[np.flatnonzero(m)[order]] = rows
    return out
