"""Checks that compare episodes with each other (global steps: collect per shard, reduce once, apply per shard).

* ``trajectory_length_outliers``: episode lengths far from the dataset's median, in robust units: ``traj.length_z``
  = |length − median| / max(1.4826·MAD, ``min_spread`` × median). Reasons ``too_long`` / ``too_short_episode``.
* ``trajectory_dedup``: near-duplicate episodes. Each episode's signature is its state (and action) trajectory
  resampled to ``points`` instants of normalised time, every dimension divided by its spread over the dataset;
  two episodes whose signatures differ by less than ``threshold`` (root mean square) are duplicates (a demo
  recorded or uploaded twice, a copy with noise). The first of a cluster in (source, episode) order is kept; the
  others are dropped with reason ``near_duplicate`` and ``traj.duplicate_of`` (the kept record's id);
  ``traj.nearest`` is every episode's distance to its nearest other one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

import numpy as np
from pydantic import Field

from assay.core.record import Record
from assay.core.step import Batch, GlobalStep, StepContext, StepParams
from assay.harvest.trajectory.common import ACTION, STATE, column, is_trajectory, length


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _read_shards(d: Path, num_shards: int) -> list[Any]:
    out = []
    for k in range(num_shards):
        p = d / f"shard-{k:05d}.json"
        if p.exists():
            out.extend(json.loads(p.read_text()))
    return out


class _EpisodeGlobal(GlobalStep):
    """Collect one small summary per episode, decide in reduce, apply the decisions by record id."""

    def episode_summary(self, record: Record) -> Any:
        raise NotImplementedError

    def decisions(self, summaries: list[Any]) -> dict[str, dict[str, Any]]:
        """record id → {"signals": {...}, "drop": reason or None}"""
        raise NotImplementedError

    def collect(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        rows = []
        for batch in batches:
            for r in batch:
                if r.drop is None and is_trajectory(r):
                    rows.append(self.episode_summary(r))
            yield batch
        _write_json(ctx.state_dir(self, self.index) / f"shard-{ctx.shard:05d}.json", rows)

    def reduce(self, ctx: StepContext) -> None:
        d = ctx.state_dir(self, self.index)
        _write_json(d / "decisions.json", self.decisions(_read_shards(d, ctx.num_shards)))

    def apply(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        decided = json.loads((ctx.state_dir(self, self.index) / "decisions.json").read_text())
        for batch in batches:
            for r in batch:
                d = decided.get(r.id)
                if d is None or r.drop is not None:
                    continue
                r.signals.update(d["signals"])
                if d.get("drop"):
                    self.reject(r, d["drop"])
            yield batch


class LengthParams(StepParams):
    #: drop episodes more than this many robust spreads from the median length
    max_z: float = Field(4.0, gt=0)
    #: the spread is at least this fraction of the median (lengths all equal would make any difference infinite)
    min_spread: float = Field(0.1, gt=0)


class TrajectoryLengthOutliers(_EpisodeGlobal):
    """Drop episodes whose length is far from the dataset's median (robust z-score)."""

    name = "trajectory_length_outliers"
    version = "1"
    Params: ClassVar = LengthParams

    def episode_summary(self, record: Record) -> Any:
        return [record.id, length(record)]

    def decisions(self, summaries: list[Any]) -> dict[str, dict[str, Any]]:
        if not summaries:
            return {}
        p: LengthParams = self.params  # type: ignore[assignment]
        lengths = np.array([n for _, n in summaries], dtype=np.float64)
        med = float(np.median(lengths))
        spread = max(1.4826 * float(np.median(np.abs(lengths - med))), p.min_spread * med, 1.0)
        out = {}
        for rid, n in summaries:
            z = abs(n - med) / spread
            drop = None
            if z > p.max_z:
                drop = "too_long" if n > med else "too_short_episode"
            out[rid] = {"signals": {"traj.length_z": round(z, 3), "traj.length_median": med}, "drop": drop}
        return out


class DedupParams(StepParams):
    #: signatures closer than this (RMS over points and dimensions, in units of each dimension's spread) are duplicates
    threshold: float = Field(0.05, gt=0)
    #: instants the trajectories are resampled to
    points: int = Field(32, ge=4)
    #: the columns compared
    keys: list[str] = Field(default_factory=lambda: [STATE, ACTION])


class TrajectoryDedup(_EpisodeGlobal):
    """Drop near-duplicate episodes (resampled state/action trajectories closer than a threshold)."""

    name = "trajectory_dedup"
    version = "1"
    Params: ClassVar = DedupParams

    def episode_summary(self, record: Record) -> Any:
        p: DedupParams = self.params  # type: ignore[assignment]
        parts = []
        for key in p.keys:
            arr = column(record, key)
            if arr is None or len(arr) < 2 or not np.isfinite(arr).all():
                continue
            t = np.linspace(0, 1, len(arr))
            grid = np.linspace(0, 1, p.points)
            parts.append(np.stack([np.interp(grid, t, arr[:, d]) for d in range(arr.shape[1])], axis=1))
        sig = np.concatenate(parts, axis=1).tolist() if parts else None
        order = [str(record.meta.get("source", "")), int(record.content.get("episode_index", 0)), record.id]
        return [record.id, order, sig]

    def decisions(self, summaries: list[Any]) -> dict[str, dict[str, Any]]:
        p: DedupParams = self.params  # type: ignore[assignment]
        rows = sorted((s for s in summaries if s[2] is not None), key=lambda s: tuple(s[1]))
        if not rows:
            return {}
        shapes = {np.asarray(s[2]).shape for s in rows}
        out: dict[str, dict[str, Any]] = {}
        for shape in shapes:  # only episodes with the same columns are comparable
            group = [s for s in rows if np.asarray(s[2]).shape == shape]
            sigs = np.stack([np.asarray(s[2], dtype=np.float64) for s in group])  # (E, points, dims)
            spread = sigs.reshape(-1, sigs.shape[-1]).std(axis=0)
            sigs = sigs / np.maximum(spread, 1e-6)
            flat = sigs.reshape(len(group), -1)
            sq = (flat ** 2).sum(axis=1)
            d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * flat @ flat.T, 0) / flat.shape[1]
            dist = np.sqrt(d2)
            np.fill_diagonal(dist, np.inf)
            kept: list[int] = []
            for i, s in enumerate(group):
                near = float(dist[i].min()) if len(group) > 1 else float("inf")
                sig: dict[str, Any] = {"traj.nearest": round(near, 4) if np.isfinite(near) else None}
                dup = next((k for k in kept if dist[i, k] < p.threshold), None)
                if dup is None:
                    kept.append(i)
                    out[s[0]] = {"signals": sig, "drop": None}
                else:
                    sig["traj.duplicate_of"] = group[dup][0]
                    out[s[0]] = {"signals": sig, "drop": "near_duplicate"}
        return out
