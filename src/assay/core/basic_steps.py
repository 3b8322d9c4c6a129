"""General-purpose steps that work on any modality."""

from __future__ import annotations

from typing import ClassVar

import xxhash
from pydantic import Field

from assay.core.record import Record
from assay.core.step import Batch, Filter, FilterParams, Step, StepContext, StepParams, Threshold


class LengthParams(FilterParams):
    min_chars: int = Field(default=0, ge=0)
    max_chars: int | None = Field(default=None, gt=0)
    min_words: int = Field(default=0, ge=0)


class LengthFilter(Filter):
    """Keep records whose text length (characters, words) is within bounds."""

    name = "length_filter"
    Params: ClassVar = LengthParams
    signals = ("length.",)

    def thresholds(self) -> list[Threshold]:
        p = self.params
        rules = [Threshold("length.chars", "<", p.min_chars, "too_short")]
        if p.max_chars is not None:
            rules.append(Threshold("length.chars", ">", p.max_chars, "too_long"))
        if p.min_words:
            rules.append(Threshold("length.words", "<", p.min_words, "too_few_words"))
        return rules

    def score(self, record: Record) -> None:
        text = record.text
        record.signals["length.chars"] = len(text)
        if self.params.min_words:
            record.signals["length.words"] = len(text.split())

    def decide(self, record: Record) -> str | None:
        p = self.params
        n = record.signals["length.chars"]
        if n < p.min_chars:
            return "too_short"
        if p.max_chars is not None and n > p.max_chars:
            return "too_long"
        if p.min_words and record.signals["length.words"] < p.min_words:
            return "too_few_words"
        return None


class SampleParams(StepParams):
    fraction: float = Field(gt=0, le=1)
    seed: int = 0


class Sample(Step):
    """Keep a deterministic pseudo-random fraction of records (by id hash: the same records on every rerun)."""

    name = "sample"
    Params: ClassVar = SampleParams

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        limit = int(self.params.fraction * 2**64)
        seed = self.params.seed
        for r in batch:
            if xxhash.xxh3_64_intdigest(r.id.encode(), seed=seed) >= limit:
                self.reject(r, "sampled_out")
        return batch
