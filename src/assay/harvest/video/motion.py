"""``video_motion_filter``: drop still clips and shaking/flickering ones, by frame differences (no optical flow).

Signals (from ``video_scenes``, which measures them while detecting; computed here by decoding the clip when
absent, e.g. for clips read back from a file):

* ``motion.score``: mean absolute difference of consecutive grey frames (0-255 scale, frames scaled to
  ``width``). A still shot or slideshow scores ~0 (compression noise), steady motion a few units.
* ``motion.jitter``: camera shake: the median change, from one frame pair to the next, of the global image shift
  that phase correlation (``cv2.phaseCorrelate``, an FFT, not optical flow) finds between consecutive frames, in
  percent of the frame width. A still or smoothly panning camera changes its shift little (near 0, whatever
  moves inside the frame); a shaking one jumps back and forth (several %).

Reasons: ``static`` (score < ``min_score``), ``too_much_motion`` (score > ``max_score``), ``jittery``
(jitter > ``max_jitter``). The score thresholds are for the default 256-px analysis width.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from assay.core.record import Record
from assay.core.step import Filter, FilterParams
from assay.harvest.video.keyframes import is_clip


class MotionMeter:
    """Feed grey frames in order; reports the clip-level motion score and jitter of any frame range."""

    #: frames wider than this are halved for phase correlation (a quarter of the FFT work; the shift, in % of the
    #: width, moves by under 0.1 on the test videos: still 0.23 -> 0.30, shaking 1.45 -> 1.53 at 640x360)
    SHIFT_HALVE_ABOVE = 128

    def __init__(self) -> None:
        self.diffs: list[float] = [0.0]  # diffs[i]: mean |frame i - frame i-1| (0 for the first frame)
        self.shifts: list[tuple[float, float]] = [(0.0, 0.0)]  # global shift from frame i-1 to frame i, px
        self.width = 1
        self._prev: np.ndarray | None = None
        self._prev_small: np.ndarray | None = None
        self._window: np.ndarray | None = None

    def add(self, grey: np.ndarray, scale: float = 1.0) -> None:
        """Add the next frame (uint8, 2-D). ``scale`` divides the differences (frames compared ``scale`` apart)."""
        import cv2

        h, w = grey.shape
        factor = 2 if w > self.SHIFT_HALVE_ABOVE else 1
        small = (cv2.resize(grey, (w // 2, h // 2), interpolation=cv2.INTER_AREA) if factor == 2 else grey
                 ).astype(np.float32)
        if self._prev is not None and self._prev.shape == grey.shape:
            self.diffs.append(cv2.mean(cv2.absdiff(grey, self._prev))[0] / scale)
            if self._window is None:
                self._window = cv2.createHanningWindow((small.shape[1], small.shape[0]), cv2.CV_32F)
            # copies: phaseCorrelate may window its inputs in place
            (dx, dy), _ = cv2.phaseCorrelate(self._prev_small.copy(), small.copy(), self._window)
            self.shifts.append((dx * factor / scale, dy * factor / scale))
        elif self._prev is not None:  # a frame of another size: no comparison
            self.diffs.append(0.0)
            self.shifts.append((0.0, 0.0))
        self.width = w
        self._prev, self._prev_small = grey, small

    def stats(self, first: int = 1, end: int | None = None) -> tuple[float, float]:
        """``(score, jitter)`` over the differences of frames ``first..end-1`` (each with its predecessor)."""
        diffs = np.asarray(self.diffs[first:end], dtype=np.float64)
        shifts = np.asarray(self.shifts[first:end], dtype=np.float64).reshape(-1, 2)
        return motion_stats(diffs, shifts, self.width)


def motion_stats(diffs: np.ndarray, shifts: np.ndarray, width: int) -> tuple[float, float]:
    """Motion score (mean absolute grey difference) and jitter (mean change of the global shift, % of width)."""
    if len(diffs) == 0:
        return 0.0, 0.0
    score = float(np.mean(diffs))
    if len(shifts) < 2:
        return score, 0.0
    # median: one jump (an object entering, a flash) is not shake; shake moves the picture back and forth throughout
    jitter = float(np.median(np.linalg.norm(np.diff(shifts, axis=0), axis=1)) / max(width, 1) * 100.0)
    return score, jitter


class VideoMotionParams(FilterParams):
    #: clips whose mean frame difference is below this are static
    min_score: float = Field(0.5, ge=0)
    #: clips above this are chaos (None: no upper bound)
    max_score: float | None = Field(40.0, gt=0)
    #: clips whose jitter (% of the frame width a frame) is above this are shaking (None: not checked)
    max_jitter: float | None = Field(2.0, gt=0)
    #: analysis width when the signals must be computed here
    width: int = Field(256, ge=16)
    #: when computing here, compare every n-th frame (1: all); differences are divided by n to stay comparable
    stride: int = Field(1, ge=1)


class VideoMotionFilter(Filter):
    """Drop static clips and too-jittery ones (mean absolute frame difference; signals motion.score/jitter)."""

    name = "video_motion_filter"
    version = "1"
    Params: ClassVar = VideoMotionParams

    def score(self, record: Record) -> None:
        if not is_clip(record) or "motion.score" in record.signals:
            return
        import av
        import cv2

        from assay.harvest.video.media import decode_range

        p: VideoMotionParams = self.params  # type: ignore[assignment]
        path = record.content.get("clip_path") or record.content["path"]
        start, end = (0.0, None) if record.content.get("clip_path") else \
            (float(record.content["start"]), float(record.content["end"]))
        meter = MotionMeter()
        try:
            # BGR then OpenCV's grey, exactly as video_scenes measures, so both give the same numbers
            for _, bgr in decode_range(str(path), start, end, width=p.width, fmt="bgr24", every=p.stride):
                meter.add(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), p.stride)
        except (av.FFmpegError, OSError, ValueError) as e:
            record.signals["motion.error"] = f"{type(e).__name__}"
            self.count("motion.undecodable")
            return
        score, jitter = meter.stats()
        record.signals["motion.score"] = round(score, 4)
        record.signals["motion.jitter"] = round(jitter, 4)

    def decide(self, record: Record) -> str | None:
        if not is_clip(record):
            return None
        if "motion.error" in record.signals:
            return "undecodable"
        p: VideoMotionParams = self.params  # type: ignore[assignment]
        score = float(record.signals.get("motion.score", 0.0))
        jitter = float(record.signals.get("motion.jitter", 0.0))
        if score < p.min_score:
            return "static"
        if p.max_score is not None and score > p.max_score:
            return "too_much_motion"
        if p.max_jitter is not None and jitter > p.max_jitter:
            return "jittery"
        return None
