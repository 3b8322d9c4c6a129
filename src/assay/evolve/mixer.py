"""Mixing human and synthetic data so that the human data is never washed out.

Two rules from the model-collapse literature:

* **A floor of real data.** Every training mix keeps at least ``min_human_fraction`` of human-made records; when
  there is too much synthetic data, synthetic records are subsampled, never human ones.
* **Accumulate, don't replace.** Each generation's synthetic data is *added* to the earlier generations' instead of
  replacing it; with accumulation the test error stays bounded across generations, with replacement it grows
  (Gerstgrasser et al., 2024, "Is model collapse inevitable?").

Which records are human: ``meta["origin"] == "human"``; records without an ``origin`` count as human unless they
carry synthesis provenance (``meta["synth"]``, set by every synthesis step, or ``meta["parents"]``).

Subsampling is deterministic: records are ranked by a hash of (seed, id) and the lowest ranks are kept, so the
same inputs always give the same mix, in one process or across the shards of a run (:class:`HumanFloor`).
"""

from __future__ import annotations

import math
import os
from typing import Any, ClassVar, Iterable, Iterator, Literal, Sequence

import numpy as np
import xxhash
from pydantic import Field

from assay.core.record import Record
from assay.core.step import Batch, GlobalStep, StepContext, StepParams


def is_human(record: Record) -> bool:
    """True for human-made records (see the module docstring)."""
    origin = record.meta.get("origin")
    if origin is not None:
        return origin == "human"
    return "synth" not in record.meta and not record.meta.get("parents")


def rank_key(record_id: str, seed: int = 0) -> int:
    """The deterministic sampling rank of a record (lower ranks are kept first)."""
    return xxhash.xxh3_64_intdigest(f"{seed}\x00{record_id}".encode())


def synthetic_allowance(n_human: int, n_synthetic: int, min_human_fraction: float) -> int:
    """How many synthetic records may join ``n_human`` human ones with at least ``min_human_fraction`` human."""
    if min_human_fraction <= 0:
        return n_synthetic
    if min_human_fraction >= 1:
        return 0
    return min(n_synthetic, math.floor(n_human * (1 - min_human_fraction) / min_human_fraction + 1e-9))


def mix(human: Sequence[Record], generations: Sequence[Sequence[Record]], min_human_fraction: float = 0.5,
        mode: Literal["accumulate", "replace"] = "accumulate", max_synthetic: int | None = None,
        seed: int = 0) -> list[Record]:
    """The training mix: all ``human`` records plus synthetic records from ``generations`` (oldest first).

    ``accumulate`` pools every generation, ``replace`` uses the last one only. Synthetic records are deduplicated
    by id, then subsampled (by :func:`rank_key`) to respect ``min_human_fraction`` and ``max_synthetic``. Each
    synthetic record gets ``meta["generation"]`` (its generation's index) if it has none.
    """
    if not 0.0 <= min_human_fraction <= 1.0:
        raise ValueError("min_human_fraction must be in [0, 1]")
    pools = list(generations) if mode == "accumulate" else list(generations[-1:])
    offset = len(generations) - len(pools)
    synthetic: dict[str, Record] = {}
    for g, records in enumerate(pools, start=offset):
        for r in records:
            if r.id not in synthetic:
                r.meta.setdefault("generation", g)
                synthetic[r.id] = r
    allowance = synthetic_allowance(len(human), len(synthetic), min_human_fraction)
    if max_synthetic is not None:
        allowance = min(allowance, max_synthetic)
    chosen = sorted(synthetic.values(), key=lambda r: rank_key(r.id, seed))[:allowance]
    chosen.sort(key=lambda r: (r.meta.get("generation", 0), r.id))
    return list(human) + chosen


def mix_stats(records: Sequence[Record]) -> dict[str, Any]:
    """Counts of a mix: human, synthetic, human fraction, synthetic per generation."""
    human = sum(is_human(r) for r in records)
    per_gen: dict[str, int] = {}
    for r in records:
        if not is_human(r):
            g = str(r.meta.get("generation", "?"))
            per_gen[g] = per_gen.get(g, 0) + 1
    total = len(records)
    return {"records": total, "human": human, "synthetic": total - human,
            "human_fraction": round(human / total, 6) if total else 0.0, "synthetic_by_generation": per_gen}


# -- the pipeline step --------------------------------------------------------------------------------------------
class HumanFloorParams(StepParams):
    #: at least this share of the output is human-made; synthetic records beyond it are dropped ("human_floor")
    min_human_fraction: float = Field(0.5, ge=0.0, le=1.0)
    seed: int = 0


class HumanFloor(GlobalStep):
    """Keep at least ``min_human_fraction`` human records: drop the excess synthetic ones, the same across shards."""

    name = "human_floor"
    version = "1"
    Params: ClassVar[type[StepParams]] = HumanFloorParams

    @property
    def p(self) -> HumanFloorParams:
        assert isinstance(self.params, HumanFloorParams)
        return self.params

    def collect(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        human = 0
        ranks: list[int] = []
        for batch in batches:
            for r in batch:
                if is_human(r):
                    human += 1
                else:
                    ranks.append(rank_key(r.id, self.p.seed))
            yield batch
        state = ctx.state_dir(self, self.index)
        path = state / f"shard-{ctx.shard:05d}.npz"
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, human=np.array([human], dtype=np.int64), ranks=np.array(sorted(ranks), dtype=np.uint64))
        os.replace(tmp, path)

    def reduce(self, ctx: StepContext) -> None:
        state = ctx.state_dir(self, self.index)
        human = 0
        ranks = []
        for f in sorted(state.glob("shard-*.npz")):
            with np.load(f) as z:
                human += int(z["human"][0])
                ranks.append(z["ranks"])
        all_ranks = np.sort(np.concatenate(ranks)) if ranks else np.zeros(0, dtype=np.uint64)
        allowance = synthetic_allowance(human, len(all_ranks), self.p.min_human_fraction)
        # keep ranks <= threshold: exactly `allowance` records (64-bit ranks practically never tie)
        threshold = int(all_ranks[allowance - 1]) if allowance > 0 else -1
        tmp = state / "decision.tmp"
        tmp.write_text(f"{threshold}\n{human}\n{len(all_ranks)}\n{allowance}\n")
        os.replace(tmp, state / "decision.txt")

    def apply(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        lines = (ctx.state_dir(self, self.index) / "decision.txt").read_text().split()
        threshold = int(lines[0])
        for batch in batches:
            for r in batch:
                if is_human(r):
                    self.count("human")
                elif rank_key(r.id, self.p.seed) <= threshold:
                    self.count("synthetic_kept")
                else:
                    self.reject(r, "human_floor")
            yield batch
