"""Reading video files (PyAV): one ``video`` record per file, after checking that the file can be demuxed.

``read_video_file(path, errors)`` opens the file with PyAV, reads the first video stream's parameters, and demuxes
every packet of that stream (no decoding: fast) to count frames and find where the data really ends. It yields one
record::

    modality = "video"
    content  = {"path": str}                      # plus "caption" when a sidecar <name>.txt sits beside the file
    meta     = {"source", "duration", "fps", "width", "height", "codec", "frames", "keyframes", "bytes"}

``duration`` is measured from the packets (last presentation time + one frame), not the container's header, so a
truncated file reports what it really holds. Damaged input is a counted skip in the run's ``errors.jsonl``, never a
crash: ``unreadable_video`` (PyAV cannot open it: not a video, header missing/cut), ``no_video_stream``,
``empty_video`` (no video packets), ``corrupt_video`` (demuxing fails part-way, or the packets end well before the
duration the header declares: the file is truncated or damaged inside; the frames before the damage are still
counted, and the record is kept when it holds at least one frame, with ``meta["damaged"] = True``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

from assay.core.errors import ErrorLog
from assay.core.record import Record, stable_id


class VideoUnreadable(ValueError):
    """A file PyAV cannot use as a video; ``kind`` is the ErrorLog category."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class VideoInfo:
    """What a demux pass over a video file tells: its first video stream's parameters and real extent."""

    duration: float  # seconds, from the packets
    fps: float
    width: int
    height: int
    codec: str
    frames: int  # video packets with a timestamp (one frame each for every codec we meet)
    keyframes: int
    start_time: float  # presentation time of the first frame (seconds); clip times are relative to it
    damaged: bool = False
    damage: str = ""

    def to_meta(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("damage")
        d.pop("start_time")
        if not d["damaged"]:
            d.pop("damaged")
        d["duration"] = round(d["duration"], 6)
        d["fps"] = round(d["fps"], 6)
        return d


def stream_fps(stream: Any) -> float:
    """The frame rate of a PyAV video stream (average, else guessed, else base rate; 0.0 when unknown)."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def probe_video(path: str) -> VideoInfo:
    """Demux ``path``'s first video stream (no decoding) and describe it. Raises :class:`VideoUnreadable`."""
    import av

    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise VideoUnreadable("unreadable_video", f"{type(e).__name__}: {e}") from e
    with container:
        if not container.streams.video:
            raise VideoUnreadable("no_video_stream", "the file has no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        tb = stream.time_base or Fraction(1, 90000)
        fps = stream_fps(stream)
        frames = keyframes = 0
        first = last = None
        damage = ""
        try:
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue  # the flush packet at the end of the stream
                frames += 1
                keyframes += bool(packet.is_keyframe)
                first = packet.pts if first is None else min(first, packet.pts)
                last = packet.pts if last is None else max(last, packet.pts)
        except (av.FFmpegError, OSError, ValueError) as e:
            damage = f"{type(e).__name__}: {e}"
        if frames == 0:
            if damage:
                raise VideoUnreadable("corrupt_video", damage)
            raise VideoUnreadable("empty_video", "the video stream has no frames")
        assert first is not None and last is not None
        frame_s = 1.0 / fps if fps > 0 else 0.0
        duration = float((last - first) * tb) + frame_s
        declared = _declared_duration(container, stream)
        if not damage and declared is not None and duration < declared - max(2 * frame_s, 0.1):
            # the header (written when the file was finished) promises more than the packets hold: cut short
            damage = f"truncated: the header says {declared:.3f} s, the packets hold {duration:.3f} s"
        return VideoInfo(duration=duration, fps=fps, width=int(ctx.width or 0), height=int(ctx.height or 0),
                         codec=str(ctx.name), frames=frames, keyframes=keyframes, start_time=float(first * tb),
                         damaged=bool(damage), damage=damage)


def _declared_duration(container: Any, stream: Any) -> float | None:
    """The duration the file's header declares (stream's, else container's), in seconds, if any."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def sidecar_caption(path: str) -> str | None:
    """The caption in ``<video name without extension>.txt`` beside a local video (video2dataset's layout)."""
    side = Path(path).with_suffix(".txt")
    try:
        text = side.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def read_video_file(path: str, errors: ErrorLog) -> Iterator[Record]:
    """One ``video`` record for the file at ``path`` (see the module doc); damaged files are counted in ``errors``."""
    if "://" in path and not path.startswith("file://"):
        errors.add("unreadable_video", path, None, "only local video files are supported (PyAV needs a seekable file)")
        return
    local = path[len("file://"):] if path.startswith("file://") else path
    try:
        info = probe_video(local)
    except VideoUnreadable as e:
        errors.add(e.kind, path, None, str(e))
        return
    if info.damaged:
        errors.add("corrupt_video", path, info.frames, f"{info.frames} frames readable; {info.damage}")
    content: dict[str, Any] = {"path": os.path.abspath(local)}
    caption = sidecar_caption(local)
    if caption is not None:
        content["caption"] = caption
    meta = {"source": path, **info.to_meta(), "bytes": os.path.getsize(local)}
    yield Record(stable_id(path, 0), content, "video", meta)
