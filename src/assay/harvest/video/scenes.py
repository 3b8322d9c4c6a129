"""``video_scenes``: split each source video into clips at its shot boundaries (PySceneDetect detectors).

One decoding pass per source with PyAV: every frame is scaled down to ``detect_width`` (PyAV's swscale, as
PySceneDetect's own downscaling does for speed) and fed to a PySceneDetect detector (``content``:
ContentDetector, HSV change between frames, the default; ``adaptive``: AdaptiveDetector, the change relative to
its neighbours, steadier under fast camera motion; ``histogram``, ``hash``). The same pass measures motion: the mean
absolute difference of consecutive grey frames and their global shift (phase correlation), so clips leave this
step with ``motion.score`` and ``motion.jitter`` signals (:mod:`.motion`) and ``video_motion_filter`` needs no second decode.

Each source record (``read_video_file``) becomes its clips, in order (the source record itself is not passed on)::

    content = {"path", "start", "end", "clip_path": None, "keyframes": [], "keyframe_times": [], "caption"}
    meta    = {"source", "parents": [source id], "fps", "width", "height", "start_frame", "end_frame",
               "duration", "clip_index"}
    id      = derive_id(source id, "clip", start_frame)

``start``/``end`` are seconds from the first frame; ``end_frame`` is exclusive (the next clip's ``start_frame``).
Scenes longer than ``max_duration`` are cut into equal pieces (Panda-70M / WebVid keep clips of a few seconds);
scenes shorter than ``min_duration`` are emitted dropped (``too_short``) so they show in ``rejected/``. A source
that cannot be decoded is rejected (``undecodable``) and logged; one that fails part-way keeps the clips before the
damage (``video.decode_errors`` counter, an ``errors.jsonl`` entry).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, ClassVar, Iterable, Iterator, Literal

import numpy as np
from pydantic import Field

from assay.core.record import Record, derive_id
from assay.core.step import Batch, Step, StepContext, StepParams
from assay.harvest.video.motion import MotionMeter

_DETECTORS = {"content": "ContentDetector", "adaptive": "AdaptiveDetector", "histogram": "HistogramDetector",
              "hash": "HashDetector"}
#: the keyword each detector calls its threshold
_THRESHOLD_KW = {"content": "threshold", "adaptive": "adaptive_threshold", "histogram": "threshold",
                 "hash": "threshold"}


class VideoScenesParams(StepParams):
    #: PySceneDetect detector: content (ContentDetector), adaptive (AdaptiveDetector), histogram, hash
    detector: Literal["content", "adaptive", "histogram", "hash"] = "content"
    #: the detector's threshold (None: PySceneDetect's default: content 27, adaptive 3.0, histogram 0.05, hash 0.395)
    threshold: float | None = None
    #: minimum scene length in frames before another cut may be reported (PySceneDetect's min_scene_len)
    min_scene_len: int = Field(15, ge=1)
    #: frames are scaled to this width for detection and motion (PySceneDetect's auto-downscale target is 256)
    detect_width: int = Field(256, ge=16)
    #: clips shorter than this many seconds are emitted dropped (too_short); 0 keeps all
    min_duration: float = Field(0.0, ge=0)
    #: scenes longer than this are split into equal pieces no longer than it (None: never)
    max_duration: float | None = Field(None, gt=0)
    #: measure motion (motion.score, motion.jitter) in the same pass; false saves ~30% of the pass, and
    #: video_motion_filter then decodes each clip again
    motion: bool = True
    #: records per emitted batch
    batch_size: int = Field(64, gt=0)


class SceneCuts:
    """Everything one decoding pass learns about a video: frame times, cut positions, per-frame motion."""

    def __init__(self, times: np.ndarray, cuts: list[int], motion: MotionMeter | None, fps: float, width: int,
                 height: int, error: str | None) -> None:
        self.times, self.cuts, self.motion = times, cuts, motion
        self.fps, self.width, self.height, self.error = fps, width, height, error

    @property
    def frames(self) -> int:
        return len(self.times)

    def end_time(self) -> float:
        step = 1.0 / self.fps if self.fps > 0 else 0.0
        return float(self.times[-1]) + step if self.frames else 0.0

    def time_of(self, frame: int) -> float:
        return float(self.times[frame]) if frame < self.frames else self.end_time()

    def scenes(self) -> list[tuple[int, int]]:
        """``[start_frame, end_frame)`` of every scene, covering every decoded frame."""
        bounds = [0, *[c for c in self.cuts if 0 < c < self.frames], self.frames]
        return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def make_detector(kind: str, threshold: float | None, min_scene_len: int) -> Any:
    """A PySceneDetect detector by short name."""
    import scenedetect

    cls = getattr(scenedetect, _DETECTORS[kind])
    kwargs: dict[str, Any] = {"min_scene_len": min_scene_len}
    if threshold is not None:
        kwargs[_THRESHOLD_KW[kind]] = threshold
    return cls(**kwargs)


def detect_cuts(path: str, detector: Any, detect_width: int = 256, motion: bool = True) -> SceneCuts:
    """Decode ``path`` once, feeding scaled frames to ``detector``; also measures per-frame grey differences."""
    import av
    import cv2
    from scenedetect import FrameTimecode

    from assay.harvest.video.media import decoded_ahead, open_container, to_array
    from assay.io.video import stream_fps

    times: list[float] = []
    meter = MotionMeter() if motion else None
    cuts: set[int] = set()
    error: str | None = None
    with open_container(path) as container:
        stream = container.streams.video[0]
        tb = Fraction(stream.time_base)
        fps = stream_fps(stream) or 25.0
        width, height = stream.codec_context.width, stream.codec_context.height
        start_pts: int | None = None
        index = 0
        def scaled() -> Iterator[tuple[int, np.ndarray]]:
            for frame in container.decode(stream):
                if frame.pts is not None:
                    yield frame.pts, to_array(frame, detect_width, "bgr24")

        try:
            for pts, bgr in decoded_ahead(scaled()):
                if start_pts is None:
                    start_pts = pts
                if meter is not None:
                    meter.add(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
                for tc in detector.process_frame(FrameTimecode(index, fps=fps), bgr):
                    cuts.add(int(tc.frame_num))
                times.append(float((pts - start_pts) * tb))
                index += 1
        except (av.FFmpegError, OSError, ValueError) as e:
            error = f"decoding stopped after {index} frames: {type(e).__name__}: {e}"
        if index:
            for tc in detector.post_process(FrameTimecode(index, fps=fps)):
                cuts.add(int(tc.frame_num))
    return SceneCuts(np.asarray(times), sorted(cuts), meter, fps, width, height, error)


class VideoScenes(Step):
    """Split source videos into clips at shot boundaries (PySceneDetect on PyAV frames); adds motion signals."""

    name = "video_scenes"
    version = "1"
    Params: ClassVar = VideoScenesParams

    def process(self, batches: Iterable[Batch], ctx: StepContext) -> Iterator[Batch]:
        p: VideoScenesParams = self.params  # type: ignore[assignment]
        out: Batch = []
        for batch in batches:
            for rec in batch:
                if rec.drop is not None or rec.modality != "video" or not isinstance(rec.content, dict) \
                        or "start" in rec.content:
                    out.append(rec)  # not a source video (already a clip, or another modality): passed on
                    continue
                out.extend(self._split(rec, ctx))
                if len(out) >= p.batch_size:
                    yield out
                    out = []
        if out:
            yield out

    def _split(self, source: Record, ctx: StepContext) -> list[Record]:
        import av

        p: VideoScenesParams = self.params  # type: ignore[assignment]
        path = source.content.get("path")
        try:
            found = detect_cuts(str(path), make_detector(p.detector, p.threshold, p.min_scene_len), p.detect_width,
                                p.motion)
        except (av.FFmpegError, OSError, ValueError) as e:
            ctx.errors.add("undecodable_video", str(path), None, f"{type(e).__name__}: {e}")
            self.count("video.undecodable")
            self.reject(source, "undecodable")
            return [source]
        if found.error:
            ctx.errors.add("video_decode_error", str(path), found.frames, found.error)
            self.count("video.decode_errors")
        if found.frames == 0:
            self.reject(source, "undecodable")
            return [source]
        self.count("video.sources")
        self.count("video.frames", found.frames)
        pieces: list[tuple[int, int]] = []
        for a, b in found.scenes():
            pieces.extend(self._pieces(found, a, b))
        self.count("video.scenes", len(found.scenes()))
        clips = []
        for i, (a, b) in enumerate(pieces):
            clip = self._clip(source, found, a, b, i)
            if clip.meta["duration"] < p.min_duration:
                self.reject(clip, "too_short")
            clips.append(clip)
        self.count("video.clips", len(clips))
        return clips

    def _pieces(self, found: SceneCuts, a: int, b: int) -> list[tuple[int, int]]:
        """One scene as clips no longer than max_duration (equal pieces, cut at frame boundaries)."""
        p: VideoScenesParams = self.params  # type: ignore[assignment]
        length = found.time_of(b) - found.time_of(a)
        if p.max_duration is None or length <= p.max_duration:
            return [(a, b)]
        n = int(np.ceil(length / p.max_duration - 1e-9))
        bounds = [a + round(k * (b - a) / n) for k in range(n + 1)]
        return [(x, y) for x, y in zip(bounds, bounds[1:]) if y > x]

    def _clip(self, source: Record, found: SceneCuts, a: int, b: int, i: int) -> Record:
        start, end = found.time_of(a), found.time_of(b)
        caption = source.content.get("caption")
        content = {"path": source.content["path"], "start": round(start, 6), "end": round(end, 6),
                   "clip_path": None, "keyframes": [], "keyframe_times": [],
                   "caption": caption if isinstance(caption, str) else None}
        meta = {"source": source.meta.get("source", source.content["path"]), "parents": [source.id],
                "fps": round(found.fps, 6), "width": found.width, "height": found.height, "start_frame": a,
                "end_frame": b, "duration": round(end - start, 6), "clip_index": i}
        signals: dict[str, Any] = {}
        if found.motion is not None:
            score, jitter = found.motion.stats(a + 1, b)  # the difference at frame a crosses the cut
            signals = {"motion.score": round(score, 4), "motion.jitter": round(jitter, 4)}
        return Record(derive_id(source.id, "clip", a), content, "video", meta, signals, list(source.lineage))
