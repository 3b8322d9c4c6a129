"""One unit of executor work: run one segment of a recipe's pipeline on one shard, exactly once.

A recipe is cut into *segments* at its global steps (dedup): segment 0 runs the steps before the first global step
and that step's ``collect`` phase; segment k runs global step k-1's ``apply`` phase, the steps up to the next global
step and its ``collect``; the last segment writes the final output. Between segments records are kept in
``.assay/stages/`` of the run folder (:mod:`assay.run.layout`).

A job first deletes whatever an earlier, killed attempt left for its (segment, shard), writes its files under
temporary names, renames them into place, and only then writes its marker ``.assay/markers/s{K}-{SHARD}.json`` (which
holds its stats). A job whose marker exists is skipped. That makes a rerun after ``kill -9`` produce exactly the
output of an uninterrupted run: no duplicates, no loss.

Global steps keep their state in the run's shared state folder (``OUT/.assay/state/`` or ``--state-dir``), which a job
fetches before and publishes after its phase when it is on object storage (:mod:`assay.run.step_state`), so the
phases of a global step may run on different machines.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import orjson

from assay.core.errors import AssayError, ErrorLog
from assay.core.pipeline import Pipeline, batched
from assay.core.record import Record
from assay.core.recipe import Recipe
from assay.core.step import GlobalStep, Step, StepContext
from assay.io.folder import Folder
from assay.io.sources import Shard, read_shard
from assay.io.writers import ShardWriter
from assay.run import layout
from assay.run.step_state import StepState, state_folder

# input records read by this worker process so far; the local executor shares it with the progress display. Only
# segment 0 counts: later segments re-read the same records from .assay/stages/ (counting them too showed 650 for 325)
PROGRESS_COUNTER: Any = None


@dataclass(frozen=True)
class Job:
    recipe: dict[str, Any]
    run_dir: str
    segment: int
    num_segments: int
    shard: Shard
    num_shards: int
    worker_hint: int = 0
    state_url: str | None = None  # --state-dir (None: the run folder's .assay/state/)

    @property
    def key(self) -> str:
        return f"s{self.segment}-{self.shard.index:05d}"


@dataclass
class Segment:
    """Which (step, phase) pairs run in one segment."""

    stages: list[tuple[Step, str]] = field(default_factory=list)
    reduce_after: GlobalStep | None = None


def split_segments(steps: list[Step]) -> list[Segment]:
    segments = [Segment()]
    for step in steps:
        if isinstance(step, GlobalStep):
            segments[-1].stages.append((step, "collect"))
            segments[-1].reduce_after = step
            segments.append(Segment(stages=[(step, "apply")]))
        else:
            segments[-1].stages.append((step, "process"))
    return segments


_CACHE: dict[tuple[str, str], tuple[list[Step], list[Segment]]] = {}


def build(recipe_dict: dict[str, Any]) -> tuple[Recipe, list[Step], list[Segment]]:
    recipe = Recipe.model_validate(recipe_dict)
    key = (recipe.fingerprint(), str(os.getpid()))
    if key not in _CACHE:
        steps = recipe.instantiate()
        Pipeline(steps)  # assigns recipe positions
        _CACHE.clear()
        _CACHE[key] = (steps, split_segments(steps))
    steps, segments = _CACHE[key]
    return recipe, steps, segments


def _length_bin(n: int) -> int:
    return 0 if n <= 0 else int(math.log2(n))


def run_job(job: Job) -> dict[str, Any]:
    """Run one (segment, shard) job; returns its stats (also written as its marker)."""
    run = Folder(job.run_dir)
    fs = run.fs
    marker = layout.marker_path(run, job.key)
    if fs.exists(marker):
        return orjson.loads(fs.cat_file(marker))

    recipe, steps, segments = build(job.recipe)
    seg = segments[job.segment]
    last = job.segment == job.num_segments - 1
    shard = job.shard
    prefix = layout.data_prefix(shard.index)
    out_dir = layout.data_folder(run) if last else layout.stage_folder(run, job.segment)
    rej_dir = layout.rejected_folder(run)
    rej_prefix = layout.rejected_prefix(shard.index, job.segment)

    # clear what a killed attempt may have left
    for folder, pre in ((out_dir, prefix + "-"), (rej_dir, rej_prefix + "-")):
        for p in folder.glob(f"{pre}*") + folder.glob(f".tmp-{pre}*"):
            fs.rm(p)

    errors = ErrorLog()
    global_phases = [(s, phase) for s, phase in seg.stages if isinstance(s, GlobalStep)]
    pipeline = Pipeline([s for s, _ in seg.stages], reindex=False)
    pipeline.reset_stats()
    stage_fns = [getattr(step, phase) for step, phase in seg.stages]

    # records between segments: JSONL, or tars when the output is (image bytes stay raw instead of base64 in JSON)
    fmt = recipe.output.format if last else ("webdataset" if recipe.output.format == "webdataset" else "jsonl")
    max_records = recipe.output.max_records_per_file if last else 10**12
    writer = ShardWriter(out_dir, prefix, fmt, max_records, recipe.output.max_bytes_per_file if last else 1 << 62,
                         recipe.output.text_column if last else "content")
    # rejected records: in the output's format, so that one reader reads both
    rejected = (ShardWriter(rej_dir, rej_prefix, recipe.output.format, 10**12, 1 << 62, recipe.output.text_column)
                if recipe.output.rejected else None)

    inp = recipe.input
    read = 0
    counter = PROGRESS_COUNTER if job.segment == 0 else None

    def source() -> Iterator[Record]:
        nonlocal read
        if job.segment == 0:
            it = read_shard(shard, errors, text_key=inp.text_key, id_key=inp.id_key, modality=inp.modality,
                            warc_types=tuple(inp.warc_types))
        else:
            prev = layout.stage_folder(run, job.segment - 1)
            files = sorted(prev.glob(f"{prefix}-*.jsonl") + prev.glob(f"{prefix}-*.tar"))
            it = _read_stage([prev.url_of(f) for f in files], errors)
        for r in it:
            read += 1
            if counter is not None and read % 64 == 0:
                with counter.get_lock():
                    counter.value += 64
            yield r

    def reject(batch: list[Record]) -> None:
        if rejected is not None:
            rejected.write_many(batch)

    lengths: Counter = Counter()
    languages: Counter = Counter()
    t0 = time.perf_counter()
    step_state = StepState(state_folder(run, job.state_url))  # a temporary local copy when the state is remote
    ctx = StepContext(run_dir=_local_path(run), shard=shard.index, num_shards=job.num_shards,
                      worker=os.getpid(), errors=errors, state_root=step_state.root,
                      run_url=None if run.is_local else run.url())
    try:
        for step, phase in global_phases:
            step_state.fetch(ctx, step, phase)
        for batch in pipeline.run(batched(source(), recipe.batch_size), ctx, reject, stages=stage_fns):
            writer.write_many(batch)
            if last:
                for r in batch:
                    c = r.content
                    lengths[_length_bin(len(c) if type(c) is str else len(r.text))] += 1
                    lang = r.meta.get("language")
                    if lang:
                        languages[str(lang)] += 1
        out_paths = writer.close()
        rej_paths = rejected.close() if rejected is not None else []
        for step, phase in global_phases:
            step_state.publish(ctx, step, phase)
    except BaseException as e:
        writer.abort()
        if rejected is not None:
            rejected.abort()
        if isinstance(e, AssayError):
            raise step_state.in_shared_terms(e) from None
        raise
    finally:
        step_state.__exit__()
    if counter is not None:
        with counter.get_lock():
            counter.value += read % 64

    result = {
        "segment": job.segment,
        "shard": shard.to_dict(),
        "records_read": read,
        "records_written": writer.records_written,
        "records_rejected": rejected.records_written if rejected is not None else 0,
        "outputs": [p.rsplit("/", 1)[-1] for p in out_paths],
        "rejected_outputs": [p.rsplit("/", 1)[-1] for p in rej_paths],
        "seconds": round(time.perf_counter() - t0, 4),
        "steps": [{"index": step.index, "name": step.name, "phase": phase, **step.stats.to_dict()}
                  for step, phase in seg.stages],
        "errors": dict(errors.counts),
        "lengths": {str(k): v for k, v in sorted(lengths.items())},
        "languages": dict(languages),
        "ray_node": _ray_node(),  # where the job ran, on Ray (None on the local executor)
    }
    if errors.entries:
        _write_atomic(fs, layout.errors_folder(run).path(f"{job.key}.jsonl"),
                      b"".join(orjson.dumps(e) + b"\n" for e in errors.entries))
    _write_atomic(fs, marker, orjson.dumps(result))
    return result


def run_reduce(recipe_dict: dict[str, Any], run_dir: str, segment: int, num_shards: int,
               state_url: str | None = None) -> None:
    run = Folder(run_dir)
    fs = run.fs
    marker = layout.marker_path(run, f"reduce-s{segment}")
    if fs.exists(marker):
        return
    _, _, segments = build(recipe_dict)
    step = segments[segment].reduce_after
    assert step is not None
    t0 = time.perf_counter()
    with StepState(state_folder(run, state_url)) as step_state:
        ctx = StepContext(run_dir=_local_path(run), shard=0, num_shards=num_shards, state_root=step_state.root,
                          run_url=None if run.is_local else run.url())
        try:
            step_state.fetch(ctx, step, "reduce")
            step.reduce(ctx)
            step_state.publish(ctx, step, "reduce")
        except AssayError as e:
            raise step_state.in_shared_terms(e) from None
    _write_atomic(fs, marker, orjson.dumps({"step": step.name, "index": step.index, "ray_node": _ray_node(),
                                            "seconds": round(time.perf_counter() - t0, 4)}))


def _read_stage(files: list[str], errors: ErrorLog) -> Iterator[Record]:
    from assay.io.jsonl import read_jsonl
    from assay.io.webdataset import read_webdataset

    for f in files:
        yield from (read_webdataset(f, errors) if f.endswith(".tar") else read_jsonl(f, errors))


def _write_atomic(fs: Any, path: str, data: bytes) -> None:
    folder = path.rsplit("/", 1)[0]
    fs.makedirs(folder, exist_ok=True)
    tmp = f"{folder}/.tmp-{os.getpid()}-{path.rsplit('/', 1)[-1]}"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, path)


def _ray_node() -> str | None:
    """The id of the Ray node this process runs on, if it is a Ray worker."""
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


def _local_path(run: Folder):  # noqa: ANN202
    """``StepContext.run_dir``: a folder on this machine for what steps keep beside the run (the synthesis response
    cache): the run folder when it is local, else a cache folder of this machine, under ``$XDG_CACHE_HOME``
    (default ``~/.cache``). Global steps keep their state elsewhere, where every machine sees it
    (:mod:`assay.run.step_state`)."""
    import hashlib
    from pathlib import Path

    if run.is_local:
        return Path(run.root)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "assay" / "state" / hashlib.sha1(run.url().encode()).hexdigest()[:16]
