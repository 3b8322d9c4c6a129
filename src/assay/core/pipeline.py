"""A pipeline chains steps over a stream of record batches and keeps the books.

For every step it counts records and bytes in and out, the time spent in the step itself (upstream time excluded),
and drops by reason; it appends the step's lineage entry to every record the step emits, and hands dropped records to
a ``reject`` callback (the executor writes them to ``rejected/``). Nothing is silently lost.
"""

from __future__ import annotations

from time import perf_counter
from typing import Callable, Iterable, Iterator

from assay.core.record import Record
from assay.core.step import Batch, GlobalStep, Step, StepContext, StepStats

RejectSink = Callable[[Batch], None]


def batched(records: Iterable[Record], size: int) -> Iterator[Batch]:
    batch: Batch = []
    for r in records:
        batch.append(r)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Accounted:
    """Wraps one step's generator: counts its input and output, times it, partitions kept from dropped."""

    def __init__(self, step: Step, stage: Callable[[Iterable[Batch], StepContext], Iterator[Batch]],
                 upstream: Iterable[Batch], ctx: StepContext, reject: RejectSink) -> None:
        self.step, self.stage, self.upstream, self.ctx, self.reject = step, stage, upstream, ctx, reject
        self.upstream_seconds = 0.0
        # a global step runs in two phases (collect, then apply in the next segment): the records it keeps get its
        # lineage entry once, in the apply phase; records it drops while collecting get it then
        self.final_phase = not (isinstance(step, GlobalStep) and getattr(stage, "__name__", "") == "collect")

    def _input(self) -> Iterator[Batch]:
        stats = self.step.stats
        it = iter(self.upstream)
        while True:
            t = perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                self.upstream_seconds += perf_counter() - t
                return
            self.upstream_seconds += perf_counter() - t
            stats.records_in += len(batch)
            stats.bytes_in += sum(r.nbytes() for r in batch)
            yield batch

    def __iter__(self) -> Iterator[Batch]:
        step, stats = self.step, self.step.stats
        entry = step.lineage_entry
        gen = self.stage(self._input(), self.ctx)
        while True:
            t0, u0 = perf_counter(), self.upstream_seconds
            try:
                out = next(gen)
            except StopIteration:
                stats.seconds += perf_counter() - t0 - (self.upstream_seconds - u0)
                return
            stats.seconds += perf_counter() - t0 - (self.upstream_seconds - u0)
            if not out:
                continue
            kept: Batch = []
            dropped: Batch = []
            for r in out:
                if r.drop is None:
                    if self.final_phase:
                        r.lineage.append(entry)
                    kept.append(r)
                else:
                    r.lineage.append(entry)
                    dropped.append(r)
                    stats.drops[r.drop[1]] += 1
            if dropped:
                self.reject(dropped)
            if kept:
                stats.records_out += len(kept)
                stats.bytes_out += sum(r.nbytes() for r in kept)
                yield kept


class Pipeline:
    """An ordered list of steps. ``run`` streams batches through them."""

    def __init__(self, steps: list[Step], reindex: bool = True) -> None:
        self.steps = steps
        if reindex:  # a sub-pipeline of a larger one (an executor segment) keeps the steps' recipe positions
            for i, s in enumerate(steps):
                s.index = i
        self._set_up = False

    def setup(self, ctx: StepContext) -> None:
        if not self._set_up:
            for s in self.steps:
                s.setup(ctx)
            self._set_up = True

    def reset_stats(self) -> None:
        for s in self.steps:
            s.stats = StepStats()

    def run(self, batches: Iterable[Batch], ctx: StepContext, reject: RejectSink | None = None,
            stages: list[Callable[[Iterable[Batch], StepContext], Iterator[Batch]]] | None = None) -> Iterator[Batch]:
        """Stream ``batches`` through every step. ``stages`` overrides which method of each step runs (the
        executor uses it to run a global step's ``collect`` or ``apply`` phase)."""
        self.setup(ctx)
        sink = reject or (lambda b: None)
        stream: Iterable[Batch] = batches
        for i, step in enumerate(self.steps):
            stage = stages[i] if stages is not None else step.process
            stream = _Accounted(step, stage, stream, ctx, sink)
        return iter(stream)

    def run_records(self, records: Iterable[Record], ctx: StepContext | None = None, batch_size: int = 256,
                    reject: RejectSink | None = None) -> Iterator[Record]:
        """Convenience for library use: records in, kept records out."""
        for batch in self.run(batched(records, batch_size), ctx or StepContext(), reject):
            yield from batch

    def stats(self) -> dict[str, StepStats]:
        return {f"{s.index:02d}-{s.name}": s.stats for s in self.steps}
