"""``simhash_dedup``: near-duplicate removal with 64-bit SimHash (Charikar 2002; Manku et al. 2007), as
Data-Juicer's ``document_simhash_deduplicator``, correct across all shards and workers.

Fingerprint: a text's word n-gram shingles (:mod:`.shingles`, the same 64-bit shingle hashes ``minhash_dedup``
uses) each vote on every bit: +w if the shingle's hash has the bit set, -w if not, with w the shingle's number of
occurrences; the fingerprint bit is 1 where the votes are positive (strictly more than half the weight, exactly
as the ``simhash`` package computes it). Similar texts get fingerprints that differ in few bits.

Near-duplicates: two texts whose fingerprints differ in at most ``hamming`` bits. Lookup is banded (Manku et al.):
the 64 bits are cut into ``bands`` >= ``hamming + 1`` blocks (by the pigeonhole principle two fingerprints within
``hamming`` bits agree on at least one whole block), fingerprints that agree on a block are candidates, and every
candidate pair is checked on its real Hamming distance. Pairs within the distance are joined (union-find, so a
cluster is a connected component: A~B and B~C puts A, B and C together); each cluster keeps the record with the
smallest key (:mod:`.base`), the others are dropped as ``near_duplicate`` with ``signals["simhash.cluster"]`` = the
kept record's id.

collect (per shard) writes fingerprints; reduce reads all of them (8 bytes a record in memory), first joins equal
fingerprints, then looks up the distinct ones band by band; apply drops. Texts without words are not compared
(counted ``no_words``).
"""

from __future__ import annotations

import shutil
from typing import Iterable, Iterator

import numpy as np
from pydantic import Field, model_validator

from assay.core.step import Batch, StepContext
from assay.harvest.dedup import state
from assay.harvest.dedup.base import ClusterDedupParams, ClusterDedupStep, PartBuffer
from assay.harvest.dedup.shingles import Shingles, shingle_texts
from assay.harvest.dedup.unionfind import DisjointSets

CHUNK_CHARS = 1_000_000
_BITS = 64


def simhash_from_shingles(sh: Shingles) -> np.ndarray:
    """One 64-bit fingerprint per text from its shingle hashes (each occurrence one vote); 0 for a text with none.

    One pass per bit: the votes of every text for bit j are a segmented sum over its (contiguous) shingles."""
    n = sh.starts.size - 1
    out = np.zeros(n, dtype=np.uint64)
    counts = np.diff(sh.starts)
    nz = np.flatnonzero(counts)
    if nz.size == 0:
        return out
    heads = sh.starts[:-1][nz]
    half = counts[nz]
    fp = np.zeros(nz.size, dtype=np.uint64)
    for j in range(_BITS):
        bit = ((sh.hashes >> np.uint64(j)) & np.uint64(1)).astype(np.int32)
        votes = np.add.reduceat(bit, heads)
        fp |= (2 * votes > half).astype(np.uint64) << np.uint64(j)  # more than half of the weight
    out[nz] = fp
    return out


def simhash_texts(texts: list[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(fingerprints, whether each text has words)."""
    sh = shingle_texts(texts, ngram)
    return simhash_from_shingles(sh), sh.counts > 0


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def band_blocks(bands: int) -> list[tuple[int, int]]:
    """(shift, width) of each block of the 64 bits (the last blocks take the remainder, as ``simhash`` does)."""
    width = _BITS // bands
    offsets = [width * i for i in range(bands)] + [_BITS]
    return [(offsets[i], offsets[i + 1] - offsets[i]) for i in range(bands)]


def near_pairs(fps: np.ndarray, hamming_max: int, bands: int, max_pairs_per_pass: int = 1 << 22
               ) -> tuple[np.ndarray, np.ndarray, int]:
    """Index pairs (i < j) of fingerprints within ``hamming_max`` bits (banded lookup, every candidate checked),
    and the number of candidate pairs checked. ``fps`` should hold distinct values (equal ones are trivially
    near; the step joins them beforehand)."""
    found_a: list[np.ndarray] = []
    found_b: list[np.ndarray] = []
    checked = 0
    idx = np.arange(fps.size, dtype=np.int64)
    for shift, width in band_blocks(bands):
        block = (fps >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(block, kind="stable")
        sb = block[order]
        cut = np.flatnonzero(np.diff(sb)) + 1
        starts = np.concatenate([[0], cut])
        sizes = np.diff(np.concatenate([starts, [sb.size]]))
        # all pairs inside each bucket, bucket sizes grouped so the pairs of one size are made in one numpy pass
        for size in np.unique(sizes[sizes > 1]):
            firsts = starts[sizes == size]
            iu, ju = np.triu_indices(int(size), k=1)
            per = max(1, max_pairs_per_pass // iu.size)
            for lo in range(0, firsts.size, per):
                f = firsts[lo:lo + per, None]
                a = idx[order[(f + iu).ravel()]]
                b = idx[order[(f + ju).ravel()]]
                checked += a.size
                ok = hamming(fps[a], fps[b]) <= hamming_max
                lo_, hi_ = np.minimum(a[ok], b[ok]), np.maximum(a[ok], b[ok])
                found_a.append(lo_)
                found_b.append(hi_)
    if not found_a:
        e = np.zeros(0, np.int64)
        return e, e, checked
    a, b = np.concatenate(found_a), np.concatenate(found_b)
    pairs = np.unique(np.stack([a, b], axis=1), axis=0) if a.size else np.zeros((0, 2), np.int64)
    return pairs[:, 0], pairs[:, 1], checked


class SimHashDedup(ClusterDedupStep):
    """Drop near-duplicate texts (64-bit SimHash over word n-grams, banded Hamming lookup); one record per cluster
    is kept."""

    name = "simhash_dedup"
    summary = "Drop near-duplicate texts (64-bit SimHash, banded Hamming lookup); one record per cluster is kept."
    version = "1"
    signal_prefix = "simhash"
    drop_reason = "near_duplicate"

    class Params(ClusterDedupParams):
        ngram: int = Field(3, ge=1, le=32, description="words per shingle")
        hamming: int = Field(4, ge=0, le=16, description="near-duplicates differ in at most this many of the 64 "
                                                         "bits (Data-Juicer: 4)")
        bands: int = Field(6, ge=1, le=64, description="blocks of the lookup; at least hamming + 1 "
                                                       "(Data-Juicer: num_blocks 6)")
        max_chars: int = Field(1_000_000, ge=1, description="fingerprint at most this many characters of a text")

        @model_validator(mode="after")
        def _pigeonhole(self) -> "SimHashDedup.Params":
            if self.bands < self.hamming + 1:
                raise ValueError(f"bands ({self.bands}) must be at least hamming + 1 ({self.hamming + 1}), or "
                                 f"pairs within the distance are missed")
            return self

    def collect(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        p = self.params
        buf = PartBuffer(self, ctx)
        pending: list[str] = []
        fps: list[np.ndarray] = []
        has: list[np.ndarray] = []
        chars = 0

        def sign() -> None:
            nonlocal pending, chars
            if pending:
                f, w = simhash_texts(pending, p.ngram)
                fps.append(f)
                has.append(w)
                pending, chars = [], 0

        def flush() -> None:
            sign()
            f = np.concatenate(fps) if fps else np.zeros(0, np.uint64)
            w = np.concatenate(has) if has else np.zeros(0, bool)
            self.count("no_words", int(np.count_nonzero(~w)))
            buf.flush({"fingerprints": f, "has_words": w})
            fps.clear(), has.clear()

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
                chars += len(text)
                if chars >= CHUNK_CHARS:
                    sign()
                if len(buf) >= p.part_rows:
                    flush()
            yield batch
        if len(buf):
            flush()
        buf.finish()

    def reduce(self, ctx: StepContext) -> None:
        p = self.params
        state_dir, segments, scratch, keys = self._open_reduce(ctx)
        fps = np.concatenate([np.asarray(s.load("fingerprints")) for s in segments]) if segments else \
            np.zeros(0, np.uint64)
        has = np.concatenate([np.asarray(s.load("has_words")) for s in segments]) if segments else \
            np.zeros(0, bool)
        sets = DisjointSets(keys, path=scratch / "parent.npy")
        live = np.flatnonzero(has)
        # equal fingerprints: join each to the first of its value
        uniq, first, inverse = np.unique(fps[live], return_index=True, return_inverse=True)
        sets.union(live[first[inverse]], live)
        a, b, checked = near_pairs(uniq, p.hamming, p.bands)
        if a.size:
            sets.union(live[first[a]], live[first[b]])
        summary = self._write_decisions(ctx, segments, sets.roots, keys, ctx.num_shards)
        del keys, sets
        shutil.rmtree(scratch, ignore_errors=True)
        self.count("candidate_pairs", checked)
        self.count("near_pairs", int(a.size))
        self.count("near_duplicates", summary["dropped"])
        state.save_json(state_dir / "reduce.json", {**summary, "candidate_pairs": checked,
                                                    "near_pairs": int(a.size), "distinct_fingerprints": int(uniq.size)})
