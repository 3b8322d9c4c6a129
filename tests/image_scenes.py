"""Images for the image I/O and image step tests (and benchmarks/images.py), made with Pillow on the spot:
scenes of random shapes with a word rendered on them, their altered copies (resized, JPEG-recompressed, cropped,
brightened), damaged files, and WebDataset tars written with the standard library's ``tarfile`` (an independent
writer, so the reader is checked against real tars)."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance

from image_text_fixtures import WORDS, _font


def scene(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A picture made of a few large random shapes on a two-colour background, with a word written on it."""
    rng = random.Random(seed)
    w, h = size
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    split = rng.randrange(w // 4, 3 * w // 4)
    draw.rectangle((split, 0, w, h), fill=tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(rng.randint(3, 6)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(w // 6, w // 2), y0 + rng.randrange(h // 6, h // 2)
        colour = tuple(rng.randrange(256) for _ in range(3))
        kind = rng.randrange(3)
        if kind == 0:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.polygon([(x0, y0), (x1, y0 + rng.randrange(h // 3)), (x0 + rng.randrange(w // 3), y1)], fill=colour)
    word = WORDS[seed % len(WORDS)]
    draw.text((rng.randrange(w // 2), rng.randrange(h // 2)), word, fill=(0, 0, 0), font=_font(max(12, h // 8)))
    return img


def encode(img: Image.Image, fmt: str = "JPEG", **kw: object) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        kw.setdefault("quality", 90)
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def resized(img: Image.Image, factor: float) -> Image.Image:
    return img.resize((max(1, round(img.width * factor)), max(1, round(img.height * factor))),
                      Image.Resampling.BICUBIC)


def cropped(img: Image.Image, fraction: float) -> Image.Image:
    """``img`` with ``fraction`` of its width and height cut off (half on each side)."""
    dx, dy = round(img.width * fraction / 2), round(img.height * fraction / 2)
    return img.crop((dx, dy, img.width - dx, img.height - dy))


def brightened(img: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(factor)


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def garbled(data: bytes, seed: int = 0) -> bytes:
    """The header kept, a stretch of the middle overwritten with random bytes."""
    rng = random.Random(seed)
    b = bytearray(data)
    lo = len(b) // 3
    for i in range(lo, min(len(b), lo + 64)):
        b[i] = rng.randrange(256)
    return bytes(b)


def write_tar(path: Path, samples: list[dict[str, object]]) -> Path:
    """A WebDataset tar: each sample is ``{"__key__": key, "jpg": bytes, "txt": str, "json": dict, ...}``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for s in samples:
            key = s["__key__"]
            for ext, value in s.items():
                if ext == "__key__":
                    continue
                if isinstance(value, str):
                    data = value.encode()
                elif isinstance(value, dict):
                    data = json.dumps(value).encode()
                else:
                    data = value  # type: ignore[assignment]
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path
