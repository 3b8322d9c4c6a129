"""``video_keyframes``: a few frames of every clip, as JPEG bytes, for captioning, alignment and stitching.

``mode: middle`` takes the frame on screen at the clip's midpoint; ``mode: even`` takes ``count`` frames evenly
spaced inside the clip (at the centres of ``count`` equal parts, so never the first frame, which may still carry a
transition). Frames are scaled so the longer side is at most ``max_side`` and stored in ``content["keyframes"]``
with their times (seconds from the source's first frame) in ``content["keyframe_times"]``. Clips of one source are
read in one pass (seeking between distant instants). A clip whose frames cannot be decoded is rejected
(``undecodable``) and logged.
"""

from __future__ import annotations

from collections import defaultdict
from typing import ClassVar, Literal

from pydantic import Field

from assay.core.record import Record
from assay.core.step import Batch, Step, StepContext, StepParams


class VideoKeyframesParams(StepParams):
    #: middle: one frame at the clip's midpoint; even: `count` evenly spaced frames
    mode: Literal["middle", "even"] = "even"
    count: int = Field(3, ge=1, le=64)
    #: longest side of the stored JPEGs in pixels (None: full size)
    max_side: int | None = Field(384, ge=16)
    quality: int = Field(85, ge=10, le=100)


def keyframe_instants(start: float, end: float, mode: str, count: int) -> list[float]:
    """The instants (seconds) to take a clip's keyframes at."""
    if mode == "middle" or count == 1:
        return [(start + end) / 2]
    step = (end - start) / count
    return [start + (k + 0.5) * step for k in range(count)]


def is_clip(rec: Record) -> bool:
    return rec.modality == "video" and isinstance(rec.content, dict) and "start" in rec.content


class VideoKeyframes(Step):
    """Add keyframes (JPEG bytes, evenly spaced or the middle frame) to video clips."""

    name = "video_keyframes"
    version = "1"
    Params: ClassVar = VideoKeyframesParams

    def process_batch(self, batch: Batch, ctx: StepContext) -> Batch:
        import av

        from assay.harvest.video.media import grab_frames, jpeg_bytes

        p: VideoKeyframesParams = self.params  # type: ignore[assignment]
        by_source: dict[str, list[Record]] = defaultdict(list)
        for rec in batch:
            if rec.drop is None and is_clip(rec):
                by_source[str(rec.content["path"])].append(rec)
        for path, clips in by_source.items():
            wanted = [(t, i) for i, c in enumerate(clips)
                      for t in keyframe_instants(float(c.content["start"]), float(c.content["end"]), p.mode, p.count)]
            wanted.sort()
            try:
                frames = grab_frames(path, [t for t, _ in wanted], max_side=p.max_side)
            except (av.FFmpegError, OSError, ValueError) as e:
                ctx.errors.add("undecodable_video", path, None, f"keyframes: {type(e).__name__}: {e}")
                for c in clips:
                    self.reject(c, "undecodable")
                continue
            images: dict[int, list[bytes]] = defaultdict(list)
            times: dict[int, list[float]] = defaultdict(list)
            for (_, i), (t, img) in zip(wanted, frames):
                images[i].append(jpeg_bytes(img, p.quality))
                times[i].append(round(t, 6))
            for i, c in enumerate(clips):
                if not images[i]:
                    ctx.errors.add("undecodable_video", path, c.meta.get("start_frame"), "no frame in the clip decoded")
                    self.reject(c, "undecodable")
                    continue
                c.content["keyframes"] = images[i]
                c.content["keyframe_times"] = times[i]
                self.count("keyframes", len(images[i]))
        return batch
