"""Per-episode trajectory filters (scoring apart from deciding, as every :class:`~assay.core.step.Filter`).

* ``trajectory_timing``: timestamps against the declared fps. Signals ``traj.dt_max`` (largest step, in frame
  periods: 2.0 = one frame missing), ``traj.dt_jitter`` (robust std of the steps: 1.4826 × their median absolute deviation, in frame periods), ``traj.dt_bad``
  (steps ≤ 0: duplicated or reordered timestamps). Reasons ``timestamps_not_increasing``, ``timestamp_gap``,
  ``timestamp_jitter``.
* ``trajectory_frozen``: stale data. ``traj.duplicate_rows`` (consecutive frames identical in state, action and
  timestamp: a logger that wrote a row twice), ``traj.frozen_state_run`` (longest run of frames whose state does not
  change while the commanded action does: a sensor that stopped updating), ``traj.frozen_video_run`` (longest run
  of identical camera frames while the state moves: a camera that stopped; decodes the episode's videos). Reasons
  ``duplicated_frames``, ``frozen_state``, ``frozen_video``.
* ``trajectory_kinematics``: ``traj.action_jump_ratio`` (largest one-frame change of an arm joint's command
  divided by the median change of that joint over the ``window`` frames around it: a teleport or a glitch stands
  alone, a fast but smooth move does not), ``traj.action_jump`` (its size, in units a second),
  ``traj.velocity_ratio`` / ``traj.accel_ratio`` (the same for the state's first and second differences),
  ``traj.max_speed``, ``traj.non_finite`` (NaN/inf values). Reasons ``non_finite``, ``action_jump``,
  ``velocity_outlier``, ``acceleration_outlier``; a change counts only when it is also fast in absolute terms
  (``min_jump_speed``, ``min_velocity``, ``min_accel``), so a still episode's tiny noise is none.
* ``trajectory_joint_range``: values outside ``limits`` (per dimension name) or ``max_abs`` (any joint, default 2π);
  ``traj.out_of_range`` (frames with a value outside). Reason ``joint_out_of_range``.
* ``trajectory_gripper``: ``traj.gripper_range`` (the largest max−min of the gripper action dims, found by name).
  Reason ``gripper_never_moves``.
* ``trajectory_success``: ``traj.success`` (1/0) from ``next.success``, else from ``next.reward`` reaching
  ``success_reward``; ``traj.max_reward``. Reason ``failed`` (and ``no_outcome`` when neither column exists and
  ``require_outcome`` is set).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from assay.core.record import Record
from assay.core.step import Filter, FilterParams
from assay.harvest.trajectory.common import (ACTION, STATE, column, fps, gripper_dims, is_trajectory, longest_run,
                                             names, robust_scale)


class TimingParams(FilterParams):
    #: largest allowed step between timestamps, in frame periods (2.0 = a whole frame missing)
    max_gap: float = Field(1.95, gt=1.0)
    #: largest allowed jitter of the steps (robust std), in frame periods
    max_jitter: float = Field(0.1, gt=0)


class TrajectoryTiming(Filter):
    """Timestamp gaps, jitter and non-increasing timestamps against the declared fps."""

    name = "trajectory_timing"
    version = "1"
    Params: ClassVar = TimingParams

    def score(self, record: Record) -> None:
        if not is_trajectory(record):
            return
        ts = column(record, "timestamp")
        rate = fps(record)
        if ts is None or len(ts) < 2 or rate <= 0:
            return
        dt = np.diff(ts[:, 0]) * rate
        record.signals["traj.dt_max"] = round(float(dt.max()), 4)
        # robust: one gap is no jitter (1.4826 × median absolute deviation ≈ std for jitter that is everywhere)
        record.signals["traj.dt_jitter"] = round(float(1.4826 * np.median(np.abs(dt - np.median(dt)))), 4)
        record.signals["traj.dt_bad"] = int((dt <= 1e-6).sum())

    def decide(self, record: Record) -> str | None:
        s = record.signals
        if "traj.dt_max" not in s:
            return None
        p: TimingParams = self.params  # type: ignore[assignment]
        if s["traj.dt_bad"] > 0:
            return "timestamps_not_increasing"
        if s["traj.dt_max"] > p.max_gap:
            return "timestamp_gap"
        if s["traj.dt_jitter"] > p.max_jitter:
            return "timestamp_jitter"
        return None


class FrozenParams(FilterParams):
    #: consecutive identical rows (state, action and timestamp) allowed
    max_duplicate_rows: int = Field(0, ge=0)
    #: frames the state may stay identical while the action changes
    max_frozen_state: int = Field(5, ge=1)
    #: frames the camera picture may stay identical while the state moves (0: videos not checked)
    max_frozen_video: int = Field(5, ge=0)
    #: a state change below this (any dim) counts as no change
    state_eps: float = Field(1e-6, ge=0)
    #: a mean absolute grey-level difference below this counts as an identical frame (0-255 scale)
    pixel_eps: float = Field(0.05, ge=0)


class TrajectoryFrozen(Filter):
    """Duplicated rows, a state that stops updating, a camera that freezes while the robot moves."""

    name = "trajectory_frozen"
    version = "1"
    Params: ClassVar = FrozenParams

    def score(self, record: Record) -> None:
        if not is_trajectory(record):
            return
        p: FrozenParams = self.params  # type: ignore[assignment]
        state, action, ts = column(record, STATE), column(record, ACTION), column(record, "timestamp")
        if state is None or len(state) < 2:
            return
        still = np.abs(np.diff(state, axis=0)).max(axis=1) <= p.state_eps
        dup = still.copy()
        if action is not None:
            dup &= np.abs(np.diff(action, axis=0)).max(axis=1) == 0
        if ts is not None:
            dup &= np.diff(ts[:, 0]) == 0
        record.signals["traj.duplicate_rows"] = int(dup.sum())
        if action is not None:
            acting = np.abs(np.diff(action, axis=0)).max(axis=1) > p.state_eps
            record.signals["traj.frozen_state_run"] = longest_run(still & acting & ~dup)
        videos = record.content.get("videos") or {}
        if p.max_frozen_video and videos:
            moving = ~still
            worst = 0
            for span in videos.values():
                diffs = _frame_diffs(span, fps(record), len(state))
                if diffs is None:
                    record.signals["traj.video_error"] = 1
                    continue
                worst = max(worst, longest_run((diffs <= p.pixel_eps) & moving))
            record.signals["traj.frozen_video_run"] = worst

    def decide(self, record: Record) -> str | None:
        s = record.signals
        p: FrozenParams = self.params  # type: ignore[assignment]
        if s.get("traj.duplicate_rows", 0) > p.max_duplicate_rows:
            return "duplicated_frames"
        if s.get("traj.frozen_state_run", 0) > p.max_frozen_state:
            return "frozen_state"
        if p.max_frozen_video and s.get("traj.frozen_video_run", 0) > p.max_frozen_video:
            return "frozen_video"
        if s.get("traj.video_error"):
            return "undecodable_video"
        return None


def _frame_diffs(span: dict, rate: float, n: int) -> np.ndarray | None:
    """Mean absolute grey difference of each frame to the previous one (n-1 values), or None if undecodable."""
    import av

    from assay.trajectories.lerobot import VideoSpanReader

    try:
        frames = VideoSpanReader.frames(span["path"], float(span["from_timestamp"]), float(span["to_timestamp"]), rate)
    except (av.FFmpegError, OSError, ValueError, KeyError):
        return None
    if len(frames) < 2:
        return None
    grey = np.stack([f.astype(np.float32).mean(axis=2) for f in frames])
    diffs = np.abs(np.diff(grey, axis=0)).mean(axis=(1, 2))
    if len(diffs) < n - 1:  # fewer frames than rows: the missing ones count as frozen
        diffs = np.concatenate([diffs, np.zeros(n - 1 - len(diffs))])
    return diffs[: n - 1]


class KinematicsParams(FilterParams):
    #: a one-frame action change this many times the typical change around it is a jump
    max_action_ratio: float = Field(60.0, gt=1)
    #: ... when it is also at least this fast (units a second)
    min_jump_speed: float = Field(3.0, ge=0)
    #: the same for the state's velocity (first difference) and acceleration (second difference)
    max_velocity_ratio: float = Field(60.0, gt=1)
    min_velocity: float = Field(3.0, ge=0)
    max_accel_ratio: float = Field(60.0, gt=1)
    min_accel: float = Field(300.0, ge=0)
    #: frames around a change that tell its typical size
    window: int = Field(11, ge=3)
    #: smallest typical change (per frame), so still joints do not make every change infinite
    scale_floor: float = Field(1e-3, gt=0)


def _spike(delta: np.ndarray, rate: float, floor: float, min_speed: float, window: int) -> tuple[float, float]:
    """(largest ratio of a one-frame change to the typical change around it, that change in units a second).

    The typical change is the median |change| of the joint over ``window`` frames centred on the frame: a fast but
    smooth move has fast neighbours (ratio ~1); a teleport, a spike or a glitch stands alone (ratio ≫ 1). Changes
    slower than ``min_speed`` (units a second) never count."""
    from scipy.ndimage import median_filter

    if len(delta) < 3:
        return 0.0, 0.0
    mag = np.abs(delta)
    local = median_filter(mag, size=(min(window, len(mag)) | 1, 1), mode="nearest")
    ratio = mag / np.maximum(local, floor)
    speed = mag * rate
    ratio = np.where(speed >= min_speed, ratio, 0.0)
    i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    return float(ratio[i]), float(speed[i])


class TrajectoryKinematics(Filter):
    """Action discontinuities, velocity and acceleration outliers, NaN/inf values."""

    name = "trajectory_kinematics"
    version = "1"
    Params: ClassVar = KinematicsParams

    def score(self, record: Record) -> None:
        if not is_trajectory(record):
            return
        p: KinematicsParams = self.params  # type: ignore[assignment]
        rate = fps(record) or 1.0
        state, action = column(record, STATE), column(record, ACTION)
        bad = 0
        for arr in (state, action):
            if arr is not None:
                bad += int((~np.isfinite(arr)).any(axis=1).sum())
        record.signals["traj.non_finite"] = bad
        if bad:
            return
        if action is not None and len(action) > 3:
            g = set(gripper_dims(record, ACTION))
            arm = [i for i in range(action.shape[1]) if i not in g] or list(range(action.shape[1]))
            ratio, speed = _spike(np.diff(action[:, arm], axis=0), rate, p.scale_floor, p.min_jump_speed, p.window)
            record.signals["traj.action_jump_ratio"] = round(ratio, 2)
            record.signals["traj.action_jump"] = round(speed, 4)
        if state is not None and len(state) > 4:
            g = set(gripper_dims(record, STATE))
            arm = [i for i in range(state.shape[1]) if i not in g] or list(range(state.shape[1]))
            vel = np.diff(state[:, arm], axis=0)
            ratio, _ = _spike(vel, rate, p.scale_floor, p.min_velocity, p.window)
            record.signals["traj.velocity_ratio"] = round(ratio, 2)
            # acceleration = second difference × rate²: compare |Δ²| × rate against min_accel / rate
            ratio, _ = _spike(np.diff(vel, axis=0), rate, p.scale_floor, p.min_accel / rate, p.window)
            record.signals["traj.accel_ratio"] = round(ratio, 2)
        record.signals["traj.max_speed"] = round(float(np.abs(np.diff(state, axis=0)).max() * rate), 4) \
            if state is not None and len(state) > 1 else 0.0

    def decide(self, record: Record) -> str | None:
        s = record.signals
        p: KinematicsParams = self.params  # type: ignore[assignment]
        if s.get("traj.non_finite"):
            return "non_finite"
        if s.get("traj.action_jump_ratio", 0) > p.max_action_ratio:
            return "action_jump"
        if s.get("traj.velocity_ratio", 0) > p.max_velocity_ratio:
            return "velocity_outlier"
        if s.get("traj.accel_ratio", 0) > p.max_accel_ratio:
            return "acceleration_outlier"
        return None


class JointRangeParams(FilterParams):
    #: per dimension name (observation.state / action names): [low, high]
    limits: dict[str, tuple[float, float]] = Field(default_factory=dict)
    #: any joint whose |value| exceeds this is out of range (radians: 2π); None: only ``limits``
    max_abs: float | None = Field(6.2832, gt=0)
    #: the columns checked
    keys: list[str] = Field(default_factory=lambda: [STATE, ACTION])


class TrajectoryJointRange(Filter):
    """Joint values outside their limits (named limits, else a bound on |value|)."""

    name = "trajectory_joint_range"
    version = "1"
    Params: ClassVar = JointRangeParams

    def score(self, record: Record) -> None:
        if not is_trajectory(record):
            return
        p: JointRangeParams = self.params  # type: ignore[assignment]
        out = np.zeros(0, dtype=bool)
        for key in p.keys:
            arr = column(record, key)
            if arr is None:
                continue
            bad = np.zeros(len(arr), dtype=bool)
            if p.max_abs is not None:
                bad |= (np.abs(arr) > p.max_abs).any(axis=1)
            for i, n in enumerate(names(record, key)):
                if n in p.limits and i < arr.shape[1]:
                    lo, hi = p.limits[n]
                    bad |= (arr[:, i] < lo) | (arr[:, i] > hi)
            out = bad if len(out) == 0 else (out | bad[: len(out)])
        record.signals["traj.out_of_range"] = int(out.sum())

    def decide(self, record: Record) -> str | None:
        return "joint_out_of_range" if record.signals.get("traj.out_of_range", 0) > 0 else None


class GripperParams(FilterParams):
    #: the gripper must move by at least this much (max − min of its action) in an episode
    min_range: float = Field(0.1, gt=0)
    #: action dims of the grippers; empty: those whose name contains "gripper"
    dims: list[int] = Field(default_factory=list)


class TrajectoryGripper(Filter):
    """Episodes whose gripper never opens or closes (a manipulation demo that never grasps)."""

    name = "trajectory_gripper"
    version = "1"
    Params: ClassVar = GripperParams

    def score(self, record: Record) -> None:
        if not is_trajectory(record):
            return
        p: GripperParams = self.params  # type: ignore[assignment]
        action = column(record, ACTION)
        dims = gripper_dims(record, ACTION, p.dims)
        if action is None or not dims:
            return
        dims = [d for d in dims if d < action.shape[1]]
        rng = action[:, dims].max(axis=0) - action[:, dims].min(axis=0)
        record.signals["traj.gripper_range"] = round(float(rng.max()), 4)

    def decide(self, record: Record) -> str | None:
        r = record.signals.get("traj.gripper_range")
        return "gripper_never_moves" if r is not None and r < self.params.min_range else None  # type: ignore[attr-defined]


class SuccessParams(FilterParams):
    #: the reward (``next.reward``) that means success when there is no ``next.success`` column
    success_reward: float = 4.0
    #: drop episodes that tell neither success nor reward
    require_outcome: bool = False


class TrajectorySuccess(Filter):
    """Keep successful episodes: ``next.success``, else the environment's reward reaching ``success_reward``."""

    name = "trajectory_success"
    version = "1"
    Params: ClassVar = SuccessParams

    def score(self, record: Record) -> None:
        if not is_trajectory(record):
            return
        p: SuccessParams = self.params  # type: ignore[assignment]
        success, reward = column(record, "next.success"), column(record, "next.reward")
        if reward is not None:
            record.signals["traj.max_reward"] = float(np.nanmax(reward)) if np.isfinite(reward).any() else 0.0
        if success is not None:
            record.signals["traj.success"] = int(bool(success.any()))
        elif reward is not None:
            record.signals["traj.success"] = int(record.signals["traj.max_reward"] >= p.success_reward)

    def decide(self, record: Record) -> str | None:
        if not is_trajectory(record):
            return None
        s = record.signals.get("traj.success")
        if s is None:
            return "no_outcome" if self.params.require_outcome else None  # type: ignore[attr-defined]
        return None if s else "failed"
