"""Co-training mixes in the Mobile ALOHA sense: a small set of curated target-task demonstrations mixed with a
larger prior dataset at a stated ratio.

Mobile ALOHA (Fu et al. 2024) trains on its ~50 target demonstrations and a large static-ALOHA prior by drawing
every batch half from each. Written as one dataset, that is: the target episodes repeated until they make up
``target_fraction`` of the mix (counted in frames, what a sampler draws, or in episodes), and the prior taken with
every task given the same share (``balance_tasks``: a prior dominated by one task does not drown the others; a task
with too few episodes is repeated, one with too many subsampled), all in a seeded random order.

Every mixed episode keeps its record's lineage and says where it came from: ``meta["mix"] = {"part": "target" |
"prior", "copy": k}``; a repeated episode gets a new id derived from the original's (``derive_id``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

import numpy as np

from assay.core.record import Record, derive_id


@dataclass
class MixPlan:
    """What a mix holds: episodes and frames per part and per task."""

    target_episodes: int
    prior_episodes: int
    target_frames: int
    prior_frames: int
    prior_tasks: dict[str, int]

    @property
    def target_fraction_frames(self) -> float:
        total = self.target_frames + self.prior_frames
        return self.target_frames / total if total else 0.0

    def as_dict(self) -> dict:
        return {"target_episodes": self.target_episodes, "prior_episodes": self.prior_episodes,
                "target_frames": self.target_frames, "prior_frames": self.prior_frames,
                "target_fraction_frames": round(self.target_fraction_frames, 4), "prior_tasks": self.prior_tasks}


def _frames(r: Record) -> int:
    frames = r.content.get("frames") or {}
    return len(next(iter(frames.values()), []))


def _copy(r: Record, part: str, k: int) -> Record:
    c = r.copy()
    c.meta = dict(r.meta)
    c.meta["mix"] = {"part": part, "copy": k, "of": r.id}
    if k:
        c.id = derive_id(r.id, "cotrain_mix", k)
    return c


def balanced_prior(prior: list[Record], episodes: int, rng: np.random.Generator) -> list[Record]:
    """``episodes`` prior episodes with every task given the same share (repeating or subsampling within a task)."""
    by_task: dict[str, list[Record]] = defaultdict(list)
    for r in prior:
        by_task[str(r.content.get("task", ""))].append(r)
    tasks = sorted(by_task)
    out: list[Record] = []
    for i, task in enumerate(tasks):
        share = episodes // len(tasks) + (1 if i < episodes % len(tasks) else 0)
        pool = by_task[task]
        order = rng.permutation(len(pool))
        for j in range(share):
            out.append(_copy(pool[order[j % len(pool)]], "prior", j // len(pool)))
    return out


def cotrain_mix(target: list[Record], prior: list[Record], *, target_fraction: float = 0.5,
                balance_tasks: bool = True, unit: Literal["frames", "episodes"] = "frames",
                prior_episodes: int | None = None, seed: int = 0) -> tuple[list[Record], MixPlan]:
    """Mix ``target`` (small, curated) into ``prior`` so target makes ``target_fraction`` of the result."""
    if not 0 < target_fraction < 1:
        raise ValueError("target_fraction must be strictly between 0 and 1")
    if not target or not prior:
        raise ValueError("both the target and the prior need at least one episode")
    rng = np.random.default_rng(seed)
    n_prior = prior_episodes or len(prior)
    prior_part = balanced_prior(prior, n_prior, rng) if balance_tasks else \
        [_copy(prior[i % len(prior)], "prior", i // len(prior)) for i in range(n_prior)]
    size = (lambda r: _frames(r)) if unit == "frames" else (lambda r: 1)  # noqa: E731
    prior_size = sum(size(r) for r in prior_part)
    want = target_fraction / (1 - target_fraction) * prior_size  # target size that gives the fraction
    order = rng.permutation(len(target))
    target_part: list[Record] = []
    have, k = 0, 0
    while have < want or not target_part:
        r = target[order[k % len(target)]]
        # stop where the fraction is closest: adding this episode must bring us nearer to `want`
        if target_part and abs(have + size(r) - want) > abs(have - want):
            break
        target_part.append(_copy(r, "target", k // len(target)))
        have += size(r)
        k += 1
    mixed = target_part + prior_part
    mixed = [mixed[i] for i in rng.permutation(len(mixed))]
    tasks: dict[str, int] = defaultdict(int)
    for r in prior_part:
        tasks[str(r.content.get("task", ""))] += 1
    plan = MixPlan(len(target_part), len(prior_part), sum(_frames(r) for r in target_part),
                   sum(_frames(r) for r in prior_part), dict(sorted(tasks.items())))
    return mixed, plan
