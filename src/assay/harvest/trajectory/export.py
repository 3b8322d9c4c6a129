"""``lerobot_export``: write the episodes that reach this step as a LeRobot v3 dataset in the run folder.

A global step, so that one dataset gathers every shard's episodes: ``collect`` keeps each shard's episodes (as
Assay records) in the step's state folder, ``reduce`` writes them in shard order as ``OUT/lerobot/`` (``path``;
written under a temporary name and renamed, so a killed run leaves no half dataset and a rerun writes it afresh),
``apply`` notes each record's new ``meta["lerobot_episode_index"]``. Each output episode row of
``meta/episodes`` carries the record's id, source, source episode, lineage and signals (``assay/…`` columns), so the
dataset's episodes join back to the run's records and to the drops in ``rejected/``.

The records also go on to the run's own output (``data/``), as with every step. For a run whose output folder is on
object storage the dataset is written to this machine's state folder for the run (global steps keep local state).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import ClassVar, Iterable, Iterator

from pydantic import Field

from assay.core.errors import ErrorLog
from assay.core.record import Record
from assay.core.step import Batch, GlobalStep, StepContext, StepParams
from assay.harvest.trajectory.common import is_trajectory
from assay.harvest.trajectory.episodes import _write_json


class ExportParams(StepParams):
    #: the dataset's folder, relative to the run folder (or absolute)
    path: str = Field("lerobot", min_length=1)


class LeRobotExport(GlobalStep):
    """Write the kept episodes as a LeRobot v3 dataset (OUT/lerobot), with per-episode lineage."""

    name = "lerobot_export"
    version = "1"
    Params: ClassVar = ExportParams

    def _target(self, ctx: StepContext) -> Path:
        p = Path(self.params.path)  # type: ignore[attr-defined]
        return p if p.is_absolute() else ctx.files_beside_run(self, "a LeRobot dataset", "path") / p

    def collect(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        d = ctx.state_dir(self, self.index)
        tmp = d / f".tmp-shard-{ctx.shard:05d}.jsonl"
        with open(tmp, "wb") as f:
            for batch in batches:
                for r in batch:
                    if r.drop is None and is_trajectory(r):
                        f.write(r.to_json() + b"\n")
                yield batch
        tmp.replace(d / f"shard-{ctx.shard:05d}.jsonl")

    def reduce(self, ctx: StepContext) -> None:
        from assay.io.jsonl import read_jsonl
        from assay.trajectories.lerobot import write_records

        d = ctx.state_dir(self, self.index)
        records: list[Record] = []
        errors = ErrorLog()
        for k in range(ctx.num_shards):
            p = d / f"shard-{k:05d}.jsonl"
            if p.exists():
                records.extend(read_jsonl(str(p), errors))
        target = self._target(ctx)
        for old in target.parent.glob(f".tmp-{target.name}-*"):  # a killed earlier attempt's leftovers
            shutil.rmtree(old, ignore_errors=True)
        mapping: dict[str, int] = {}
        if records:
            write_records(records, target, overwrite=True)
            mapping = {r.id: i for i, r in enumerate(records)}
        _write_json(d / "episodes.json", mapping)
        self.count("episodes_exported", len(records))

    def apply(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        mapping = json.loads((ctx.state_dir(self, self.index) / "episodes.json").read_text())
        for batch in batches:
            for r in batch:
                if r.id in mapping and r.drop is None:
                    r.meta["lerobot_episode_index"] = mapping[r.id]
            yield batch
