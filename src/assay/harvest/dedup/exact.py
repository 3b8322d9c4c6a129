"""``exact_dedup``: keep one record per identical content (optionally identical after light text normalisation).

collect: each shard writes, per part, the 128-bit content hash of every record sorted by hash, with the record's
key (id and content hash) and position. reduce: the hash space is cut into ranges small enough to sort in memory
(``sort_rows``); for each range the matching slice of every part (found by binary search in its memory-mapped
sorted file) is gathered and sorted, and each run of equal hashes becomes a cluster whose representative is the
record with the smallest key. apply: records listed for their shard are dropped with reason ``duplicate`` and
``signals["dedup.cluster"]`` = the kept record's id; kept representatives of clusters get
``signals["dedup.cluster_size"]``.
"""

from __future__ import annotations

import shutil
from typing import Iterable, Iterator

import numpy as np
import xxhash
from pydantic import Field

from assay.core.record import Record
from assay.core.step import Batch, StepContext
from assay.harvest.dedup import state
from assay.harvest.dedup.base import ClusterDedupParams, ClusterDedupStep, PartBuffer, scratch_array


def normalise_text(text: str) -> str:
    """Lower-case and fold every run of whitespace into one space (leading/trailing whitespace removed)."""
    return " ".join(text.lower().split())


def content_hash128(record: Record, normalise: bool) -> int:
    if normalise and isinstance(record.content, str):
        return xxhash.xxh3_128_intdigest(normalise_text(record.content).encode("utf-8", "surrogatepass"))
    return int(record.hash, 16)


class ExactDedup(ClusterDedupStep):
    """Drop records whose content is identical to another's (one representative per content hash is kept)."""

    name = "exact_dedup"
    version = "1"
    signal_prefix = "dedup"
    drop_reason = "duplicate"

    class Params(ClusterDedupParams):
        normalise: bool = Field(False, description="compare text lower-cased with whitespace folded "
                                                   "(structured content is always compared exactly)")

    # -- collect -------------------------------------------------------------------------------------------------
    def collect(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        part_rows = self.params.part_rows
        buf = PartBuffer(self, ctx)
        hashes: list[int] = []

        def flush() -> None:
            hi = np.array([x >> 64 for x in hashes], dtype=np.uint64)
            lo = np.array([x & 0xFFFFFFFFFFFFFFFF for x in hashes], dtype=np.uint64)
            order = np.lexsort((lo, hi))
            buf.flush({"hash_hi": hi[order], "hash_lo": lo[order], "hash_pos": order.astype(np.int64)})
            hashes.clear()

        for batch in batches:
            for record in batch:
                if record.drop is not None:
                    continue
                buf.add(record)
                hashes.append(content_hash128(record, self.params.normalise))
                if len(buf) >= part_rows:
                    flush()
            yield batch
        if len(buf):
            flush()
        buf.finish()
        self.count("records_hashed", sum(buf.part_records))

    # -- reduce --------------------------------------------------------------------------------------------------
    def reduce(self, ctx: StepContext) -> None:
        state_dir, segments, scratch, keys = self._open_reduce(ctx)
        total = keys.shape[0]
        root = scratch_array(scratch / "root.npy", np.int64, total)
        for lo in range(0, total, 1 << 22):
            root[lo:lo + (1 << 22)] = np.arange(lo, min(total, lo + (1 << 22)), dtype=np.int64)

        n_ranges = max(1, -(-total // self.params.sort_rows))
        bounds = state.hash_ranges(n_ranges)
        for r in range(n_ranges):
            parts_hi, parts_lo, parts_g = [], [], []
            for s in segments:
                hi_arr = s.load("hash_hi")
                a, b = state.slice_sorted(hi_arr, bounds[r], bounds[r + 1])
                if a == b:
                    continue
                parts_hi.append(np.asarray(hi_arr[a:b]))
                parts_lo.append(np.asarray(s.load("hash_lo")[a:b]))
                parts_g.append(np.asarray(s.load("hash_pos")[a:b]) + s.global_offset)
            if not parts_hi:
                continue
            hi, lo, g = np.concatenate(parts_hi), np.concatenate(parts_lo), np.concatenate(parts_g)
            k = np.asarray(keys[g])
            order = np.lexsort((g, k, lo, hi))  # equal hashes together, smallest (key, index) first
            hi, lo, g = hi[order], lo[order], g[order]
            new_group = np.ones(hi.size, dtype=bool)
            new_group[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
            group_start = np.flatnonzero(new_group)
            first = np.repeat(g[group_start], np.diff(np.append(group_start, hi.size)))
            dup = ~new_group
            root[g[dup]] = first[dup]
            self.count("duplicate_groups", int(np.count_nonzero(np.diff(np.append(group_start, hi.size)) > 1)))

        summary = self._write_decisions(ctx, segments, lambda a, b: np.asarray(root[a:b]), keys, ctx.num_shards)
        del keys, root
        shutil.rmtree(scratch, ignore_errors=True)
        self.count("duplicates", summary["dropped"])
        state.save_json(state_dir / "reduce.json", {**summary, "hash_ranges": n_ranges})

