"""Deterministic stand-ins for a synthesis model and a verifier, used to test the evolve loop's mechanics (rounds,
routing, labels, mixing, resuming) in seconds. They are ordinary user steps; the real-model loop is tested too."""

from __future__ import annotations

from typing import ClassVar

import xxhash

from assay.core.record import Record, derive_id
from assay.core.step import Batch, Step, StepContext, StepParams


class ToyRephraseParams(StepParams):
    suffix: str = "in other words"


class ToyRephrase(Step):
    """Make one new instruction record per input by rotating its words (a fake 'model')."""

    name = "toy_rephrase"
    Params: ClassVar = ToyRephraseParams

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        out = []
        for r in batch:
            c = r.content if isinstance(r.content, dict) else {"instruction": str(r.content)}
            words = str(c.get("instruction") or c.get("text") or "").split()
            k = 1 + xxhash.xxh3_64_intdigest(r.id.encode()) % max(1, len(words))
            text = " ".join(words[k:] + words[:k] + [self.params.suffix])
            out.append(Record(derive_id(r.id, self.name), {"instruction": text, "output": f"Answer: {text[::-1]}"},
                              "conversation", meta={"parents": [r.id], "synth": {"technique": self.name}}))
        return out


class ToyVerify(Step):
    """Write a fake judge score and classifier probability from the record id; drop about one record in eight."""

    name = "toy_verify"

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        for r in batch:
            h = xxhash.xxh3_64_intdigest(r.id.encode())
            r.signals["judge.score"] = 1 + h % 10
            r.signals["judge.disagreement"] = (h >> 8) % 100 / 100
            r.signals["quality.prob"] = (h >> 16) % 100 / 100
            if (h >> 24) % 8 == 0:
                self.reject(r, "toy_low")
        return batch
