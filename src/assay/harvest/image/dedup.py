"""``image_dedup``: exact and near-duplicate images by perceptual hash, across every shard of a run.

Two images are duplicates when their 64-bit pHashes (:mod:`.phash`) differ in at most ``threshold`` bits:
``threshold: 0`` finds exact pHash matches only (the same picture, re-encoded or resized); the default 4 also finds
recompressed, lightly resized or slightly brightened copies while keeping distinct pictures apart (the tests measure
both). Duplicates are grouped into clusters (connected components: A~B and B~C put A, B, C together) and one
record per cluster is kept.

It is a global step, like ``minhash_dedup``:

* collect (per shard): each record's pHash is taken from ``signals["image.phash"]`` (written by ``image_decode``)
  or computed from its image; records whose image cannot be decoded are passed through and not compared
  (``undecodable``). Per part the shard writes the hashes and each record's pixel count.
* reduce (once): records with equal hashes are joined; then, over the distinct hashes, the 64 bits are cut into
  ``threshold + 1`` bands — two hashes within ``threshold`` bits agree exactly on at least one band (pigeonhole), so
  sorting by each band in turn finds every near pair as a pair in the same bucket, which is then checked by its
  real Hamming distance. Buckets larger than ``max_bucket`` (a flood of one band value) are compared only between
  neighbours up to ``max_bucket`` apart in hash order, counted as ``bucket_limited``.
* apply (per shard): every record but its cluster's representative is dropped with reason ``duplicate_image`` and
  ``signals["image_dedup.cluster"]`` = the kept record's id; representatives of clusters of several records get
  ``signals["image_dedup.cluster_size"]``.

The representative is deterministic and independent of sharding: with ``keep: largest`` (default) the image with
the most pixels, ties broken by a hash of id and content; with ``keep: any`` only that hash decides.
"""

from __future__ import annotations

import shutil
from typing import Iterable, Iterator, Literal

import numpy as np
from pydantic import Field

from assay.core.step import Batch, StepContext
from assay.harvest.dedup import state
from assay.harvest.dedup.base import ClusterDedupParams, ClusterDedupStep, PartBuffer
from assay.harvest.dedup.unionfind import DisjointSets
from assay.harvest.image.common import DEFAULT_MAX_PIXELS, ImageProblem, image_bytes, open_image
from assay.harvest.image.phash import from_hex, phash

_U32 = (1 << 32) - 1


def band_layout(threshold: int) -> list[tuple[int, int]]:
    """``threshold + 1`` (shift, width) bands covering the 64 bits as evenly as possible."""
    n = threshold + 1
    widths = [64 // n + (1 if i < 64 % n else 0) for i in range(n)]
    out, shift = [], 0
    for w in widths:
        out.append((shift, w))
        shift += w
    return out


def near_pairs(hashes: np.ndarray, threshold: int, max_bucket: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Index pairs ``(i, j)`` of distinct ``hashes`` within ``threshold`` bits (each found pair once per band it
    shares; callers union them), and how many buckets were larger than ``max_bucket``."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = hashes.size
    if n < 2 or threshold <= 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, 0
    out_a: list[np.ndarray] = []
    out_b: list[np.ndarray] = []
    limited = 0
    for shift, width in band_layout(threshold):
        band = (hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.lexsort((hashes, band))
        b = band[order]
        new = np.ones(n, dtype=bool)
        new[1:] = b[1:] != b[:-1]
        starts = np.flatnonzero(new)
        sizes = np.diff(np.append(starts, n))
        limited += int(np.count_nonzero(sizes > max_bucket + 1))
        rank = np.arange(n) - np.repeat(starts, sizes)  # position inside its bucket
        remaining = np.repeat(sizes, sizes) - rank - 1  # later members of the same bucket
        active = np.flatnonzero(remaining > 0)
        d = 1
        while active.size and d <= max_bucket:
            i, j = order[active], order[active + d]
            close = np.bitwise_count(hashes[i] ^ hashes[j]) <= threshold
            out_a.append(i[close])
            out_b.append(j[close])
            d += 1
            active = active[remaining[active] >= d]
    if not out_a:
        empty = np.zeros(0, np.int64)
        return empty, empty, limited
    return np.concatenate(out_a).astype(np.int64), np.concatenate(out_b).astype(np.int64), limited


class ImageDedup(ClusterDedupStep):
    """Drop exact and near-duplicate images (pHash within a Hamming threshold), across all shards."""

    name = "image_dedup"
    version = "1"
    signal_prefix = "image_dedup"
    drop_reason = "duplicate_image"

    class Params(ClusterDedupParams):
        threshold: int = Field(4, ge=0, le=31, description="max differing pHash bits of a duplicate (0: exact)")
        keep: Literal["largest", "any"] = Field("largest", description="which record of a cluster is kept: the one "
                                                                       "with most pixels, or any (deterministic)")
        max_bucket: int = Field(2000, ge=1, description="compare each hash with at most this many others sharing "
                                                        "a band (bounds the cost of floods of similar hashes)")
        max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, description="when hashing images here: larger ones are "
                                                                      "not decoded (counted as undecodable)")

    # -- collect -------------------------------------------------------------------------------------------------
    def collect(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        buf = PartBuffer(self, ctx)
        hashes: list[int] = []
        pixels: list[int] = []

        def flush() -> None:
            buf.flush({"phash": np.array(hashes, dtype=np.uint64), "pixels": np.array(pixels, dtype=np.uint64)})
            hashes.clear()
            pixels.clear()

        for batch in batches:
            for record in batch:
                if record.drop is not None:
                    continue
                found = self._hash(record)
                if found is None:
                    self.count("undecodable")
                    continue
                buf.add(record)
                hashes.append(found[0])
                pixels.append(found[1])
                if len(buf) >= self.params.part_rows:
                    flush()
            yield batch
        if len(buf):
            flush()
        buf.finish()
        self.count("records_hashed", sum(buf.part_records))

    def _hash(self, record) -> tuple[int, int] | None:  # noqa: ANN001
        """(pHash, pixel count) of a record, from its signals and meta when ``image_decode`` wrote them."""
        h = record.signals.get("image.phash")
        w, hgt = record.meta.get("width"), record.meta.get("height")
        if isinstance(h, str) and isinstance(w, int) and isinstance(hgt, int):
            try:
                return from_hex(h), w * hgt
            except ValueError:
                pass
        try:
            img = open_image(image_bytes(record), self.params.max_pixels)
        except ImageProblem:
            return None
        value = phash(img)
        record.signals["image.phash"] = f"{value:016x}"
        return value, img.size[0] * img.size[1]

    # -- reduce --------------------------------------------------------------------------------------------------
    def reduce(self, ctx: StepContext) -> None:
        p = self.params
        state_dir = ctx.state_dir(self, self.index)
        segments, manifests = state.read_segments(state_dir, ctx.num_shards, self.name)
        state.check_params(manifests, self.params_hash, self.name)
        scratch = state_dir / "_reduce"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        keys = self._load_keys(segments, scratch)
        total = keys.shape[0]
        ph = np.zeros(total, dtype=np.uint64)
        px = np.zeros(total, dtype=np.uint64)
        for s in segments:
            ph[s.global_offset:s.global_offset + s.records] = s.load("phash")
            px[s.global_offset:s.global_offset + s.records] = s.load("pixels")
        order_key = np.asarray(keys, dtype=np.uint64)
        if p.keep == "largest":  # most pixels first, then the record key: smaller order key wins
            order_key = ((np.uint64(_U32) - np.minimum(px, np.uint64(_U32))) << np.uint64(32)) | \
                (order_key >> np.uint64(32))
        sets = DisjointSets(order_key, path=scratch / "parent.npy")

        # exact: equal hashes joined to the first record of their run
        order = np.lexsort((np.arange(total), ph))
        sorted_h = ph[order]
        new = np.ones(total, dtype=bool)
        new[1:] = sorted_h[1:] != sorted_h[:-1]
        starts = np.flatnonzero(new)
        head = np.repeat(order[starts], np.diff(np.append(starts, total)))
        if total:
            sets.union(head[~new], order[~new])
        exact_dups = int(np.count_nonzero(~new))

        # near: over the distinct hashes, pairs within the threshold
        distinct, holder = sorted_h[starts], order[starts]
        a, b, limited = near_pairs(distinct, p.threshold, p.max_bucket)
        if a.size:
            sets.union(holder[a], holder[b])

        summary = self._write_decisions(ctx, segments, sets.roots, keys, ctx.num_shards)
        del keys, sets
        shutil.rmtree(scratch, ignore_errors=True)
        self.count("exact_phash_duplicates", exact_dups)
        self.count("near_pairs", int(a.size))
        self.count("bucket_limited", limited)
        self.count("duplicates", summary["dropped"])
        state.save_json(state_dir / "reduce.json", {**summary, "exact_phash_duplicates": exact_dups,
                                                    "near_pairs": int(a.size), "bucket_limited": limited})
