"""What the operator tests share: real texts (Debian's manuals, via tests/peers/filters_corpus.py) and running a
global step over several shards the way the executor does (collect per shard, reduce once, apply per shard)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from assay.core.record import Record
from assay.core.step import GlobalStep, StepContext

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import doc_pages  # noqa: E402
import filters_corpus  # noqa: E402


@functools.lru_cache(maxsize=None)
def _real(every: int) -> tuple[tuple[str, str], ...]:
    doc_pages.require_debian_docs()
    return tuple((d["id"], d["text"]) for d in filters_corpus.real_texts(every=every))


def real_texts(every: int = 16) -> list[dict]:
    """Texts of every ``every``-th page of the Python and PostgreSQL manuals (fails when they are not installed)."""
    return [{"id": i, "text": t} for i, t in _real(every)]


def run_global(step: GlobalStep, shards: list[list[Record]], run_dir: Path) -> list[Record]:
    """Collect every shard, reduce, apply every shard; the records of all shards in order (dropped ones included)."""
    n = len(shards)
    for k, recs in enumerate(shards):
        ctx = StepContext(run_dir=run_dir, shard=k, num_shards=n)
        for _ in step.collect(iter([recs]), ctx):
            pass
    step.reduce(StepContext(run_dir=run_dir, shard=0, num_shards=n))
    out: list[Record] = []
    for k, recs in enumerate(shards):
        ctx = StepContext(run_dir=run_dir, shard=k, num_shards=n)
        for batch in step.apply(iter([recs]), ctx):
            out.extend(batch)
    return out
