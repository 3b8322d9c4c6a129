"""``assay push``: publish a finished run folder or an annotation export as a Hugging Face Hub dataset repo.

What goes up (nothing else, so the bookkeeping — ``.assay/``, ``_markers/``, ``_stages/``, ``_state/``, the LLM
response cache, ``.lock`` — never does):

* a run folder (``assay run`` output: harvest or synthesis): the kept records as ``data/*`` (an older folder's
  top-level ``part-*`` files go there too), ``rejected/*`` with ``include_rejected``, ``stats.json``,
  ``recipe.yaml``, ``report.html`` when there is one, and a ``README.md`` card (:mod:`assay.run.card`);
* an annotation export (``assay annotate export``: one ``.jsonl``/``.jsonl.gz``/``.parquet`` file, or a folder of
  them): the file(s) as ``data/*`` and a card saying what the rows are.

Each push is one commit; into a repo that exists it is a new commit, which also deletes the ``data/`` and
``rejected/`` files of an earlier push that this one does not have (else ``load_dataset`` would mix both).
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from assay.core.errors import AssayError
from assay.io.folder import Folder
from assay.run import card, layout

DEFAULT_ENDPOINT = "https://huggingface.co"
EXPORT_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
#: files of a run folder that go up as they are (when present)
RUN_FILES = ("stats.json", layout.RECIPE, "report.html")
#: files handed to the Hub per preupload call (the progress bar advances per chunk)
CHUNK = 16


class PushError(AssayError):
    """A push that cannot start or that the Hub refused."""


@dataclass
class Upload:
    """What one push sends: (local file, path in the repo) pairs and the card."""

    kind: str  # harvest, synthesis or export
    files: list[tuple[Path, str]]
    card: Callable[[str], str]  # the README.md for a repo id (its loading snippet names the repo)
    records: int
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class PushResult:
    repo_id: str
    kind: str
    commit_url: str
    files: int
    deleted: int
    records: int


# -- what to upload ---------------------------------------------------------------------------------------------

def _step_classes(recipe: dict[str, Any]) -> list[type | None]:
    """The step classes of a recipe as run (``recipe.yaml``: ``{name, params}`` per step); None for a step that is
    not installed here (a plugin)."""
    from assay.core.step import REGISTRY

    classes: list[type | None] = []
    for spec in recipe.get("steps") or []:
        name = spec.get("name") if isinstance(spec, dict) else None
        try:
            classes.append(REGISTRY.get(name) if name else None)
        except KeyError:
            classes.append(None)
    return classes


def _read_recipe(run: Path) -> dict[str, Any]:
    path = run / layout.RECIPE
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def unfinished_reason(run: Path) -> str | None:
    """Why the run folder ``run`` is not a finished run (None when it is): a run holding its lock, no stats.json,
    a job marker missing (one per segment and input shard, one per global step's reduce), or markers newer than
    stats.json."""
    from assay.core.step import GlobalStep

    lock = run / ".lock"
    if lock.exists():
        with open(lock) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
            except BlockingIOError:
                return "a run is writing to it right now"
    stats_path = run / "stats.json"
    if not stats_path.exists():
        return "it has no stats.json (the run stopped before its end)"
    old = layout.is_old_layout(Folder(str(run)))
    manifest = run / ("_run.json" if old else f"{layout.BOOKS}/{layout.RUN_MANIFEST}")
    markers = run / ("_markers" if old else f"{layout.BOOKS}/markers")
    try:
        shards = json.loads(manifest.read_text())["shards"]
    except (OSError, ValueError, KeyError):
        return f"its {manifest.relative_to(run)} is missing or damaged"
    done = {p.stem for p in markers.glob("*.json")} if markers.is_dir() else set()
    classes = _step_classes(_read_recipe(run))
    if classes and None not in classes:
        segments = 1 + sum(1 for c in classes if issubclass(c, GlobalStep))
    else:  # no recipe.yaml (an older folder) or a step not installed here: the segments the markers name
        seen = [int(n[len("reduce-s"):]) + 1 if n.startswith("reduce-s") else int(n[1:].split("-")[0])
                for n in done if n.startswith(("reduce-s", "s"))]
        segments = max(seen, default=0) + 1
    expected = [f"s{k}-{s['index']:05d}" for k in range(segments) for s in shards]
    expected += [f"reduce-s{k}" for k in range(segments - 1)]
    missing = [m for m in expected if m not in done]
    if missing:
        return f"{len(missing)} of its {len(expected)} jobs have not finished ({', '.join(missing[:3])})"
    stats_time = stats_path.stat().st_mtime
    if any(p.stat().st_mtime > stats_time + 1 for p in markers.glob("*.json")):
        return "jobs finished after its stats.json was written (a rerun stopped before its end)"
    return None


def _is_export_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(EXPORT_SUFFIXES)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of an export file (JSONL, gzipped JSONL or Parquet)."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    opener = gzip.open if path.name.endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    raise PushError(f"{path}:{n}: not a JSON line: an annotation export has one JSON object per "
                                    f"line") from None
    return rows


def export_format(rows: list[dict[str, Any]]) -> str:
    """Which ``assay annotate export --format`` wrote ``rows`` (from their columns)."""
    cols = set(rows[0]) if rows else set()
    if {"chosen", "rejected"} <= cols:
        return "dpo"
    if "corrected_turns" in cols:
        return "dialogue"
    if "episode_index" in cols and "segments" in cols:
        return "trajectory"
    if {"before", "after", "instruction"} <= cols:
        return "edit"
    if "ner_tags" in cols:
        return "spans"
    if ("label" in cols or "labels" in cols) and "suggested" in cols:
        return "labels"
    if "critique" in cols:
        return "critiques"
    if any(c.startswith("score_") for c in cols) or "physics_note" in cols:
        return "ratings"
    if "messages" in cols:
        return "sft"
    if "value" in cols and "task_type" in cols:
        return "annotations"
    raise PushError("the file's rows have none of the columns of an `assay annotate export` format "
                    f"(columns: {', '.join(sorted(cols)) or 'none'})")


def _run_kind(recipe: dict[str, Any]) -> str:
    synthesis = any(c is not None and c.__module__.startswith("assay.synthesize") for c in _step_classes(recipe))
    return "synthesis" if synthesis else "harvest"


def record_licenses(files: list[str]) -> Counter:
    """The ``meta.license`` of the records in ``files`` (as the code ingest sets it), counted; empty when no record
    has one."""
    from assay.core.errors import ErrorLog
    from assay.io.sources import plan_shards, read_shard

    counts: Counter = Counter()
    errors = ErrorLog()
    for shard in plan_shards(files, "auto", 0):
        for record in read_shard(shard, errors):
            counts[(record.meta or {}).get("license")] += 1
    return counts if any(counts) else Counter()


def plan_run(run: Path, *, include_rejected: bool, license: str | None, force: bool) -> Upload:
    reason = unfinished_reason(run)
    if reason and not force:
        raise PushError(f"{run} is not a finished run: {reason}; finish it (rerun the same `assay run`) or push "
                        f"it anyway with --force")
    try:
        stats = json.loads((run / "stats.json").read_text())
    except (OSError, ValueError):
        stats = {}
    recipe = _read_recipe(run)
    kept = [Path(p) for p in layout.output_files(str(run))]
    if not kept:
        raise PushError(f"{run} has no kept records to push (no data/ files)")
    files = [(p, f"{layout.DATA}/{p.name}") for p in kept]
    rejected = [Path(p) for p in layout.rejected_files(str(run))] if include_rejected else []
    files += [(p, f"{layout.REJECTED}/{p.name}") for p in rejected]
    files += [(run / name, name) for name in RUN_FILES if (run / name).is_file()]
    kind = _run_kind(recipe)
    licenses = record_licenses([str(p) for p in kept])

    def readme(repo_id: str) -> str:
        return card.run_card(stats, recipe, repo_id, kind=kind, data_files=f"{layout.DATA}/*",
                             rejected_files_glob=f"{layout.REJECTED}/*" if rejected else None, license=license,
                             licenses=licenses)

    return Upload(kind, files, readme, stats.get("output", {}).get("records", 0),
                  {"rejected": stats.get("output", {}).get("rejected", 0) if rejected else 0})


def plan_export(path: Path, *, license: str | None) -> Upload:
    sources = [path] if path.is_file() else sorted(p for p in path.iterdir() if _is_export_file(p))
    suffixes = {next(s for s in EXPORT_SUFFIXES[::-1] if p.name.endswith(s)) for p in sources}
    if len(suffixes) > 1:
        raise PushError(f"{path} mixes export files of several formats ({', '.join(sorted(suffixes))}); push "
                        f"one format per repo")
    rows: list[dict[str, Any]] = []
    for p in sources:
        rows.extend(read_rows(p))
    if not rows:
        raise PushError(f"{path} holds no rows to push")
    fmt = export_format(rows)
    name = path.name.split(".")[0] if path.is_file() else path.name

    def readme(repo_id: str) -> str:
        return card.export_card(rows, fmt, repo_id, f"{layout.DATA}/*", source_name=name, license=license)

    return Upload("export", [(p, f"{layout.DATA}/{p.name}") for p in sources], readme, len(rows),
                  {"format": fmt})


def plan(source: str, *, include_rejected: bool = False, license: str | None = None, force: bool = False) -> Upload:
    """What pushing ``source`` (a run folder or an annotation export) would send."""
    if "://" in source:
        raise PushError(f"{source}: push a local folder or file (copy a remote run folder here first)")
    path = Path(source)
    if not path.exists():
        raise PushError(f"{source}: no such file or folder")
    if path.is_dir() and layout.is_run(Folder(str(path))):
        return plan_run(path, include_rejected=include_rejected, license=license, force=force)
    if _is_export_file(path) or (path.is_dir() and any(_is_export_file(p) for p in path.iterdir())):
        return plan_export(path, license=license)
    raise PushError(f"{source} is neither an Assay run folder (no .assay/run.json) nor an annotation export "
                    f"({', '.join(EXPORT_SUFFIXES)} from `assay annotate export`)")


# -- the Hub ------------------------------------------------------------------------------------------------------

def _hub_error(e: Exception, endpoint: str) -> PushError:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(e, OfflineModeIsEnabled):
        return PushError("HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: unset it to push to the Hub")
    if isinstance(e, HfHubHTTPError) and e.response is not None:
        status = e.response.status_code
        message = e.response.headers.get("X-Error-Message") or str(e).splitlines()[0]
        if status == 401:
            return PushError(f"{endpoint} rejected the token (401): pass a valid one with --token or HF_TOKEN")
        return PushError(f"the Hub at {endpoint} answered {status}: {message}")
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return PushError(f"cannot reach the Hub at {endpoint}: {first} (set --endpoint or HF_ENDPOINT)")


def push(source: str, repo_id: str, *, token: str | None = None, endpoint: str | None = None,
         private: bool = False, include_rejected: bool = False, revision: str | None = None,
         message: str | None = None, license: str | None = None, force: bool = False,
         progress: Callable[[int, int], None] | None = None) -> PushResult:
    """Push ``source`` to the dataset repo ``repo_id`` (``name`` alone: under the token's user). ``progress(done,
    total)`` is called as files are handed to the Hub."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    from assay.io.folder import storage_errors

    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    if repo_id.count("/") > 1 or not repo_id.strip("/") or " " in repo_id:
        raise PushError(f"repo id {repo_id!r}: expected 'name' or 'namespace/name'")
    upload = plan(source, include_rejected=include_rejected, license=license, force=force)
    if not token:
        from huggingface_hub import get_token

        token = get_token()
    if not token:
        raise PushError("no Hugging Face token: pass --token or set HF_TOKEN (a token with write access)")
    api = HfApi(endpoint=endpoint, token=token)
    hub_errors = (HfHubHTTPError, OfflineModeIsEnabled, *storage_errors())
    try:
        user = api.whoami()["name"]  # a bad token or an unreachable Hub fails here, before anything is sent
        if "/" not in repo_id:
            repo_id = f"{user}/{repo_id}"
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        ours = {path_in_repo for _, path_in_repo in upload.files} | {"README.md"}
        existing = api.list_repo_files(repo_id, repo_type="dataset", revision=revision)
        stale = [p for p in existing if p.startswith((f"{layout.DATA}/", f"{layout.REJECTED}/")) and p not in ours]
        additions = [CommitOperationAdd(path_in_repo=repo_path, path_or_fileobj=str(local))
                     for local, repo_path in upload.files]
        additions.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=upload.card(repo_id).encode()))
        for start in range(0, len(additions), CHUNK):
            chunk = additions[start:start + CHUNK]
            api.preupload_lfs_files(repo_id, additions=chunk, repo_type="dataset", revision=revision)
            if progress:
                progress(start + len(chunk), len(additions))
        kind = upload.kind if upload.kind != "export" else f"{upload.summary['format']} export"
        info = api.create_commit(
            repo_id, [*additions, *(CommitOperationDelete(path_in_repo=p) for p in stale)], repo_type="dataset",
            revision=revision, commit_message=message or f"assay push: {kind}, {upload.records:,} records")
    except hub_errors as e:
        raise _hub_error(e, endpoint) from None
    return PushResult(repo_id, upload.kind, info.commit_url, len(additions), len(stale), upload.records)
