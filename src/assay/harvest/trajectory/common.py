"""What every trajectory step needs: the per-frame arrays of an episode record and robust statistics on them."""

from __future__ import annotations

from typing import Any

import numpy as np

from assay.core.record import Record

STATE = "observation.state"
ACTION = "action"


def is_trajectory(record: Record) -> bool:
    return record.modality == "trajectory" and isinstance(record.content, dict) and \
        isinstance(record.content.get("frames"), dict)


def column(record: Record, key: str) -> np.ndarray | None:
    """Frames × dims float array of one per-frame column (a scalar column becomes one dim), or None when absent."""
    values = record.content["frames"].get(key)
    if values is None or len(values) == 0:
        return None
    arr = np.asarray(values, dtype=np.float64)
    return arr.reshape(len(arr), -1)


def fps(record: Record) -> float:
    return float(record.content.get("fps") or 0.0)


def length(record: Record) -> int:
    frames = record.content["frames"]
    for v in frames.values():
        return len(v)
    return 0


def names(record: Record, key: str) -> list[str]:
    """The dimension names of a column, from the dataset's features (``names`` may be a list or a dict)."""
    feat: Any = (record.meta.get("features") or {}).get(key) or {}
    n = feat.get("names")
    if isinstance(n, dict):  # LeRobot also writes {"motors": [...]}
        n = next(iter(n.values()), None)
    return [str(x) for x in n] if isinstance(n, list) else []


def gripper_dims(record: Record, key: str, explicit: list[int] | None = None) -> list[int]:
    if explicit:
        return list(explicit)
    return [i for i, n in enumerate(names(record, key)) if "gripper" in n.lower()]


def robust_scale(x: np.ndarray, floor: float) -> np.ndarray:
    """Per-column 1.4826 × median absolute deviation (≈ std for Gaussian data), at least ``floor``."""
    med = np.median(x, axis=0)
    mad = np.median(np.abs(x - med), axis=0) * 1.4826
    return np.maximum(mad, floor)


def longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True in a 1-D boolean array."""
    best = cur = 0
    for m in mask:
        cur = cur + 1 if m else 0
        best = max(best, cur)
    return best


def slice_frames(content: dict[str, Any], start: int, end: int) -> dict[str, Any]:
    """A copy of an episode's content keeping frames ``start..end-1`` (videos' spans moved to match)."""
    out = dict(content)
    out["frames"] = {k: v[start:end] for k, v in content["frames"].items()}
    rate = float(content.get("fps") or 0.0)
    if rate > 0 and content.get("videos"):
        n = len(next(iter(content["frames"].values())))
        out["videos"] = {}
        for key, span in content["videos"].items():
            span = dict(span)
            span["to_timestamp"] = float(span["to_timestamp"]) - (n - end) / rate
            span["from_timestamp"] = float(span["from_timestamp"]) + start / rate
            out["videos"][key] = span
    return out
