"""Steps used only by the tests (loaded through ASSAY_STEP_MODULES, as a user's own steps would be)."""

from __future__ import annotations

import os
import time
from typing import ClassVar, Iterable, Iterator

import orjson

from assay.core.step import Batch, GlobalStep, Step, StepContext, StepParams


class SlowParams(StepParams):
    seconds_per_batch: float = 0.05


class TestSlow(Step):
    """Sleeps on every batch (to have time to kill a run mid-way)."""

    name = "test_slow"
    Params: ClassVar = SlowParams

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        time.sleep(self.params.seconds_per_batch)
        for r in batch:
            r.signals["test.shard"] = ctx.shard
        return batch


class TestExactDedup(GlobalStep):
    """Exact dedup by content hash across shards; keeps the smallest id (a reference global step for tests)."""

    name = "test_exact_dedup"

    def collect(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        pairs = []
        for b in batches:
            pairs.extend((r.hash, r.id) for r in b)
            yield b
        d = ctx.state_dir(self, self.index)
        tmp = d / f".tmp-{ctx.shard:05d}"
        tmp.write_bytes(orjson.dumps(pairs))
        os.replace(tmp, d / f"shard-{ctx.shard:05d}.json")

    def reduce(self, ctx: StepContext) -> None:
        d = ctx.state_dir(self, self.index)
        best: dict[str, str] = {}
        for f in sorted(d.glob("shard-*.json")):
            for h, rid in orjson.loads(f.read_bytes()):
                if h not in best or rid < best[h]:
                    best[h] = rid
        tmp = d / ".tmp-keep"
        tmp.write_bytes(orjson.dumps(sorted(best.values())))
        os.replace(tmp, d / "keep.json")

    def apply(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        keep = set(orjson.loads((ctx.state_dir(self, self.index) / "keep.json").read_bytes()))
        for b in batches:
            for r in b:
                if r.id not in keep:
                    self.reject(r, "duplicate")
            yield b
