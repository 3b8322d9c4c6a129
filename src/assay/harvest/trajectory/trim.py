"""``trajectory_trim_idle``: cut the idle head and tail of an episode (the operator not yet moving, or done).

A frame is idle when neither the state nor the action changes by more than ``eps`` (any dimension) from the frame
before. The leading and trailing runs of idle frames longer than ``min_idle`` are cut, keeping ``keep`` idle frames
at each end; the episode's video spans move with the frames. Runs of idle frames inside the episode (operator
pauses) are measured, not cut: ``traj.pause_frames`` (the longest). Signals ``traj.idle_head`` and
``traj.idle_tail`` (frames cut), ``traj.length_before_trim``. Reasons: ``too_short`` (fewer than ``min_frames``
left), ``long_pause`` (a pause longer than ``max_pause_s`` seconds; None: pauses are kept).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from assay.core.record import Record
from assay.core.step import Batch, Step, StepContext, StepParams
from assay.harvest.trajectory.common import ACTION, STATE, column, fps, is_trajectory, slice_frames


class TrimIdleParams(StepParams):
    #: a change below this (state and action, any dimension, per frame) is no motion
    eps: float = Field(1e-3, ge=0)
    #: idle runs at either end shorter than this many frames are left alone
    min_idle: int = Field(10, ge=1)
    #: idle frames kept at each end after cutting
    keep: int = Field(2, ge=0)
    #: episodes shorter than this after trimming are dropped
    min_frames: int = Field(10, ge=1)
    #: drop episodes with a pause longer than this (seconds); None keeps them
    max_pause_s: float | None = Field(None, gt=0)


class TrajectoryTrimIdle(Step):
    """Trim idle frames at the start and end of episodes; measure pauses inside."""

    name = "trajectory_trim_idle"
    version = "1"
    Params: ClassVar = TrimIdleParams

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        for r in batch:
            if r.drop is None and is_trajectory(r):
                self._trim(r)
        return batch

    def _trim(self, record: Record) -> None:
        p: TrimIdleParams = self.params  # type: ignore[assignment]
        state, action = column(record, STATE), column(record, ACTION)
        ref = state if state is not None else action
        if ref is None or len(ref) < 2:
            return
        n = len(ref)
        idle = np.ones(n - 1, dtype=bool)
        for arr in (state, action):
            if arr is not None:
                idle &= np.abs(np.diff(arr, axis=0)).max(axis=1) <= p.eps
        # moving[i]: frame i+1 differs from frame i
        head = int(np.argmax(~idle)) if (~idle).any() else n - 1
        tail = int(np.argmax(~idle[::-1])) if (~idle).any() else 0
        runs, cur = [], 0
        for m in idle[head: n - 1 - tail]:
            cur = cur + 1 if m else 0
            runs.append(cur)
        pause = max(runs, default=0)
        cut_head = max(0, head - p.keep) if head >= p.min_idle else 0
        cut_tail = max(0, tail - p.keep) if tail >= p.min_idle else 0
        record.signals["traj.pause_frames"] = int(pause)
        record.signals["traj.idle_head"] = cut_head
        record.signals["traj.idle_tail"] = cut_tail
        if cut_head or cut_tail:
            record.signals["traj.length_before_trim"] = n
            record.content = slice_frames(record.content, cut_head, n - cut_tail)
            record.meta["length"] = n - cut_head - cut_tail
            self.count("frames_trimmed", cut_head + cut_tail)
            self.count("episodes_trimmed")
        if n - cut_head - cut_tail < p.min_frames:
            self.reject(record, "too_short")
        elif p.max_pause_s is not None and fps(record) > 0 and pause / fps(record) > p.max_pause_s:
            self.reject(record, "long_pause")
