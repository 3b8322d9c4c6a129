"""Steps: the unit of work in a recipe.

A step is one small class. It receives an iterator over batches (lists) of records and yields batches: the base
class turns that into one method, :meth:`Step.process_batch`, for the common case. A step drops a record by setting
``record.drop = (step_name, reason)``; the pipeline moves such records to ``rejected/`` (nothing silently vanishes).

Three kinds:

* :class:`Step`: transforms (extraction, PII redaction, synthesis, ...).
* :class:`Filter`: *scoring is separate from selection*: :meth:`Filter.score` writes numbers into ``record.signals``;
  :meth:`Filter.decide` turns them into a drop reason or ``None``. With ``action: flag`` the decision is written to
  ``signals`` and the record is kept.
* :class:`GlobalStep`: needs to see every shard before deciding (deduplication). The executor runs it in three
  phases: :meth:`GlobalStep.collect` per shard (write per-shard state), :meth:`GlobalStep.reduce` once (global
  decision), :meth:`GlobalStep.apply` per shard (act on it).

Every subclass with a ``name`` registers itself, so recipes can name it. Parameters are a pydantic model (``Params``)
so recipes are validated with errors that name the bad key. Heavy dependencies (models, torch) are imported in
:meth:`Step.setup`, never at module import, so ``assay steps`` stays fast and works without the extras.
"""

from __future__ import annotations

import difflib
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Literal

import orjson
import xxhash
from pydantic import BaseModel, ConfigDict

from assay.core.errors import AssayError, ErrorLog
from assay.core.record import LineageEntry, Record

Batch = list[Record]


class StepParams(BaseModel):
    """Base class of every step's parameters. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class StepContext:
    """What a step knows about the work it is part of (one shard of one run)."""

    run_dir: Path | None = None  # the run's output folder (None when used as a library)
    shard: int = 0
    num_shards: int = 1
    worker: int = 0
    errors: ErrorLog = field(default_factory=ErrorLog)
    # where global steps keep their state on this machine (default: run_dir/.assay/state); the executor points it at the
    # run's shared state folder, or at a local copy it syncs with one on object storage (assay.run.step_state)
    state_root: Path | None = None
    # the run folder's URL when it is not on this machine's disk (s3://…); run_dir is then a local cache folder
    run_url: str | None = None

    def files_beside_run(self, step: "Step", what: str, option: str) -> Path:
        """``run_dir`` for a step that writes files of its own beside the run's records (video clips, an exported
        dataset). Those writes go to this machine's disk, so a run whose folder is on object storage would leave
        them behind on whichever machine ran the job: that is refused, naming the option that sets a folder."""
        if self.run_url is not None:
            raise AssayError(f"{step.name} writes {what} beside the run, and the run's folder {self.run_url} is not "
                             f"on this machine's disk: set `{option}` to a folder every worker can write (an absolute "
                             f"path on shared storage), or write the run to a local folder")
        return self.run_dir if self.run_dir is not None else Path(".assay-state")

    def state_dir(self, step: "Step", index: int) -> Path:
        """A folder shared by all shards of this run for ``step`` (global steps keep per-shard state here)."""
        if self.state_root is not None:
            base = self.state_root
        else:
            base = (self.run_dir if self.run_dir is not None else Path(".assay-state")) / ".assay" / "state"
        d = base / f"{index:02d}-{step.name}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def scratch_dir(self, step: "Step") -> Path:
        """A private folder for this shard's temporary files."""
        base = self.run_dir if self.run_dir is not None else Path(".assay-state")
        d = base / ".assay" / "scratch" / f"{self.shard:05d}-{step.name}"  # the run folder's bookkeeping
        d.mkdir(parents=True, exist_ok=True)
        return d


@dataclass
class StepStats:
    records_in: int = 0
    records_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    drops: Counter = field(default_factory=Counter)
    counters: Counter = field(default_factory=Counter)

    def merge(self, other: "StepStats") -> None:
        self.records_in += other.records_in
        self.records_out += other.records_out
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.seconds += other.seconds
        self.drops.update(other.drops)
        self.counters.update(other.counters)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records_in": self.records_in,
            "records_out": self.records_out,
            "dropped": sum(self.drops.values()),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "seconds": round(self.seconds, 4),
            "drops": dict(self.drops.most_common()),
            "counters": dict(sorted(self.counters.items())),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StepStats":
        return cls(d["records_in"], d["records_out"], d["bytes_in"], d["bytes_out"], d["seconds"],
                   Counter(d.get("drops", {})), Counter(d.get("counters", {})))


class Step:
    """Base class of all steps. Subclasses set ``name`` (registry key), ``version`` and ``Params``."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Params: ClassVar[type[StepParams]] = StepParams
    #: one-line description shown by ``assay steps`` (defaults to the first docstring line)
    summary: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            REGISTRY.add(cls)

    def __init__(self, params: StepParams | dict[str, Any] | None = None, **kwargs: Any) -> None:
        if isinstance(params, StepParams):
            self.params = params
        else:
            self.params = self.Params(**{**(params or {}), **kwargs})
        self.stats = StepStats()
        self.index = 0  # position in the pipeline; set by the pipeline

    # -- identity ----------------------------------------------------------------------------------------------
    @cached_property
    def params_hash(self) -> str:
        blob = orjson.dumps(self.params.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return xxhash.xxh3_64_hexdigest(blob)[:12]

    @cached_property
    def lineage_entry(self) -> LineageEntry:
        return LineageEntry(self.name, self.version, self.params_hash)

    def notes(self) -> list[str]:
        """One-line notices the user must see about how this step will run (e.g. a stand-in model chosen by
        ``auto``): printed at the start of ``assay run`` and kept in ``stats.json`` and the data card. Cheap: called
        in the driver before any :meth:`setup`."""
        return []

    # -- work --------------------------------------------------------------------------------------------------
    def setup(self, ctx: StepContext) -> None:
        """Load models and other heavy state. Called once per worker process before its first shard."""

    def process(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        """Transform a stream of batches. The default calls :meth:`process_batch` on each batch."""
        for batch in batches:
            yield self.process_batch(batch, ctx)

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        raise NotImplementedError(f"step {self.name!r} implements neither process() nor process_batch()")

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to a named counter reported in this step's stats (e.g. PII replacements by type)."""
        self.stats.counters[key] += n

    def reject(self, record: Record, reason: str) -> None:
        """Mark ``record`` as dropped by this step with ``reason``."""
        record.drop = (self.name, reason)

    @classmethod
    def describe(cls) -> str:
        if isinstance(cls.summary, str) and cls.summary:  # a step may have a method of that name (a user's plugin)
            return cls.summary
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


@dataclass(frozen=True)
class Threshold:
    """One rule of a filter, as data: the record is dropped (with ``reason``) when ``signal op value`` holds.

    ``op`` is ``<`` or ``>`` (numbers), ``not in`` (``value`` is the set of kept values) or ``set`` (dropped whenever
    the signal is present; its value is the reason). The data card draws these on the signal's histogram."""

    signal: str
    op: Literal["<", ">", "not in", "set"]
    value: Any = None
    reason: str = ""

    def drops(self, v: Any) -> bool:
        """Whether a record whose signal is ``v`` is dropped by this rule (``None``: the signal is absent)."""
        if self.op == "set":
            return v is not None
        if v is None:
            return False
        if self.op == "not in":
            return v not in self.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        return v < self.value if self.op == "<" else v > self.value

    def describe(self) -> str:
        if self.op == "set":
            return f"dropped when {self.signal} is set"
        if self.op == "not in":
            return f"kept: {self.signal} in {', '.join(map(str, self.value))}"
        return f"dropped when {self.signal} {self.op} {self.value:g}"


class FilterParams(StepParams):
    #: ``drop`` moves failing records to rejected/; ``flag`` keeps them and writes the reason to signals
    action: Literal["drop", "flag"] = "drop"


class Filter(Step):
    """A step that scores records and keeps or drops each one. Implement :meth:`score` and :meth:`decide`."""

    Params: ClassVar[type[StepParams]] = FilterParams
    #: the signals :meth:`score` writes: exact names, or prefixes ending in "." (the data card plots them)
    signals: ClassVar[tuple[str, ...]] = ()

    def thresholds(self) -> list[Threshold] | None:
        """The rules of :meth:`decide` as data, under this step's parameters, for the data card to draw on the
        signals' histograms; ``None``: this filter declares none."""
        return None

    def owns_signal(self, key: str) -> bool:
        return any(key == s or (s.endswith(".") and key.startswith(s)) for s in self.signals)

    def score(self, record: Record) -> None:
        """Compute this filter's signals and store them in ``record.signals``."""

    def score_batch(self, batch: Batch) -> None:
        """Score a whole batch; override for batched models. The default calls :meth:`score` per record."""
        for r in batch:
            self.score(r)

    def decide(self, record: Record) -> str | None:
        """Return the reason to drop ``record`` (from its signals), or ``None`` to keep it."""
        raise NotImplementedError

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        self.score_batch(batch)
        flag = getattr(self.params, "action", "drop") == "flag"
        for r in batch:
            reason = self.decide(r)
            if reason is not None:
                if flag:
                    r.signals[f"{self.name}.flag"] = reason
                    self.count(f"flagged:{reason}")
                else:
                    r.drop = (self.name, reason)
        return batch


class GlobalStep(Step):
    """A step that must see all shards before deciding (e.g. deduplication).

    The executor runs every step before a global step, then :meth:`collect` on each shard (which passes records
    through and writes per-shard state under ``ctx.state_dir(self, self.index)``), then :meth:`reduce` once, then
    :meth:`apply` on each shard, followed by the rest of the pipeline. Each phase must be deterministic so that a
    resumed run gives the same output.
    """

    def collect(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        yield from batches

    def reduce(self, ctx: StepContext) -> None:
        """Combine every shard's state into a global decision, written to the state dir."""

    def apply(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        yield from batches

    def apply_state(self, shard: int) -> list[str] | None:
        """Names (globs) of the state files :meth:`apply` reads for ``shard``, when the state is on object storage
        and each job fetches what it needs; ``None``: every file :meth:`reduce` wrote."""
        return None

    def process(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        """In-process use (a single shard, e.g. from a notebook): collect, reduce, apply."""
        held = [list(b) for b in self.collect(batches, ctx)]
        self.reduce(ctx)
        yield from self.apply(iter(held), ctx)


class StepRegistry:
    """Name → step class. Built-in step modules are imported on first lookup."""

    #: modules whose import registers the built-in steps (heavy dependencies are imported lazily inside them)
    BUILTIN_MODULES: ClassVar[tuple[str, ...]] = (
        "assay.core.basic_steps",
        "assay.harvest.extract",
        "assay.harvest.langid",
        "assay.harvest.normalize",
        "assay.harvest.filters",
        "assay.harvest.select",
        "assay.harvest.dedup",
        "assay.harvest.pii",
        "assay.harvest.decontam",
        "assay.harvest.quality",
        "assay.harvest.code",
        "assay.harvest.image",
        "assay.harvest.video",
        "assay.harvest.trajectory",
        "assay.synthesize.steps",
        "assay.synthesize.recaption",
        "assay.evolve.steps",
        "assay.evolve.visual",
    )

    def __init__(self) -> None:
        self._steps: dict[str, type[Step]] = {}
        self._loaded = False
        self.unavailable: dict[str, str] = {}

    def add(self, cls: type[Step]) -> None:
        prev = self._steps.get(cls.name)
        if prev is not None and prev.__qualname__ != cls.__qualname__:
            raise ValueError(f"step name {cls.name!r} is used by both {prev.__module__}.{prev.__qualname__} "
                             f"and {cls.__module__}.{cls.__qualname__}")
        self._steps[cls.name] = cls

    def load_builtins(self) -> None:
        if self._loaded:
            return
        import importlib
        from importlib.metadata import entry_points

        self._loaded = True
        for mod in self.BUILTIN_MODULES:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:
                if e.name is not None and mod.startswith(e.name):
                    continue  # that part of Assay is not in this build
                self.unavailable[mod] = str(e)
            except Exception as e:  # a broken module must not hide the others; `assay steps` reports it
                self.unavailable[mod] = f"{type(e).__name__}: {e}"
        # a user's own step modules, without packaging: ASSAY_STEP_MODULES=my_steps,other.module
        for mod in filter(None, os.environ.get("ASSAY_STEP_MODULES", "").split(",")):
            try:
                importlib.import_module(mod.strip())
            except Exception as e:
                self.unavailable[mod] = f"{type(e).__name__}: {e}"
        for ep in entry_points(group="assay.steps"):
            try:
                ep.load()
            except Exception as e:  # a broken plugin must not break the built-ins; report it in `assay steps`
                self.unavailable[ep.value] = f"{type(e).__name__}: {e}"

    def get(self, name: str) -> type[Step]:
        self.load_builtins()
        try:
            return self._steps[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._steps, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            if self.unavailable:
                hint += f" (modules that failed to load: {'; '.join(f'{m}: {w}' for m, w in self.unavailable.items())})"
            raise KeyError(f"unknown step {name!r}{hint} (`assay steps` lists them)") from None

    def names(self) -> list[str]:
        self.load_builtins()
        return sorted(self._steps)

    def __contains__(self, name: str) -> bool:
        self.load_builtins()
        return name in self._steps


REGISTRY = StepRegistry()
