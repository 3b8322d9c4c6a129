"""Plant known defects in copies of clean episodes, to measure what quality checks catch.

An episode here is ``(columns, frames)``: per-frame numpy arrays (``observation.state``, ``action``,
``timestamp``, ``next.reward``, …) and the camera frames (uint8 HWC). Each planter returns a damaged copy, the way
the defect shows up in real recordings:

=====================  ==============================================================================================
``frame_gap``          6 consecutive frames lost (rows and video frames gone, timestamps jump)
``timestamp_jitter``   timestamps jitter around the frame clock (std 0.3 frame periods)
``duplicated_frames``  10 rows written twice (state, action, timestamp and picture repeated)
``frozen_video``       the camera picture stops for 40 frames while the arm moves
``frozen_state``       the joint readings stop updating for 40 frames while commands go on
``action_jump``        a one-frame spike of 0.8 rad on one joint's command (a glitch in the leader arm)
``state_jump``         one joint's reading jumps by 0.6 rad and stays (an encoder slip)
``out_of_range``       one joint reads 2π too high for 30 frames (an encoder wrap)
``nan_values``         a few NaN readings
``gripper_static``     the gripper command never changes (the operator never closed the hand)
``idle_padding``       3 s of nothing before and after the task
``failed``             the task's reward never reaches success (the cube is dropped)
``truncated``          the recording stops at a quarter of the episode
``near_duplicate``     the same episode again with 1e-4 noise (uploaded twice)
=====================  ==============================================================================================
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

Columns = dict[str, np.ndarray]
Planter = Callable[[Columns, list[np.ndarray], int, np.random.Generator], tuple[Columns, list[np.ndarray]]]

STATE, ACTION = "observation.state", "action"


def _copy(cols: Columns, frames: list[np.ndarray]) -> tuple[Columns, list[np.ndarray]]:
    return {k: np.array(v, copy=True) for k, v in cols.items()}, list(frames)


def _moving_window(cols: Columns, span: int) -> int:
    """Start of the ``span``-frame window where the state moves most (so a freeze there is visible)."""
    state = cols[STATE]
    speed = np.abs(np.diff(state, axis=0)).sum(axis=1)
    if len(speed) <= span:
        return 0
    sums = np.convolve(speed, np.ones(span), mode="valid")
    return int(np.argmax(sums))


def _arm_joint(cols: Columns) -> int:
    return 1  # a shoulder (index 1: left_shoulder); not a gripper


def frame_gap(cols, frames, fps, rng):  # noqa: ANN001, ANN201
    c, f = _copy(cols, frames)
    k = len(f) // 2
    keep = np.r_[0:k, k + 6:len(f)]
    return {n: v[keep] for n, v in c.items()}, [f[i] for i in keep]


def timestamp_jitter(cols, frames, fps, rng):  # noqa: ANN001, ANN201
    c, f = _copy(cols, frames)
    n = len(f)
    jit = rng.normal(0, 0.3 / fps, n)
    jit[0] = 0.0
    c["timestamp"] = np.arange(n) / fps + np.clip(jit, -0.45 / fps, 0.45 / fps)
    return c, f


def duplicated_frames(cols, frames, fps, rng):  # noqa: ANN001, ANN201
    c, f = _copy(cols, frames)
    k = len(f) // 3
    idx = np.r_[0:k + 10, k:len(f)]
    c = {n: v[idx] for n, v in c.items()}
    return c, [f[i] for i in idx]


def frozen_video(cols, frames, fps, rng):  # noqa: ANN001, ANN201
    c, f = _copy(cols, frames)
    k = _moving_window(c, 40)
    for i in range(k, min(len(f), k + 40)):
        f[i] = f[k]
    return c, f


def frozen_state(cols, frames, fps, rng):  # noqa: ANN001, ANN201
    c, f = _copy(cols, frames)
    k = _moving_window(c, 40)
    c[STATE][k:k + 40] = c[STATE][k]
    return c, f


def action_jump(cols, frames, fps, rng):  # noqa: ANN001, ANN201
    c, f = _copy(cols, frames)
    k = len(f) // 2
    c[ACTION][k, _arm_joint(c)] += 0.8
    return c, f


def state_jump(cols, frames, fps, rng):  # noqa: ANN001, ANN201
    c, f = _copy(cols, frames)
    k = len(f) // 2
    c[STATE][k:, _arm_joint(c)] += 0.6
    return c, f


def out_of_range(cols, frames, fps, rng):  # noqa: ANN001, ANN201
    c, f = _copy(cols, frames)
    k = len(f) // 2
    c[STATE][k:k + 30, _arm_joint(c)] += 2 * np.pi
    return c, f


def nan_values(cols, frames, fps, rng):  # noqa: ANN001, ANN201
    c, f = _copy(cols, frames)
    k = len(f) // 2
    c[STATE][k:k + 3, 0] = np.nan
    return c, f


def gripper_static(cols, frames, fps, rng):  # noqa: ANN001, ANN201
    c, f = _copy(cols, frames)
    for d in (6, 13):
        if c[ACTION].shape[1] > d:
            c[ACTION][:, d] = c[ACTION][0, d]
            c[STATE][:, d] = c[STATE][0, d]
    return c, f


def idle_padding(cols, frames, fps, rng):  # noqa: ANN001, ANN201
    c, f = _copy(cols, frames)
    pad = 3 * fps
    idx = np.r_[np.zeros(pad, dtype=int), np.arange(len(f)), np.full(pad, len(f) - 1)]
    c = {n: v[idx] for n, v in c.items()}
    c["timestamp"] = np.arange(len(idx)) / fps
    if "next.reward" in c:
        c["next.reward"][:pad] = 0
    if "next.success" in c:
        c["next.success"][:pad] = False
    return c, [f[i] for i in idx]


def failed(cols, frames, fps, rng):  # noqa: ANN001, ANN201
    c, f = _copy(cols, frames)
    if "next.reward" in c:
        c["next.reward"] = np.minimum(c["next.reward"], 2.0)
    if "next.success" in c:
        c["next.success"][:] = False
    return c, f


def truncated(cols, frames, fps, rng):  # noqa: ANN001, ANN201
    c, f = _copy(cols, frames)
    n = max(20, len(f) // 4)
    return {k: v[:n] for k, v in c.items()}, f[:n]


def near_duplicate(cols, frames, fps, rng):  # noqa: ANN001, ANN201
    c, f = _copy(cols, frames)
    for key in (STATE, ACTION):
        c[key] = c[key] + rng.normal(0, 1e-4, c[key].shape)
    return c, f


DEFECTS: dict[str, Planter] = {
    "frame_gap": frame_gap, "timestamp_jitter": timestamp_jitter, "duplicated_frames": duplicated_frames,
    "frozen_video": frozen_video, "frozen_state": frozen_state, "action_jump": action_jump,
    "state_jump": state_jump, "out_of_range": out_of_range, "nan_values": nan_values,
    "gripper_static": gripper_static, "idle_padding": idle_padding, "failed": failed, "truncated": truncated,
    "near_duplicate": near_duplicate,
}


def episode_arrays(record: Any) -> tuple[Columns, list[np.ndarray], str]:
    """(columns, frames of its first camera, task) of an episode record read from a LeRobot dataset."""
    from assay.trajectories.lerobot import VideoSpanReader

    c = record.content
    cols = {k: np.asarray(v, dtype=np.float64 if k != "next.success" else bool) for k, v in c["frames"].items()
            if k not in ("frame_index",)}
    frames: list[np.ndarray] = []
    for span in (c.get("videos") or {}).values():
        frames = VideoSpanReader.frames(span["path"], float(span["from_timestamp"]), float(span["to_timestamp"]),
                                        float(c["fps"]))
        break
    return cols, frames, str(c.get("task", ""))


def plant(kind: str, cols: Columns, frames: list[np.ndarray], fps: int, seed: int = 0) -> tuple[Columns, list]:
    try:
        planter = DEFECTS[kind]
    except KeyError:
        raise ValueError(f"unknown defect {kind!r}; one of {', '.join(DEFECTS)}") from None
    return planter(cols, frames, fps, np.random.default_rng(seed))


def write_planted(records: list[Any], plan: list[tuple[int, str | None]], root: str, *, seed: int = 0,
                  overwrite: bool = True) -> list[dict[str, Any]]:
    """Write a LeRobot dataset at ``root`` whose episode i is ``records[plan[i][0]]`` with defect ``plan[i][1]``
    planted (None: a clean copy). Returns one label per episode: ``{"episode_index", "base", "defect"}``."""
    from assay.trajectories.lerobot import LeRobotWriter

    first = records[0]
    rate = int(round(float(first.content["fps"])))
    camera = next(iter(first.content.get("videos") or {}), None)
    writer = LeRobotWriter(root, rate, dict(first.meta["features"]), robot_type=first.meta.get("robot_type"),
                           overwrite=overwrite)
    cache: dict[int, tuple[Columns, list[np.ndarray], str]] = {}
    labels = []
    try:
        for i, (base, kind) in enumerate(plan):
            if base not in cache:
                cache[base] = episode_arrays(records[base])
            cols, frames, task = cache[base]
            if kind is not None:
                cols, frames = plant(kind, cols, frames, rate, seed + i)
            cols = dict(cols)
            if "timestamp" not in cols:
                cols["timestamp"] = np.arange(len(frames)) / rate
            writer.add_episode(task, cols, {camera: frames} if camera else {},
                               extra={"assay/source": str(records[base].meta.get("source", "")),
                                      "assay/planted": kind or ""})
            labels.append({"episode_index": i, "base": base, "defect": kind})
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return labels
