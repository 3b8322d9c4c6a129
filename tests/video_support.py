"""Videos made on the spot with PyAV for the video tests and benchmark: scenes of known length, hard cuts at known
frames, moving / static / shaking content, optional text burnt into the frames, optional flash frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np


@dataclass
class Scene:
    frames: int
    background: tuple[int, int, int]
    shape: tuple[int, int, int] = (255, 255, 255)
    motion: str = "move"  # move | static | shake
    text: str | None = None  # burnt into every frame (legible to OCR at 320x240)
    flash_at: list[int] = field(default_factory=list)  # frame offsets replaced by a white flash (a fake cut)
    speed: float = 3.0  # pixels a frame for "move"


def _render(scene: Scene, k: int, size: tuple[int, int], rng: np.random.Generator, font: object) -> np.ndarray:
    w, h = size
    if k in scene.flash_at:
        return np.full((h, w, 3), 255, np.uint8)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = scene.background
    side = max(8, h // 4)
    if scene.motion == "move":
        span = max(1, w - side)
        x = int(abs((10 + scene.speed * k) % (2 * span) - span))  # bounces between the edges
        y = int(h / 2 - side / 2 + (h / 6) * np.sin(k / 6))
    else:
        x, y = w // 3, h // 3
    img[max(0, y):y + side, x:x + side] = scene.shape
    if scene.motion == "shake":  # stripes plus a random shift of up to 6 px each frame: a shaking camera
        img[:, ::8] = scene.shape
        img = np.roll(img, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1))
    if scene.text:
        from PIL import Image, ImageDraw

        pil = Image.fromarray(img)
        draw = ImageDraw.Draw(pil)
        draw.rectangle((0, h - h // 4, w, h), fill=(255, 255, 255))
        draw.text((8, h - h // 4 + 6), scene.text, fill=(0, 0, 0), font=font)
        img = np.asarray(pil)
    return img


def make_video(path: Path, scenes: list[Scene], *, fps: int = 24, size: tuple[int, int] = (160, 120),
               codec: str = "libx264", keyframe_at_cuts: bool = True, gop: int = 48, bframes: int = 0,
               seed: int = 0) -> list[int]:
    """Write ``scenes`` back to back to ``path``. Returns the frame indices where each scene after the first starts
    (the true cuts). With ``keyframe_at_cuts`` the first frame of every scene is a keyframe (as encoders with
    scene-cut detection do); otherwise keyframes come every ``gop`` frames only. ``bframes`` > 0 makes an H.264
    stream with B-frames."""
    import av
    from PIL import ImageFont

    rng = np.random.default_rng(seed)
    font = ImageFont.load_default(size=max(12, size[1] // 9))
    cuts: list[int] = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.gop_size = gop
        if codec == "libx264":
            # keyframes only where we say (sc_threshold 0); B-frames reorder packets (decode order != display order)
            stream.options = {"preset": "fast" if bframes else "ultrafast", "crf": "20", "sc_threshold": "0",
                              "bf": str(bframes)}
        n = 0
        for s_i, scene in enumerate(scenes):
            if s_i:
                cuts.append(n)
            for k in range(scene.frames):
                frame = av.VideoFrame.from_ndarray(_render(scene, k, size, rng, font), format="rgb24")
                frame.pts = n
                frame.time_base = Fraction(1, fps)
                if keyframe_at_cuts and k == 0:
                    frame.pict_type = av.video.frame.PictureType.I
                for packet in stream.encode(frame):
                    out.mux(packet)
                n += 1
        for packet in stream.encode(None):
            out.mux(packet)
    return cuts


#: four scenes (2 s, 1.5 s, 2 s, 1.25 s at 24 fps) with hard cuts at frames 48, 84, 132
FOUR_SCENES = [
    Scene(48, (200, 30, 30), (250, 250, 40), "move"),
    Scene(36, (20, 160, 40), (30, 30, 220), "move", speed=4.0),
    Scene(48, (30, 40, 190), (240, 240, 240), "static"),
    Scene(30, (230, 140, 0), (10, 10, 10), "move", speed=-3.0),
]
