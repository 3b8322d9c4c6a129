"""The run folder's layout: where a run writes what, in one place for everything that reads or writes run folders.

::

    OUT/data/train-00000-0000.jsonl.gz   kept records (.parquet / .tar per output format); ``train-*`` is one of
                                         Hugging Face datasets' split patterns, so ``load_dataset("json",
                                         data_dir=OUT)`` takes these files and nothing else
    OUT/rejected/part-00000-s0-0000.jsonl.gz   dropped records (same format), with their step and reason
    OUT/README.md                        a dataset card whose front matter has ``configs`` (``default`` → data/,
                                         ``rejected`` → rejected/), so ``load_dataset(OUT)`` works
    OUT/recipe.yaml, stats.json, errors.jsonl, report.html
    OUT/.assay/run.json                  what makes the folder an Assay run (recipe fingerprint and input shards)
    OUT/.assay/markers/                  one file per finished job: a rerun skips those jobs
    OUT/.assay/stages/                   records between segments (removed once the run completes)
    OUT/.assay/state/                    the state of global steps (dedup)
    OUT/.assay/errors/, .assay/scratch/  per-job error logs (merged into errors.jsonl), steps' temporary files

The bookkeeping lives in a dot-folder: ``datasets``, duckdb, polars and pyarrow globs skip hidden folders.

Older Assay versions wrote ``part-*`` at the top of the folder and ``_markers/``, ``_stages/``, ``_state/`` and
``_run.json`` beside them. :func:`output_files` and :func:`rejected_files` still read such folders; a run into one
is refused with a one-line error (resuming it would mix both layouts).
"""

from __future__ import annotations

from typing import Any

import yaml

from assay.core.errors import AssayError
from assay.io.folder import Folder

DATA = "data"
REJECTED = "rejected"
BOOKS = ".assay"  # hidden: loaders skip it
RUN_MANIFEST = "run.json"
SPLIT = "train"  # the data files' name prefix: Hugging Face datasets' default split keyword
README = "README.md"
RECIPE = "recipe.yaml"

#: what a run writes at the top of its folder (anything else there is not ours: --overwrite refuses to delete it)
RUN_ENTRIES = (DATA, REJECTED, BOOKS, README, RECIPE, "stats.json", "errors.jsonl", "report.html",
               "lerobot",  # lerobot_export's default folder
               "llm-cache.sqlite", "llm-cache.sqlite-wal", "llm-cache.sqlite-shm")  # the synthesis response cache
#: what older versions wrote there: the bookkeeping (_run.json, _markers/, _stages/, _state/, _errors/,
#: _scratch/) and the output shards (part-*)
OLD_PREFIXES = ("_", "part-")


def _folder(run: Folder | str) -> Folder:
    return run if isinstance(run, Folder) else Folder(str(run))


def books(run: Folder) -> Folder:
    return run.child(BOOKS)


def data_folder(run: Folder) -> Folder:
    return run.child(DATA)


def rejected_folder(run: Folder) -> Folder:
    return run.child(REJECTED)


def manifest_path(run: Folder) -> str:
    return run.path(BOOKS, RUN_MANIFEST)


def marker_path(run: Folder, key: str) -> str:
    """The marker of a finished job (``s0-00003``) or reduce (``reduce-s0``)."""
    return run.path(BOOKS, "markers", f"{key}.json")


def stages_folder(run: Folder) -> Folder:
    return run.child(BOOKS, "stages")


def stage_folder(run: Folder, segment: int) -> Folder:
    """Where segment ``segment`` leaves its records for the next one."""
    return run.child(BOOKS, "stages", f"s{segment}")


def state_folder(run: Folder) -> Folder:
    """The default folder of the global steps' state (``--state-dir`` replaces it)."""
    return run.child(BOOKS, "state")


def errors_folder(run: Folder) -> Folder:
    return run.child(BOOKS, "errors")


def data_prefix(shard: int) -> str:
    return f"{SPLIT}-{shard:05d}"


def rejected_prefix(shard: int, segment: int) -> str:
    # "part", not a split keyword (train/test/valid/dev/eval…): datasets must not take these for a split
    return f"part-{shard:05d}-s{segment}"


def is_run(run: Folder) -> bool:
    """The folder holds an Assay run (of this layout or an older one)."""
    return is_run_path(run.fs, run.root)


def is_run_path(fs: Any, path: str) -> bool:
    """``is_run`` for a (filesystem, path) pair."""
    return fs.exists(f"{path}/{BOOKS}/{RUN_MANIFEST}") or fs.exists(f"{path}/_run.json")


def is_kept_record_path(parts: list[str]) -> bool:
    """Whether a file of a run folder, given as its path's parts inside the folder, holds kept records: ``data/*``
    (or ``part-*`` at the top, in the older layout); not rejected/, an export (lerobot/) or the bookkeeping."""
    return (len(parts) == 2 and parts[0] == DATA) or (len(parts) == 1 and parts[0].startswith("part-"))


def is_old_layout(run: Folder) -> bool:
    return run.fs.exists(run.path("_run.json"))


def is_run_entry(name: str) -> bool:
    """A top-level entry a run (of any layout) may have written."""
    return name in RUN_ENTRIES or name.startswith((".tmp-", *OLD_PREFIXES))


def refuse_old_layout(run: Folder) -> None:
    if is_old_layout(run):
        raise AssayError(f"{run.display} holds a run written by an older Assay (part-* files and _markers/ at the "
                         f"top); rerun with --overwrite to replace it, or choose a new --output folder")


def _visible(paths: list[str]) -> list[str]:
    return [p for p in paths if not p.rsplit("/", 1)[-1].startswith(".")]


def output_files(run: Folder | str) -> list[str]:
    """The kept-record files of a run, as paths or URLs that name their filesystem (``data/*``, or ``part-*`` at
    the top of a folder in the older layout)."""
    run = _folder(run)
    found = _visible(run.glob(f"{DATA}/*"))
    if not found:
        found = _visible(run.glob("part-*"))
    return [run.url_of(p) for p in found]


def rejected_files(run: Folder | str) -> list[str]:
    """The rejected-record files of a run (both layouts keep them in ``rejected/``)."""
    run = _folder(run)
    return [run.url_of(p) for p in _visible(run.glob(f"{REJECTED}/*"))]


def data_format(files: list[str]) -> str:
    """The ``datasets`` builder for files of one output format: json, parquet or webdataset."""
    name = files[0].rsplit("/", 1)[-1] if files else ""
    if ".parquet" in name:
        return "parquet"
    if name.endswith(".tar"):
        return "webdataset"
    return "json"


def write_recipe(run: Folder, recipe_dict: dict[str, Any]) -> None:
    """``OUT/recipe.yaml``: the recipe as run (every default filled in)."""
    from assay.run.jobs import _write_atomic

    text = yaml.safe_dump(recipe_dict, sort_keys=False, allow_unicode=True)
    _write_atomic(run.fs, run.path(RECIPE), text.encode())


def readme_text(stats: dict[str, Any], recipe_dict: dict[str, Any], *, data_files: str = f"{DATA}/*",
                rejected_files_glob: str | None = f"{REJECTED}/*", body: str = "") -> str:
    """A minimal dataset card: YAML front matter with the ``configs`` that ``datasets.load_dataset(OUT)`` reads,
    then the recipe's name and description and the counts from ``stats.json``. ``body`` (Markdown) is appended:
    a richer card (``assay push``) adds its sections there."""
    configs: list[dict[str, Any]] = [
        {"config_name": "default", "data_files": [{"split": SPLIT, "path": data_files}], "default": True}]
    if rejected_files_glob:
        configs.append({"config_name": "rejected", "data_files": [{"split": SPLIT, "path": rejected_files_glob}]})
    front = yaml.safe_dump({"configs": configs, "tags": ["assay"]}, sort_keys=False)
    name = recipe_dict.get("name") or stats.get("recipe") or "assay run"
    out = stats.get("output", {})
    inp = stats.get("input", {})
    lines = [f"---\n{front}---", "", f"# {name}", ""]
    description = (recipe_dict.get("description") or "").strip()
    if description:
        lines += [description, ""]
    lines += [f"Made by Assay with the recipe in `recipe.yaml` "
              f"(fingerprint `{stats.get('fingerprint', '')}`).", "",
              "| | |", "|---|---|",
              f"| input | {inp.get('records_read', 0):,} records from {inp.get('files', 0):,} files |",
              f"| kept (`data/`) | {out.get('records', 0):,} records, {out.get('format', '')} |",
              f"| rejected (`rejected/`) | {out.get('rejected', 0):,} records |", ""]
    drops = [(s["name"], reason, n) for s in stats.get("steps", []) for reason, n in s.get("drops", {}).items()]
    if drops:
        lines += ["| step | drop reason | records |", "|---|---|---|"]
        lines += [f"| {step} | {reason} | {n:,} |" for step, reason, n in drops]
        lines.append("")
    lines += ["```python", "from datasets import load_dataset", "",
              'kept = load_dataset("path/to/this/folder", split="train")',
              'rejected = load_dataset("path/to/this/folder", "rejected", split="train")', "```", ""]
    if body:
        lines += [body.rstrip(), ""]
    return "\n".join(lines)


def write_readme(run: Folder | str, stats: dict[str, Any], recipe_dict: dict[str, Any], body: str = "") -> str:
    """Write ``OUT/README.md`` (see :func:`readme_text`); returns its path on the run's filesystem."""
    from assay.run.jobs import _write_atomic

    run = _folder(run)
    has_rejected = bool(rejected_files(run))
    text = readme_text(stats, recipe_dict, rejected_files_glob=f"{REJECTED}/*" if has_rejected else None, body=body)
    _write_atomic(run.fs, run.path(README), text.encode())
    return run.path(README)


def remove_stages(run: Folder) -> None:
    """Drop the records kept between segments: once every job has its marker nothing reads them again."""
    stages = stages_folder(run)
    if stages.fs.exists(stages.root):
        stages.fs.rm(stages.root, recursive=True)
