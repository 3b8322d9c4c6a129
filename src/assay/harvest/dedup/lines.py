"""``line_dedup``: remove lines that also occur in other documents (navigation, cookie notices, footers, copied
paragraphs), as CCNet's paragraph dedup and datatrove's sentence dedup do.

Lines are compared after normalisation (lower case, digits → 0, whitespace folded; see :func:`normalise_line`);
lines shorter than ``min_line_chars`` (after normalisation) are never removed. A line found in several documents is
kept in one of them (the document with the smallest key, as for the other dedup steps) and removed from the others;
with ``keep_one=False`` it is removed everywhere (boilerplate removal). Repeats inside one document are left alone.

collect writes per part the hashes of each document's distinct long lines, sorted; reduce sorts each range of the
hash space across all parts and lists, per shard, the (document, line) pairs to remove; apply rewrites those
documents (``signals["line_dedup.removed_lines"]``) and drops those left with fewer than ``min_remaining_chars``
characters (reason ``empty_after_dedup``). Non-text content passes through unchanged.
"""

from __future__ import annotations

import re
import shutil
from typing import Iterable, Iterator

import numpy as np
import xxhash
from pydantic import Field

from assay.core.errors import AssayError
from assay.core.record import Record
from assay.core.step import Batch, StepContext
from assay.harvest.dedup import state
from assay.harvest.dedup.base import ClusterDedupParams, ClusterDedupStep, PartBuffer
from assay.harvest.dedup.hashing import record_key

_DIGITS = re.compile(r"\d")


def normalise_line(line: str) -> str:
    return _DIGITS.sub("0", " ".join(line.lower().split()))


def line_hashes(text: str, min_chars: int) -> list[int | None]:
    """The hash of each line of ``text`` (split on ``\\n``), None for lines too short to be deduplicated."""
    out: list[int | None] = []
    for line in text.split("\n"):
        norm = normalise_line(line)
        out.append(xxhash.xxh3_64_intdigest(norm.encode("utf-8", "surrogatepass")) if len(norm) >= min_chars
                   else None)
    return out


class LineDedup(ClusterDedupStep):
    """Remove lines that also occur in other documents (one copy is kept unless keep_one is false)."""

    name = "line_dedup"
    version = "1"
    signal_prefix = "line_dedup"
    drop_reason = "empty_after_dedup"

    class Params(ClusterDedupParams):
        min_line_chars: int = Field(30, ge=1, description="lines shorter than this (normalised) are never removed")
        keep_one: bool = Field(True, description="keep one copy of a repeated line (in the smallest-key document); "
                                                 "false: remove it everywhere")
        min_remaining_chars: int = Field(1, ge=0, description="drop a document left with fewer characters "
                                                              "(stripped) than this")

    def collect(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        p = self.params
        buf = PartBuffer(self, ctx)
        hashes: list[int] = []
        positions: list[int] = []

        def flush() -> None:
            h = np.array(hashes, dtype=np.uint64)
            pos = np.array(positions, dtype=np.uint32)
            order = np.argsort(h, kind="stable")
            buf.flush({"line_hash": h[order], "line_pos": pos[order]})
            hashes.clear(), positions.clear()

        for batch in batches:
            for record in batch:
                if record.drop is not None:
                    continue
                pos = buf.add(record)
                if isinstance(record.content, str):
                    distinct = {h for h in line_hashes(record.content, p.min_line_chars) if h is not None}
                    hashes.extend(distinct)
                    positions.extend([pos] * len(distinct))
                else:
                    self.count("not_text")
                if len(buf) >= min(p.part_rows, 1 << 32):
                    flush()
            yield batch
        if len(buf):
            flush()
        buf.finish()

    def reduce(self, ctx: StepContext) -> None:
        p = self.params
        state_dir, segments, scratch, keys = self._open_reduce(ctx)
        entries = sum(s.load("line_hash").shape[0] for s in segments)
        n_ranges = max(1, -(-entries // p.sort_rows))
        bounds = state.hash_ranges(n_ranges)
        remove_g: list[np.ndarray] = []
        remove_h: list[np.ndarray] = []
        for r in range(n_ranges):
            hs, gs = [], []
            for s in segments:
                col = s.load("line_hash")
                a, b = state.slice_sorted(col, bounds[r], bounds[r + 1])
                if a < b:
                    hs.append(np.asarray(col[a:b]))
                    gs.append(np.asarray(s.load("line_pos")[a:b], dtype=np.int64) + s.global_offset)
            if not hs:
                continue
            h, g = np.concatenate(hs), np.concatenate(gs)
            k = np.asarray(keys[g])
            order = np.lexsort((g, k, h))
            h, g = h[order], g[order]
            first = np.ones(h.size, dtype=bool)
            first[1:] = h[1:] != h[:-1]
            last = np.ones(h.size, dtype=bool)
            last[:-1] = h[1:] != h[:-1]
            shared = ~(first & last)  # the line occurs in more than one document
            remove = shared & ~first if p.keep_one else shared
            remove_g.append(g[remove])
            remove_h.append(h[remove])
            self.count("repeated_lines", int(np.count_nonzero(shared & first)))
        all_g = np.concatenate(remove_g) if remove_g else np.zeros(0, np.int64)
        all_h = np.concatenate(remove_h) if remove_h else np.zeros(0, np.uint64)
        order = np.argsort(all_g, kind="stable")
        all_g, all_h = all_g[order], all_h[order]
        shard_bounds = state.shard_bounds(segments, ctx.num_shards)
        for sh in range(ctx.num_shards):
            lo, hi = np.searchsorted(all_g, shard_bounds[sh]), np.searchsorted(all_g, shard_bounds[sh + 1])
            state.save_arrays(state.decisions_path(state_dir, sh),
                              {"record_keys": np.asarray(keys[all_g[lo:hi]]), "line_hashes": all_h[lo:hi]})
        total = keys.shape[0]
        del keys
        shutil.rmtree(scratch, ignore_errors=True)
        self.count("line_removals", int(all_g.size))
        state.save_json(state_dir / "reduce.json", {"records": int(total), "line_removals": int(all_g.size),
                                                    "hash_ranges": n_ranges})

    def apply(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        p = self.params
        path = state.decisions_path(ctx.state_dir(self, self.index), ctx.shard)
        if not path.exists():
            raise AssayError(f"{self.name}: no decisions for shard {ctx.shard}; did reduce run?")
        removals: dict[int, set[int]] = {}
        with np.load(path, allow_pickle=False) as z:
            for key, h in zip(z["record_keys"].tolist(), z["line_hashes"].tolist()):
                removals.setdefault(key, set()).add(h)
        for batch in batches:
            for record in batch:
                if record.drop is not None or not isinstance(record.content, str):
                    continue
                remove = removals.pop(record_key(record), None)
                if remove:
                    self._rewrite(record, remove)
            yield batch
        if removals:
            self.count("unmatched_decisions", len(removals))
            ctx.errors.add("dedup_unmatched", f"shard {ctx.shard}", None,
                           f"{self.name}: {len(removals)} documents with line removals matched no record")

    def _rewrite(self, record: Record, remove: set[int]) -> None:
        p = self.params
        lines = record.content.split("\n")
        hashes = line_hashes(record.content, p.min_line_chars)
        kept = [line for line, h in zip(lines, hashes) if h is None or h not in remove]
        removed = len(lines) - len(kept)
        record.content = "\n".join(kept)
        record.signals["line_dedup.removed_lines"] = removed
        self.count("lines_removed", removed)
        if len(record.content.strip()) < p.min_remaining_chars:
            self.drop_or_flag(record)

