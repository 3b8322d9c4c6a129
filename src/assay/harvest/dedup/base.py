"""What the cluster-based dedup steps share: per-shard part buffering in ``collect``, turning the global cluster
assignment into per-shard decisions at the end of ``reduce``, and the ``apply`` phase.

The representative kept in each cluster is the record with the smallest key, where a record's key is a 64-bit
hash of its id and content (:func:`~assay.harvest.dedup.hashing.record_key`). It is arbitrary but deterministic,
and it does not depend on how the corpus is split into shards or on the number of workers. Records with identical
id and content (the same record fed twice) are indistinguishable; one of them is kept.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Literal

import numpy as np
from pydantic import Field

from assay.core.record import Record
from assay.core.step import Batch, GlobalStep, StepContext, StepParams
from assay.harvest.dedup import state
from assay.harvest.dedup.hashing import record_key


class ClusterDedupParams(StepParams):
    action: Literal["drop", "flag"] = Field("drop", description="drop duplicates, or keep them flagged in signals "
                                                                 "(as assay run --analyze does)")
    part_rows: int = Field(200_000, ge=1, description="records per collect part file (bounds a worker's memory)")
    sort_rows: int = Field(20_000_000, ge=1,
                           description="hash entries sorted at once in reduce (bounds its memory, ~24 bytes each)")


def scratch_array(path: Path, dtype: Any, n: int) -> np.ndarray:
    """A writable length-``n`` array backed by ``path`` (in memory when empty: an empty file cannot be mapped)."""
    if n == 0:
        return np.zeros(0, dtype=dtype)
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n,))


class PartBuffer:
    """Accumulates one shard's per-record state and spills it to numbered part files of ``part_rows`` records."""

    def __init__(self, step: "ClusterDedupStep", ctx: StepContext) -> None:
        self.step, self.ctx = step, ctx
        self.state_dir = ctx.state_dir(step, step.index)
        self.part_records: list[int] = []
        self.keys: list[int] = []
        self.ids: list[str] = []

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, record: Record) -> int:
        """Register a record; returns its position within the current part."""
        self.keys.append(record_key(record))
        self.ids.append(record.id)
        return len(self.keys) - 1

    def flush(self, arrays: dict[str, np.ndarray]) -> None:
        keys = np.array(self.keys, dtype=np.uint64)
        state.write_part(self.state_dir, self.ctx.shard, len(self.part_records), {"keys": keys, **arrays}, self.ids)
        self.part_records.append(len(self.keys))
        self.keys, self.ids = [], []

    def finish(self) -> None:
        """Write the shard's manifest (last: it is what makes the parts visible to reduce)."""
        state.write_manifest(self.state_dir, self.ctx.shard, self.part_records, {"params": self.step.params_hash})


class ClusterDedupStep(GlobalStep):
    """Base of dedup steps that group records into clusters and keep one record per cluster."""

    drop_reason: ClassVar[str] = "duplicate"
    signal_prefix: ClassVar[str] = "dedup"

    def drop_or_flag(self, record: Record) -> None:
        """Reject a duplicate, or with ``action: flag`` keep it and say so in its signals (as a Filter does)."""
        if self.params.action == "flag":  # type: ignore[attr-defined]
            record.signals[f"{self.name}.flag"] = self.drop_reason
            self.count(f"flagged:{self.drop_reason}")
        else:
            self.reject(record, self.drop_reason)

    # -- reduce helpers ------------------------------------------------------------------------------------------
    def _open_reduce(self, ctx: StepContext) -> tuple[Path, list[state.Segment], Path, np.ndarray]:
        """What every reduce starts from: the step's state folder, every shard's segments (checked to come from
        these parameters), an empty scratch folder, and all records' keys in global order."""
        state_dir = ctx.state_dir(self, self.index)
        segments, manifests = state.read_segments(state_dir, ctx.num_shards, self.name)
        state.check_params(manifests, self.params_hash, self.name)
        scratch = state_dir / "_reduce"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        return state_dir, segments, scratch, self._load_keys(segments, scratch)

    def _load_keys(self, segments: list[state.Segment], scratch: Path) -> np.ndarray:
        """All records' keys in global order, in a memory-mapped scratch file."""
        total = sum(s.records for s in segments)
        keys = scratch_array(scratch / "keys.npy", np.uint64, total)
        for s in segments:
            keys[s.global_offset:s.global_offset + s.records] = s.load("keys")
        return keys

    def _write_decisions(self, ctx: StepContext, segments: list[state.Segment], roots_of: Any,
                         keys: np.ndarray, num_shards: int) -> dict[str, int]:
        """Turn the cluster assignment into per-shard decision files.

        ``roots_of(lo, hi)`` returns the representative's global index for records ``lo..hi-1`` (itself if kept).
        """
        state_dir = ctx.state_dir(self, self.index)
        drops_g: list[np.ndarray] = []
        drops_root: list[np.ndarray] = []
        for s in segments:
            g = np.arange(s.global_offset, s.global_offset + s.records, dtype=np.int64)
            r = roots_of(s.global_offset, s.global_offset + s.records)
            moved = r != g
            drops_g.append(g[moved])
            drops_root.append(r[moved])
        all_g = np.concatenate(drops_g) if drops_g else np.zeros(0, np.int64)
        all_root = np.concatenate(drops_root) if drops_root else np.zeros(0, np.int64)
        reps, rep_drops = np.unique(all_root, return_counts=True)

        # the kept record's id for every representative, read segment by segment
        starts = np.array([s.global_offset for s in segments], dtype=np.int64)
        rep_seg = np.searchsorted(starts, reps, side="right") - 1
        rep_id: dict[int, str] = {}
        for i in np.unique(rep_seg):
            s = segments[int(i)]
            members = reps[rep_seg == i]
            rep_id.update(zip(members.tolist(), s.ids((members - s.global_offset).tolist())))

        bounds = state.shard_bounds(segments, num_shards)
        drop_cut = np.searchsorted(all_g, bounds)  # all_g and reps are sorted
        rep_cut = np.searchsorted(reps, bounds)
        for sh in range(num_shards):
            d = slice(drop_cut[sh], drop_cut[sh + 1])
            k = slice(rep_cut[sh], rep_cut[sh + 1])
            state.write_decisions(
                state_dir, sh,
                drop_keys=np.asarray(keys[all_g[d]]),
                drop_kept_ids=[rep_id[r] for r in all_root[d].tolist()],
                kept_keys=np.asarray(keys[reps[k]]),
                kept_sizes=rep_drops[k] + 1)
        return {"records": bounds[-1], "dropped": int(all_g.size), "clusters": int(reps.size)}

    # -- apply ---------------------------------------------------------------------------------------------------
    def apply_state(self, shard: int) -> list[str]:
        """apply reads only its own shard's decisions (a job on another machine fetches that one file)."""
        return [state.decisions_path(Path("."), shard).name]

    def apply(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        decisions = state.Decisions(ctx.state_dir(self, self.index), ctx.shard, self.name)
        prefix = self.signal_prefix
        for batch in batches:
            for record in batch:
                if record.drop is not None:
                    continue
                key = record_key(record)
                kept = decisions.take_drop(key)
                if kept is not None:
                    record.signals[f"{prefix}.cluster"] = kept
                    self.drop_or_flag(record)
                    continue
                size = decisions.sizes.get(key)
                if size is not None:
                    record.signals[f"{prefix}.cluster_size"] = size
            yield batch
        unused = decisions.unused()
        if unused:
            # the shard's records differ from those seen by collect (the executor fed apply something else)
            self.count("unmatched_decisions", unused)
            ctx.errors.add("dedup_unmatched", f"shard {ctx.shard}", None,
                           f"{self.name}: {unused} drop decisions matched no record in apply")
