"""Executors: run a recipe over input shards, locally on N processes (default) or on Ray.

Both run the same jobs (:mod:`assay.run.jobs`), so both give the same records. The executor plans shards, checks
that an existing run folder holds the same recipe and inputs (then resumes it), runs segment by segment (with a
global step's ``reduce`` between segments), and finally merges the per-job stats into ``stats.json`` and the
per-job error logs into ``errors.jsonl``. A job that fails on storage (no credentials, a missing bucket, access
denied) or loses its worker stops the run with one line naming the job; a rerun resumes.
"""

from __future__ import annotations

import ctypes
import fcntl
import multiprocessing as mp
import os
import re
import shutil
import signal
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import orjson

from assay.core.errors import AssayError
from assay.core.extras import missing_module_message
from assay.core.recipe import Recipe
from assay.io.folder import Folder, storage_errors
from assay.io.sources import Shard, plan_shards
from assay.run import jobs, layout
from assay.run.jobs import Job, build, run_job, run_reduce
from assay.run.step_state import state_folder
from assay.run.tuning import Tuning

ProgressFn = Callable[[str, int, int, int], None]  # (phase description, shards done, shards total, records read)


class RunLockedError(AssayError):
    pass


def _init_worker(counter: Any) -> None:
    jobs.PROGRESS_COUNTER = counter
    try:  # die with the parent: a killed run must not leave workers writing into the run folder
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the parent


class Executor:
    name = "base"

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, workers)

    # the executor-specific part: run jobs (and reduces), reporting each finished job
    def map_jobs(self, jobs_: list[Job], on_done: Callable[[dict[str, Any]], None], progress: Callable[[], None]) -> None:
        raise NotImplementedError

    def reduce(self, recipe: dict[str, Any], run_dir: str, segment: int, num_shards: int,
               state_url: str | None = None) -> None:
        try:
            run_reduce(recipe, run_dir, segment, num_shards, state_url)
        except Exception as e:
            raise _job_failure(e, f"reduce after segment {segment + 1}") from None

    def close(self) -> None:
        pass

    def records_read(self) -> int:
        return 0

    # the shared part ----------------------------------------------------------------------------------------
    def run(self, recipe: Recipe, inputs: list[str], output: str, *, overwrite: bool = False,
            progress: ProgressFn | None = None, notify: Callable[[str], None] | None = None,
            state_dir: str | None = None, tuning: Tuning | None = None) -> dict[str, Any]:
        """Run ``recipe`` over ``inputs`` into the folder ``output``. The global steps keep their state in
        ``output/.assay/state/``, or under ``state_dir`` (any fsspec URL every worker sees). ``tuning``: a limited or
        sampled input, filters that only flag (:mod:`assay.run.tuning`)."""
        tuning = tuning or Tuning()
        recipe = tuning.recipe(recipe)
        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        paths = inputs or recipe.input.paths
        if not paths:
            raise AssayError("no input: give --input PATH (or input.paths in the recipe)")
        try:
            shards = tuning.select(plan_shards(paths, recipe.input.format, recipe.input.shard_bytes), recipe)
        except (FileNotFoundError, ValueError) as e:
            raise AssayError(str(e)) from None
        except ImportError as e:  # the fsspec backend of an input URL (s3fs for s3://)
            raise AssayError(f"cannot read the input: {e}") from None
        except storage_errors() as e:  # no credentials, no endpoint, access denied
            raise AssayError(f"cannot read the input {' '.join(paths)}: {_first_line(e)}") from None
        out = Folder(output)
        self._check_shared_filesystem(out, "--output")
        try:
            _make_output_folder(out)
            _refuse_unless_run_folder(out)  # before the lock: a refused folder gets no .lock file either
        except storage_errors() as e:
            raise AssayError(f"cannot write to --output {output}: {_first_line(e)}") from None
        explicit_state = state_folder(out, state_dir) if state_dir else None
        if explicit_state is not None:
            self._check_shared_filesystem(explicit_state, "--state-dir")
            try:
                explicit_state.fs.makedirs(explicit_state.root, exist_ok=True)
            except storage_errors() as e:
                raise AssayError(f"cannot write to --state-dir {state_dir}: {_first_line(e)}") from None
        lock = _lock(out)
        fs = out.fs
        try:
            recipe_dict = recipe.model_dump(mode="json")
            self._check_or_start(out, recipe, shards, overwrite, explicit_state)
            if fs.exists(out.path("stats.json")):  # this very run, complete (--overwrite emptied the folder)
                if notify:
                    notify(f"{output} holds this run, complete: nothing to do (--overwrite runs it again)")
                return orjson.loads(fs.cat_file(out.path("stats.json")))
            _, steps, segments = build(recipe_dict)
            notes = [f"{step.name}: {note}" for step in steps for note in step.notes()]  # to stats.json and the card
            for note in notes if notify else ():
                notify(note)
            results: list[dict[str, Any]] = []
            for k, seg in enumerate(segments):
                todo = [Job(recipe_dict, out.url(), k, len(segments), s, len(shards), state_url=state_dir)
                        for s in shards]
                done = 0
                label = _segment_label(k, segments)

                def on_done(res: dict[str, Any]) -> None:
                    nonlocal done
                    done += 1
                    results.append(res)
                    if progress:
                        progress(label, done, len(todo), self.records_read())

                if progress:
                    progress(label, 0, len(todo), self.records_read())
                try:  # a step's setup (in a worker) or a global step's reduce may import an optional package
                    self.map_jobs(todo, on_done, lambda: progress and progress(label, done, len(todo),
                                                                                self.records_read()))
                    if seg.reduce_after is not None:
                        if progress:
                            progress(f"reduce {seg.reduce_after.name}", done, len(todo), self.records_read())
                        self.reduce(recipe_dict, out.url(), k, len(shards), state_dir)
                except ModuleNotFoundError as e:
                    raise AssayError(missing_module_message(e)) from None
            stats = _merge_stats(recipe, results, shards, len(segments), self.name, self.workers)
            _check_outputs_exist(out, stats)
            if recipe.output.format == "parquet":  # one schema for the files of data/, one for rejected/
                from assay.io.parquet import unify_parquet_schemas
                unify_parquet_schemas([layout.data_folder(out), layout.rejected_folder(out)])
            stats["notes"] = notes
            if tuning:
                stats["tuning"] = tuning.to_dict()
            stats["started"] = started.isoformat()
            stats["finished"] = datetime.now(timezone.utc).isoformat()
            stats["seconds"] = round(time.perf_counter() - t0, 3)
            _merge_errors(out)
            layout.write_recipe(out, recipe_dict)
            layout.write_readme(out, stats, recipe_dict)
            layout.remove_stages(out)  # every job has its marker: nothing reads them again
            # last: stats.json is what makes the run complete (a rerun then has nothing to do)
            jobs._write_atomic(fs, out.path("stats.json"), orjson.dumps(stats, option=orjson.OPT_INDENT_2))
            return stats
        except storage_errors() as e:  # the output's storage failed between jobs (a job's failure names the job)
            raise AssayError(f"the run into {output} failed: {type(e).__name__}: {_first_line(e)}") from None
        finally:
            self.close()
            _unlock(lock)

    def _check_shared_filesystem(self, folder: Folder, option: str) -> None:
        """Every worker must see the output (and state) folder: an in-process filesystem (memory://) serves one
        process only."""
        if not folder.in_process or (self.name == "local" and self.workers == 1):
            return
        who = (f"{self.workers} worker processes" if self.name == "local"
               else f"{self.name} tasks (other processes)")
        raise AssayError(f"{option} {folder.display} lives in the memory of one process and {who} cannot write to "
                         f"it; use -e local -w 1 or a folder on disk or object storage")

    def _check_or_start(self, out: Folder, recipe: Recipe, shards: list[Shard], overwrite: bool,
                        explicit_state: Folder | None = None) -> None:
        manifest = {"recipe": recipe.name, "fingerprint": recipe.fingerprint(),
                    "shards": [s.to_dict() for s in shards]}
        fs = out.fs
        path = layout.manifest_path(out)
        if layout.is_old_layout(out) and not overwrite:
            layout.refuse_old_layout(out)
        if fs.exists(path):
            old = orjson.loads(fs.cat_file(path))
            if old == manifest and not overwrite:
                return  # resume
            if not overwrite:
                what = "recipe" if old.get("fingerprint") != manifest["fingerprint"] else "input files"
                raise AssayError(f"{out.display} holds a run with a different {what}; use a new --output folder or "
                                 f"--overwrite to replace it")
        names = _entries(out)
        _refuse_unless_run_folder(out)
        foreign = [n for n in names if not layout.is_run_entry(n)]
        if foreign:
            raise AssayError(f"{out.display} holds an Assay run and files it did not write ({', '.join(foreign[:5])}); "
                             f"move them away before --overwrite, or choose a new --output folder")
        for name in names:
            fs.rm(out.path(name), recursive=True)
        # a new run starts afresh: the state of global steps in --state-dir (in the run folder it went with the
        # rest), and what steps keep beside a remote run on this machine (the synthesis response cache)
        if explicit_state is not None and explicit_state.fs.exists(explicit_state.root):
            explicit_state.fs.rm(explicit_state.root, recursive=True)
        here = jobs._local_path(out)
        if not out.is_local and here.exists():
            shutil.rmtree(here)
        jobs._write_atomic(fs, path, orjson.dumps(manifest))


def _entries(out: Folder) -> list[str]:
    return [n for n in out.names() if n != ".lock"]


def _refuse_unless_run_folder(out: Folder) -> None:
    """A folder that is neither empty nor an Assay run (no .assay/run.json, nor an older run's _run.json) is never
    written to nor deleted, not even with --overwrite."""
    names = _entries(out)
    root = out.display
    if names and not layout.is_run(out):
        shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
        raise AssayError(f"{root} is not empty ({shown}) and holds no Assay run; choose an empty or new --output "
                         f"folder (--overwrite only replaces a previous Assay run)")


def _make_output_folder(out: Folder) -> None:
    output = out.display
    if out.fs.isfile(out.root):
        raise AssayError(f"--output {output} is a file; give a folder (it is created if missing)")
    try:
        out.fs.makedirs(out.root, exist_ok=True)
    except OSError as e:
        raise AssayError(f"cannot create the --output folder {output}: {e.strerror or e}") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _check_outputs_exist(out: Folder, stats: dict[str, Any]) -> None:
    """The output files the jobs reported must be in the output folder: a run whose files went elsewhere (a path
    that lost its filesystem) fails instead of reporting success."""
    present = {f"{layout.DATA}/{p.rsplit('/', 1)[-1]}" for p in layout.data_folder(out).glob("*")}
    missing = [f for f in stats["output"]["files"] if f not in present]
    if missing:
        raise AssayError(f"{len(missing)} output files the run wrote are not in {out.display} "
                         f"({', '.join(missing[:3])}); the output was written elsewhere")


def _job_label(job: Job) -> str:
    return f"job {job.key} (segment {job.segment + 1}/{job.num_segments}, {job.shard.describe()})"


def _job_failure(e: BaseException, what: str) -> BaseException:
    """What the user sees when a job (or a reduce) fails: one line for storage errors (no credentials, a missing
    bucket, access denied), Assay's own errors and lost workers, naming the job; any other exception (a bug) as it
    is, with its traceback. A Ray task's exception is unwrapped to its cause."""
    where = ""
    cause: BaseException = e
    ray_exc = _ray_exceptions()
    if ray_exc is not None and isinstance(e, ray_exc.RayTaskError):
        cause = e.cause if e.cause is not None else e
        # the exception ray.get raises (also an instance of the cause's class) names the node only in its text:
        # "ray::run_job() (pid=123, ip=10.0.0.5)"
        m = re.search(r"\(pid=\d+, ip=([^)\s]+)\)", str(e))
        where = f" on the Ray node at {m.group(1)}" if m else " in a Ray task"
    elif ray_exc is not None and isinstance(e, ray_exc.RayError):
        return AssayError(f"{what} failed: Ray lost it ({type(e).__name__}: {_first_line(e)}); "
                          f"rerun the same command to resume")
    if isinstance(cause, BrokenProcessPool):
        return AssayError(f"{what} failed: a worker process died (killed, or out of memory); "
                          f"rerun the same command to resume")
    if isinstance(cause, ModuleNotFoundError):
        return cause  # the run turns it into the extra to install
    if isinstance(cause, AssayError):
        return AssayError(_first_line(cause) if where else str(cause))
    if isinstance(cause, storage_errors()):
        hint = ""
        if where and type(cause).__name__ == "NoCredentialsError":
            hint = (" (Ray tasks read storage credentials from their node's environment: start the nodes with them, "
                    "or pass them with --ray-env)")
        return AssayError(f"{what} failed{where}: {type(cause).__name__}: {_first_line(cause)}{hint}")
    return e


def _ray_exceptions() -> Any:
    import sys

    if "ray" not in sys.modules:
        return None
    import ray.exceptions

    return ray.exceptions


def _segment_label(k: int, segments: list[Any]) -> str:
    names = [s.name for s, phase in segments[k].stages if phase != "apply"]
    if not names:
        names = [s.name for s, _ in segments[k].stages]
    return f"[{k + 1}/{len(segments)}] " + (" → ".join(names) if names else "copy")


class LocalExecutor(Executor):
    """Shards run on ``workers`` processes on this machine (``workers=1`` runs them in this process)."""

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        super().__init__(workers)
        ctx = mp.get_context("spawn")
        self._counter = ctx.Value("q", 0)
        self._pool: ProcessPoolExecutor | None = None
        self._ctx = ctx

    def records_read(self) -> int:
        return int(self._counter.value)

    def map_jobs(self, jobs_: list[Job], on_done: Callable[[dict[str, Any]], None], progress: Callable[[], None]) -> None:
        if self.workers == 1:
            jobs.PROGRESS_COUNTER = self._counter
            for j in jobs_:
                try:
                    res = run_job(j)
                except Exception as e:
                    raise _job_failure(e, _job_label(j)) from None
                on_done(res)
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=self._ctx, initializer=_init_worker,
                                             initargs=(self._counter,))
        pending = {self._pool.submit(run_job, j): j for j in jobs_}
        while pending:
            finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in finished:
                j = pending.pop(f)
                try:
                    res = f.result()
                except Exception as e:
                    raise _job_failure(e, _job_label(j)) from None
                on_done(res)
            progress()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class RayExecutor(Executor):
    """The same jobs as Ray tasks: a local Ray instance by default, a cluster with ``address`` (or ``RAY_ADDRESS``).
    For more than one machine the output folder must be shared storage (an fsspec URI such as s3://, or a shared
    filesystem); the global steps' state goes with it (``OUT/.assay/state/``) unless ``state_dir`` says otherwise.

    Jobs are spread over the cluster's nodes and retried by Ray when their worker process or node dies
    (:data:`MAX_RETRIES` times); a job that writes again first removes what the lost attempt left. Tasks run with
    their node's environment (storage credentials included); ``env`` names variables of this process to pass to
    them as well."""

    name = "ray"
    MAX_RETRIES = 3

    def __init__(self, workers: int = 1, address: str | None = None, env: list[str] | None = None,
                 reduce_resources: dict[str, float] | None = None) -> None:
        super().__init__(workers)
        try:
            import ray
        except ImportError:
            raise AssayError("the Ray executor needs Ray: pip install 'assay[ray]'") from None
        missing = [n for n in env or [] if n not in os.environ]
        if missing:
            raise AssayError(f"--ray-env {', '.join(missing)}: not set in this environment")
        self.ray = ray
        self._started = False
        address = address or os.environ.get("RAY_ADDRESS") or None
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": self.workers}
            try:
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise AssayError(f"cannot connect to {where}: {first} (start one with `ray start --head`, or "
                                 f"leave out --ray-address for a local instance)") from None
            self._started = True
        options: dict[str, Any] = {"max_retries": self.MAX_RETRIES}
        if env:
            options["runtime_env"] = {"env_vars": {n: os.environ[n] for n in env}}
        self._run_job = ray.remote(run_job).options(scheduling_strategy="SPREAD", **options)
        self._run_reduce = ray.remote(run_reduce).options(**options, **self._reduce_options(reduce_resources or {}))

    def _reduce_options(self, wanted: dict[str, float]) -> dict[str, Any]:
        """Ray task options for the reduces (``num_cpus``, ``memory`` in bytes, custom resources). A resource no node
        of the cluster offers would leave the reduce waiting forever: that is refused here, in one line."""
        if not wanted:
            return {}
        offered = self.ray.cluster_resources()
        for name, amount in wanted.items():
            key = "CPU" if name == "num_cpus" else name
            if offered.get(key, 0) < amount:
                have = ", ".join(f"{k}={v:g}" for k, v in sorted(offered.items())
                                 if not k.startswith("node:") and k != "object_store_memory")
                self.close()
                raise AssayError(f"--ray-reduce-resources {name}={amount:g}: the cluster has {offered.get(key, 0):g} "
                                 f"(it offers {have}); start a node with e.g. `ray start --resources "
                                 f"'{{\"{name}\": {amount:g}}}'`")
        options: dict[str, Any] = {k: wanted[k] for k in ("num_cpus",) if k in wanted}
        if "memory" in wanted:
            options["memory"] = int(wanted["memory"])  # bytes
        custom = {k: v for k, v in wanted.items() if k not in ("num_cpus", "memory")}
        if custom:
            options["resources"] = custom
        return options

    def map_jobs(self, jobs_: list[Job], on_done: Callable[[dict[str, Any]], None], progress: Callable[[], None]) -> None:
        pending = {self._run_job.remote(j): j for j in jobs_}
        while pending:
            ready, _ = self.ray.wait(list(pending), num_returns=1, timeout=0.5)
            for r in ready:
                j = pending.pop(r)
                try:
                    res = self.ray.get(r)
                except Exception as e:
                    raise _job_failure(e, _job_label(j)) from None
                on_done(res)
            progress()

    def reduce(self, recipe: dict[str, Any], run_dir: str, segment: int, num_shards: int,
               state_url: str | None = None) -> None:
        try:
            self.ray.get(self._run_reduce.remote(recipe, run_dir, segment, num_shards, state_url))
        except Exception as e:
            raise _job_failure(e, f"reduce after segment {segment + 1}") from None

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False


def make_executor(name: str, workers: int, address: str | None = None, ray_env: list[str] | None = None,
                  reduce_resources: str | None = None) -> Executor:
    if name == "local":
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(workers, address, ray_env, reduce_resources=parse_resources(reduce_resources or ""))
    raise AssayError(f"unknown executor {name!r}; expected 'local' or 'ray'")


_SIZE = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_resources(text: str) -> dict[str, float]:
    """``"big_memory=1,num_cpus=4,memory=32G"`` -> ``{"big_memory": 1.0, "num_cpus": 4.0, "memory": 32e9}``."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise AssayError(f"--ray-reduce-resources: {part!r} is not NAME=AMOUNT (e.g. big_memory=1, memory=32G)")
        unit = value.lstrip("0123456789.").lower().removesuffix("b")
        try:
            amount = float(value[: len(value) - len(value.lstrip("0123456789."))] if unit else value)
            amount *= _SIZE[unit] if unit else 1
        except (ValueError, KeyError):
            raise AssayError(f"--ray-reduce-resources: {value!r} is not an amount (e.g. 1, 0.5, 32G)") from None
        if amount <= 0:
            raise AssayError(f"--ray-reduce-resources: {name} must be more than 0")
        out[name] = amount
    return out


def _lock(out: Folder) -> Any:
    if not out.is_local:
        return None
    f = open(Path(out.root) / ".lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RunLockedError(f"another run is writing to {out.root}") from None
    return f


def _unlock(f: Any) -> None:
    if f is not None:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def _merge_stats(recipe: Recipe, results: list[dict[str, Any]], shards: list[Shard], num_segments: int,
                 executor: str, workers: int) -> dict[str, Any]:
    steps: dict[int, dict[str, Any]] = {}
    for res in results:
        for s in res["steps"]:
            cur = steps.setdefault(s["index"], {
                "index": s["index"], "name": s["name"], "records_in": 0, "records_out": 0, "dropped": 0,
                "bytes_in": 0, "bytes_out": 0, "seconds": 0.0, "drops": Counter(), "counters": Counter()})
            phase = s["phase"]
            if phase in ("process", "collect"):
                cur["records_in"] += s["records_in"]
                cur["bytes_in"] += s["bytes_in"]
            if phase in ("process", "apply"):
                cur["records_out"] += s["records_out"]
                cur["bytes_out"] += s["bytes_out"]
            cur["dropped"] += s["dropped"]
            cur["seconds"] += s["seconds"]
            cur["drops"].update(s["drops"])
            cur["counters"].update(s["counters"])
    step_list = []
    for i in sorted(steps):
        s = steps[i]
        s["seconds"] = round(s["seconds"], 3)
        s["drops"] = dict(s["drops"].most_common())
        s["counters"] = dict(sorted(s["counters"].items()))
        step_list.append(s)
    first = [r for r in results if r["segment"] == 0]
    last = [r for r in results if r["segment"] == num_segments - 1]
    errors: Counter = Counter()
    lengths: Counter = Counter()
    languages: Counter = Counter()
    for r in results:
        errors.update(r["errors"])
    for r in last:
        lengths.update({int(k): v for k, v in r["lengths"].items()})
        languages.update(r["languages"])
    return {
        "recipe": recipe.name,
        "fingerprint": recipe.fingerprint(),
        "executor": executor,
        "workers": workers,
        "input": {"files": len({s.path for s in shards}), "shards": len(shards),
                  "records_read": sum(r["records_read"] for r in first)},
        "output": {"format": recipe.output.format, "records": sum(r["records_written"] for r in last),
                   "files": sorted(f"{layout.DATA}/{f}" for r in last for f in r["outputs"]),  # in the run folder
                   "rejected": sum(r["records_rejected"] for r in results)},
        "steps": step_list,
        "errors": dict(errors.most_common()),
        "length_histogram_log2": {str(k): lengths[k] for k in sorted(lengths)},
        "languages": dict(languages.most_common()),
    }


def _merge_errors(out: Folder) -> None:
    blob = b"".join(out.fs.cat_file(f) for f in layout.errors_folder(out).glob("*.jsonl"))
    jobs._write_atomic(out.fs, out.path("errors.jsonl"), blob)


output_files = layout.output_files  # the name readers imported from here before assay.run.layout
