"""What a tuning run changes (``assay run --limit N / --sample FRACTION / --analyze``): which input records it reads,
and whether its filters drop or only flag.

* ``limit``: the first N input records, in shard order (the driver reads the shards in order until it has N, so the
  same records whatever the worker count; shards past the N-th record are not run).
* ``sample``: a hash of (seed, record id) decides, so the same records on every rerun and with any worker count.
* ``analyze``: every step with an ``action`` parameter (filters, the cluster dedup steps) runs with ``action: flag``:
  nothing is dropped, each decision is written to ``signals["<step>.flag"]`` and the data card shows what each step
  would drop.

The selection is part of each shard (:class:`assay.io.sources.Shard`), hence of the run's manifest: a run folder
holding a limited run is not resumed as a full one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from assay.core.errors import AssayError, ErrorLog
from assay.core.recipe import Recipe
from assay.io.sources import Shard, read_shard


@dataclass(frozen=True)
class Tuning:
    limit: int | None = None
    sample: float | None = None
    seed: int = 0
    analyze: bool = False

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise AssayError(f"--limit must be at least 1 (got {self.limit})")
        if self.sample is not None and not 0 < self.sample <= 1:
            raise AssayError(f"--sample must be a fraction in (0, 1] (got {self.sample})")

    def __bool__(self) -> bool:
        return self.limit is not None or self.sample is not None or self.analyze

    def recipe(self, recipe: Recipe) -> Recipe:
        """The recipe as this run runs it: with ``analyze``, ``action: flag`` for every step that has the option."""
        if not self.analyze:
            return recipe
        from assay.core.step import REGISTRY

        d = recipe.model_dump(mode="json")
        for step in d["steps"]:
            if "action" in REGISTRY.get(step["name"]).Params.model_fields:
                step["params"] = {**step.get("params", {}), "action": "flag"}
        return Recipe.model_validate(d)

    def select(self, shards: list[Shard], recipe: Recipe) -> list[Shard]:
        """The shards with this run's selection; with ``limit``, cut after the shard that holds the N-th record."""
        if self.sample is not None:
            shards = [replace(s, sample=self.sample, sample_seed=self.seed) for s in shards]
        if self.limit is None:
            return shards
        inp = recipe.input
        left = self.limit
        chosen: list[Shard] = []
        for shard in shards:
            n = 0
            for _ in read_shard(replace(shard, limit=left), ErrorLog(), text_key=inp.text_key, id_key=inp.id_key,
                                modality=inp.modality, warc_types=tuple(inp.warc_types)):
                n += 1
            chosen.append(replace(shard, limit=left))
            left -= n
            if left <= 0:
                break
        return chosen

    def to_dict(self) -> dict[str, Any]:
        """What ``stats.json`` keeps under ``tuning``."""
        return {"limit": self.limit, "sample": self.sample, "seed": self.seed, "analyze": self.analyze}


def describe(tuning: dict[str, Any] | None) -> str:
    """One line for a run's ``stats.json["tuning"]``: what part of the input it read and whether it only flagged."""
    if not tuning:
        return ""
    parts = []
    if tuning.get("sample") is not None:
        parts.append(f"a {100 * tuning['sample']:g}% sample of the input records (hash of id, seed {tuning['seed']})")
    if tuning.get("limit") is not None:
        parts.append(f"the first {tuning['limit']:,} input records" + (" of that sample" if parts else ""))
    what = "; ".join(parts) if parts else "all input records"
    if tuning.get("analyze"):
        return (f"Analysis run over {what}: filters and dedup only flagged (action: flag), nothing was dropped by "
                f"them; the card shows what each would drop.")
    return f"Tuning run over {what}."
