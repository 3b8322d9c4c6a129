"""Where the global steps of a run keep their state, and how a job on any machine gets at it.

A global step (``minhash_dedup``, ``exact_dedup``, ``quality_select``…) writes per-shard state in ``collect``,
combines it in ``reduce`` and reads the outcome in ``apply``. The three phases are separate jobs that may run on
different workers of different machines, so the state lives where every worker sees it: by default in
``OUT/.assay/state/`` on the output's own filesystem (a local folder, or ``s3://bucket/run/.assay/state/``), or, with
``--state-dir URL``, in ``URL/<run key>/`` (the run key is a hash of the output URL, so runs never share state).

The steps themselves work on a local folder (they memory-map numpy files). When the state folder is on a local
filesystem (the output is on this machine's disk or on a shared mount) the steps work in it directly: nothing is
copied. When it is on object storage each job works in a private temporary folder (under ``$TMPDIR``) and:

- ``collect`` starts empty and uploads the files it wrote when it succeeds (before the job's marker, which is what
  makes a job count as done);
- ``reduce`` downloads the step's whole folder, runs, uploads the files it wrote or changed and lists them in
  ``_reduce-files.json`` (last);
- ``apply`` downloads what :meth:`GlobalStep.apply_state` names for its shard (the dedup steps: their shard's
  decisions file), or else every file reduce listed.

A phase that fails uploads nothing; a retried or resumed phase writes the same names with the same content.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import orjson

from assay.core.errors import AssayError
from assay.core.step import GlobalStep, StepContext
from assay.io.folder import Folder
from assay.run import layout

#: written last by a remote reduce: the names of the files it wrote (what apply fetches by default)
REDUCE_FILES = "_reduce-files.json"


def run_key(run: Folder) -> str:
    """A short, stable name for a run (its output URL hashed), for its folder inside a shared ``--state-dir``."""
    return hashlib.sha1(run.url().encode()).hexdigest()[:16]


def state_folder(run: Folder, state_url: str | None = None) -> Folder:
    """The folder holding the state of every global step of the run whose output folder is ``run``."""
    if state_url is None:
        return layout.state_folder(run)
    return Folder(state_url).child(run_key(run))


def _local_files(folder: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of the files below ``folder``, without temporary (dot) files."""
    found: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            st = p.stat()
            found[p.relative_to(folder).as_posix()] = (st.st_size, st.st_mtime_ns)
    return found


class StepState:
    """The state of a job's global steps: :attr:`root` is the local folder the job's steps use
    (``StepContext.state_root``); :meth:`fetch` before a phase and :meth:`publish` after it keep it in step with
    the shared folder when that is not on a local filesystem. Use as a context manager (removes the local copy)."""

    def __init__(self, shared: Folder) -> None:
        self.shared = shared
        self.direct = shared.is_local  # the steps work in the shared folder itself
        self.root = Path(shared.root) if self.direct else Path(tempfile.mkdtemp(prefix="assay-state-"))
        self._fetched: dict[str, dict[str, tuple[int, int]]] = {}

    def __enter__(self) -> "StepState":
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.direct:
            shutil.rmtree(self.root, ignore_errors=True)

    def in_shared_terms(self, e: AssayError) -> AssayError:
        """A step's error that names the local copy, naming the shared folder instead (what the user knows)."""
        if self.direct:
            return e
        return AssayError(str(e).replace(str(self.root), self.shared.display))

    def _dirs(self, ctx: StepContext, step: GlobalStep) -> tuple[Path, Folder]:
        local = ctx.state_dir(step, step.index)
        return local, self.shared.child(local.name)

    def fetch(self, ctx: StepContext, step: GlobalStep, phase: str) -> None:
        """Download what ``phase`` of ``step`` reads (nothing for collect)."""
        if self.direct or phase == "collect":
            return
        local, remote = self._dirs(ctx, step)
        if phase == "reduce":
            remote.fs.invalidate_cache()
            paths = list(remote.fs.find(remote.root))
        else:  # apply
            wanted = step.apply_state(ctx.shard)
            if wanted is None:
                listing = remote.path(REDUCE_FILES)
                if not remote.fs.exists(listing):
                    raise AssayError(f"{step.name}: no state from reduce in {remote.display}; did reduce run?")
                wanted = orjson.loads(remote.fs.cat_file(listing))
            paths = sorted({p for pattern in wanted for p in remote.glob(pattern)})
        base = remote.root.rstrip("/") + "/"
        rel = [p[len(base):] for p in paths if p.startswith(base)]
        rel = [r for r in rel if r and r != REDUCE_FILES and not any(s.startswith(".") for s in r.split("/"))]
        for r in rel:
            (local / r).parent.mkdir(parents=True, exist_ok=True)
        if rel:
            remote.fs.get([remote.path(r) for r in rel], [str(local / r) for r in rel])
        self._fetched[local.name] = _local_files(local)

    def publish(self, ctx: StepContext, step: GlobalStep, phase: str) -> None:
        """Upload what ``phase`` of ``step`` wrote (nothing for apply)."""
        if self.direct or phase == "apply":
            return
        local, remote = self._dirs(ctx, step)
        before = self._fetched.get(local.name, {})
        now = _local_files(local)
        written = sorted(r for r, sig in now.items() if before.get(r) != sig)
        if written:
            remote.fs.put([str(local / r) for r in written], [remote.path(r) for r in written])
        if phase == "reduce":
            from assay.run.jobs import _write_atomic

            _write_atomic(remote.fs, remote.path(REDUCE_FILES), orjson.dumps(written))
