"""PyAV building blocks the video steps share: decoding frames (all, a time range, or a few chosen instants),
encoding keyframes as JPEG, the packet index of a file (which frames are keyframes), and writing one clip by
stream copy (no re-encode) or by re-encoding.

Times are seconds *relative to the first frame's presentation time* (what players show), frame indices count
frames in presentation order from 0. PyAV is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import io
import os
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterator

import numpy as np


def open_container(path: str) -> Any:
    """Open ``path`` for reading with PyAV, its first video stream decoding on every core (frame threads)."""
    import av

    container = av.open(path)
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path}: no video stream")
    container.streams.video[0].thread_type = "AUTO"
    return container


@dataclass
class PacketIndex:
    """Presentation timestamps of a video stream's frames, sorted, and which of them are keyframes."""

    pts: list[int]  # in stream time base, presentation order
    keyframe: list[bool]
    time_base: Fraction
    fps: float
    codec: str

    @property
    def start_pts(self) -> int:
        return self.pts[0]

    def seconds(self, frame: int) -> float:
        """Time of frame ``frame`` relative to the first frame (the end of the stream for ``frame == len``)."""
        if frame >= len(self.pts):
            step = 1.0 / self.fps if self.fps > 0 else 0.0
            return float((self.pts[-1] - self.pts[0]) * self.time_base) + step
        return float((self.pts[frame] - self.pts[0]) * self.time_base)

    def frame_at(self, seconds: float) -> int:
        """The index of the first frame at or after ``seconds`` (relative time)."""
        target = self.pts[0] + seconds / float(self.time_base)
        return bisect_left(self.pts, target - 1e-6 / float(self.time_base))

    def is_keyframe(self, frame: int) -> bool:
        return frame >= len(self.pts) or self.keyframe[frame]


_INDEX_CACHE: "OrderedDict[tuple[str, int, int], PacketIndex]" = OrderedDict()
_INDEX_CACHE_SIZE = 16


def packet_index(path: str) -> PacketIndex:
    """Demux (not decode) ``path``'s first video stream: every frame's timestamp and keyframe flag. The last few
    files' indexes are remembered (keyed by path, size and modification time): steps ask once per clip."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    cached = _INDEX_CACHE.get(key)
    if cached is not None:
        _INDEX_CACHE.move_to_end(key)
        return cached
    index = _read_packet_index(path)
    _INDEX_CACHE[key] = index
    while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
        _INDEX_CACHE.popitem(last=False)
    return index


def _read_packet_index(path: str) -> PacketIndex:
    from assay.io.video import stream_fps

    with open_container(path) as container:
        stream = container.streams.video[0]
        rows: list[tuple[int, bool]] = []
        for packet in container.demux(stream):
            if packet.pts is not None:
                rows.append((int(packet.pts), bool(packet.is_keyframe)))
        rows.sort()
        return PacketIndex([p for p, _ in rows], [k for _, k in rows], Fraction(stream.time_base),
                           stream_fps(stream), stream.codec_context.name)


def decoded_ahead(frames: Iterator[Any], depth: int = 8) -> Iterator[Any]:
    """Run ``frames`` (decoding, scaling: C code that releases the GIL) in a background thread, ``depth`` items
    ahead of the consumer, as PySceneDetect's SceneManager does; exceptions are re-raised in the consumer."""
    import queue
    import threading

    q: "queue.Queue[tuple[str, Any]]" = queue.Queue(depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in frames:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", None))
        except BaseException as e:  # handed to the consumer, which raises it
            q.put(("error", e))

    thread = threading.Thread(target=work, daemon=True, name="assay-video-decode")
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)


def frame_time(frame: Any, start_pts: int, time_base: Fraction) -> float:
    return float((frame.pts - start_pts) * time_base)


def decode_range(path: str, start: float = 0.0, end: float | None = None, *, width: int | None = None,
                 fmt: str = "bgr24", every: int = 1) -> Iterator[tuple[float, np.ndarray]]:
    """Decode frames with ``start <= t < end`` (relative seconds), seeking to the keyframe before ``start``.
    Yields ``(t, array)``; ``width`` scales frames down (aspect kept), ``every`` keeps one frame in ``every``."""
    index = packet_index(path)
    with open_container(path) as container:
        stream = container.streams.video[0]
        tb = Fraction(stream.time_base)
        if start > 0:
            container.seek(index.start_pts + int(start / tb), stream=stream, backward=True)
        k = 0
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = frame_time(frame, index.start_pts, tb)
            if t < start - 1e-6:
                continue
            if end is not None and t >= end - 1e-6:
                break
            if k % every == 0:
                yield t, to_array(frame, width, fmt)
            k += 1


def to_array(frame: Any, width: int | None, fmt: str = "bgr24") -> np.ndarray:
    """A decoded PyAV frame as a numpy array in ``fmt``, scaled down to ``width`` (even height, aspect kept)."""
    if width and frame.width > width:
        height = max(2, round(frame.height * width / frame.width / 2) * 2)
        if fmt == "bgr24" and _small_i420_ok(frame, width, height):
            return _small_bgr_from_i420(frame, width, height)
        # bilinear: ~40% faster than swscale's default bicubic, and detection thresholds do not notice
        return frame.reformat(width=width, height=height, format=fmt, interpolation="BILINEAR").to_ndarray()
    return frame.reformat(format=fmt).to_ndarray()


def _small_i420_ok(frame: Any, width: int, height: int) -> bool:
    """Whether :func:`_small_bgr_from_i420` applies: 8-bit 4:2:0 in video range (most H.264/H.265/VP9 files),
    even sizes, a target whose chroma planes fill whole rows of the packed layout."""
    return (frame.format.name == "yuv420p" and frame.color_range != 2 and frame.width % 2 == 0
            and frame.height % 2 == 0 and width % 2 == 0 and height % 4 == 0)


def _small_bgr_from_i420(frame: Any, width: int, height: int) -> np.ndarray:
    """Scale the Y, U and V planes down with OpenCV straight from the decoder's buffers (bilinear, as PySceneDetect
    downscales), then convert only the small picture to BGR (BT.601, as swscale does by default): a quarter of
    the cost of swscale's scale-and-convert of the full frame, pixel values within 1-2 levels of it."""
    import cv2

    def plane(i: int) -> np.ndarray:  # a view of the decoder's plane, without its line padding
        p = frame.planes[i]
        return np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width]

    small = np.empty((height * 3 // 2, width), dtype=np.uint8)  # I420: Y, then U and V packed row-wise
    small[:height] = cv2.resize(plane(0), (width, height), interpolation=cv2.INTER_LINEAR)
    rows = height // 4  # a (height/2, width/2) chroma plane fills height/4 rows of the packed layout
    for k, i in ((0, 1), (1, 2)):
        small[height + k * rows: height + (k + 1) * rows] = cv2.resize(
            plane(i), (width // 2, height // 2), interpolation=cv2.INTER_LINEAR).reshape(rows, width)
    return cv2.cvtColor(small, cv2.COLOR_YUV2BGR_I420)


def grab_frames(path: str, times: list[float], *, max_side: int | None = None,
                seek_gap: float = 2.0) -> list[tuple[float, Any]]:
    """The frames on screen at each of ``times`` (relative seconds) as ``(frame time, PIL RGB image)``, in
    ascending order. Decodes forward between close instants, seeks when the next one is over ``seek_gap`` s ahead."""
    from PIL import Image

    out: list[tuple[float, Any]] = []
    if not times:
        return out
    index = packet_index(path)
    with open_container(path) as container:
        stream = container.streams.video[0]
        tb = Fraction(stream.time_base)

        def frames_from(t: float) -> Iterator[tuple[float, Any]]:
            container.seek(index.start_pts + int(max(0.0, t) / tb), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is not None:
                    yield frame_time(frame, index.start_pts, tb), frame

        it: Iterator[tuple[float, Any]] | None = None
        shown: tuple[float, Any] | None = None  # the last decoded frame at or before the target
        ahead: tuple[float, Any] | None = None  # a decoded frame past the previous target, not used yet
        for target in sorted(times):
            here = ahead[0] if ahead is not None else (shown[0] if shown is not None else None)
            if it is None or here is None or target - here > seek_gap:
                it, shown, ahead = frames_from(target), None, None
            while True:
                if ahead is not None:
                    cand, ahead = ahead, None
                else:
                    cand = next(it, None)
                if cand is None:
                    break  # the stream ended: its last frame stays on screen
                if cand[0] > target + 1e-6:
                    ahead = cand
                    break
                shown = cand
            chosen = shown if shown is not None else ahead
            if chosen is None:
                break
            img = chosen[1].to_image()
            if max_side and max(img.size) > max_side:
                img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
            out.append((chosen[0], img))
    return out


def jpeg_bytes(image: Any, quality: int = 85) -> bytes:
    """Encode a PIL image as baseline JPEG."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# -- writing clips ------------------------------------------------------------------------------------------------

def copy_clip(src: str, dst: str, start_frame: int, end_frame: int, index: PacketIndex) -> int:
    """Write frames ``[start_frame, end_frame)`` of ``src`` to ``dst`` without re-encoding (packets copied).
    Exact only when both boundaries are keyframes (closed GOPs): the caller checks. Returns packets written."""
    import av

    lo = index.pts[start_frame]
    hi = index.pts[end_frame] if end_frame < len(index.pts) else None
    written = 0
    with av.open(src) as inp, av.open(dst, "w") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        shift: int | None = None
        inp.seek(lo, stream=ist, backward=True)
        for packet in inp.demux(ist):
            if packet.pts is None:
                continue
            if hi is not None and packet.pts >= hi and packet.is_keyframe:
                break
            if packet.pts < lo or (hi is not None and packet.pts >= hi):
                continue
            if shift is None:  # first packet in decode order: its dts may precede the first pts (B-frames)
                shift = min(lo, packet.dts if packet.dts is not None else lo)
            packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = ost
            out.mux(packet)
            written += 1
    return written


def reencode_clip(src: str, dst: str, start: float, end: float, *, codec: str = "auto", crf: int = 18) -> int:
    """Decode ``start <= t < end`` of ``src`` and encode it to ``dst`` (H.264 when libx264 is present, else
    MPEG-4 Part 2). Returns frames written."""
    import av

    if codec == "auto":
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    index = packet_index(src)
    with open_container(src) as inp, av.open(dst, "w") as out:
        ist = inp.streams.video[0]
        rate = ist.average_rate or ist.guessed_rate or Fraction(25)
        ost = out.add_stream(codec, rate=rate)
        ost.width = ist.codec_context.width
        ost.height = ist.codec_context.height
        ost.pix_fmt = "yuv420p"
        if codec == "libx264":
            ost.options = {"crf": str(crf), "preset": "veryfast"}
        else:
            ost.bit_rate = max(1_000_000, ost.width * ost.height * 8)
        tb = Fraction(ist.time_base)
        if start > 0:
            inp.seek(index.start_pts + int(start / tb), stream=ist, backward=True)
        n = 0
        for frame in inp.decode(ist):
            if frame.pts is None:
                continue
            t = frame_time(frame, index.start_pts, tb)
            if t < start - 1e-6:
                continue
            if t >= end - 1e-6:
                break
            new = frame.reformat(format="yuv420p")
            new.pts = n
            new.time_base = Fraction(1) / Fraction(rate)
            for packet in ost.encode(new):
                out.mux(packet)
            n += 1
        for packet in ost.encode(None):
            out.mux(packet)
    return n
